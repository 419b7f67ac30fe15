//! What happens to a leadership: the events the driver feeds the engine, and the time and facts they carry.

use std::fmt;

use tidal_core::command::{Granted, Response};
use tidal_core::forwarding::{CapabilitySummary, DcName, Verdict};
use tidal_core::model::{AgentId, FencingToken, TaskId};

use super::sessions::Peer;

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

/// Why a proposal did not commit: the server error, as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposeError {
    pub text: String,
    /// The cluster refused the command for good (its format version lacks
    /// it), rather than failing to commit it now.
    pub failed_precondition: bool,
}

impl ProposeError {
    /// A failure to commit now (no quorum, not the leader, ...).
    pub fn failed(text: impl Into<String>) -> ProposeError {
        ProposeError {
            text: text.into(),
            failed_precondition: false,
        }
    }
}

impl fmt::Display for ProposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
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
    /// A peer DC's tasks were taken in (new pending tasks that are not
    /// this DC's submits).
    Ingested,
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
    // Cancelled, Forgotten, TokenRevoked), member formats, peer answers.
    /// An agent process opened a session and registered (`leases`):
    /// `reported` are the runs it named (task ids as it sent them),
    /// `fenced` the runs it killed when it fenced itself, and `attached_at`
    /// is the applied index of the state this step reads.
    SessionOpened {
        agent: AgentId,
        peer: Peer,
        reported: Vec<(String, FencingToken)>,
        fenced: Vec<(String, FencingToken)>,
        attached_at: u64,
        /// The models the process reported loaded (validated and bounded
        /// by the edge).
        warm_models: Vec<String>,
    },
    /// A session ended on its own (the agent went away, or sent garbage).
    SessionClosed { agent: AgentId, generation: u64 },
    /// A heartbeat on a session; `lease_holds`: a majority heard this
    /// leader within its lease when the driver looked (invariant 6);
    /// `warm_models`: the models the agent has loaded now (validated and
    /// bounded by the edge).
    Heartbeat {
        agent: AgentId,
        generation: u64,
        seq: u64,
        lease_holds: bool,
        warm_models: Vec<String>,
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
    /// The agent's session `generation` reports the task (`task_id` as the
    /// agent named it) under `token` stopped on a drain's order.
    StopReported {
        agent: AgentId,
        generation: u64,
        task_id: String,
        token: FencingToken,
    },
    /// A token was revoked (its `RevokeToken` applied here): sessions that
    /// opened with it close now, not at their next heartbeat.
    TokenRevoked,
}

/// What a peer DC last said of itself: what it can run and how many tasks wait there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerSummary {
    pub capabilities: CapabilitySummary,
    pub pending: u64,
}

impl PeerSummary {
    /// Free slots less the tasks already waiting: what a new task may find.
    pub fn room(&self) -> u32 {
        u64::from(self.capabilities.free_slots()).saturating_sub(self.pending) as u32
    }
}

/// A peer's answer to an exchange.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerReply {
    pub summary: PeerSummary,
    /// Its verdicts on the records sent.
    pub verdicts: Vec<(u64, Verdict)>,
    /// This DC's high-water mark there after the exchange.
    pub hwm: u64,
}

/// What the leader last heard of one other member's supported versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberFormat {
    pub id: u64,
    /// The highest version it supports and how long ago it said so (ms);
    /// `None` if it never replied.
    pub format: Option<(u8, u64)>,
}
