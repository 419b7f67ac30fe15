//! The data of cross-DC forwarding: records, verdicts, outboxes, what was
//! ingested from each origin, and the cross-DC part of a DC's state. A leaf
//! over the model: commands and the state name these without reaching into
//! forwarding's apply code.

use serde::{Deserialize, Serialize};

use crate::collections::{Map, Set};
use crate::model::{AgentId, TaskId, TaskSpec, TaskStateKind};

/// A data center's name.
pub type DcName = String;

/// One entry of an outbox, shipped to a peer DC.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Record {
    /// Run this task for the origin DC; `origin_task` is its id there.
    Task { origin_task: TaskId, spec: TaskSpec },
    /// The origin cancelled a task it had handed over.
    Cancel { origin_task: TaskId },
    /// A state change of a task this DC ingested, back to its origin.
    Status(RemoteStatus),
}

/// What the origin learns about a task that runs in another DC.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RemoteStatus {
    pub origin_task: TaskId,
    /// The task's id in the DC that runs it.
    pub remote_task: TaskId,
    pub state: TaskStateKind,
    pub agent: Option<AgentId>,
    pub attempt: u32,
    #[serde(with = "serde_bytes")]
    pub result: Vec<u8>,
    pub error: String,
    pub exit_code: i32,
}

/// The receiving DC's answer to one record.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Verdict {
    /// Taken; for a task record, the id it has in the receiving DC.
    Accepted { remote_task: Option<TaskId> },
    /// Not taken (no agent there can run it); the origin keeps the task.
    Rejected { reason: String },
}

/// Records for one peer that it has not acknowledged yet, in sequence order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Outbox {
    /// The sequence the next record gets; sequences start at 1.
    pub next_seq: u64,
    /// seq -> (time the record was appended, the record).
    pub records: Map<u64, (u64, Record)>,
    /// The highest sequence the peer has acknowledged.
    pub acked: u64,
}

impl Outbox {
    pub(crate) fn push(&mut self, time_ms: u64, record: Record) -> u64 {
        let seq = self.next_seq.max(1);
        self.next_seq = seq + 1;
        self.records.insert(seq, (time_ms, record));
        seq
    }

    /// When the oldest unacknowledged record was appended.
    pub fn oldest_ms(&self) -> Option<u64> {
        self.records.values().next().map(|(t, _)| *t)
    }
}

/// What this DC has taken from one origin.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Inbound {
    /// Every sequence up to here has been ingested (or refused) exactly once.
    pub hwm: u64,
    /// Origin task id -> the local task it became.
    pub tasks: Map<TaskId, TaskId>,
}

/// The cross-DC part of a DC's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Links {
    pub(crate) outbox: Map<DcName, Outbox>,
    pub(crate) inbound: Map<DcName, Inbound>,
    /// Local task -> (origin DC, its id there), for tasks ingested here.
    pub(crate) origin_of: Map<TaskId, (DcName, TaskId)>,
    /// Peers that refused a task: it is not offered to them again.
    pub(crate) refused: Map<TaskId, Set<DcName>>,
    /// Forwarded tasks cancelled here whose end state has not come back.
    pub(crate) cancelled: Set<TaskId>,
}
