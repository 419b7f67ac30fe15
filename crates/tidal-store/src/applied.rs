//! What the state machine has applied (also a snapshot's content), and the
//! longest apply pause a snapshot build reports.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tidal_core::State;

/// What the state machine has applied: the state, the last applied log id
/// and the membership in effect. This is also a snapshot's content.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub state: State,
    pub last_applied: Option<openraft::LogId<u64>>,
    pub membership: openraft::StoredMembership<u64, openraft::BasicNode>,
}

/// The longest time one entry held up apply (waiting for the write lock,
/// then applying) since the last [`ApplyPauses::take`]: what a snapshot
/// build reports, so its effect on apply shows in the log.
#[derive(Debug, Default)]
pub struct ApplyPauses {
    longest_us: AtomicU64,
}

impl ApplyPauses {
    pub(crate) fn record(&self, since: Instant) {
        let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.longest_us.fetch_max(us, Ordering::Relaxed);
    }

    /// The longest pause since the last call, in microseconds; starts anew.
    pub(crate) fn take(&self) -> u64 {
        self.longest_us.swap(0, Ordering::Relaxed)
    }
}
