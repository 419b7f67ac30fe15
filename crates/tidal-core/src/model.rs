//! The domain nouns of DESIGN.md: tasks, agents, queues, assignments.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Server-assigned task id: a counter in the replicated state, so ids sort by
/// submit order and every replica assigns the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskId(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{:010}", self.0)
    }
}

impl std::str::FromStr for TaskId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix('t').unwrap_or(s);
        digits
            .parse::<u64>()
            .map(TaskId)
            .map_err(|_| format!("invalid task id {s:?}: expected t<digits>"))
    }
}

/// An agent's name, chosen by the operator (`tidal agent --id NAME`).
pub type AgentId = String;

/// The Raft log index of the entry that made an assignment. Unique and
/// strictly increasing per task (invariant 1).
pub type FencingToken = u64;

/// Priority class; lower sorts first in dispatch.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub enum Priority {
    Online,
    #[default]
    Nearline,
    Offline,
}

/// What a task asks for. Validated by [`crate::limits`] before it is proposed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct TaskSpec {
    pub task_type: String,
    /// Empty: any pipeline of the type.
    pub pipeline: String,
    pub models: Vec<String>,
    pub queue: String,
    pub idempotency_key: Option<String>,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub max_attempts: u32,
    pub priority: Priority,
    pub slots: u32,
    pub gpus: u32,
    pub gpu_memory_mb: u64,
    pub tenant: String,
}

/// Where a task is in its life (DESIGN.md, Data model).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskState {
    Pending,
    Assigned {
        agent: AgentId,
        token: FencingToken,
    },
    Running {
        agent: AgentId,
        token: FencingToken,
    },
    Succeeded {
        agent: AgentId,
        token: FencingToken,
    },
    Failed {
        agent: Option<AgentId>,
        token: FencingToken,
    },
    Cancelled {
        agent: Option<AgentId>,
        token: FencingToken,
    },
    /// Handed to another DC, which owns it now (invariant 5). `remote` is
    /// what that DC last told about it; `None` until it accepted the task.
    Forwarded {
        dc: String,
        remote: Option<RemoteView>,
    },
}

/// A forwarded task as the DC that runs it last reported it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RemoteView {
    /// Its id in the DC that runs it.
    pub task: TaskId,
    pub state: TaskStateKind,
    pub agent: Option<AgentId>,
    pub attempt: u32,
}

impl TaskState {
    /// Ended here, or ended in the DC it was forwarded to.
    pub fn is_terminal(&self) -> bool {
        match self {
            TaskState::Succeeded { .. }
            | TaskState::Failed { .. }
            | TaskState::Cancelled { .. } => true,
            TaskState::Forwarded {
                remote: Some(r), ..
            } => r.state.is_terminal(),
            _ => false,
        }
    }
    /// The live holder and token, if the task is assigned or running.
    pub fn holder(&self) -> Option<(&AgentId, FencingToken)> {
        match self {
            TaskState::Assigned { agent, token } | TaskState::Running { agent, token } => {
                Some((agent, *token))
            }
            _ => None,
        }
    }
    /// The current or last agent here and its token (0 when none).
    pub fn last_holder(&self) -> (Option<&AgentId>, FencingToken) {
        match self {
            TaskState::Pending | TaskState::Forwarded { .. } => (None, 0),
            TaskState::Assigned { agent, token }
            | TaskState::Running { agent, token }
            | TaskState::Succeeded { agent, token } => (Some(agent), *token),
            TaskState::Failed { agent, token } | TaskState::Cancelled { agent, token } => {
                (agent.as_ref(), *token)
            }
        }
    }
    pub fn kind(&self) -> TaskStateKind {
        match self {
            TaskState::Pending => TaskStateKind::Pending,
            TaskState::Assigned { .. } => TaskStateKind::Assigned,
            TaskState::Running { .. } => TaskStateKind::Running,
            TaskState::Succeeded { .. } => TaskStateKind::Succeeded,
            TaskState::Failed { .. } => TaskStateKind::Failed,
            TaskState::Cancelled { .. } => TaskStateKind::Cancelled,
            TaskState::Forwarded { .. } => TaskStateKind::Forwarded,
        }
    }
}

/// The state without its data, for filters and counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskStateKind {
    Pending,
    Assigned,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Forwarded,
}

impl TaskStateKind {
    pub const ALL: [TaskStateKind; 7] = [
        TaskStateKind::Pending,
        TaskStateKind::Assigned,
        TaskStateKind::Running,
        TaskStateKind::Succeeded,
        TaskStateKind::Failed,
        TaskStateKind::Cancelled,
        TaskStateKind::Forwarded,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStateKind::Pending => "pending",
            TaskStateKind::Assigned => "assigned",
            TaskStateKind::Running => "running",
            TaskStateKind::Succeeded => "succeeded",
            TaskStateKind::Failed => "failed",
            TaskStateKind::Cancelled => "cancelled",
            TaskStateKind::Forwarded => "forwarded",
        }
    }
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStateKind::Succeeded | TaskStateKind::Failed | TaskStateKind::Cancelled
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub spec: TaskSpec,
    pub state: TaskState,
    /// 0 before the first assignment; +1 on every assignment.
    pub attempt: u32,
    /// Stdout of a succeeded task (bounded by the agent and by the limits).
    #[serde(with = "serde_bytes")]
    pub result: Vec<u8>,
    pub error: String,
    pub exit_code: i32,
    /// The log index of the submit entry.
    pub submitted_index: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Gpu {
    pub model: String,
    pub memory_mb: u64,
}

/// What an agent advertises when it registers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct AgentSpec {
    pub id: AgentId,
    pub dc: String,
    pub task_types: BTreeSet<String>,
    /// Empty: any pipeline of its task types.
    pub pipelines: BTreeSet<String>,
    pub models: BTreeSet<String>,
    pub slots: u32,
    /// Relative capacity (an A100 counts more than an A40); at least 1.
    pub weight: u32,
    pub gpus: Vec<Gpu>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AgentState {
    Ready,
    /// Takes no new work; the tasks it holds finish, or at `deadline_ms`
    /// (the leader's clock, absolute, from the `DrainAgent` entry) the leader
    /// has the agent stop them and they are requeued. `None`: no deadline.
    /// The variant carried no data before drains were committed, and no
    /// entry or snapshot could hold it then (nothing set it), so giving it
    /// a field changes no stored encoding.
    Draining {
        deadline_ms: Option<u64>,
    },
    Down,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Agent {
    pub spec: AgentSpec,
    pub state: AgentState,
    /// Tasks assigned to or running on this agent, with their tokens.
    pub tasks: BTreeMap<TaskId, FencingToken>,
    pub slots_in_use: u32,
    pub gpus_in_use: u32,
    pub registered_ms: u64,
}

impl Agent {
    /// True while a drain is on (the agent takes no new work).
    pub fn is_draining(&self) -> bool {
        matches!(self.state, AgentState::Draining { .. })
    }

    /// The deadline of the agent's drain, if it is draining with one.
    pub fn drain_deadline(&self) -> Option<u64> {
        match self.state {
            AgentState::Draining { deadline_ms } => deadline_ms,
            _ => None,
        }
    }

    /// Draining and holding no task: safe to stop.
    pub fn is_drained(&self) -> bool {
        self.is_draining() && self.tasks.is_empty()
    }
}

/// How a queue picks an agent for its tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Strategy {
    /// Fewest in-flight tasks per unit of agent weight.
    #[default]
    LeastLoaded,
    /// Smooth weighted round-robin over eligible agents by weight.
    WeightedRoundRobin,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::LeastLoaded => "least-loaded",
            Strategy::WeightedRoundRobin => "weighted-round-robin",
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "least-loaded" => Ok(Strategy::LeastLoaded),
            "weighted-round-robin" | "wrr" => Ok(Strategy::WeightedRoundRobin),
            other => Err(format!(
                "unknown strategy {other:?}: expected least-loaded or weighted-round-robin"
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Queue {
    pub name: String,
    pub weight: u32,
    pub strategy: Strategy,
}

/// How an agent's run of a task ended, as the agent reports it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Outcome {
    pub success: bool,
    #[serde(with = "serde_bytes")]
    pub result: Vec<u8>,
    pub error: String,
    pub exit_code: i32,
}
