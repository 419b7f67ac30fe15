//! The session loop: one stream to the leader, heartbeats, assignments,
//! completions, checkpoints, stops and preemptions, suspends and resumes,
//! reconnects, self-fencing and a graceful exit (drain, then deregister).
//!
//! Everything the agent owns (children, outbox, lease) lives in one task: the
//! loop in [`Agent::run`]. Opening a session runs in a spawned task so the
//! lease keeps being watched while the leader is being looked for.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use tidal_client::{Client, ClientOptions, Session};
use tidal_proto::v1::{self, agent_message::Msg as Out, server_message::Msg as In};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tonic::Code;

use crate::config::AgentConfig;
use crate::executor::{ExecEvent, ExecSettings, Executor, Start};
use crate::fence::Lease;
use crate::outbox::Outbox;
use crate::worker::Notice;

/// Messages queued toward the server before the session counts as stuck.
const OUTBOUND_QUEUE: usize = 1024;
/// Reconnect backoff: from this, doubling, up to `RECONNECT_MAX`.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Shortest heartbeat interval the agent uses whatever the server says.
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);
/// How long shutdown waits for killed children to be reaped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A heartbeat unanswered for this many heartbeat intervals means the
/// leader went silent or stopped leading: look for the new one at once.
const ACK_DEADLINE_BEATS: u32 = 2;
/// The trailer on a session the leader closed because another agent process
/// registered under this agent id (the server sets the same name).
const DISPLACED_TRAILER: &str = "tidal-agent-displaced";
/// Words of the server's message for the same (when no trailer arrives).
const DISPLACED_PHRASE: &str = "took the id over";
/// Tokens this agent stopped (self-fence, stop orders), remembered so that none
/// is ever started again (the leader regrants them under new tokens).
const STOPPED_TOKENS: usize = 4096;
/// A graceful exit gives up (and exits with an error) this long after the
/// drain's deadline and the stop grace, when it could not finish: no
/// leader to commit the drain, the stops or the deregistration.
const LEAVE_SLACK: Duration = Duration::from_secs(30);
/// Pause between retries of a graceful exit's requests.
const LEAVE_RETRY: Duration = Duration::from_millis(500);

/// A graceful exit under way (after the first shutdown signal).
struct Leaving {
    step: LeaveStep,
    /// The request in flight (see [`Answer`]).
    call: Option<JoinHandle<Answer>>,
    /// False once the cluster said it does not know this agent.
    known: bool,
    /// The cluster cannot record a drain (its format version is 1, or the
    /// server predates drains): this agent drains by itself, see
    /// [`Agent::on_leave`].
    local: bool,
    /// The drain's deadline: the signal plus `--drain-timeout-ms`.
    deadline: Instant,
    /// A local drain stops what still runs at `deadline`; None once done.
    stop_at: Option<Instant>,
    give_up_at: Instant,
}

/// How a graceful exit's request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    Done,
    /// The cluster does not know this agent: nothing to drain or deregister.
    Unknown,
    /// The cluster cannot do it (FAILED_PRECONDITION: its format version
    /// lacks drains, or the agent still holds tasks; UNIMPLEMENTED: an older
    /// server), with the server's message.
    Cannot(String),
    /// Refused in a way no retry mends (TLS refused by every server, or
    /// this agent's credentials refused): the graceful exit gives up.
    Refused(tidal_client::Error),
}

/// Whether a graceful exit's request failed for good: retrying it until
/// the exit gives up would only delay the exit.
fn is_final(e: &tidal_client::Error) -> bool {
    e.is_tls_refusal() || e.is_credentials_refused()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeaveStep {
    /// Asking the leader to drain this agent.
    Draining,
    /// The drain is committed: waiting until nothing runs and every
    /// report is acknowledged.
    Drained,
    /// Asking the leader to remove this agent; no reconnect from here on
    /// (a registration would add it back).
    Deregistering,
}

enum Conn {
    /// No session; open one at `retry_at`.
    Idle {
        retry_at: Instant,
    },
    /// Looking for the leader and opening a session.
    Connecting {
        handle: JoinHandle<Result<Session, tidal_client::Error>>,
        tx: mpsc::Sender<v1::AgentMessage>,
    },
    Open(Box<Open>),
}

struct Open {
    tx: mpsc::Sender<v1::AgentMessage>,
    inbound: tonic::Streaming<v1::ServerMessage>,
    endpoint: String,
    opened_at: Instant,
    /// Set once `Registered` arrived: heartbeats then run on it.
    heartbeat: Option<Interval>,
    /// How long a heartbeat may go unacknowledged on this session.
    ack_timeout: Duration,
}

enum ConnEvent {
    ReconnectDue,
    Connected(Result<Session, tidal_client::Error>),
    Inbound(Result<Option<v1::ServerMessage>, tonic::Status>),
    HeartbeatDue,
    /// A heartbeat went unacknowledged past the session's deadline.
    Silent,
}

/// Short-lived, on the stack of one loop turn: size does not matter.
#[allow(clippy::large_enum_variant)]
enum Event {
    Shutdown,
    /// The first shutdown signal of a graceful exit: drain, then leave.
    Drain,
    /// The graceful exit's request in flight answered (see [`Leaving`]).
    Leave(Answer),
    /// A local drain's deadline: stop what still runs.
    LocalDeadline,
    /// The graceful exit did not finish in time.
    GiveUp,
    LeaseExpired,
    /// An unanswered checkpoint is due to go again.
    ResendCheckpoints,
    Exec(ExecEvent),
    Conn(ConnEvent),
}

/// The agent runtime's state, owned by its one loop.
pub(crate) struct Agent {
    config: AgentConfig,
    /// This process's name in `Register`: the leader tells a reconnect of
    /// this process from another process under the same agent id.
    instance: String,
    client: Client,
    exec: Executor,
    events: mpsc::UnboundedReceiver<ExecEvent>,
    outbox: Outbox,
    lease: Lease,
    conn: Conn,
    heartbeat_seq: u64,
    /// The number of the last checkpoint sent (`TaskCheckpoint.seq`).
    checkpoint_seq: u64,
    reconnect_delay: Duration,
    /// (task, token) pairs stopped by a self-fence or on the leader's order: never started again.
    stopped: std::collections::VecDeque<(String, u64)>,
    /// (task, token) pairs this process started and killed when it fenced
    /// itself: named in every Register, so the leader counts them as started.
    fenced: std::collections::VecDeque<(String, u64)>,
    /// Tests watch the children's events through this.
    observer: Option<mpsc::UnboundedSender<ExecEvent>>,
    /// Set once a graceful exit began.
    leaving: Option<Leaving>,
    /// Whether a session was ever opened: until then a TLS refusal is a
    /// misconfiguration to stop on; afterwards (a server's certificate
    /// being replaced, say) it is retried like any connection failure.
    ever_opened: bool,
}

impl Agent {
    pub(crate) fn new(
        config: AgentConfig,
        observer: Option<mpsc::UnboundedSender<ExecEvent>>,
    ) -> anyhow::Result<Agent> {
        config.validate().context("invalid agent configuration")?;
        let options = ClientOptions {
            source_ip: config.source_ip,
            tls: config.tls()?,
            token: config.token.clone(),
            ..ClientOptions::default()
        };
        let client = Client::with_options(config.endpoints.clone(), options)
            .context("invalid server endpoints")?;
        let (exec, events) = Executor::new(
            ExecSettings {
                agent_id: config.id.clone(),
                command: config.command.clone(),
                max_result_bytes: config.max_result_bytes,
                kill_grace: config.stop_grace,
            },
            config.slots,
        );
        Ok(Agent {
            lease: Lease::new(config.ttl.unwrap_or(Duration::from_secs(1))),
            instance: instance_id(),
            config,
            client,
            exec,
            events,
            outbox: Outbox::new(),
            conn: Conn::Idle {
                retry_at: Instant::now(),
            },
            heartbeat_seq: 0,
            checkpoint_seq: 0,
            reconnect_delay: RECONNECT_MIN,
            stopped: std::collections::VecDeque::new(),
            fenced: std::collections::VecDeque::new(),
            observer,
            leaving: None,
            ever_opened: false,
        })
    }

    /// Runs until `shutdown` completes, then kills the tasks and returns.
    pub(crate) async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        self.run_with_drain(std::future::pending(), shutdown).await
    }

    /// Runs until `now` completes (kill the tasks, return), or until the
    /// graceful exit that `drain` starts is done (see `run_draining`).
    #[tracing::instrument(name = "agent", skip_all, fields(agent_id = %self.config.id))]
    pub(crate) async fn run_with_drain(
        mut self,
        drain: impl Future<Output = ()> + Send,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        tokio::pin!(drain);
        tracing::info!(endpoints = ?self.config.endpoints, slots = self.config.slots, instance = %self.instance, "agent starting");
        let outcome = loop {
            let leaving = self.leaving.is_some();
            let give_up_at = self.leaving.as_ref().map(|l| l.give_up_at);
            let stop_at = self.leaving.as_ref().and_then(|l| l.stop_at);
            let resend_at = self.outbox.next_checkpoint_resend();
            let ev = tokio::select! {
                biased;
                _ = &mut shutdown => Event::Shutdown,
                _ = &mut drain, if !leaving => Event::Drain,
                done = leave_call(&mut self.leaving) => Event::Leave(done),
                _ = sleep_until_opt(give_up_at) => Event::GiveUp,
                _ = sleep_until_opt(stop_at) => Event::LocalDeadline,
                _ = sleep_until_opt(self.lease.deadline()) => Event::LeaseExpired,
                _ = sleep_until_opt(resend_at) => Event::ResendCheckpoints,
                Some(e) = self.events.recv() => Event::Exec(e),
                c = next_conn_event(&mut self.conn, self.lease.oldest_unacked()) => Event::Conn(c),
            };
            // Invariant 6: whatever arrived, a lapsed lease is acted on first,
            // so nothing (not even a late Registered) extends it.
            if self.lease.expired(Instant::now()) {
                self.fence();
            }
            let step = match ev {
                Event::Shutdown => {
                    let live = self.exec.live();
                    if self.leaving.is_some() && live > 0 {
                        break Err(anyhow::anyhow!(
                            "a second signal: exiting without finishing the drain; \
                             killed {live} running task(s), which the leader requeues once this agent's lease runs out"
                        ));
                    }
                    break Ok(());
                }
                Event::Drain
                    if self.exec.is_idle() && self.outbox.is_empty() && !self.registered() =>
                {
                    // No leader to drain with, and nothing that a drain
                    // would wait for: its registration (if any) ends with
                    // its lease on the server.
                    tracing::info!("shutdown signal: nothing runs and no session is open; exiting without deregistering");
                    break Ok(());
                }
                Event::Drain => {
                    self.start_leaving();
                    Ok(())
                }
                Event::Leave(answer) => match self.on_leave(answer) {
                    Ok(true) => break Ok(()),
                    Ok(false) => Ok(()),
                    Err(e) => Err(e),
                },
                Event::LocalDeadline => {
                    self.stop_at_local_deadline();
                    Ok(())
                }
                Event::GiveUp => {
                    let step = self.leaving.as_ref().map(|l| l.step);
                    break Err(anyhow::anyhow!(
                        "the drain did not finish within {:?} (at step {step:?}; no leader to commit it?): \
                         killing {} running task(s) and exiting",
                        self.config.drain_timeout + self.config.stop_grace + LEAVE_SLACK,
                        self.exec.live()
                    ));
                }
                Event::LeaseExpired => Ok(()),
                Event::ResendCheckpoints => {
                    self.resend_checkpoints();
                    Ok(())
                }
                Event::Exec(e) => {
                    self.on_exec(e);
                    Ok(())
                }
                Event::Conn(c) => self.on_conn(c),
            };
            if let Err(e) = step {
                break Err(e);
            }
            self.leave_when_idle();
        };
        self.stop().await;
        outcome
    }

    /// The first shutdown signal: ask the leader to drain this agent.
    fn start_leaving(&mut self) {
        let deadline_ms = self.config.drain_timeout.as_millis() as u64;
        tracing::info!(
            deadline_ms,
            running = self.exec.live(),
            "shutdown signal: draining (no new tasks; running tasks finish or are stopped at the deadline), \
             then deregistering and exiting; a second signal exits at once"
        );
        let call = self.drain_call(deadline_ms);
        let now = Instant::now();
        self.leaving = Some(Leaving {
            step: LeaveStep::Draining,
            call: Some(call),
            known: true,
            local: false,
            deadline: now + self.config.drain_timeout,
            stop_at: None,
            give_up_at: now + self.config.drain_timeout + self.config.stop_grace + LEAVE_SLACK,
        });
    }

    /// Asks the leader to drain this agent with a deadline `deadline_ms`
    /// from now, retrying what may pass.
    fn drain_call(&self, deadline_ms: u64) -> JoinHandle<Answer> {
        let (client, id) = (self.client.clone(), self.config.id.clone());
        tokio::spawn(async move {
            loop {
                match client.drain_agent(&id, Some(deadline_ms)).await {
                    Ok(_) => return Answer::Done,
                    Err(e) if e.code == Code::NotFound => return Answer::Unknown,
                    // The cluster's format version lacks drains (a rolling
                    // upgrade under way), or the server predates them.
                    Err(e) if matches!(e.code, Code::FailedPrecondition | Code::Unimplemented) => {
                        return Answer::Cannot(e.to_string())
                    }
                    Err(e) if is_final(&e) => return Answer::Refused(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot drain this agent yet; retrying");
                        tokio::time::sleep(LEAVE_RETRY).await;
                    }
                }
            }
        })
    }

    /// A local drain's deadline: every task still running is stopped
    /// (SIGTERM to its group, SIGKILL after the grace). Their stops are not
    /// reported (the cluster cannot take them back without an attempt): the
    /// leader requeues them once this agent's lease has ended.
    fn stop_at_local_deadline(&mut self) {
        if let Some(l) = self.leaving.as_mut() {
            l.stop_at = None;
        }
        let running = self.exec.running();
        if !running.is_empty() {
            tracing::warn!(
                running = running.len(),
                grace_ms = self.config.stop_grace.as_millis() as u64,
                "local drain deadline passed: stopping the running tasks (SIGTERM to their process groups, SIGKILL after the grace)"
            );
        }
        for r in running {
            self.exec.stop(&r.task_id, r.token, self.config.stop_grace);
        }
    }

    fn leaving_locally(&self) -> bool {
        self.leaving.as_ref().is_some_and(|l| l.local)
    }

    /// The graceful exit's request answered; true when the exit is done,
    /// an error when it cannot finish (a drain or a deregistration refused
    /// for good: the running tasks are killed, and requeued by the leader
    /// once this agent's lease runs out).
    fn on_leave(&mut self, answer: Answer) -> anyhow::Result<bool> {
        let live = self.exec.live();
        let Some(l) = self.leaving.as_mut() else {
            return Ok(false);
        };
        l.call = None;
        match (l.step, answer) {
            (LeaveStep::Draining | LeaveStep::Deregistering, Answer::Refused(e)) => {
                Err(anyhow::anyhow!(
                    "the graceful exit cannot finish (at step {:?}): {e}: killing {live} running \
                     task(s) and exiting; the leader requeues them once this agent's lease runs out",
                    l.step
                ))
            }
            (step, answer) => Ok(self.on_leave_answer(step, answer)),
        }
    }

    /// [`Agent::on_leave`] for an answer the exit goes on after.
    fn on_leave_answer(&mut self, step: LeaveStep, answer: Answer) -> bool {
        let Some(l) = self.leaving.as_mut() else {
            return false;
        };
        match step {
            LeaveStep::Draining => {
                l.step = LeaveStep::Drained;
                match answer {
                    Answer::Done => {
                        tracing::info!(
                            "drain committed: no new tasks; waiting for the running ones"
                        )
                    }
                    Answer::Unknown => {
                        l.known = false;
                        tracing::info!("the cluster does not know this agent: nothing to drain");
                    }
                    // Taken by `on_leave`.
                    Answer::Refused(_) => {}
                    Answer::Cannot(e) => {
                        // Drain here: start nothing new, let the running
                        // tasks finish until the deadline, stop the rest
                        // then, and leave as after a committed drain.
                        l.local = true;
                        l.stop_at = Some(l.deadline);
                        tracing::warn!(
                            error = %e,
                            deadline_ms = l.deadline.saturating_duration_since(Instant::now()).as_millis() as u64,
                            "the cluster cannot record a drain (its format version is 1, or the server is older): \
                             draining locally: no new task starts here, the running ones finish or are stopped at \
                             the deadline, then this agent deregisters (or, if the leader still counts tasks on it, \
                             exits and they are requeued once its lease has ended)"
                        );
                    }
                }
                false
            }
            LeaveStep::Drained => {
                if answer != Answer::Done {
                    tracing::warn!(answer = ?answer, "the drain asked for again was not committed");
                }
                false
            }
            LeaveStep::Deregistering => {
                match answer {
                    Answer::Cannot(e) => tracing::warn!(
                        error = %e,
                        "cannot deregister after a local drain; exiting: the leader requeues what it still counts \
                         on this agent once its lease has ended"
                    ),
                    _ => tracing::info!("deregistered; exiting"),
                }
                true
            }
        }
    }

    /// Once the drain is committed, nothing runs and every report is
    /// acknowledged: deregister (or, for an agent the cluster does not
    /// know, leave at once).
    fn leave_when_idle(&mut self) {
        let idle = self.exec.is_idle() && self.outbox.is_empty();
        let Some(l) = self.leaving.as_mut() else {
            return;
        };
        if l.step != LeaveStep::Drained || !idle {
            return;
        }
        l.step = LeaveStep::Deregistering;
        if !l.known {
            l.call = Some(tokio::spawn(async { Answer::Done }));
            return;
        }
        tracing::info!("drained: nothing runs and every report is acknowledged; deregistering");
        let (client, id, local) = (self.client.clone(), self.config.id.clone(), l.local);
        l.call = Some(tokio::spawn(async move {
            loop {
                match client.deregister_agent(&id).await {
                    // NotFound: a retry after an answer that was lost.
                    Ok(_) => return Answer::Done,
                    Err(e) if e.code == Code::NotFound => return Answer::Done,
                    // After a local drain the leader may still count tasks
                    // on this agent (stopped here, not reported), or the
                    // server may predate deregistration.
                    Err(e)
                        if local
                            && matches!(e.code, Code::FailedPrecondition | Code::Unimplemented) =>
                    {
                        return Answer::Cannot(e.to_string())
                    }
                    Err(e) if is_final(&e) => return Answer::Refused(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot deregister this agent yet; retrying");
                        tokio::time::sleep(LEAVE_RETRY).await;
                    }
                }
            }
        }));
    }

    fn deregistering(&self) -> bool {
        self.leaving
            .as_ref()
            .is_some_and(|l| l.step == LeaveStep::Deregistering)
    }

    /// Stops heartbeating, kills every child and waits (briefly) for them.
    async fn stop(&mut self) {
        self.drop_session(Instant::now() + RECONNECT_MAX);
        let n = self.exec.kill_all();
        if n > 0 {
            tracing::info!(killed = n, "agent stopping: killed running tasks");
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while !self.exec.is_idle() {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => {
                    self.exec.on_event(&e);
                    self.observe(e);
                }
                _ => break,
            }
        }
        tracing::info!("agent stopped");
    }

    /// The servers refused this agent's credentials (`what`: its
    /// registration, or its open session): it fences itself, since without
    /// a session its lease is not renewed, and the error ends the agent
    /// (`tidal agent` exits 8). Never retried: the same token is refused
    /// again.
    fn credentials_refused(&mut self, e: tidal_client::Error, what: &str) -> anyhow::Error {
        let killed = self.stop_all();
        tracing::error!(
            code = ?e.code,
            error = %e.message,
            killed,
            "the servers refused this agent's credentials: stopped every task; exiting"
        );
        self.drop_session(Instant::now());
        anyhow::Error::new(e).context(format!(
            "the servers refused this agent's credentials ({what}); it stopped {killed} task(s)"
        ))
    }

    /// Kills every running task and drops its token for good (the leader
    /// grants the task again under a new one); returns how many it killed.
    fn stop_all(&mut self) -> usize {
        for r in self.exec.running() {
            self.stopped.push_back((r.task_id.clone(), r.token));
            self.fenced.push_back((r.task_id, r.token));
        }
        while self.stopped.len() > STOPPED_TOKENS {
            self.stopped.pop_front();
        }
        while self.fenced.len() > STOPPED_TOKENS {
            self.fenced.pop_front();
        }
        self.exec.kill_all()
    }

    /// The lease lapsed: stop all work and drop its tokens. Their results are
    /// not reported; the server requeues the tasks after its own TTL.
    fn fence(&mut self) {
        let killed = self.stop_all();
        self.lease.reset();
        let ttl_ms = self.lease.ttl().as_millis() as u64;
        if killed > 0 {
            tracing::warn!(
                killed,
                ttl_ms,
                "lease not renewed within the agent ttl: self-fenced (killed running tasks, dropped their tokens)"
            );
        } else {
            tracing::info!(
                ttl_ms,
                "lease not renewed within the agent ttl; nothing was running"
            );
        }
        // The session (if any) is no longer trusted; a registration already
        // in flight would name the killed tasks as running.
        self.drop_session(Instant::now());
    }

    fn observe(&self, e: ExecEvent) {
        if let Some(o) = &self.observer {
            let _ = o.send(e);
        }
    }

    /// Keeps the latest checkpoint of each task held here (running, or
    /// with its completion not yet acknowledged); forgets the others.
    fn settle_checkpoints(&mut self) {
        let exec = &self.exec;
        self.outbox
            .retain_checkpoints(|task_id, token| exec.holds(task_id, token));
    }

    /// Sends again the checkpoints the leader has not answered in time.
    fn resend_checkpoints(&mut self) {
        for c in self.outbox.checkpoints_due(Instant::now()) {
            tracing::debug!(task_id = %c.task_id, token = c.token, seq = c.seq, "checkpoint not answered yet; sending it again");
            self.send_if_registered(Out::Checkpoint(c));
        }
    }

    fn on_exec(&mut self, e: ExecEvent) {
        if let ExecEvent::Checkpoint(c) = &e {
            if self.exec.holds(&c.task_id, c.token) {
                self.checkpoint_seq += 1;
                let c = v1::TaskCheckpoint {
                    seq: self.checkpoint_seq,
                    ..c.clone()
                };
                self.outbox.checkpoint(c.clone(), Instant::now());
                self.send_if_registered(Out::Checkpoint(c));
            }
            self.observe(e);
            return;
        }
        self.on_child_gone(&e);
        self.settle_checkpoints();
        self.observe(e);
    }

    /// A child's last event: report it if it is to be reported.
    fn on_child_gone(&mut self, e: &ExecEvent) {
        if let Some(c) = self.exec.on_event(e) {
            if c.stopped && self.leaving_locally() {
                // Stopped at a local drain's deadline: not reported (the
                // cluster cannot take it back); its token never runs here
                // again, and the leader requeues it once this agent's lease
                // has ended.
                self.stopped.push_back((c.task_id.clone(), c.token));
                while self.stopped.len() > STOPPED_TOKENS {
                    self.stopped.pop_front();
                }
                tracing::info!(task_id = %c.task_id, token = c.token, "task stopped at the local drain deadline; the leader requeues it once this agent's lease has ended");
                return;
            }
            if c.stopped {
                // Its token never runs here again (the leader requeues the
                // task and grants it under a new one).
                self.stopped.push_back((c.task_id.clone(), c.token));
                while self.stopped.len() > STOPPED_TOKENS {
                    self.stopped.pop_front();
                }
                tracing::info!(task_id = %c.task_id, token = c.token, "task stopped on the leader's order; reporting it");
            } else {
                tracing::info!(task_id = %c.task_id, token = c.token, success = c.success, exit_code = c.exit_code, timed_out = c.timed_out, "task finished");
            }
            self.outbox.push(c.clone());
            self.send_if_registered(Out::Completed(c));
        }
    }

    fn on_conn(&mut self, c: ConnEvent) -> anyhow::Result<()> {
        match c {
            // Deregistering: a new registration would add this agent back.
            ConnEvent::ReconnectDue if self.deregistering() => {
                self.conn = Conn::Idle {
                    retry_at: Instant::now() + RECONNECT_MAX,
                };
            }
            ConnEvent::ReconnectDue => self.connect(),
            ConnEvent::Connected(Ok(session)) => {
                let tx = match std::mem::replace(
                    &mut self.conn,
                    Conn::Idle {
                        retry_at: Instant::now(),
                    },
                ) {
                    Conn::Connecting { tx, .. } => tx,
                    other => {
                        self.conn = other;
                        return Ok(());
                    }
                };
                tracing::info!(endpoint = %session.endpoint, "session opened");
                self.ever_opened = true;
                self.conn = Conn::Open(Box::new(Open {
                    tx,
                    inbound: session.inbound,
                    endpoint: session.endpoint,
                    opened_at: session.opened_at,
                    heartbeat: None,
                    ack_timeout: RECONNECT_MAX,
                }));
            }
            ConnEvent::Connected(Err(e)) => {
                // The leader refused a process it displaced before (should
                // the refusal come as the call's status, not the stream's).
                if e.code == Code::Aborted && e.message.contains(DISPLACED_PHRASE) {
                    tracing::error!(instance = %self.instance, error = %e.message, "another agent process took this agent id over: stopping every task and exiting");
                    return Err(Displaced {
                        agent_id: self.config.id.clone(),
                        message: e.message,
                    }
                    .into());
                }
                if e.is_tls_refusal() {
                    if !self.ever_opened {
                        return Err(anyhow::anyhow!(
                            "cannot connect to the servers over TLS: {e}"
                        ));
                    }
                    tracing::warn!(error = %e, "a server refused TLS; retrying");
                    self.schedule_reconnect();
                    return Ok(());
                }
                if matches!(e.code, Code::PermissionDenied | Code::Unauthenticated) {
                    return Err(self.credentials_refused(e, "registration"));
                }
                if matches!(e.code, Code::InvalidArgument | Code::Unimplemented) {
                    return Err(anyhow::anyhow!(
                        "the server refused this agent's registration: {e}"
                    ));
                }
                tracing::warn!(error = %e, "cannot open a session with the leader; retrying");
                self.schedule_reconnect();
            }
            ConnEvent::Inbound(Ok(Some(m))) => {
                if let Some(m) = m.msg {
                    self.on_server(m)?;
                }
            }
            ConnEvent::Inbound(Ok(None)) => {
                tracing::info!("the leader closed the session; reconnecting");
                self.forget_endpoint();
                self.schedule_reconnect();
            }
            ConnEvent::Inbound(Err(status)) => {
                if let Some(by) = status.metadata().get(DISPLACED_TRAILER) {
                    let by = by.to_str().unwrap_or("unknown").to_string();
                    tracing::error!(
                        instance = %self.instance,
                        displaced_by = %by,
                        running = self.exec.live(),
                        error = %status.message(),
                        "another agent process took this agent id over: stopping every task and exiting"
                    );
                    return Err(Displaced {
                        agent_id: self.config.id.clone(),
                        message: status.message().to_string(),
                    }
                    .into());
                }
                // The token was revoked or expired (or no longer allows a
                // session): no session will take it again.
                if matches!(
                    status.code(),
                    Code::Unauthenticated | Code::PermissionDenied
                ) {
                    let e = tidal_client::Error::new(status.code(), status.message());
                    return Err(self.credentials_refused(e, "session"));
                }
                self.forget_endpoint();
                if self.client.observe(&status) {
                    // The server named the new leader (it stepped down, handed
                    // leadership over or is shutting down): go there at once.
                    tracing::info!(code = ?status.code(), error = %status.message(), "session ended; reconnecting to the leader it named");
                    self.reconnect_delay = RECONNECT_MIN;
                    self.drop_session(Instant::now());
                } else {
                    tracing::warn!(code = ?status.code(), error = %status.message(), "session lost; reconnecting");
                    self.schedule_reconnect();
                }
            }
            ConnEvent::HeartbeatDue => self.heartbeat(),
            ConnEvent::Silent => {
                let timeout_ms = match &self.conn {
                    Conn::Open(o) => o.ack_timeout.as_millis() as u64,
                    _ => 0,
                };
                tracing::warn!(
                    timeout_ms,
                    "the leader has not acknowledged a heartbeat in time; looking for the leader again"
                );
                self.forget_endpoint();
                self.reconnect_delay = RECONNECT_MIN;
                self.drop_session(Instant::now());
            }
        }
        Ok(())
    }

    fn on_server(&mut self, m: In) -> anyhow::Result<()> {
        match m {
            In::Registered(r) => self.on_registered(r)?,
            In::HeartbeatAck(a) => {
                self.lease.acked(a.seq);
            }
            In::Assignment(a) => self.on_assignment(a),
            In::Cancel(c) => {
                if self.exec.kill(&c.task_id, c.token) {
                    tracing::info!(task_id = %c.task_id, token = c.token, reason = %c.reason, "task cancelled: killed");
                } else {
                    tracing::debug!(task_id = %c.task_id, token = c.token, "cancel for a task not running here");
                }
            }
            In::Stop(s) => self.on_stop(s),
            In::Suspend(s) => {
                if self.exec.suspend(&s.task_id, s.token) {
                    tracing::info!(task_id = %s.task_id, token = s.token, "suspending task (SIGSTOP to its process group, or its hook when its notice is by file)");
                } else {
                    tracing::warn!(task_id = %s.task_id, token = s.token, "suspend order for a task not running here under this token (or being stopped); ignored");
                }
            }
            In::Resume(r) => {
                if self.exec.resume(&r.task_id, r.token) {
                    tracing::info!(task_id = %r.task_id, token = r.token, "resuming task");
                } else {
                    tracing::warn!(task_id = %r.task_id, token = r.token, "resume order for a task not running here under this token (or being stopped); ignored");
                }
            }
            In::CheckpointAck(a) => {
                if self.outbox.checkpoint_answered(&a.task_id, a.token, a.seq) {
                    if a.accepted {
                        tracing::debug!(task_id = %a.task_id, token = a.token, seq = a.seq, "checkpoint committed");
                    } else {
                        tracing::info!(task_id = %a.task_id, token = a.token, seq = a.seq, reason = %a.reason, "checkpoint refused by the leader");
                    }
                }
            }
            In::CompletionAck(a) => {
                self.outbox.ack(&a.task_id, a.token);
                self.settle_checkpoints();
                if a.accepted {
                    tracing::debug!(task_id = %a.task_id, token = a.token, "completion accepted");
                } else {
                    tracing::info!(task_id = %a.task_id, token = a.token, reason = %a.reason, "completion rejected by the leader");
                }
            }
        }
        Ok(())
    }

    fn on_registered(&mut self, r: v1::Registered) -> anyhow::Result<()> {
        let server_ttl = Duration::from_millis(r.server_ttl_ms);
        if server_ttl.is_zero() {
            anyhow::bail!(
                "the leader sent a zero lease ttl; refusing to run tasks without a lease"
            );
        }
        let ttl = match self.config.lease_ttl(server_ttl) {
            Ok(t) => t,
            Err(e) => {
                return Err(anyhow::anyhow!(e).context("refusing to run a session with this leader"))
            }
        };
        let Conn::Open(open) = &mut self.conn else {
            return Ok(());
        };
        let every = Duration::from_millis(r.heartbeat_interval_ms)
            .min(ttl / 3)
            .max(MIN_HEARTBEAT);
        let mut hb = tokio::time::interval_at(Instant::now() + every, every);
        hb.set_missed_tick_behavior(MissedTickBehavior::Delay);
        open.heartbeat = Some(hb);
        open.ack_timeout = every * ACK_DEADLINE_BEATS;
        // The server's lease began when it received the Register, which was
        // sent after `opened_at`.
        if !r.displaced_instance.is_empty() {
            tracing::warn!(
                instance = %self.instance,
                displaced_instance = %r.displaced_instance,
                "another agent process held this agent id: this process took it over, and that \
                 one was told to stop its tasks and exit; its tasks run again here once its lease has ended"
            );
        }
        self.lease.set_ttl(ttl);
        self.lease.renewed_from(open.opened_at);
        self.reconnect_delay = RECONNECT_MIN;
        tracing::info!(
            endpoint = %open.endpoint,
            leader_id = r.leader_id,
            server_ttl_ms = r.server_ttl_ms,
            ttl_ms = ttl.as_millis() as u64,
            heartbeat_ms = every.as_millis() as u64,
            running = self.exec.live(),
            pending_completions = self.outbox.len(),
            "registered with the leader"
        );
        // The latest unanswered checkpoints first: a task's checkpoint
        // precedes its completion, as when it was first sent.
        for c in self.outbox.checkpoints_resent(Instant::now()) {
            self.send_if_registered(Out::Checkpoint(c));
        }
        let resend: Vec<v1::TaskCompleted> = self.outbox.pending().cloned().collect();
        for c in resend {
            self.send_if_registered(Out::Completed(c));
        }
        self.drain_again();
        Ok(())
    }

    /// Registered again while leaving after a committed drain: the drain
    /// ended if the agent was marked down meanwhile (it registered as
    /// ready), so it is asked for again, with what is left of the deadline.
    fn drain_again(&mut self) {
        let Some(l) = self.leaving.as_ref() else {
            return;
        };
        if l.step != LeaveStep::Drained || !l.known || l.local || l.call.is_some() {
            return;
        }
        let left = l.deadline.saturating_duration_since(Instant::now());
        tracing::info!(
            deadline_ms = left.as_millis() as u64,
            "registered again while leaving: asking the leader to drain this agent again"
        );
        let call = self.drain_call(left.as_millis() as u64);
        if let Some(l) = self.leaving.as_mut() {
            l.call = Some(call);
        }
    }

    /// The leader's order to stop a task (its drain's deadline passed), or
    /// to preempt it (`preempt`: notice, then a grace).
    fn on_stop(&mut self, s: v1::StopTask) {
        if s.preempt {
            // 0: the agent's own grace.
            let grace = match s.grace_ms {
                0 => self.config.stop_grace,
                ms => Duration::from_millis(ms),
            };
            let notice = match v1::PreemptNotice::try_from(s.notice) {
                Ok(v1::PreemptNotice::File) => Notice::File,
                _ => Notice::Signal,
            };
            if self.exec.preempt(&s.task_id, s.token, notice, grace) {
                tracing::info!(task_id = %s.task_id, token = s.token, reason = %s.reason, ?notice, grace_ms = grace.as_millis() as u64, "preempting task: notice given");
                return;
            }
        } else if self.exec.stop(&s.task_id, s.token, self.config.stop_grace) {
            tracing::info!(task_id = %s.task_id, token = s.token, reason = %s.reason, grace_ms = self.config.stop_grace.as_millis() as u64, "stopping task: SIGTERM to its process group, SIGKILL after the grace");
            return;
        }
        if self.outbox.get(&s.task_id, s.token).is_some() {
            tracing::debug!(task_id = %s.task_id, token = s.token, "stop for a task that already ended; its report settles it");
            return;
        }
        // Not running here under this token: this process never ran it, or
        // it ended and its report was settled. Another process (the one whose
        // agent id this one took over) may still run it, so a "stopped"
        // report from here could requeue it while that copy runs: none is
        // sent (the leader settles it once that process's lease has ended).
        // This token never starts here.
        self.stopped.push_back((s.task_id.clone(), s.token));
        while self.stopped.len() > STOPPED_TOKENS {
            self.stopped.pop_front();
        }
        tracing::warn!(task_id = %s.task_id, token = s.token, "stop order for a task this process does not run; not reporting it stopped (the leader requeues it once whoever may run it has stopped)");
    }

    fn on_assignment(&mut self, a: v1::Assignment) {
        if !self.registered() {
            tracing::warn!(task_id = %a.task_id, token = a.token, "assignment before registration; ignored");
            return;
        }
        if self
            .stopped
            .iter()
            .any(|(t, k)| *t == a.task_id && *k == a.token)
        {
            tracing::error!(
                task_id = %a.task_id,
                token = a.token,
                "refusing an assignment under a token this agent stopped (when it fenced itself, or on the leader's order); \
                 a token never runs twice (the leader regrants the task under a new token)"
            );
            return;
        }
        if let Some(done) = self.outbox.get(&a.task_id, a.token).cloned() {
            // Already ran under this token: the leader has not seen the result.
            self.send_if_registered(Out::Completed(done));
            return;
        }
        if let Some(local) = self.leaving.as_ref().map(|l| l.local) {
            // Leaving: nothing new starts here (the leader may place a task
            // before the drain is committed, or after this agent was marked
            // down and registered again as ready). Its token never runs here.
            self.stopped.push_back((a.task_id.clone(), a.token));
            while self.stopped.len() > STOPPED_TOKENS {
                self.stopped.pop_front();
            }
            if local {
                tracing::warn!(task_id = %a.task_id, token = a.token, "assignment while draining locally: not started; the leader requeues it once this agent's lease has ended");
                return;
            }
            // Handed back at once as stopped: requeued without spending an
            // attempt (the session it came on holds it, so the report counts).
            tracing::info!(task_id = %a.task_id, token = a.token, "assignment while leaving: not started; handing it back as stopped");
            let c = crate::executor::stopped(a.task_id, a.token);
            self.outbox.push(c.clone());
            self.send_if_registered(Out::Completed(c));
            return;
        }
        match self.exec.start(&a) {
            Start::Started => {
                tracing::info!(task_id = %a.task_id, token = a.token, attempt = a.attempt, "task started");
                self.send_if_registered(Out::Started(v1::TaskStarted {
                    task_id: a.task_id,
                    token: a.token,
                }));
            }
            Start::Duplicate => {
                tracing::debug!(task_id = %a.task_id, token = a.token, "duplicate assignment ignored");
            }
            Start::Failed(c) => {
                tracing::warn!(task_id = %c.task_id, token = c.token, error = %c.error, "task could not start");
                self.outbox.push(c.clone());
                self.send_if_registered(Out::Completed(c));
            }
        }
    }

    fn heartbeat(&mut self) {
        self.heartbeat_seq += 1;
        let seq = self.heartbeat_seq;
        // Invariant 6: the lease is renewed from this send time.
        self.lease.sent(seq, Instant::now());
        self.send_if_registered(Out::Heartbeat(v1::Heartbeat {
            seq,
            free_slots: self.exec.free_slots(),
        }));
    }

    fn registered(&self) -> bool {
        matches!(&self.conn, Conn::Open(o) if o.heartbeat.is_some())
    }

    /// Sends on the open, registered session; a full or closed queue means a
    /// stuck session, which is dropped (what it carried is resent later).
    fn send_if_registered(&mut self, m: Out) {
        let Conn::Open(open) = &self.conn else { return };
        if open.heartbeat.is_none() {
            return;
        }
        if let Err(e) = open.tx.try_send(v1::AgentMessage { msg: Some(m) }) {
            tracing::warn!(error = %e, "session outbound queue unusable; reconnecting");
            self.schedule_reconnect();
        }
    }

    /// Starts opening a session: Register with everything still held.
    fn connect(&mut self) {
        let mut running = self.exec.running();
        running.extend(self.outbox.held());
        let first = v1::AgentMessage {
            msg: Some(Out::Register(v1::Register {
                spec: Some(self.config.spec()),
                running,
                instance: self.instance.clone(),
                fenced: self
                    .fenced
                    .iter()
                    .map(|(task_id, token)| v1::RunningTask {
                        task_id: task_id.clone(),
                        token: *token,
                    })
                    .collect(),
            })),
        };
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let client = self.client.clone();
        tracing::debug!(leader = ?client.leader(), "opening a session");
        let handle = tokio::spawn(async move { client.open_session(first, rx).await });
        self.conn = Conn::Connecting { handle, tx };
    }

    /// The session's server failed or went silent: do not trust it to be
    /// the leader, nor its connection to be alive, on the next attempt.
    fn forget_endpoint(&self) {
        if let Conn::Open(open) = &self.conn {
            self.client.lost(&open.endpoint);
        }
    }

    fn schedule_reconnect(&mut self) {
        let d = self.reconnect_delay;
        self.reconnect_delay = (d * 2).min(RECONNECT_MAX);
        self.drop_session(Instant::now() + d);
    }

    fn drop_session(&mut self, retry_at: Instant) {
        if let Conn::Connecting { handle, .. } = &self.conn {
            handle.abort();
        }
        // Dropping the sender ends the outbound stream; dropping the inbound
        // stream cancels the call.
        self.conn = Conn::Idle { retry_at };
        self.lease.abandon_in_flight();
    }
}

/// The agent stopped because another agent process registered under its id
/// and the leader closed this one's session (`tidal agent` exits 6).
#[derive(Debug, thiserror::Error)]
#[error(
    "agent {agent_id:?} was taken over by another agent process; its tasks were stopped: {message}"
)]
pub struct Displaced {
    pub agent_id: String,
    pub message: String,
}

/// A name for this process, unique among agent processes: host, pid and
/// the start time.
fn instance_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!(
        "{host}:{}:{:x}",
        std::process::id(),
        nanos & 0xffff_ffff_ffff
    )
}

async fn next_conn_event(conn: &mut Conn, oldest_unacked: Option<Instant>) -> ConnEvent {
    match conn {
        Conn::Idle { retry_at } => {
            tokio::time::sleep_until(*retry_at).await;
            ConnEvent::ReconnectDue
        }
        Conn::Connecting { handle, .. } => match handle.await {
            Ok(r) => ConnEvent::Connected(r),
            Err(e) => ConnEvent::Connected(Err(tidal_client::Error::new(
                Code::Unavailable,
                format!("session task failed: {e}"),
            ))),
        },
        Conn::Open(open) => {
            let Open {
                inbound,
                heartbeat,
                ack_timeout,
                ..
            } = &mut **open;
            let silent_at = oldest_unacked
                .filter(|_| heartbeat.is_some())
                .map(|at| at + *ack_timeout);
            tokio::select! {
                m = inbound.message() => ConnEvent::Inbound(m),
                _ = tick_opt(heartbeat) => ConnEvent::HeartbeatDue,
                _ = sleep_until_opt(silent_at) => ConnEvent::Silent,
            }
        }
    }
}

/// The graceful exit's request in flight, if any.
async fn leave_call(leaving: &mut Option<Leaving>) -> Answer {
    match leaving.as_mut().and_then(|l| l.call.as_mut()) {
        // A request task that panicked or was aborted counts as done.
        Some(call) => call.await.unwrap_or(Answer::Done),
        None => std::future::pending().await,
    }
}

async fn tick_opt(i: &mut Option<Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
