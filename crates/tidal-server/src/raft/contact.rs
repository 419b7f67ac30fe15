//! When this node last heard from a leader.
//!
//! The Raft service touches it on every AppendEntries a leader sends; a
//! follower reads it to tell whether the leader it knows is alive.

use std::sync::{Arc, Mutex};

/// When this node last took an AppendEntries from a leader.
#[derive(Clone, Default)]
pub struct LeaderContact(Arc<Mutex<Option<std::time::Instant>>>);

impl LeaderContact {
    pub fn touch(&self) {
        *self.0.lock().expect("contact lock poisoned") = Some(std::time::Instant::now());
    }

    /// How long ago; `None` if never.
    pub fn since(&self) -> Option<std::time::Duration> {
        self.0
            .lock()
            .expect("contact lock poisoned")
            .map(|t| t.elapsed())
    }
}
