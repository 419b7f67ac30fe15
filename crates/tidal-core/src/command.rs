//! Commands (the payload of every Raft entry) and their responses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::access::types::{Principal, TenantLimits, TokenId, TokenRecord};
use crate::forwarding::types::{DcName, Record, Verdict};
use crate::lifecycle::types::{Headroom, Notice, TaskOptions};
use crate::model::{
    AgentId, AgentSpec, FencingToken, Outcome, Priority, Strategy, TaskId, TaskSpec,
};

/// The oldest cluster format version: what every cluster starts at, and the
/// only one a build from before format versions knows.
pub const FORMAT_VERSION_MIN: u8 = 1;
/// The newest cluster format version this build knows (README: Rolling
/// upgrade). Version 2 adds drains, stops and retention's expiry (see
/// [`Command::required_version`]) and the envelope layout that lets a node
/// read an entry's version before its command. Version 3 adds tokens,
/// tenants and who submitted what ([`crate::access`]), and the access
/// section of snapshots. Version 4 adds tasks' lifecycles: retries with
/// backoff, attempt history, dead letters, deadlines, checkpoints,
/// headroom ([`crate::lifecycle`]), and the lifecycle section of snapshots.
/// Version 5 adds placement: label constraints, tags and tag rules, GPU
/// shapes and devices, queue strategies, GPU weights ([`crate::placement`]),
/// and the placement section of snapshots.
pub const FORMAT_VERSION_MAX: u8 = 5;

/// What the leader writes into one Raft entry: the command and the leader's
/// clock at proposal time. Apply reads time only from here, never from a clock.
///
/// `version` is the format version the entry needs: the command's
/// [`Command::required_version`]. Its encoding (bincode, as a struct of
/// three fields) depends on it:
///
/// - version 1: `version`, `time_ms`, then the command inline, exactly as
///   builds from before format versions write and read it;
/// - version 2 and later: `version`, `time_ms`, then the command's own
///   bincode as a byte string. A node reads the version and the time first
///   and keeps the command's bytes as they are when it cannot decode them
///   ([`Body::Undecoded`]): a newer variant is then "needs version N", never
///   a decode error of the whole entry, and the entry is stored and passed on
///   unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The format version of the entry (see above).
    pub version: u8,
    pub time_ms: u64,
    pub body: Body,
}

/// An entry's command, or the bytes of one this build cannot read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Command(Command),
    /// A command of a format version this build does not know, or one that
    /// does not decode. Applying it is not possible: the node stops
    /// (tidal-store halts apply) instead of skipping it.
    Undecoded {
        /// The command's encoded bytes, kept so the entry re-encodes as it was.
        bytes: Vec<u8>,
        /// Why it could not be read.
        reason: String,
    },
}

impl Envelope {
    /// The version builds from before format versions wrote (and the only
    /// one they accept).
    pub const VERSION: u8 = FORMAT_VERSION_MIN;

    /// An entry for `command`, of the format version it needs.
    pub fn new(time_ms: u64, command: Command) -> Self {
        Envelope {
            version: command.required_version(),
            time_ms,
            body: Body::Command(command),
        }
    }

    /// Rough encoded size of the entry's command (see [`spec_bytes`]).
    pub fn approx_bytes(&self) -> usize {
        match &self.body {
            Body::Command(c) => c.approx_bytes(),
            Body::Undecoded { bytes, .. } => 16 + bytes.len(),
        }
    }

    /// The command, if this build could decode it.
    pub fn command(&self) -> Option<&Command> {
        match &self.body {
            Body::Command(c) => Some(c),
            Body::Undecoded { .. } => None,
        }
    }
}

fn encode_command(command: &Command) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(command, bincode::config::standard()).map_err(|e| e.to_string())
}

/// Decodes a command of an entry of format `version` from its bytes.
fn decode_command(version: u8, bytes: &[u8]) -> Body {
    let undecoded = |reason: String| Body::Undecoded {
        bytes: bytes.to_vec(),
        reason,
    };
    if version > FORMAT_VERSION_MAX {
        return undecoded(format!(
            "the entry needs cluster format version {version}; this build knows versions \
             {FORMAT_VERSION_MIN} to {FORMAT_VERSION_MAX}"
        ));
    }
    match crate::bounded::decode_from_slice::<Command>(bytes) {
        Ok((command, used)) if used == bytes.len() && command.required_version() <= version => {
            Body::Command(command)
        }
        Ok((command, used)) if used == bytes.len() => undecoded(format!(
            "an entry of format version {version} holds a command of version {}",
            command.required_version()
        )),
        Ok((_, used)) => undecoded(format!(
            "{} trailing bytes after the command of an entry of format version {version}",
            bytes.len() - used
        )),
        Err(e) => undecoded(format!(
            "the command of an entry of format version {version} does not decode: {e}"
        )),
    }
}

impl Serialize for Envelope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeStruct};
        let mut s = serializer.serialize_struct("Envelope", 3)?;
        s.serialize_field("version", &self.version)?;
        s.serialize_field("time_ms", &self.time_ms)?;
        match &self.body {
            Body::Command(c) if self.version <= FORMAT_VERSION_MIN => {
                s.serialize_field("command", c)?
            }
            Body::Command(c) => {
                let bytes = encode_command(c).map_err(S::Error::custom)?;
                s.serialize_field("command", serde_bytes::Bytes::new(&bytes))?
            }
            Body::Undecoded { .. } if self.version <= FORMAT_VERSION_MIN => {
                return Err(S::Error::custom(
                    "an undecoded command cannot be written as format version 1",
                ))
            }
            Body::Undecoded { bytes, .. } => {
                s.serialize_field("command", serde_bytes::Bytes::new(bytes))?
            }
        }
        s.end()
    }
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Envelope;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an entry envelope: version, time, command")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Envelope, A::Error> {
                use serde::de::Error;
                let version: u8 = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let time_ms: u64 = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                let body = if version <= FORMAT_VERSION_MIN {
                    Body::Command(
                        seq.next_element()?
                            .ok_or_else(|| A::Error::invalid_length(2, &self))?,
                    )
                } else {
                    let bytes: serde_bytes::ByteBuf = seq
                        .next_element()?
                        .ok_or_else(|| A::Error::invalid_length(2, &self))?;
                    decode_command(version, &bytes)
                };
                Ok(Envelope {
                    version,
                    time_ms,
                    body,
                })
            }
        }
        deserializer.deserialize_struct("Envelope", &["version", "time_ms", "command"], Visitor)
    }
}

/// Why a node cannot apply an entry: it is of a format version the node
/// does not support, or its command does not decode. The node must stop
/// applying (never skip the entry): tidal-store halts and the server exits
/// (README: Rolling upgrade).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct CannotApply {
    /// The format version the entry needs.
    pub needed: u8,
    /// The highest version this node supports.
    pub supported: u8,
    pub reason: String,
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
    /// `Started` (which stays so that logs holding it still apply).
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
    /// Raises the cluster's format version (README: Rolling upgrade). The
    /// leader proposes it only once every member said it supports
    /// `version`; a version at or below the current one is refused.
    SetClusterVersion {
        version: u8,
    },
    /// Creates a token from its id and record (its hash, never its secret).
    /// With `first_only` (the bootstrap token) it is refused once any token
    /// was ever created.
    CreateToken {
        id: TokenId,
        record: TokenRecord,
        first_only: bool,
    },
    /// Revokes a token; the last active admin token cannot be revoked.
    RevokeToken {
        id: TokenId,
    },
    /// Sets (or replaces) a tenant's limits.
    SetTenant {
        name: String,
        limits: TenantLimits,
    },
    /// Removes a tenant's limits.
    RemoveTenant {
        name: String,
    },
    /// `SubmitPlaced` with who submitted each task (`by[i]` for
    /// `specs[i]`); the caller has set each spec's tenant from the
    /// credential.
    SubmitAs {
        specs: Vec<TaskSpec>,
        place: Vec<(u32, AgentId)>,
        by: Vec<Principal>,
    },
    /// `RegisterAgent` by an agent that presented `token`: the agent id
    /// belongs to that token while it is active.
    RegisterAgentAs {
        spec: AgentSpec,
        token: TokenId,
    },
    /// `SubmitAs` with each task's lifecycle options (`opts[i]` for
    /// `specs[i]`; missing ones are the defaults). `by` may be empty: no
    /// credential was checked.
    SubmitWith {
        specs: Vec<TaskSpec>,
        place: Vec<(u32, AgentId)>,
        by: Vec<Principal>,
        opts: Vec<TaskOptions>,
    },
    /// Completions that say whether the attempt ran out of its max-run
    /// time; at version 4 a failed attempt with attempts left is retried
    /// after its backoff, one with none left fails as a dead letter.
    Finished(Vec<Finished>),
    /// Tasks whose retry backoff ended at or before the entry's time go
    /// back into the dispatch order.
    Wake(Vec<TaskId>),
    /// Pending tasks whose deadline passed before the entry's time: each is
    /// counted once, and fails if it asked to (`OnDeadline::Fail`).
    DeadlineMissed(Vec<TaskId>),
    /// Dead letters (failed with their attempts used up) go back to
    /// Pending with a fresh attempt budget; their history stays.
    Replay(Vec<TaskId>),
    /// The latest checkpoint of running tasks, each from the holder's
    /// token; at most `MAX_CHECKPOINT_BYTES` each.
    Checkpoint(Vec<(TaskId, FencingToken, Vec<u8>)>),
    /// Capacity kept free for work of `class` and the classes above it.
    SetHeadroom {
        class: Priority,
        headroom: Headroom,
    },
    /// One preemption decision, all or nothing: the online Pending `task`
    /// is to run on `agent`, which each victim holds under its token. A
    /// suspendable victim is paused in place (its slots are released at
    /// once, its GPUs stay taken); any other is told to checkpoint and exit
    /// within its grace (it holds what it holds until its agent reports it
    /// stopped). If every victim was suspended and the task then fits, it
    /// is assigned to `agent` by this entry (token: this entry's index).
    Preempt {
        task: TaskId,
        agent: AgentId,
        victims: Vec<(TaskId, FencingToken)>,
    },
    /// Suspended tasks whose preemptor has ended go on, each once its
    /// agent has room for its slots again.
    Resume(Vec<TaskId>),
    /// `SubmitWith` with each task's placement ask (`asks[i]` for
    /// `specs[i]`; missing ones ask nothing): label constraints, tags and
    /// tag rules, GPU shapes, a hash key.
    SubmitWithPlacement {
        specs: Vec<TaskSpec>,
        place: Vec<(u32, AgentId)>,
        by: Vec<Principal>,
        opts: Vec<TaskOptions>,
        asks: Vec<crate::placement::types::PlaceAsk>,
    },
    /// `SetQueue` with a version-5 placement strategy: upserts the queue,
    /// whose version-1 strategy becomes the nearest (least-loaded, or
    /// weighted round-robin for that strategy).
    SetQueueWith {
        name: String,
        weight: u32,
        placement: crate::placement::types::QueuePlacement,
    },
    /// The GPU models' weights (thousandths; a model not named weighs
    /// 1.0): least-loaded and bin-pack compare agents' GPUs by them.
    SetGpuWeights(BTreeMap<String, u32>),
}

/// A completion with how the attempt ended (`Command::Finished`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    pub task: TaskId,
    pub token: FencingToken,
    pub outcome: Outcome,
    /// The agent stopped it for running longer than its max-run time.
    pub timed_out: bool,
}

impl Finished {
    /// Rough encoded size (see [`spec_bytes`]).
    pub fn approx_bytes(&self) -> usize {
        48 + self.outcome.result.len() + self.outcome.error.len()
    }
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
    /// The command needs a cluster format version the cluster is not at.
    #[error("needs cluster format version {needed}; the cluster is at version {current}")]
    NeedsClusterVersion { needed: u8, current: u8 },
    /// A tenant's limit would be passed.
    #[error("tenant {tenant} is at its {limit} of {max} (tidal tenant set {tenant} --{limit})")]
    OverQuota {
        tenant: String,
        limit: String,
        max: u64,
    },
    /// Revoking this token would leave no active admin token.
    #[error("token {0} is the last active admin token: create another admin token first")]
    LastAdmin(TokenId),
    /// The agent id is registered under another token that is still active.
    #[error("agent {agent:?} belongs to another token ({token}) that is still active")]
    AgentOwned { agent: AgentId, token: TokenId },
    #[error("token {0} not found")]
    TokenNotFound(TokenId),
    /// The token is revoked or expired.
    #[error("token {0} is revoked or expired")]
    TokenInactive(TokenId),
    #[error("tenant {0:?} has no limits set")]
    TenantNotFound(String),
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
    /// One result per item, in order (Wake, DeadlineMissed, Replay,
    /// Checkpoint, Resume).
    Items(Vec<Result<(), Rejection>>),
    /// Preempt: the victims suspended (to be told to pause) and those told
    /// to stop (with the notice and grace their agent is to give), and the
    /// preempting task's assignment when every victim was suspended.
    Preempted {
        agent: AgentId,
        granted: Option<Granted>,
        suspended: Vec<(TaskId, FencingToken)>,
        stopping: Vec<Stopping>,
    },
}

/// A victim told to checkpoint and exit (`Response::Preempted`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopping {
    pub task: TaskId,
    pub token: FencingToken,
    pub notice: Notice,
    pub grace_ms: u64,
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

/// Rough encoded size of a placement ask (see [`spec_bytes`]).
pub fn ask_bytes(a: &crate::placement::types::PlaceAsk) -> usize {
    16 + a
        .constraints
        .iter()
        .map(|c| 16 + c.key.len() + c.values.iter().map(|v| 8 + v.len()).sum::<usize>())
        .sum::<usize>()
        + a.tags.iter().map(|t| 8 + t.len()).sum::<usize>()
        + a.rules.iter().map(|r| 32 + r.tag.len()).sum::<usize>()
        + a.shapes.iter().len() * 32
        + a.hash_key.as_ref().map_or(0, String::len)
}

impl Completion {
    /// Rough encoded size (see [`spec_bytes`]).
    pub fn approx_bytes(&self) -> usize {
        48 + self.outcome.result.len() + self.outcome.error.len()
    }
}

impl Command {
    /// The cluster format version a command needs: the leader proposes it
    /// only once the cluster is at that version, and apply refuses it below
    /// (README: Rolling upgrade). Every new variant must choose here: a
    /// variant added after version 2 takes the next version, which
    /// [`FORMAT_VERSION_MAX`] then becomes.
    pub fn required_version(&self) -> u8 {
        match self {
            Command::Submit(_)
            | Command::Cancel { .. }
            | Command::RegisterAgent(_)
            | Command::DeregisterAgent { .. }
            | Command::AgentDown { .. }
            | Command::Assign(_)
            | Command::Started { .. }
            | Command::Complete(_)
            | Command::SetQueue { .. }
            | Command::Noop
            | Command::StartedBatch(_)
            | Command::Forward(_)
            | Command::Ingest { .. }
            | Command::ForwardAck { .. }
            | Command::SubmitPlaced { .. }
            | Command::Regrant { .. } => 1,
            Command::DrainAgent { .. }
            | Command::UndrainAgent { .. }
            | Command::Stopped(_)
            | Command::Expire { .. } => 2,
            // Raising to a version needs at least that version.
            Command::SetClusterVersion { version } => (*version).max(2),
            Command::CreateToken { .. }
            | Command::RevokeToken { .. }
            | Command::SetTenant { .. }
            | Command::RemoveTenant { .. }
            | Command::SubmitAs { .. }
            | Command::RegisterAgentAs { .. } => crate::access::types::ACCESS_VERSION,
            Command::SubmitWith { .. }
            | Command::Finished(_)
            | Command::Wake(_)
            | Command::DeadlineMissed(_)
            | Command::Replay(_)
            | Command::Checkpoint(_)
            | Command::SetHeadroom { .. }
            | Command::Preempt { .. }
            | Command::Resume(_) => crate::lifecycle::types::LIFECYCLE_VERSION,
            Command::SubmitWithPlacement { .. }
            | Command::SetQueueWith { .. }
            | Command::SetGpuWeights(_) => crate::placement::types::PLACEMENT_VERSION,
        }
    }

    /// Rough encoded size of the command (see [`spec_bytes`]).
    pub fn approx_bytes(&self) -> usize {
        use crate::forwarding::types::Record;
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
            Command::SubmitWith {
                specs, place, by, ..
            } => {
                specs.iter().map(spec_bytes).sum::<usize>()
                    + place.iter().map(|(_, a)| 8 + a.len()).sum::<usize>()
                    + by.iter().map(|p| 8 + p.id.len()).sum::<usize>()
                    + specs.len() * 64
            }
            Command::SubmitWithPlacement {
                specs,
                place,
                by,
                asks,
                ..
            } => {
                specs.iter().map(spec_bytes).sum::<usize>()
                    + place.iter().map(|(_, a)| 8 + a.len()).sum::<usize>()
                    + by.iter().map(|p| 8 + p.id.len()).sum::<usize>()
                    + specs.len() * 64
                    + asks.iter().map(ask_bytes).sum::<usize>()
            }
            Command::SetGpuWeights(w) => w.keys().map(|k| 8 + k.len()).sum(),
            Command::Finished(list) => list.iter().map(Finished::approx_bytes).sum(),
            Command::Wake(ids)
            | Command::DeadlineMissed(ids)
            | Command::Replay(ids)
            | Command::Resume(ids) => ids.len() * 8,
            Command::Preempt { agent, victims, .. } => 16 + agent.len() + victims.len() * 16,
            Command::Checkpoint(list) => list.iter().map(|(_, _, d)| 24 + d.len()).sum(),
            Command::SubmitAs { specs, place, by } => {
                specs.iter().map(spec_bytes).sum::<usize>()
                    + place.iter().map(|(_, a)| 8 + a.len()).sum::<usize>()
                    + by.iter().map(|p| 8 + p.id.len()).sum::<usize>()
            }
            Command::Complete(list) => list.iter().map(Completion::approx_bytes).sum(),
            Command::Assign(pairs) => pairs.iter().map(|(_, a)| 16 + a.len()).sum(),
            Command::StartedBatch(list) => list.len() * 16,
            Command::Regrant { agent, tasks } => agent.len() + tasks.len() * 16,
            Command::RegisterAgent(spec) | Command::RegisterAgentAs { spec, .. } => {
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
