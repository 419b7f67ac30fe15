//! When this node last heard from a leader.
//!
//! The Raft service touches it on every AppendEntries a leader sends (as
//! it arrives from the leader this node follows, and once accepted), and on
//! a `LeaderAlive` from that leader (its core waits for its disk:
//! [`crate::raft::alive`]); a follower reads it to tell whether the leader
//! it knows is alive. It only ever delays pre-votes: safety rests on
//! openraft's lease and the leader's check-quorum ([`crate::raft::quorum`]).

use std::sync::{Arc, Mutex};

/// When this node last took an AppendEntries from a leader.
#[derive(Clone, Default)]
pub struct LeaderContact(Arc<Mutex<Option<std::time::Instant>>>);

impl LeaderContact {
    pub fn touch(&self) {
        *self.0.lock().expect("contact lock poisoned") = Some(std::time::Instant::now());
    }

    /// When; `None` if never.
    pub fn at(&self) -> Option<std::time::Instant> {
        *self.0.lock().expect("contact lock poisoned")
    }

    /// How long ago; `None` if never.
    pub fn since(&self) -> Option<std::time::Duration> {
        self.0
            .lock()
            .expect("contact lock poisoned")
            .map(|t| t.elapsed())
    }
}
