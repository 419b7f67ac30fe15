//! An agent session's checkpoints waiting to be proposed: the latest of each task, within a byte bound.

use std::collections::BTreeMap;

use tidal_core::lifecycle::MAX_CHECKPOINT_BYTES;
use tidal_core::model::{FencingToken, TaskId};

/// The most one session keeps waiting for their entry, in bytes (each
/// checkpoint counted with [`OVERHEAD`]): a checkpoint that would take it
/// over is dropped and logged (the worker's next one, or the agent's
/// resend, comes again).
pub const MAX_PENDING_CHECKPOINT_BYTES: usize = 64 * (MAX_CHECKPOINT_BYTES + OVERHEAD);

/// What a waiting checkpoint costs besides its data.
pub const OVERHEAD: usize = 24;

/// What [`Pending::put`] did with a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// Kept, and nothing else was waiting: the session must wake its
    /// proposer.
    First,
    /// Kept beside (or instead of) others waiting: their proposer is
    /// already woken.
    Kept,
    /// Dropped: the session's bound is reached.
    Full,
}

/// One checkpoint waiting: its task, token, the agent's number for it
/// (`TaskCheckpoint.seq`, echoed in its answer) and its data.
pub type Waiting = (TaskId, FencingToken, u64, Vec<u8>);

/// The latest checkpoint of each task, not yet proposed.
#[derive(Debug, Default)]
pub struct Pending {
    latest: BTreeMap<TaskId, (FencingToken, u64, Vec<u8>)>,
    bytes: usize,
}

impl Pending {
    /// Keeps `data` as the task's latest checkpoint (the newest report wins,
    /// whatever its token: fencing is the entry's).
    pub fn put(&mut self, task: TaskId, token: FencingToken, seq: u64, data: Vec<u8>) -> Put {
        let first = self.latest.is_empty();
        let old = self
            .latest
            .get(&task)
            .map_or(0, |(_, _, d)| OVERHEAD + d.len());
        let bytes = self.bytes - old + OVERHEAD + data.len();
        if bytes > MAX_PENDING_CHECKPOINT_BYTES {
            return Put::Full;
        }
        self.bytes = bytes;
        self.latest.insert(task, (token, seq, data));
        if first {
            Put::First
        } else {
            Put::Kept
        }
    }

    /// Everything waiting, in task order; leaves nothing.
    pub fn take(&mut self) -> Vec<Waiting> {
        self.bytes = 0;
        std::mem::take(&mut self.latest)
            .into_iter()
            .map(|(task, (token, seq, data))| (task, token, seq, data))
            .collect()
    }

    /// Bytes waiting, [`OVERHEAD`] included.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
#[path = "agent_checkpoints_test.rs"]
mod tests;
