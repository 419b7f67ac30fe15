//! The lifecycle state's types: what a task declared about its life (deadline, max run time, retry backoff, preemption), what happened to it (attempts, preemptions, suspension, checkpoints), and the classes' headroom.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::collections::{Map, Set};
use crate::digest::Fnv64;
use crate::model::{AgentId, FencingToken, Priority, TaskId};

/// The cluster format version that adds the lifecycle state: its commands
/// need it, snapshots carry a lifecycle section from it on, and the digest
/// covers the lifecycle state from it on.
pub const LIFECYCLE_VERSION: u8 = 4;

/// How many attempts a task's history keeps (the most recent).
pub const MAX_ATTEMPT_HISTORY: usize = 32;
/// The largest checkpoint a worker may report, in bytes.
pub const MAX_CHECKPOINT_BYTES: usize = 64 * 1024;
/// Retry backoff when the task names none: the first retry waits about
/// this long, each further one twice as long ...
pub const DEFAULT_BACKOFF_BASE_MS: u64 = 1_000;
/// ... up to this.
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 60_000;
/// The most a backoff may be set to (a day).
pub const MAX_BACKOFF_MS: u64 = 86_400_000;
/// How long a preempted worker has to checkpoint and exit, when the task
/// names no grace.
pub const DEFAULT_PREEMPT_GRACE_MS: u64 = 10_000;
/// The most a preemption grace may be set to (ten minutes).
pub const MAX_PREEMPT_GRACE_MS: u64 = 600_000;

/// What happens when a task's deadline passes before it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OnDeadline {
    /// It is reported (an event and a counter) and stays Pending.
    #[default]
    Report,
    /// It is reported and fails.
    Fail,
}

/// How a preempted worker is told to checkpoint and exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Notice {
    /// SIGTERM to its process group; SIGKILL when the grace is over.
    #[default]
    Signal,
    /// The agent creates the file named by `TIDAL_PREEMPT_FILE`; SIGTERM
    /// when the grace is over, then SIGKILL.
    File,
}

/// What a task declares about its life at submit (all optional).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskOptions {
    /// The time (leader clock, ms since the epoch) by which it must have
    /// started; within its class and queue an earlier deadline goes first.
    pub deadline_ms: Option<u64>,
    pub on_deadline: OnDeadline,
    /// The agent stops an attempt that runs longer (a failed attempt).
    pub max_run_ms: Option<u64>,
    /// Retry backoff: 0 means the default ([`DEFAULT_BACKOFF_BASE_MS`],
    /// [`DEFAULT_BACKOFF_MAX_MS`]).
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Whether online work may preempt it (never for online tasks).
    pub preemptible: bool,
    /// Preempted by pausing it in place (SIGSTOP) instead of stopping it.
    pub suspendable: bool,
    pub notice: Notice,
    /// 0: [`DEFAULT_PREEMPT_GRACE_MS`].
    pub preempt_grace_ms: u64,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            deadline_ms: None,
            on_deadline: OnDeadline::Report,
            max_run_ms: None,
            backoff_base_ms: 0,
            backoff_max_ms: 0,
            preemptible: true,
            suspendable: false,
            notice: Notice::Signal,
            preempt_grace_ms: 0,
        }
    }
}

impl TaskOptions {
    /// The backoff's base and cap with defaults filled in.
    pub fn backoff(&self) -> (u64, u64) {
        let base = match self.backoff_base_ms {
            0 => DEFAULT_BACKOFF_BASE_MS,
            b => b,
        };
        let max = match self.backoff_max_ms {
            0 => DEFAULT_BACKOFF_MAX_MS.max(base),
            m => m.max(base),
        };
        (base, max)
    }

    /// The preemption grace with its default filled in.
    pub fn grace_ms(&self) -> u64 {
        match self.preempt_grace_ms {
            0 => DEFAULT_PREEMPT_GRACE_MS,
            g => g,
        }
    }
}

/// How one attempt (one assignment, one token) ended.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AttemptEnd {
    Succeeded,
    /// The worker exited non-zero (or could not start).
    Failed {
        exit_code: i32,
    },
    /// It ran longer than its max-run time and was stopped.
    TimedOut,
    /// Its agent was lost (down, or it fenced itself) while it held it.
    Lost,
    /// Stopped on the leader's order (a drain's deadline); not counted.
    Stopped,
    /// Preempted by online work; not counted.
    Preempted,
    Cancelled,
}

impl AttemptEnd {
    pub fn as_str(&self) -> &'static str {
        match self {
            AttemptEnd::Succeeded => "succeeded",
            AttemptEnd::Failed { .. } => "failed",
            AttemptEnd::TimedOut => "timed-out",
            AttemptEnd::Lost => "lost",
            AttemptEnd::Stopped => "stopped",
            AttemptEnd::Preempted => "preempted",
            AttemptEnd::Cancelled => "cancelled",
        }
    }
}

/// One assignment of a task, as its history keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attempt {
    /// The task's attempt number under this assignment.
    pub attempt: u32,
    pub agent: AgentId,
    pub token: FencingToken,
    pub assigned_ms: u64,
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    /// `None` while it lasts.
    pub end: Option<AttemptEnd>,
    /// The error its end reported, if any (bounded like a task's error).
    pub error: String,
}

/// A task paused in place for `by`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Suspension {
    pub by: TaskId,
    pub since_ms: u64,
}

/// A task told to checkpoint and exit for `by`; it holds its resources
/// until its agent reports it stopped.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Preemption {
    pub by: TaskId,
    pub at_ms: u64,
    pub grace_ms: u64,
}

/// The last checkpoint a task's worker reported.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The attempt's token that reported it.
    pub token: FencingToken,
    /// The entry's time.
    pub at_ms: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// What the lifecycle state keeps of one task.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskLife {
    pub opts: TaskOptions,
    /// The most recent [`MAX_ATTEMPT_HISTORY`] assignments, oldest first.
    pub attempts: Vec<Attempt>,
    /// How many times online work preempted it (stopped or suspended it).
    pub preempted: u32,
    /// In backoff before its next attempt: Pending, but not dispatched
    /// before this time (leader clock); a `Wake` entry ends it.
    pub not_before_ms: Option<u64>,
    pub suspended: Option<Suspension>,
    pub preempting: Option<Preemption>,
    pub checkpoint: Option<Checkpoint>,
    /// The attempt count at its last replay: its attempts left are
    /// `max_attempts - (attempt - budget_base)`.
    pub budget_base: u32,
    /// Its deadline passed before it started (reported once).
    pub deadline_missed: bool,
    /// It failed with its attempts used up: a dead letter, until replayed.
    pub dead: bool,
}

/// Capacity kept free for work of one class and the classes above it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Headroom {
    pub slots: u32,
    pub gpus: u32,
}

/// The part of the state that cluster format version 4 adds.
///
/// Not part of the state's own encoding: tidal-store writes it after the
/// access section in snapshots of version 4 and later. `delayed` and
/// `deadlines` are derived from the tasks and this state, not encoded, and
/// rebuilt when a state is restored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// Per task submitted at version 4 or later (and per older task once it
    /// was assigned at version 4); removed with the task by `Expire`.
    pub(crate) tasks: Map<TaskId, TaskLife>,
    /// Per class, the capacity kept free for it (and the classes above).
    pub(crate) headroom: BTreeMap<Priority, Headroom>,
    /// How many times a task's deadline passed before it started.
    pub(crate) deadlines_missed: u64,
    /// Pending tasks in backoff by the time they may run again.
    #[serde(skip)]
    pub(crate) delayed: Set<(u64, TaskId)>,
    /// Pending tasks with a deadline not yet reported missed, by deadline.
    #[serde(skip)]
    pub(crate) deadlines: Set<(u64, TaskId)>,
    /// Tasks suspended or told to stop for a preemption.
    #[serde(skip)]
    pub(crate) preempted: Set<TaskId>,
}

/// The replicated fields, in their encoded order; the indexes are derived.
impl Hash for Lifecycle {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let Lifecycle {
            tasks,
            headroom,
            deadlines_missed,
            delayed: _,
            deadlines: _,
            preempted: _,
        } = self;
        tasks.hash(h);
        headroom.hash(h);
        deadlines_missed.hash(h);
    }
}

/// The delay before retry `n` (1 for the first retry) of a task whose
/// backoff is `base`..`max`: `d = min(max, base * 2^(n-1))`, then "equal
/// jitter": `d/2` plus a value in `0..=d/2` drawn from a hash of the task
/// and the failed attempt's token, so every replica computes the same.
pub fn backoff_ms(opts: &TaskOptions, task: TaskId, token: FencingToken, n: u32) -> u64 {
    let (base, max) = opts.backoff();
    let shift = n.saturating_sub(1).min(63);
    let d = base.checked_shl(shift).unwrap_or(u64::MAX).min(max);
    let mut h = Fnv64::default();
    task.0.hash(&mut h);
    token.hash(&mut h);
    d / 2 + h.finish() % (d / 2 + 1)
}

/// Checks a task's options at submit; the reason is for the submitter.
pub fn validate_options(opts: &TaskOptions) -> Result<(), String> {
    if opts.on_deadline == OnDeadline::Fail && opts.deadline_ms.is_none() {
        return Err("on_deadline FAIL needs a deadline (deadline_ms)".to_string());
    }
    if opts.max_run_ms == Some(0) {
        return Err("max_run_ms 0: leave it unset for no limit".to_string());
    }
    if opts.backoff_base_ms > MAX_BACKOFF_MS || opts.backoff_max_ms > MAX_BACKOFF_MS {
        return Err(format!(
            "retry backoff over {MAX_BACKOFF_MS} ms (a day): {} ms, {} ms",
            opts.backoff_base_ms, opts.backoff_max_ms
        ));
    }
    if opts.backoff_max_ms != 0 && opts.backoff_max_ms < opts.backoff_base_ms {
        return Err(format!(
            "retry backoff cap {} ms is below its base {} ms",
            opts.backoff_max_ms, opts.backoff_base_ms
        ));
    }
    if opts.preempt_grace_ms > MAX_PREEMPT_GRACE_MS {
        return Err(format!(
            "preempt grace {} ms is over {MAX_PREEMPT_GRACE_MS} ms",
            opts.preempt_grace_ms
        ));
    }
    Ok(())
}
