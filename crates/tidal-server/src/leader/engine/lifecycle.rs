//! Task lifecycle timers: ends retry backoffs (`Wake`) and reports missed deadlines (`DeadlineMissed`).
//!
//! Both times are in the state (a failed attempt's entry computed its
//! `not_before_ms`; a task's deadline came with its submit), so a new leader
//! carries on where the old one stopped. The handler looks at the state's
//! earliest backoff end and deadline, at most [`LOOK_EVERY_MS`] apart (new
//! backoffs and deadlines arrive with entries other handlers do not see),
//! and proposes one batch of each kind at a time. Apply re-checks every
//! item against the entry's time, so a stale batch changes nothing it
//! should not.

use tidal_core::command::{Command, Response};
use tidal_core::lifecycle::LIFECYCLE_VERSION;

use super::ctx::{Ctx, Purpose};
use super::event::{Now, ProposeError};

/// The longest it goes without looking.
pub const LOOK_EVERY_MS: u64 = 100;
/// Tasks per `Wake` or `DeadlineMissed` entry.
pub const LIFECYCLE_BATCH: usize = 1_000;

#[derive(Debug, Default)]
pub(crate) struct Lifecycle {
    next: Option<u64>,
    waking: bool,
    reporting: bool,
}

impl Lifecycle {
    pub(crate) fn start(&mut self, now: Now) {
        self.next = Some(now.mono_ms);
    }

    pub(crate) fn next_wake(&self) -> Option<u64> {
        self.next
    }

    pub(crate) fn fire(&mut self, cx: &mut Ctx) {
        match self.next {
            Some(at) if at <= cx.now.mono_ms => {}
            _ => return,
        }
        let wall = cx.now.wall_ms;
        let life = cx.state.lifecycle();
        if cx.state.cluster_version() < LIFECYCLE_VERSION {
            self.next = Some(cx.now.mono_ms + LOOK_EVERY_MS);
            return;
        }
        if !self.waking {
            let due = life.wakes_due(wall, LIFECYCLE_BATCH);
            if !due.is_empty() {
                cx.out.propose(Purpose::Wake, Command::Wake(due));
                self.waking = true;
            }
        }
        if !self.reporting {
            let due = life.deadlines_due(wall, LIFECYCLE_BATCH);
            if !due.is_empty() {
                for id in &due {
                    tracing::info!(task = %id, "task's deadline passed before it started");
                }
                cx.out
                    .propose(Purpose::DeadlineMissed, Command::DeadlineMissed(due));
                self.reporting = true;
            }
        }
        // The earliest time anything is due, at most LOOK_EVERY_MS away
        // (a deadline is due once it has passed, hence + 1).
        // A kind whose batch is in flight is looked at again when it is
        // answered (`committed` resets the timer), not every millisecond.
        let wake = life.next_wake().filter(|_| !self.waking);
        let deadline = life
            .next_deadline()
            .map(|d| d + 1)
            .filter(|_| !self.reporting);
        let soonest = [wake, deadline]
            .into_iter()
            .flatten()
            .min()
            .map_or(LOOK_EVERY_MS, |t| t.saturating_sub(wall));
        self.next = Some(cx.now.mono_ms + soonest.clamp(1, LOOK_EVERY_MS));
    }

    pub(crate) fn committed(
        &mut self,
        purpose: &Purpose,
        index: u64,
        response: Response,
        cx: &mut Ctx,
    ) {
        match purpose {
            Purpose::Wake => self.waking = false,
            _ => self.reporting = false,
        }
        match response {
            Response::Items(items) => {
                let done = items.iter().filter(|r| r.is_ok()).count();
                tracing::debug!(
                    log_index = index,
                    done,
                    of = items.len(),
                    ?purpose,
                    "lifecycle entry"
                );
                if matches!(purpose, Purpose::Wake) && done > 0 {
                    // Tasks are back in the dispatch order.
                    cx.out.wake_dispatch();
                }
                if matches!(purpose, Purpose::DeadlineMissed) && done > 0 {
                    // Failed ones freed nothing, but may unblock a queue.
                    cx.out.wake_dispatch();
                }
            }
            other => tracing::warn!(response = ?other, ?purpose, "lifecycle entry not applied"),
        }
        // Look again at once: more may be due.
        self.next = Some(cx.now.mono_ms);
    }

    pub(crate) fn not_committed(&mut self, purpose: &Purpose, error: &ProposeError) {
        match purpose {
            Purpose::Wake => self.waking = false,
            _ => self.reporting = false,
        }
        tracing::warn!(error = %error, ?purpose, "could not commit a lifecycle entry");
    }
}
