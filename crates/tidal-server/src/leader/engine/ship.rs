//! The shippers: one per peer DC, sending its outbox in order, in batches, and committing the peer's verdicts (`ForwardAck`).
//!
//! The outbox in the replicated state holds exactly the unacknowledged
//! records, so the committed state is the cursor: a new leader (here or
//! there) resends from the first unacknowledged record and the peer's
//! deduplication by (origin, sequence) makes the resend harmless. One
//! exchange or acknowledgement is in flight per peer at a time, which keeps
//! records in order (FIFO per origin). An idle link still exchanges
//! capability summaries every second. The driver does the exchange
//! ([`Action::Exchange`]: it adds this DC's summary and tries the peer's
//! endpoints in turn) and reports the answer ([`Event::PeerAnswer`](super::Event::PeerAnswer)).

use tidal_core::command::{Command, Response};
use tidal_core::forwarding::{DcName, Record};
use tidal_core::State;

use super::action::{Action, LinkNews};
use super::ctx::{Ctx, Purpose};
use super::event::{Now, PeerReply, ProposeError};

/// Records per exchange.
pub const SHIP_BATCH: usize = 512;
/// How often an idle link exchanges summaries.
pub const IDLE_EXCHANGE_MS: u64 = 1_000;
/// How often an idle shipper looks for new records.
pub const POLL_MS: u64 = 20;
/// The first wait after a failed exchange; it doubles up to [`MAX_BACKOFF_MS`].
pub const MIN_BACKOFF_MS: u64 = 50;
pub const MAX_BACKOFF_MS: u64 = 5_000;

#[derive(Debug)]
enum InFlight {
    /// An exchange whose first record (if any) has this sequence.
    Exchange { first: Option<u64>, sent: usize },
    /// The `ForwardAck` of an exchange's verdicts.
    Ack { sent: usize, acked: usize },
}

/// One peer's shipper.
#[derive(Debug)]
pub(crate) struct Shipper {
    dc: DcName,
    /// When to look at the outbox again; `None` before the start and while
    /// something is in flight.
    next: Option<u64>,
    backoff_ms: u64,
    /// When an exchange last succeeded.
    last_exchange: Option<u64>,
    in_flight: Option<InFlight>,
}

impl Shipper {
    pub(crate) fn new(dc: DcName) -> Shipper {
        Shipper {
            dc,
            next: None,
            backoff_ms: MIN_BACKOFF_MS,
            last_exchange: None,
            in_flight: None,
        }
    }

    pub(crate) fn start(&mut self, now: Now) {
        self.next = Some(now.mono_ms);
    }

    pub(crate) fn next_wake(&self) -> Option<u64> {
        self.next.filter(|_| self.in_flight.is_none())
    }

    /// Looks at the outbox if it is time: sends what is unacknowledged, or
    /// exchanges summaries if the link was idle for a second.
    pub(crate) fn fire(&mut self, cx: &mut Ctx) {
        let now = cx.now.mono_ms;
        match self.next {
            Some(at) if at <= now && self.in_flight.is_none() => {}
            _ => return,
        }
        let records = batch(cx.state, &self.dc, cx.cfg.ship_bytes);
        let idle_due = self
            .last_exchange
            .is_none_or(|t| now.saturating_sub(t) >= IDLE_EXCHANGE_MS);
        if records.is_empty() && !idle_due {
            self.next = Some(now + POLL_MS);
            return;
        }
        self.next = None;
        self.in_flight = Some(InFlight::Exchange {
            first: records.first().map(|(s, _)| *s),
            sent: records.len(),
        });
        cx.out.push(Action::Exchange {
            dc: self.dc.clone(),
            records,
        });
    }

    /// The answer to this shipper's exchange.
    pub(crate) fn answered(&mut self, answer: Result<PeerReply, String>, cx: &mut Ctx) {
        let Some(InFlight::Exchange { first, sent }) = self.in_flight.take() else {
            return;
        };
        let now = cx.now.mono_ms;
        let dc = self.dc.clone();
        let news = |news| Action::PeerLink {
            dc: dc.clone(),
            news,
        };
        let reply = match answer {
            Ok(reply) => reply,
            Err(why) => {
                tracing::debug!(peer = %self.dc, error = %why, "exchange failed");
                cx.out.push(news(LinkNews::Down(why)));
                self.next = Some(now + self.backoff_ms);
                self.backoff_ms = (self.backoff_ms * 2).min(MAX_BACKOFF_MS);
                return;
            }
        };
        self.backoff_ms = MIN_BACKOFF_MS;
        self.last_exchange = Some(now);
        cx.out.push(news(LinkNews::Up));
        cx.out.push(news(LinkNews::Summary(reply.summary)));
        if reply.verdicts.is_empty() {
            self.next = Some(now);
            if let Some(first) = first.filter(|f| *f > reply.hwm + 1) {
                // The peer lost records it had acknowledged (restored from
                // an older backup?): they are gone from here too.
                let why = format!(
                    "DC {} expects record {} but the outbox starts at {first}",
                    self.dc,
                    reply.hwm + 1
                );
                tracing::error!("{why}");
                cx.out.push(news(LinkNews::Down(why)));
                self.next = Some(now + MAX_BACKOFF_MS);
            }
            return;
        }
        let acked = reply.verdicts.len();
        cx.out.propose(
            Purpose::ForwardAck(self.dc.clone()),
            Command::ForwardAck {
                peer: self.dc.clone(),
                verdicts: reply.verdicts,
            },
        );
        self.in_flight = Some(InFlight::Ack { sent, acked });
    }

    /// The answer to this shipper's `ForwardAck`; true if it committed
    /// (refused tasks are pending again).
    pub(crate) fn committed(&mut self, index: u64, response: Response, cx: &mut Ctx) -> bool {
        let Some(InFlight::Ack { sent, acked }) = self.in_flight.take() else {
            return false;
        };
        self.next = Some(cx.now.mono_ms);
        match response {
            Response::Ok => {
                tracing::debug!(peer = %self.dc, sent, acked, log_index = index, "shipped");
                true
            }
            other => {
                tracing::warn!(response = ?other, "unexpected answer to forward-ack");
                false
            }
        }
    }

    pub(crate) fn not_committed(&mut self, error: &ProposeError, cx: &mut Ctx) {
        if !matches!(self.in_flight.take(), Some(InFlight::Ack { .. })) {
            return;
        }
        tracing::warn!(peer = %self.dc, error = %error, "forward-ack not committed");
        self.next = Some(cx.now.mono_ms + self.backoff_ms);
    }
}

/// The next records to send: in order from the first unacknowledged one, at
/// most [`SHIP_BATCH`] and about `max_bytes` of payload.
fn batch(state: &State, peer: &str, max_bytes: usize) -> Vec<(u64, Record)> {
    let mut bytes = 0usize;
    let mut out = Vec::new();
    for (seq, record) in state.unshipped(peer, 0, SHIP_BATCH) {
        bytes += match &record {
            Record::Task { spec, .. } => spec.payload.len(),
            Record::Status(s) => s.result.len() + s.error.len(),
            Record::Cancel { .. } => 0,
        };
        out.push((seq, record));
        if bytes >= max_bytes {
            break;
        }
    }
    out
}
