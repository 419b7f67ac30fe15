//! Retention: commits `Expire` entries for tasks that finished more than `retain_finished` ago.
//!
//! It looks every [`EXPIRE_EVERY_MS`] (the first time as the leadership
//! starts) and proposes one batch of at most [`EXPIRE_BATCH`] tasks; a full
//! batch that removed something is followed by the next at once, until
//! nothing old enough is left. So the state (and every snapshot) holds only
//! recent finished tasks. A failed commit waits for the next look.

use tidal_core::command::{Command, Response};

use super::ctx::{Ctx, Purpose};
use super::event::{Now, ProposeError};

/// Tasks per `Expire` entry: 8 bytes each, so an entry stays small and the
/// state is held for writing only briefly per entry.
pub const EXPIRE_BATCH: usize = 2_000;
/// How often the leader looks for expired tasks.
pub const EXPIRE_EVERY_MS: u64 = 500;

/// The expirer's timer and its batch in flight.
#[derive(Debug, Default)]
pub(crate) struct Expiry {
    /// When the next look is due.
    next: Option<u64>,
    /// A batch is proposed and not answered yet.
    in_flight: bool,
}

impl Expiry {
    pub(crate) fn start(&mut self, now: Now) {
        self.next = Some(now.mono_ms);
    }

    /// The next look, unless a batch is in flight (its answer comes first).
    pub(crate) fn next_wake(&self) -> Option<u64> {
        self.next.filter(|_| !self.in_flight)
    }

    /// Looks if a look is due.
    pub(crate) fn fire(&mut self, cx: &mut Ctx) {
        match self.next {
            Some(at) if at <= cx.now.mono_ms && !self.in_flight => {
                self.next = Some(cx.now.mono_ms + EXPIRE_EVERY_MS);
                self.batch(cx);
            }
            _ => {}
        }
    }

    /// Proposes the next batch, if anything is old enough.
    fn batch(&mut self, cx: &mut Ctx) {
        let before_ms = cx.now.wall_ms.saturating_sub(cx.cfg.retain_finished_ms);
        // `Expire` is of cluster format version 2: a cluster still at 1 (an
        // upgrade under way, README: Rolling upgrade) keeps its finished
        // tasks until every member supports it.
        let needed = Command::Expire {
            before_ms,
            tasks: Vec::new(),
        }
        .required_version();
        if cx.state.cluster_version() < needed {
            return;
        }
        let tasks = cx.state.finished_before(before_ms, EXPIRE_BATCH);
        if tasks.is_empty() {
            return;
        }
        let full = tasks.len() >= EXPIRE_BATCH;
        cx.out.propose(
            Purpose::Expire { full },
            Command::Expire { before_ms, tasks },
        );
        self.in_flight = true;
    }

    pub(crate) fn committed(&mut self, full: bool, index: u64, response: Response, cx: &mut Ctx) {
        self.in_flight = false;
        match response {
            Response::Expired { removed, rejected } => {
                tracing::debug!(
                    log_index = index,
                    removed = removed.len(),
                    refused = rejected.len(),
                    "expired finished tasks"
                );
                // Batches back to back until nothing old enough is left.
                if !removed.is_empty() && full {
                    self.batch(cx);
                }
            }
            other => tracing::warn!(response = ?other, "expiry not applied"),
        }
    }

    pub(crate) fn not_committed(&mut self, error: &ProposeError) {
        self.in_flight = false;
        tracing::warn!(error = %error, "could not commit an expiry");
    }
}
