//! Commands (the payload of every Raft entry) and their responses.

use serde::{Deserialize, Serialize};

use crate::forwarding::{DcName, Record, Verdict};
use crate::model::{AgentId, AgentSpec, FencingToken, Outcome, Strategy, TaskId, TaskSpec};

/// What the leader writes into one Raft entry: the command and the leader's
/// clock at proposal time. Apply reads time only from here, never from a clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version of the command encoding, so mixed-version clusters can
    /// refuse what they do not understand.
    pub version: u8,
    pub time_ms: u64,
    pub command: Command,
}

impl Envelope {
    pub const VERSION: u8 = 1;
    pub fn new(time_ms: u64, command: Command) -> Self {
        Envelope {
            version: Self::VERSION,
            time_ms,
            command,
        }
    }
}

/// Context of one apply: where the entry sits in the log and its time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApplyCtx {
    /// The entry's Raft log index; becomes the fencing token of assignments.
    pub log_index: u64,
    /// The leader's clock, from the entry.
    pub time_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A batch of submits; each item is accepted or rejected on its own.
    Submit(Vec<TaskSpec>),
    Cancel {
        task: TaskId,
    },
    /// Register or update an agent; it becomes Ready.
    RegisterAgent(AgentSpec),
    DeregisterAgent {
        agent: AgentId,
    },
    /// The agent missed its lease: it becomes Down and its tasks are requeued
    /// with attempt + 1 (or fail once max_attempts is reached).
    AgentDown {
        agent: AgentId,
    },
    /// One dispatch round; each pair is validated at apply.
    Assign(Vec<(TaskId, AgentId)>),
    Started {
        task: TaskId,
        token: FencingToken,
    },
    /// Completions, batched; each checked against the task's current token.
    Complete(Vec<Completion>),
    SetQueue {
        name: String,
        weight: u32,
        strategy: Strategy,
    },
    /// A no-op entry (used by tests and to carry time).
    Noop,
    /// Starts reported by agents, batched: each is checked on its own like
    /// `Started` (which stays for logs written before this existed).
    StartedBatch(Vec<(TaskId, FencingToken)>),
    /// Hand Pending tasks to peer DCs: each becomes Forwarded and a task
    /// record is appended to that peer's outbox.
    Forward(Vec<(TaskId, DcName)>),
    /// Records shipped by an origin DC, in its sequence order; deduplicated
    /// by (origin, sequence) and by (origin, origin task id).
    Ingest {
        origin: DcName,
        records: Vec<(u64, Record)>,
    },
    /// A peer's verdicts on records of our outbox: they leave the outbox; a
    /// refused task goes back to Pending here.
    ForwardAck {
        peer: DcName,
        verdicts: Vec<(u64, Verdict)>,
    },
    /// A batch of submits that also assigns some of the new tasks, so a task
    /// that finds a free agent is assigned by the entry that creates it (one
    /// commit from submit to assignment instead of two). `place` pairs an
    /// index into `specs` with an agent; each pair is granted if the task is
    /// new and passes the checks of `Assign`; a refused pair leaves the task
    /// Pending for the dispatcher. Which tasks to place (none that would
    /// overtake a waiting one) is the leader's plan, as for `Assign`.
    SubmitPlaced {
        specs: Vec<TaskSpec>,
        place: Vec<(u32, AgentId)>,
    },
    /// Tasks an agent holds that it does not run: its session began without
    /// them in its running list (it stopped them when it fenced itself, or
    /// never received them). Their tokens are never sent again: each task
    /// still held by `agent` under the given token is granted anew to the
    /// same agent under this entry's index, or goes back to Pending when the
    /// agent can no longer take it. An assignment the agent never started
    /// keeps its attempt; a started one spends it (and fails once
    /// `max_attempts` is used up), as when an agent is lost.
    Regrant {
        agent: AgentId,
        tasks: Vec<(TaskId, FencingToken)>,
    },
    /// Drains an agent (or changes the deadline of its drain): it takes no
    /// new work, its tasks finish; at `deadline_ms`, an absolute time on the
    /// leader's clock computed when the leader proposed this entry, the
    /// leader has the agent stop the tasks it still holds (they come back
    /// through `Stopped`). `None`: no deadline. A drain lasts across the
    /// agent's reconnects, until `UndrainAgent`, until it is deregistered,
    /// or until it is marked down (which takes its tasks back anyway).
    DrainAgent {
        agent: AgentId,
        deadline_ms: Option<u64>,
    },
    /// Ends an agent's drain: it is Ready again.
    UndrainAgent {
        agent: AgentId,
    },
    /// Tasks their agent stopped on the leader's order (a drain's deadline
    /// passed), each with the token it ran under: one still held under
    /// that token goes back to Pending without spending an attempt (the
    /// next assignment has the attempt number this one had). Checked
    /// against the current token like a completion.
    Stopped(Vec<(TaskId, FencingToken)>),
    /// Retention: removes finished tasks (succeeded, failed, cancelled, or
    /// forwarded and finished there) and their idempotency keys. Each task
    /// must have finished at or before `before_ms`, which must not be after
    /// the entry's time, so every replica removes the same tasks at the same
    /// index; the leader picks them from [`crate::State::finished_before`].
    Expire {
        before_ms: u64,
        tasks: Vec<TaskId>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    pub task: TaskId,
    pub token: FencingToken,
    pub outcome: Outcome,
}

/// Why a command (or one item of a batch) was not applied. Data, never a panic:
/// a committed entry cannot fail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A size over a documented limit (payload bytes, models per task).
    #[error("over a limit: {0}")]
    OverLimit(String),
    #[error("task {0} not found")]
    TaskNotFound(TaskId),
    #[error("agent {0:?} not found")]
    AgentNotFound(AgentId),
    #[error("queue {0:?} does not exist (create it with `tidal queue set`)")]
    QueueNotFound(String),
    #[error("stale fencing token {presented} for task {task}: current is {current:?}")]
    StaleToken {
        task: TaskId,
        presented: FencingToken,
        current: Option<FencingToken>,
    },
    #[error("task {task} is {state}, which does not allow this")]
    WrongState { task: TaskId, state: String },
    #[error("agent {agent:?} cannot take task {task}: {reason}")]
    Ineligible {
        task: TaskId,
        agent: AgentId,
        reason: String,
    },
    #[error("unsupported command format version {0}")]
    UnsupportedVersion(u8),
    #[error("agent {agent:?} is {state}, which does not allow this")]
    AgentWrongState { agent: AgentId, state: String },
    /// A submit whose idempotency key was used before for a task with
    /// another spec (compared as [`crate::state::same_spec`] does).
    #[error(
        "idempotency key {key:?} is already used by task {existing}, which was submitted \
         with a different spec: use a new key, or resend the same spec to get {existing} back"
    )]
    KeyConflict { key: String, existing: TaskId },
    /// A completion for a task that has already ended: one completion per
    /// attempt is ever accepted, a resent or a second one is refused.
    #[error("task {task} already finished as {state}")]
    Finished { task: TaskId, state: String },
}

/// The outcome of one submitted item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    pub id: TaskId,
    /// The idempotency key was already used; `id` is the existing task.
    pub existed: bool,
}

/// One accepted assignment, to be pushed to the agent after commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    pub task: TaskId,
    pub agent: AgentId,
    pub token: FencingToken,
    pub attempt: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Submitted(Vec<Result<Submitted, Rejection>>),
    /// SubmitPlaced: one result per spec, in order, and the granted pairs.
    SubmittedPlaced {
        submitted: Vec<Result<Submitted, Rejection>>,
        granted: Vec<Granted>,
    },
    /// Assign: the granted pairs (rejected pairs are left out, with reasons).
    Assigned {
        granted: Vec<Granted>,
        rejected: Vec<(TaskId, Rejection)>,
    },
    /// Complete: one result per completion, in order.
    Completed(Vec<Result<(), Rejection>>),
    /// Cancel: the task's holder before the cancel, so the leader can tell it.
    Cancelled {
        task: TaskId,
        holder: Option<(AgentId, FencingToken)>,
    },
    /// AgentDown: the tasks that went back to Pending and those that failed.
    AgentDown {
        requeued: Vec<TaskId>,
        failed: Vec<TaskId>,
    },
    Ok,
    Rejected(Rejection),
    /// StartedBatch: one result per report, in order.
    StartedBatch(Vec<Result<(), Rejection>>),
    /// Regrant: the new grants, the tasks that went back to Pending, those
    /// that failed (attempts used up), and items no longer held as named.
    Regranted {
        granted: Vec<Granted>,
        requeued: Vec<TaskId>,
        failed: Vec<TaskId>,
        rejected: Vec<(TaskId, Rejection)>,
    },
    /// Forward: per pair, the outbox sequence of its record.
    Forwarded(Vec<Result<u64, Rejection>>),
    /// Ingest: a verdict for each record taken (new or duplicate), and the
    /// origin's high-water mark after the entry. Records after a gap in the
    /// sequence are not taken and get no verdict.
    Ingested {
        verdicts: Vec<(u64, Verdict)>,
        hwm: u64,
        /// Tasks the origin cancelled that an agent here held, with the
        /// holder, so the leader can tell it.
        cancelled: Vec<(TaskId, AgentId, FencingToken)>,
    },
    /// Stopped: one result per item, in order.
    Stopped(Vec<Result<(), Rejection>>),
    /// Expire: the tasks removed, and those refused (not finished, finished
    /// after the cut-off, or gone).
    Expired {
        removed: Vec<TaskId>,
        rejected: Vec<(TaskId, Rejection)>,
    },
}

/// Rough encoded size of a task spec: its variable-length fields plus a
/// fixed overhead. Used to keep Raft entries and replication messages to
/// about a megabyte; not exact, never zero.
pub fn spec_bytes(s: &crate::model::TaskSpec) -> usize {
    64 + s.payload.len()
        + s.task_type.len()
        + s.pipeline.len()
        + s.queue.len()
        + s.tenant.len()
        + s.idempotency_key.as_ref().map_or(0, String::len)
        + s.models.iter().map(|m| m.len() + 8).sum::<usize>()
}

impl Completion {
    /// Rough encoded size (see [`spec_bytes`]).
    pub fn approx_bytes(&self) -> usize {
        48 + self.outcome.result.len() + self.outcome.error.len()
    }
}

impl Command {
    /// Rough encoded size of the command (see [`spec_bytes`]).
    pub fn approx_bytes(&self) -> usize {
        use crate::forwarding::Record;
        let record = |r: &Record| match r {
            Record::Task { spec, .. } => 16 + spec_bytes(spec),
            Record::Cancel { .. } => 16,
            Record::Status(s) => 64 + s.result.len() + s.error.len(),
        };
        16 + match self {
            Command::Submit(specs) => specs.iter().map(spec_bytes).sum(),
            Command::SubmitPlaced { specs, place } => {
                specs.iter().map(spec_bytes).sum::<usize>()
                    + place.iter().map(|(_, a)| 8 + a.len()).sum::<usize>()
            }
            Command::Complete(list) => list.iter().map(Completion::approx_bytes).sum(),
            Command::Assign(pairs) => pairs.iter().map(|(_, a)| 16 + a.len()).sum(),
            Command::StartedBatch(list) => list.len() * 16,
            Command::Regrant { agent, tasks } => agent.len() + tasks.len() * 16,
            Command::RegisterAgent(spec) => {
                256 + spec
                    .labels
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>()
            }
            Command::Forward(pairs) => pairs.iter().map(|(_, dc)| 16 + dc.len()).sum(),
            Command::Ingest { records, .. } => records.iter().map(|(_, r)| record(r)).sum(),
            Command::ForwardAck { verdicts, .. } => verdicts.len() * 32,
            Command::Expire { tasks, .. } => tasks.len() * 8,
            Command::Stopped(list) => list.len() * 16,
            _ => 64,
        }
    }
}
