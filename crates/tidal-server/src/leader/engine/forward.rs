//! Cross-DC forwarding: asks tidal-core's policy ([`plan_forwards`]) which pending tasks go to which peer DC, and commits them as one `Forward`.
//!
//! It waits for new work (a submit) or at most [`EVERY_MS`], then a gap of
//! [`GAP_MS`], so a flood of submits does not turn into back-to-back scans;
//! a submit during the gap or the round makes the next wait end at once. The
//! round runs when the driver passes in the peers' summaries
//! ([`Event::PeerSummaries`](super::Event::PeerSummaries), before each timer
//! tick). One round is in flight at a time. The shippers take it from there.

use std::collections::BTreeMap;

use tidal_core::command::{Command, Response};
use tidal_core::forwarding::{plan_forwards, DcName, PeerView, Record};

use super::ctx::{Ctx, Purpose};
use super::event::{Now, PeerSummary, ProposeError};

/// At most this many tasks per `Forward` entry.
pub const MAX_ROUND: usize = 1024;
/// How often pending work is looked at without a submit (for
/// `forward_after` and new peer summaries).
pub const EVERY_MS: u64 = 200;
/// The least time between a wake and its round.
pub const GAP_MS: u64 = 20;

/// The forwarder's wait and its round in flight.
#[derive(Debug, Default)]
pub(crate) struct Forward {
    /// When the wait for work ends (the round follows [`GAP_MS`] later).
    wait_end: Option<u64>,
    /// Work came after the wait ended: the next wait ends at once.
    woken: bool,
    in_flight: bool,
}

impl Forward {
    pub(crate) fn start(&mut self, now: Now) {
        self.wait_end = Some(now.mono_ms + EVERY_MS);
    }

    /// New pending work.
    pub(crate) fn work(&mut self, now: Now) {
        match self.wait_end {
            Some(end) if !self.in_flight && now.mono_ms < end => self.wait_end = Some(now.mono_ms),
            Some(_) => self.woken = true,
            None => {}
        }
    }

    /// When the next round is due, unless one is in flight.
    pub(crate) fn next_wake(&self) -> Option<u64> {
        self.wait_end
            .filter(|_| !self.in_flight)
            .map(|end| end + GAP_MS)
    }

    /// The peers' summaries as of now (in any order; `None`: none yet):
    /// runs the round if it is due.
    pub(crate) fn told(&mut self, peers: &[(DcName, Option<PeerSummary>)], cx: &mut Ctx) {
        match self.next_wake() {
            Some(at) if at <= cx.now.mono_ms => {}
            _ => return,
        }
        let summaries: BTreeMap<&str, &PeerSummary> = peers
            .iter()
            .filter_map(|(dc, s)| Some((dc.as_str(), s.as_ref()?)))
            .collect();
        let fwd = &cx.cfg.forwarding;
        let mut views: Vec<PeerView> = cx
            .cfg
            .peers
            .iter()
            .map(|dc| {
                let outbox = cx.state.outbox(dc);
                let depth = outbox.map_or(0, |o| o.records.len());
                let in_flight = outbox.map_or(0, |o| {
                    o.records
                        .values()
                        .filter(|(_, r)| matches!(r, Record::Task { .. }))
                        .count()
                }) as u32;
                let summary = summaries.get(dc.as_str());
                PeerView {
                    dc: dc.clone(),
                    room: summary.map_or(0, |s| s.room().saturating_sub(in_flight)),
                    summary: summary.map(|s| s.capabilities.clone()),
                    outbox_room: fwd.outbox_limit.saturating_sub(depth),
                }
            })
            .collect();
        let round = plan_forwards(
            cx.state,
            &mut views,
            |q| fwd.policy(q),
            cx.now.wall_ms,
            MAX_ROUND,
        );
        if round.is_empty() {
            self.wait(cx.now);
            return;
        }
        cx.out.propose(Purpose::Forward, Command::Forward(round));
        self.in_flight = true;
    }

    /// Waits again: at most [`EVERY_MS`], not at all if work came meanwhile.
    fn wait(&mut self, now: Now) {
        let woken = std::mem::take(&mut self.woken);
        self.wait_end = Some(if woken {
            now.mono_ms
        } else {
            now.mono_ms + EVERY_MS
        });
    }

    pub(crate) fn committed(&mut self, index: u64, response: Response, now: Now) {
        self.in_flight = false;
        self.wait(now);
        match response {
            Response::Forwarded(results) => {
                let refused = results.iter().filter(|r| r.is_err()).count();
                tracing::debug!(
                    log_index = index,
                    forwarded = results.len() - refused,
                    refused,
                    "forward round committed"
                );
            }
            other => tracing::warn!(response = ?other, "unexpected answer to forward"),
        }
    }

    pub(crate) fn not_committed(&mut self, error: &ProposeError, now: Now) {
        self.in_flight = false;
        self.wait(now);
        tracing::warn!(error = %error, "forward round not committed");
    }
}
