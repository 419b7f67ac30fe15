//! Dispatch rounds: plans pending tasks onto connected agents with tidal-core's dispatcher and commits them as one `Assign`.
//!
//! A round is planned when work comes (a [`Work`](super::event::Work), a session
//! attaching or ending, tasks a peer refused, an agent marked down), at once
//! after the previous round was answered, and at least every [`IDLE_MS`]
//! (a safety net only); a round that did not commit is planned again
//! [`RETRY_MS`] later. One `Assign` is in flight at a time. While it is, the
//! round is published in the engine's [`View`](super::action::View), so eager
//! placement (`crate::leader::eager`) plans around the capacity it takes;
//! the committed assignments go to the agents' sessions.

use tidal_core::command::{Command, Granted, Response};
use tidal_core::dispatch::{plan, DispatchCursor, InFlight};

use super::ctx::{Ctx, Purpose};
use super::event::{Now, ProposeError};
use super::sessions::SessionTable;

/// At most this many assignments per `Assign` entry.
pub const MAX_ROUND: usize = 4096;
/// The longest wait for work before a round is planned anyway.
pub const IDLE_MS: u64 = 500;
/// The wait after a round did not commit.
pub const RETRY_MS: u64 = 100;

/// The dispatcher's round-robin memory, its timer and its round in flight.
#[derive(Debug, Default)]
pub(crate) struct Dispatch {
    cursor: DispatchCursor,
    /// When the next round is planned (none until the leadership acts).
    due: Option<u64>,
    /// No round before this: the last one did not commit.
    not_before: u64,
    /// An `Assign` is proposed and not answered yet.
    in_flight: bool,
}

impl Dispatch {
    pub(crate) fn start(&mut self, now: Now) {
        self.due = Some(now.mono_ms);
    }

    /// Work a round may place: the next round is planned now, or as soon as
    /// the round in flight is answered, but not before a failed round's wait
    /// has passed.
    pub(crate) fn work(&mut self, now: Now) {
        if let Some(due) = &mut self.due {
            *due = (*due).min(now.mono_ms.max(self.not_before));
        }
    }

    /// When the next round is planned, unless one is in flight (its answer comes first).
    pub(crate) fn next_wake(&self) -> Option<u64> {
        self.due.filter(|_| !self.in_flight)
    }

    /// Plans a round if one is due, onto the agents with a live session, and
    /// proposes it; publishes it first, so eager placement sees it from the
    /// moment it is proposed.
    pub(crate) fn fire(&mut self, cx: &mut Ctx, sessions: &mut SessionTable) {
        match self.due {
            Some(at) if at <= cx.now.mono_ms && !self.in_flight => {}
            _ => return,
        }
        let connected = sessions.connected();
        let round = plan(cx.state, &connected, MAX_ROUND, &mut self.cursor);
        if round.is_empty() {
            // Work or capacity wakes it sooner; the timer is a safety net only.
            self.due = Some(cx.now.mono_ms + IDLE_MS);
            return;
        }
        let in_flight = InFlight::of(cx.state, &round);
        cx.out.publish(|view| view.dispatching = in_flight.into());
        cx.out.propose(Purpose::Assign, Command::Assign(round));
        self.in_flight = true;
    }

    /// The round committed: it is no longer in flight, and the next is
    /// planned at once. Returns the assignments granted, for the agents' sessions.
    pub(crate) fn committed(
        &mut self,
        cx: &mut Ctx,
        index: u64,
        response: Response,
    ) -> Vec<Granted> {
        self.answered(cx);
        self.due = Some(cx.now.mono_ms);
        match response {
            Response::Assigned { granted, rejected } => {
                if !rejected.is_empty() {
                    tracing::debug!(
                        log_index = index,
                        rejected = rejected.len(),
                        "assignments rejected at apply"
                    );
                }
                granted
            }
            other => {
                tracing::warn!(response = ?other, "unexpected response to assign");
                Vec::new()
            }
        }
    }

    /// The round did not commit: the next is planned [`RETRY_MS`] later.
    pub(crate) fn not_committed(&mut self, cx: &mut Ctx, error: &ProposeError) {
        self.answered(cx);
        tracing::warn!(error = %error, "dispatch round not committed");
        self.not_before = cx.now.mono_ms + RETRY_MS;
        self.due = Some(self.not_before);
    }

    /// The round is no longer in flight: eager placement stops planning around it.
    fn answered(&mut self, cx: &mut Ctx) {
        self.in_flight = false;
        cx.out
            .publish(|view| view.dispatching = InFlight::default().into());
    }
}
