//! The session loop: one stream to the leader, heartbeats, assignments,
//! completions, checkpoints, stops and preemptions, suspends and resumes,
//! reconnects, self-fencing and a graceful exit (drain, then deregister).
//!
//! Everything the agent owns (children, outbox, lease) lives in one task: the
//! loop in `run` ([`Agent::run`]). Opening a session runs in a spawned task so the
//! lease keeps being watched while the leader is being looked for.
//!
//! This module holds the agent's state ([`Agent`] and what it is made of);
//! its children hold what the loop does with it, each an `impl Agent`:
//! - `run`: the loop itself, and the kill of every task when it ends;
//! - `conn`: opening, registering, heartbeating and losing sessions;
//! - `orders`: the leader's messages (assignments, cancels, stops and
//!   preemptions, suspends and resumes, acks);
//! - `reports`: the children's events (completions, checkpoints and their
//!   resends);
//! - `drain`: the graceful exit (drain, then deregister);
//! - `fencing`: self-fencing, and credentials refused.
//!
//! The children import this module, never each other but for `run`, which
//! awaits the futures `conn` and `drain` define.

mod conn;
mod drain;
mod fencing;
mod orders;
mod reports;
mod run;

use std::time::Duration;

use anyhow::Context as _;
use tidal_client::{Client, ClientOptions, Session};
use tidal_proto::v1;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval};

use crate::config::AgentConfig;
use crate::executor::{ExecEvent, ExecSettings, Executor};
use crate::fence::Lease;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::warm::WarmModels;

/// Reconnect backoff: from this, doubling, up to `RECONNECT_MAX`.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Tokens this agent stopped (self-fence, stop orders), remembered so that none
/// is ever started again (the leader regrants them under new tokens).
const STOPPED_TOKENS: usize = 4096;

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
    /// `--warm-models-file`: read before every heartbeat and registration.
    warm: Option<WarmModels>,
    /// What `--metrics-listen` serves (kept whether or not it is on).
    metrics: std::sync::Arc<Metrics>,
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
        let warm = match &config.warm_models_file {
            Some(p) => Some(WarmModels::new(
                std::path::absolute(p)
                    .with_context(|| format!("--warm-models-file {}", p.display()))?,
            )),
            None => None,
        };
        let cuda_visible = crate::executor::cuda_visible_of_env();
        crate::executor::check_visible(config.gpus.len(), cuda_visible.as_deref())
            .map_err(|e| anyhow::anyhow!(e))?;
        let (exec, events) = Executor::new(
            ExecSettings {
                agent_id: config.id.clone(),
                command: config.command.clone(),
                max_result_bytes: config.max_result_bytes,
                kill_grace: config.stop_grace,
                warm_models_file: warm.as_ref().map(|w| w.path().to_path_buf()),
                cuda_visible,
            },
            config.slots,
        );
        Ok(Agent {
            metrics: std::sync::Arc::new(Metrics::new(&config.task_types)),
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
            warm,
        })
    }

    /// The models loaded here now (read from `--warm-models-file`; none
    /// without it).
    fn warm_models(&mut self) -> Vec<String> {
        self.warm.as_mut().map(WarmModels::read).unwrap_or_default()
    }

    /// Remembers that this task's `token` never starts here again (the
    /// most recent [`STOPPED_TOKENS`]).
    fn never_start(&mut self, task_id: String, token: u64) {
        self.stopped.push_back((task_id, token));
        while self.stopped.len() > STOPPED_TOKENS {
            self.stopped.pop_front();
        }
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

async fn sleep_until_opt(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
