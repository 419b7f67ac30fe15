//! The session loop: one stream to the leader, heartbeats, assignments,
//! completions, reconnects and self-fencing.
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
/// Tokens this agent stopped when it fenced itself, remembered so that none
/// is ever started again (the leader regrants them under new tokens).
const STOPPED_TOKENS: usize = 4096;

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
    LeaseExpired,
    Exec(ExecEvent),
    Conn(ConnEvent),
}

/// The agent runtime's state, owned by its one loop.
pub(crate) struct Agent {
    config: AgentConfig,
    client: Client,
    exec: Executor,
    events: mpsc::UnboundedReceiver<ExecEvent>,
    outbox: Outbox,
    lease: Lease,
    conn: Conn,
    heartbeat_seq: u64,
    reconnect_delay: Duration,
    /// (task, token) pairs stopped by a self-fence: never started again.
    stopped: std::collections::VecDeque<(String, u64)>,
    /// Tests watch the children's events through this.
    observer: Option<mpsc::UnboundedSender<ExecEvent>>,
}

impl Agent {
    pub(crate) fn new(
        config: AgentConfig,
        observer: Option<mpsc::UnboundedSender<ExecEvent>>,
    ) -> anyhow::Result<Agent> {
        config.validate().context("invalid agent configuration")?;
        let options = ClientOptions {
            source_ip: config.source_ip,
            ..ClientOptions::default()
        };
        let client = Client::with_options(config.endpoints.clone(), options)
            .context("invalid server endpoints")?;
        let (exec, events) = Executor::new(
            ExecSettings {
                agent_id: config.id.clone(),
                command: config.command.clone(),
                max_result_bytes: config.max_result_bytes,
            },
            config.slots,
        );
        Ok(Agent {
            lease: Lease::new(config.ttl.unwrap_or(Duration::from_secs(1))),
            config,
            client,
            exec,
            events,
            outbox: Outbox::new(),
            conn: Conn::Idle {
                retry_at: Instant::now(),
            },
            heartbeat_seq: 0,
            reconnect_delay: RECONNECT_MIN,
            stopped: std::collections::VecDeque::new(),
            observer,
        })
    }

    #[tracing::instrument(name = "agent", skip_all, fields(agent_id = %self.config.id))]
    pub(crate) async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        tracing::info!(endpoints = ?self.config.endpoints, slots = self.config.slots, "agent starting");
        let outcome = loop {
            let ev = tokio::select! {
                biased;
                _ = &mut shutdown => Event::Shutdown,
                _ = sleep_until_opt(self.lease.deadline()) => Event::LeaseExpired,
                Some(e) = self.events.recv() => Event::Exec(e),
                c = next_conn_event(&mut self.conn, self.lease.oldest_unacked()) => Event::Conn(c),
            };
            // Invariant 6: whatever arrived, a lapsed lease is acted on first,
            // so nothing (not even a late Registered) extends it.
            if self.lease.expired(Instant::now()) {
                self.fence();
            }
            let step = match ev {
                Event::Shutdown => break Ok(()),
                Event::LeaseExpired => Ok(()),
                Event::Exec(e) => {
                    self.on_exec(e);
                    Ok(())
                }
                Event::Conn(c) => self.on_conn(c),
            };
            if let Err(e) = step {
                break Err(e);
            }
        };
        self.stop().await;
        outcome
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

    /// The lease lapsed: stop all work and drop its tokens. Their results are
    /// not reported; the server requeues the tasks after its own TTL.
    fn fence(&mut self) {
        for r in self.exec.running() {
            self.stopped.push_back((r.task_id, r.token));
        }
        while self.stopped.len() > STOPPED_TOKENS {
            self.stopped.pop_front();
        }
        let killed = self.exec.kill_all();
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

    fn on_exec(&mut self, e: ExecEvent) {
        if let Some(c) = self.exec.on_event(&e) {
            tracing::info!(task_id = %c.task_id, token = c.token, success = c.success, exit_code = c.exit_code, "task finished");
            self.outbox.push(c.clone());
            self.send_if_registered(Out::Completed(c));
        }
        self.observe(e);
    }

    fn on_conn(&mut self, c: ConnEvent) -> anyhow::Result<()> {
        match c {
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
                if matches!(
                    e.code,
                    Code::InvalidArgument
                        | Code::PermissionDenied
                        | Code::Unauthenticated
                        | Code::Unimplemented
                ) {
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
                self.forget_endpoint();
                self.client.observe(&status);
                tracing::warn!(code = ?status.code(), error = %status.message(), "session lost; reconnecting");
                self.schedule_reconnect();
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
            In::CompletionAck(a) => {
                self.outbox.ack(&a.task_id, a.token);
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
        let resend: Vec<v1::TaskCompleted> = self.outbox.pending().cloned().collect();
        for c in resend {
            self.send_if_registered(Out::Completed(c));
        }
        Ok(())
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
                "refusing an assignment under a token this agent stopped when it fenced itself; \
                 a token never runs twice (the leader regrants the task under a new token)"
            );
            return;
        }
        if let Some(done) = self.outbox.get(&a.task_id, a.token).cloned() {
            // Already ran under this token: the leader has not seen the result.
            self.send_if_registered(Out::Completed(done));
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
