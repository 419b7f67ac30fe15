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
//!
//! Planning sees what the leader knows beyond the state: the connected
//! agents and the models each reported warm (`dispatch::Live`). The view also
//! carries each queue's recent throughput (assignments committed by rounds,
//! per second over the last minute, for `task explain`'s estimate).

use std::collections::{BTreeMap, VecDeque};

use tidal_core::command::{Command, Granted, Response};
use tidal_core::dispatch::{plan_with, DispatchCursor, InFlight, Live};

use super::ctx::{Ctx, Purpose};
use super::event::{Now, ProposeError};
use super::sessions::SessionTable;

/// At most this many assignments per `Assign` entry.
pub const MAX_ROUND: usize = 4096;
/// The longest wait for work before a round is planned anyway.
pub const IDLE_MS: u64 = 500;
/// The wait after a round did not commit.
pub const RETRY_MS: u64 = 100;
/// The window a queue's throughput is measured over.
pub const RATE_WINDOW_MS: u64 = 60_000;
/// Throughput is counted in buckets of this many ms.
const RATE_BUCKET_MS: u64 = 1_000;

/// Per queue, the assignments committed by dispatch rounds in the last
/// [`RATE_WINDOW_MS`], in buckets of [`RATE_BUCKET_MS`] (leader memory).
#[derive(Debug, Default)]
pub(crate) struct QueueRates {
    /// Per queue, (bucket start, assignments), oldest first.
    buckets: BTreeMap<String, VecDeque<(u64, u64)>>,
}

impl QueueRates {
    /// Counts `n` assignments of `queue` committed at `now` (`mono_ms`).
    pub(crate) fn add(&mut self, queue: &str, n: u64, now: u64) {
        let start = now - now % RATE_BUCKET_MS;
        let q = self.buckets.entry(queue.to_string()).or_default();
        match q.back_mut() {
            Some((at, count)) if *at == start => *count += n,
            _ => q.push_back((start, n)),
        }
    }

    /// Drops the buckets that left the window at `now`; true if any did.
    pub(crate) fn expire(&mut self, now: u64) -> bool {
        let Some(oldest) = now.checked_sub(RATE_WINDOW_MS) else {
            return false;
        };
        let mut changed = false;
        self.buckets.retain(|_, q| {
            while q
                .front()
                .is_some_and(|(at, _)| *at + RATE_BUCKET_MS <= oldest)
            {
                q.pop_front();
                changed = true;
            }
            !q.is_empty()
        });
        changed
    }

    /// Per queue, assignments per second in thousandths, over the window
    /// (or over the leadership so far, at least a second, while it is
    /// younger than the window).
    pub(crate) fn rates_milli(&self, now: u64) -> BTreeMap<String, u64> {
        let span = now.clamp(RATE_BUCKET_MS, RATE_WINDOW_MS);
        self.buckets
            .iter()
            .map(|(queue, q)| {
                let n: u64 = q.iter().map(|(_, c)| c).sum();
                (queue.clone(), n.saturating_mul(1_000_000) / span)
            })
            .collect()
    }
}

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
    rates: QueueRates,
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
        // Throughput older than the window no longer counts (looked at
        // with each round, at least every IDLE_MS).
        if self.rates.expire(cx.now.mono_ms) {
            let rates = self.rates.rates_milli(cx.now.mono_ms);
            cx.out.publish(|view| view.queue_rate_milli = rates.into());
        }
        let connected = sessions.connected();
        let warm = sessions.warm();
        let live = Live {
            connected: &connected,
            warm: &warm,
            warm_weight_milli: cx.cfg.warm_weight_milli,
        };
        let round = plan_with(cx.state, &live, MAX_ROUND, &mut self.cursor);
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
    /// planned at once; its assignments count towards their queues'
    /// throughput. Returns the assignments granted, for the agents' sessions.
    pub(crate) fn committed(
        &mut self,
        cx: &mut Ctx,
        index: u64,
        response: Response,
    ) -> Vec<Granted> {
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
                let now = cx.now.mono_ms;
                let mut per_queue: BTreeMap<&str, u64> = BTreeMap::new();
                for g in &granted {
                    if let Some(t) = cx.state.task(g.task) {
                        *per_queue.entry(t.spec.queue.as_str()).or_default() += 1;
                    }
                }
                self.rates.expire(now);
                for (queue, n) in per_queue {
                    self.rates.add(queue, n, now);
                }
                let rates = self.rates.rates_milli(now);
                self.answered(cx, Some(rates));
                granted
            }
            other => {
                self.answered(cx, None);
                tracing::warn!(response = ?other, "unexpected response to assign");
                Vec::new()
            }
        }
    }

    /// The round did not commit: the next is planned [`RETRY_MS`] later.
    pub(crate) fn not_committed(&mut self, cx: &mut Ctx, error: &ProposeError) {
        self.answered(cx, None);
        tracing::warn!(error = %error, "dispatch round not committed");
        self.not_before = cx.now.mono_ms + RETRY_MS;
        self.due = Some(self.not_before);
    }

    /// The round is no longer in flight: eager placement stops planning
    /// around it (and the queues' throughput is `rates`, if given).
    fn answered(&mut self, cx: &mut Ctx, rates: Option<BTreeMap<String, u64>>) {
        self.in_flight = false;
        cx.out.publish(|view| {
            view.dispatching = InFlight::default().into();
            if let Some(rates) = rates {
                view.queue_rate_milli = rates.into();
            }
        });
    }
}
