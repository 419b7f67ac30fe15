//! The leader engine: what a leadership decides between entries, as a pure step function.
//!
//! In the shape of openraft's `Engine` and raft-rs's `RawNode`: the driver
//! ([`crate::leader::driver`]) feeds it [`Event`]s with the time passed in
//! ([`Now`]) and the applied state to read, and carries out the [`Action`]s it
//! leaves behind ([`Engine::take_actions`]). It then sleeps until
//! [`Engine::next_wake`] or the next event, whichever comes first.
//!
//! ```text
//!            events (Established, Tick, Work, Committed, NotCommitted, ...)
//!   driver ───────────────────────────────────────────────────▶ Engine::step
//!     ▲                                                            │
//!     └──────────── take_actions (Propose, ...), next_wake ◀──────┘
//! ```
//!
//! Nothing here is async, reads a clock, draws a random number or does I/O:
//! a handler that needs randomness takes it from [`EngineConfig::seed`].
//! Each handler lives in its own file beside this one, with a scenario file
//! under `testdata/engine/` (run by `scenario_test.rs`).
//!
//! A proposal is answered by `Committed` or `NotCommitted` with the id the
//! engine gave it; the engine remembers which handler proposed what
//! ([`Purpose`]) and routes the answer there.

pub mod sessions;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use tidal_core::command::{Command, Granted, Response};
use tidal_core::forwarding::{DcName, Record};
use tidal_core::model::{AgentId, FencingToken, TaskId};
use tidal_core::State;

mod drain;
mod expiry;
mod forward;
mod leases;
mod ship;
mod upgrade;

pub use drain::LOOK_EVERY_MS as DRAIN_LOOK_EVERY_MS;
pub use sessions::{Closed, Peer};

pub use expiry::{EXPIRE_BATCH, EXPIRE_EVERY_MS};
pub use forward::{ForwardPolicy, PeerSummary};
pub use ship::{LinkNews, PeerReply, SHIP_BATCH};
pub use upgrade::{version_to_raise, MemberFormat};

/// Names a proposal from the engine to its answer.
pub type ProposalId = u64;

/// The time, passed in: `mono_ms` (milliseconds since the leadership began,
/// never going back) for timers and leases, `wall_ms` (the Unix clock) for
/// what is compared with entries' timestamps (retention, `forward_after`,
/// drain deadlines).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Now {
    pub mono_ms: u64,
    pub wall_ms: u64,
}

/// Why a proposal did not commit (the server error, as text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposeError(pub String);

impl fmt::Display for ProposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Something that wakes a handler sooner than its timer (each replaces a
/// `Notify` the loops shared).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// New pending tasks (a submit).
    Submitted,
    /// Capacity came free or tasks went back to pending.
    Freed,
    /// A queue's settings changed.
    QueueSet,
    /// A drain started, ended or its deadline changed.
    DrainChanged,
}

/// What happens to a leadership. The driver turns I/O results into these.
#[derive(Clone, Debug)]
pub enum Event {
    /// The leadership's first entry committed: it acts from now on.
    Established,
    /// Time passed (`Now` says how much); due timers fire.
    Tick,
    /// Work that a handler should look at now.
    Work(Work),
    /// A proposal of the engine committed with this response at this index.
    Committed {
        id: ProposalId,
        index: u64,
        response: Response,
    },
    /// A proposal of the engine failed.
    NotCommitted { id: ProposalId, error: ProposeError },
    /// What the other members of the cluster last said of the format
    /// versions they support, as of now (the driver reads them before each
    /// timer `Tick`; the raiser looks when told).
    MemberFormats(Vec<MemberFormat>),
    /// The peer DCs' last summaries, as of now (the driver reads them
    /// before each timer `Tick`; the forwarder plans its round when told).
    PeerSummaries(Vec<(DcName, Option<PeerSummary>)>),
    /// A peer DC's answer to the exchange of [`Action::Exchange`], or why it failed.
    PeerAnswer {
        dc: DcName,
        answer: Result<PeerReply, String>,
    },
    // Handlers add their events below this line: agent sessions
    // (SessionOpened, SessionClosed, Heartbeat, StopReported, Granted,
    // Cancelled, Forgotten), member formats, peer answers.
    /// An agent process opened a session and registered (`leases`):
    /// `reported` are the runs it named (task ids as it sent them), and
    /// `attached_at` is the applied index of the state this step reads.
    SessionOpened {
        agent: AgentId,
        peer: Peer,
        reported: Vec<(String, FencingToken)>,
        attached_at: u64,
    },
    /// A session ended on its own (the agent went away, or sent garbage).
    SessionClosed { agent: AgentId, generation: u64 },
    /// A heartbeat on a session; `lease_holds`: a majority heard this
    /// leader within its lease when the driver looked (invariant 6).
    Heartbeat {
        agent: AgentId,
        generation: u64,
        seq: u64,
        lease_holds: bool,
    },
    /// The agent was deregistered.
    Forgotten { agent: AgentId },
    /// Assignments committed outside the engine, to push to their agents.
    Granted(Vec<Granted>),
    /// A committed cancel of a task this agent held under `token`.
    Cancelled {
        agent: AgentId,
        task: TaskId,
        token: FencingToken,
        reason: String,
    },
}

/// A message for an agent's session; the gRPC edge builds its wire form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToAgent {
    /// Run the task under `token` (the edge reads its spec and attempt from
    /// the applied state).
    Assign { task: TaskId, token: FencingToken },
    /// Stop running the task under `token`, for good (`task_id` as the agent
    /// named it, or the task's id).
    Cancel {
        task_id: String,
        token: FencingToken,
        reason: String,
    },
    /// Stop the task and report it stopped (a drain's deadline passed).
    Stop {
        task: TaskId,
        token: FencingToken,
        reason: String,
    },
    /// The heartbeat `seq` renewed the lease.
    HeartbeatAck { seq: u64 },
    /// The answer to a completion (or stop) report of the task (`task_id` as
    /// the agent named it) under `token`.
    CompletionAck {
        task_id: String,
        token: FencingToken,
        accepted: bool,
        reason: String,
    },
}

/// What the rest of the node reads of the engine between events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// Agents with a live session: the only ones placement may use.
    pub connected: Arc<BTreeSet<AgentId>>,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Propose `command`; answer with `Committed` or `NotCommitted` and `id`.
    Propose { id: ProposalId, command: Command },
    /// Send these outbox records (maybe none) to a peer DC, with this DC's
    /// summary; answer with [`Event::PeerAnswer`].
    Exchange {
        dc: DcName,
        records: Vec<(u64, Record)>,
    },
    /// Record what the link to a peer DC learned (the node's peer table).
    PeerLink { dc: DcName, news: LinkNews },
    /// Wake the dispatch loop (tasks a peer refused are pending again, an
    /// agent marked down freed its tasks).
    WakeDispatcher,
    // Handlers add their actions below this line: to agent sessions (Send,
    // Close, Attached), to peer DCs (Exchange, PeerLink), Publish.
    /// The answer to `SessionOpened`: the session's generation, the process
    /// it displaced, and the assignments to regrant (no earlier than
    /// `regrant_at`; counted as started first if `taken_over`).
    Attached {
        agent: AgentId,
        generation: u64,
        displaced: Option<Peer>,
        regrant: Vec<(TaskId, FencingToken)>,
        regrant_at: Option<u64>,
        taken_over: bool,
    },
    /// Close the agent's session of `generation` (it ends with `why`).
    Close {
        agent: AgentId,
        generation: u64,
        why: Closed,
    },
    /// The agent's session of `generation` ended on its own: drop its
    /// sending end.
    Detach { agent: AgentId, generation: u64 },
    /// Send `msg` on the agent's session of `generation` (dropped if that
    /// session is gone).
    Send {
        agent: AgentId,
        generation: u64,
        msg: ToAgent,
    },
    /// The view changed: publish it.
    Publish(View),
}

/// One handler of the engine; only the enabled ones act (the driver enables
/// the handlers whose loop has moved here; a scenario file names those it
/// tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Handler {
    // One variant per handler file: engine/<name>.rs.
    /// Retention's expirer (`expiry.rs`).
    Expiry,
    /// The format-version raiser (`upgrade.rs`).
    Upgrade,
    /// The cross-DC forwarder (`forward.rs`).
    Forward,
    /// The shippers, one per peer DC (`ship.rs`).
    Ship,
    /// Agent sessions, leases and the reaper (`leases.rs`).
    Leases,
    /// Drain deadlines' stop orders (`drain.rs`).
    Drain,
}

impl Handler {
    /// Every handler, in order.
    pub const ALL: &'static [Handler] = &[
        Handler::Expiry,
        Handler::Upgrade,
        Handler::Forward,
        Handler::Ship,
        Handler::Leases,
        Handler::Drain,
    ];

    /// The handler's name in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            Handler::Expiry => "expiry",
            Handler::Upgrade => "upgrade",
            Handler::Forward => "forward",
            Handler::Ship => "ship",
            Handler::Leases => "leases",
            Handler::Drain => "drain",
        }
    }
}

impl std::str::FromStr for Handler {
    type Err = String;

    fn from_str(s: &str) -> Result<Handler, String> {
        Handler::ALL
            .iter()
            .copied()
            .find(|h| h.name() == s)
            .ok_or_else(|| format!("no handler {s:?}"))
    }
}

/// The settings the engine decides by (from the server's configuration).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub node_id: u64,
    /// The handlers that act.
    pub handlers: BTreeSet<Handler>,
    /// Seeds any random choice a handler makes (none does yet).
    pub seed: u64,
    pub agent_ttl_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub retain_finished_ms: u64,
    pub raft_heartbeat_ms: u64,
    pub election_timeout_max_ms: u64,
    /// The highest cluster format version this node supports.
    pub supported_format: u8,
    /// The peer DCs, in preference order.
    pub peers: Vec<DcName>,
    pub forwarding: ForwardPolicy,
    /// Payload bytes per exchange (a batch stops early past this), so the
    /// receiver's ingest entry stays about this size.
    pub ship_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            node_id: 1,
            handlers: BTreeSet::new(),
            seed: 0,
            agent_ttl_ms: 10_000,
            heartbeat_interval_ms: 2_000,
            retain_finished_ms: 24 * 3600 * 1000,
            raft_heartbeat_ms: 100,
            election_timeout_max_ms: 600,
            supported_format: tidal_core::FORMAT_VERSION_MAX,
            peers: Vec::new(),
            forwarding: ForwardPolicy::default(),
            ship_bytes: 1 << 20,
        }
    }
}

/// Which handler proposed a command (and what it needs to handle the answer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    // One variant per proposing handler.
    /// An `Expire` batch; `full` if it held [`EXPIRE_BATCH`] tasks.
    Expire { full: bool },
    /// A `SetClusterVersion` from one version to another.
    RaiseVersion { from: u8, to: u8 },
    /// A `Forward` round.
    Forward,
    /// A `ForwardAck` of a peer's verdicts.
    ForwardAck(DcName),
    /// The reaper's `AgentDown` of this agent.
    AgentDown { agent: AgentId },
}

/// What a handler is given: the time, the applied state, the settings, and where to write.
pub(crate) struct Ctx<'a> {
    pub(crate) now: Now,
    pub(crate) state: &'a State,
    pub(crate) cfg: &'a EngineConfig,
    pub(crate) out: &'a mut Output,
}

/// Where handlers write: the actions for the driver and the proposals in flight.
#[derive(Debug, Default)]
pub(crate) struct Output {
    actions: Vec<Action>,
    next_id: ProposalId,
    inflight: BTreeMap<ProposalId, Purpose>,
}

impl Output {
    /// Proposes `command` for `purpose`; returns its id.
    pub(crate) fn propose(&mut self, purpose: Purpose, command: Command) -> ProposalId {
        self.next_id += 1;
        let id = self.next_id;
        self.inflight.insert(id, purpose);
        self.actions.push(Action::Propose { id, command });
        id
    }

    pub(crate) fn push(&mut self, action: Action) {
        self.actions.push(action);
    }
}

/// The leader engine of one leadership.
pub struct Engine {
    cfg: EngineConfig,
    established: bool,
    out: Output,
    expiry: expiry::Expiry,
    upgrade: upgrade::Upgrade,
    forward: forward::Forward,
    shippers: BTreeMap<DcName, ship::Shipper>,
    leases: leases::Leases,
    drain: drain::Drain,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine {
            established: false,
            out: Output::default(),
            expiry: expiry::Expiry::default(),
            upgrade: upgrade::Upgrade::default(),
            forward: forward::Forward::default(),
            shippers: BTreeMap::new(),
            leases: leases::Leases::new(cfg.agent_ttl_ms),
            drain: drain::Drain::default(),
            cfg,
        }
    }

    /// The agent sessions and leases, for the driver's questions between events.
    pub fn sessions(&self) -> &sessions::SessionTable {
        &self.leases.table
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Takes in one event at `now`, reading `state` (the applied state); then
    /// fires every timer that is due. The actions wait in
    /// [`Engine::take_actions`].
    pub fn step(&mut self, now: Now, state: &State, event: Event) {
        let mut cx = Ctx {
            now,
            state,
            cfg: &self.cfg,
            out: &mut self.out,
        };
        match event {
            Event::Established => {
                self.established = true;
                let on = |h| cx.cfg.handlers.contains(&h);
                if on(Handler::Expiry) {
                    self.expiry.start(now);
                }
                if on(Handler::Upgrade) {
                    self.upgrade.start(now);
                }
                if on(Handler::Forward) && !cx.cfg.peers.is_empty() {
                    self.forward.start(now);
                }
                if on(Handler::Ship) {
                    for dc in &cx.cfg.peers {
                        let mut shipper = ship::Shipper::new(dc.clone());
                        shipper.start(now);
                        self.shippers.insert(dc.clone(), shipper);
                    }
                }
                if on(Handler::Leases) {
                    self.leases.start(&mut cx);
                }
                if on(Handler::Drain) {
                    self.drain.start(now);
                }
            }
            Event::Tick => {}
            Event::Work(work) => {
                if work == Work::Submitted {
                    self.forward.work(now);
                }
                if work == Work::DrainChanged {
                    self.drain.changed(now);
                }
            }
            Event::Committed {
                id,
                index,
                response,
            } => match cx.out.inflight.remove(&id) {
                Some(Purpose::Expire { full }) => {
                    self.expiry.committed(full, index, response, &mut cx)
                }
                Some(Purpose::RaiseVersion { from, to }) => {
                    self.upgrade.committed((from, to), index, response, cx.cfg)
                }
                Some(Purpose::Forward) => self.forward.committed(index, response, now),
                Some(Purpose::ForwardAck(dc)) => {
                    if let Some(shipper) = self.shippers.get_mut(&dc) {
                        if shipper.committed(index, response, &mut cx) {
                            cx.out.push(Action::WakeDispatcher);
                        }
                    }
                }
                Some(Purpose::AgentDown { agent }) => {
                    self.leases.committed(&mut cx, agent, index, response)
                }
                None => {}
            },
            Event::NotCommitted { id, error } => match cx.out.inflight.remove(&id) {
                Some(Purpose::Expire { .. }) => self.expiry.not_committed(&error),
                Some(Purpose::RaiseVersion { to, .. }) => {
                    self.upgrade.not_committed(to, &error, cx.cfg)
                }
                Some(Purpose::Forward) => self.forward.not_committed(&error, now),
                Some(Purpose::ForwardAck(dc)) => {
                    if let Some(shipper) = self.shippers.get_mut(&dc) {
                        shipper.not_committed(&error, &mut cx);
                    }
                }
                Some(Purpose::AgentDown { agent }) => {
                    self.leases.not_committed(&mut cx, agent, &error)
                }
                None => {}
            },
            Event::MemberFormats(formats) => self.upgrade.told(&formats, &mut cx),
            Event::PeerSummaries(peers) => self.forward.told(&peers, &mut cx),
            Event::PeerAnswer { dc, answer } => {
                if let Some(shipper) = self.shippers.get_mut(&dc) {
                    shipper.answered(answer, &mut cx);
                }
            }
            // Sessions open only once the leadership acts.
            _ if !self.established || !cx.cfg.handlers.contains(&Handler::Leases) => {}
            Event::SessionOpened {
                agent,
                peer,
                reported,
                attached_at,
            } => self
                .leases
                .opened(&mut cx, agent, peer, reported, attached_at),
            Event::SessionClosed { agent, generation } => {
                self.leases.closed(&mut cx, agent, generation)
            }
            Event::Heartbeat {
                agent,
                generation,
                seq,
                lease_holds,
            } => self
                .leases
                .heartbeat(&mut cx, agent, generation, seq, lease_holds),
            Event::Forgotten { agent } => self.leases.forget(&mut cx, &agent),
            Event::Granted(granted) => self.leases.granted(&mut cx, granted),
            Event::Cancelled {
                agent,
                task,
                token,
                reason,
            } => self.leases.cancelled(&mut cx, agent, task, token, reason),
        }
        if self.established {
            // Each enabled handler whose timer is due at `now` (a handler
            // that was not started has none).
            self.expiry.fire(&mut cx);
            for shipper in self.shippers.values_mut() {
                shipper.fire(&mut cx);
            }
            self.leases.fire(&mut cx);
            self.drain.fire(&mut cx, &self.leases.table);
        }
    }

    /// The actions since the last call, in the order they were decided.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out.actions)
    }

    /// The earliest `mono_ms` at which a timer is due, if any: the driver
    /// steps a [`Event::Tick`] then (or earlier, with another event).
    pub fn next_wake(&self) -> Option<u64> {
        let wakes = [
            self.expiry.next_wake(),
            self.upgrade.next_wake(),
            self.forward.next_wake(),
            self.leases.next_wake(),
            self.drain.next_wake(),
        ];
        let ships = self.shippers.values().map(ship::Shipper::next_wake);
        wakes.into_iter().chain(ships).flatten().min()
    }

    /// Proposals sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.out.inflight.len()
    }
}

#[cfg(test)]
mod scenario_test;
