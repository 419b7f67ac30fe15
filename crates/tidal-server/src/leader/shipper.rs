//! The leader's shipper: one loop per peer DC that sends the outbox towards
//! it in order, in batches, and commits the peer's verdicts (`ForwardAck`).
//!
//! The outbox in the replicated state holds exactly the unacknowledged
//! records, so the committed state is the cursor: a new leader (here or
//! there) resends from the first unacknowledged record and the peer's
//! deduplication by (origin, sequence) makes the resend harmless. One batch
//! is in flight at a time, which keeps records in order (FIFO per origin).
//! An idle link still exchanges capability summaries every second.

use std::sync::Arc;
use std::time::Duration;

use tidal_core::command::{Command, Response};
use tidal_core::forwarding::Record;
use tidal_proto::v1;
use tidal_proto::v1::dcs_client::DcsClient;

use super::leadership::Leadership;
use crate::channels::Channels;
use crate::config::Peer;
use crate::links::{ExchangeBody, ExchangeReply, Summary, MAX_EXCHANGE_MESSAGE, SHIP_BATCH};
use crate::node::Node;

/// Payload bytes per exchange (a batch stops early past this), so the
/// receiver's ingest entry stays about a megabyte (batcher::MAX_ENTRY_BYTES).
const SHIP_BYTES: usize = crate::batcher::MAX_ENTRY_BYTES;
/// How often an idle link exchanges summaries.
const IDLE_EXCHANGE: Duration = Duration::from_secs(1);
/// How often an idle shipper looks for new records.
const POLL: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(node: Arc<Node>, leadership: Arc<Leadership>, peer: Peer) {
    let mut link = Link::new(&node, &peer);
    let mut backoff = Duration::from_millis(50);
    let mut last_exchange: Option<tokio::time::Instant> = None;
    while leadership.is_alive() {
        let records = batch(&node.state.read().state, &peer.dc);
        let idle_due = last_exchange.is_none_or(|t| t.elapsed() >= IDLE_EXCHANGE);
        if records.is_empty() && !idle_due {
            tokio::time::sleep(POLL).await;
            continue;
        }
        // Only for an exchange: it walks every agent.
        let summary = Summary::of(&node.state.read().state);
        let first = records.first().map(|(s, _)| *s);
        let sent = records.len();
        match link.exchange(&node, summary, records).await {
            Ok(reply) => {
                backoff = Duration::from_millis(50);
                last_exchange = Some(tokio::time::Instant::now());
                node.peers.up(&peer.dc);
                node.peers.summary(&peer.dc, reply.summary);
                if reply.verdicts.is_empty() {
                    if let Some(first) = first.filter(|f| *f > reply.hwm + 1) {
                        // The peer lost records it had acknowledged (restored
                        // from an older backup?): they are gone from here too.
                        let why = format!(
                            "DC {} expects record {} but the outbox starts at {first}",
                            peer.dc,
                            reply.hwm + 1
                        );
                        tracing::error!("{why}");
                        node.peers.down(&peer.dc, why);
                        tokio::time::sleep(MAX_BACKOFF).await;
                    }
                    continue;
                }
                let acked = reply.verdicts.len();
                match node
                    .propose(Command::ForwardAck {
                        peer: peer.dc.clone(),
                        verdicts: reply.verdicts,
                    })
                    .await
                {
                    Ok((Response::Ok, index)) => {
                        tracing::debug!(peer = %peer.dc, sent, acked, log_index = index, "shipped");
                        // Refused tasks are Pending again: let them move.
                        leadership.wake.notify_one();
                    }
                    Ok((other, _)) => {
                        tracing::warn!(response = ?other, "unexpected answer to forward-ack")
                    }
                    Err(e) => {
                        tracing::warn!(peer = %peer.dc, error = %e, "forward-ack not committed");
                        tokio::time::sleep(backoff).await;
                    }
                }
            }
            Err(why) => {
                tracing::debug!(peer = %peer.dc, error = %why, "exchange failed");
                node.peers.down(&peer.dc, why);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The next records to send: in order from the first unacknowledged one, at
/// most [`SHIP_BATCH`] and about [`SHIP_BYTES`] of payload.
fn batch(state: &tidal_core::State, peer: &str) -> Vec<(u64, Record)> {
    let mut bytes = 0usize;
    let mut out = Vec::new();
    for (seq, record) in state.unshipped(peer, 0, SHIP_BATCH) {
        bytes += match &record {
            Record::Task { spec, .. } => spec.payload.len(),
            Record::Status(s) => s.result.len() + s.error.len(),
            Record::Cancel { .. } => 0,
        };
        out.push((seq, record));
        if bytes >= SHIP_BYTES {
            break;
        }
    }
    out
}

/// The connection to one peer DC: its endpoints and the one in use. Any
/// server of the peer takes an exchange (a follower passes it to its leader),
/// so the shipper never needs the peer's internal addresses: the endpoints
/// may be a proxy or a load balancer.
struct Link {
    dc: String,
    endpoints: Vec<String>,
    current: usize,
    channels: Channels,
}

impl Link {
    fn new(node: &Node, peer: &Peer) -> Link {
        Link {
            dc: peer.dc.clone(),
            endpoints: peer.endpoints.clone(),
            current: 0,
            channels: Channels::new(node.config.source_ip, Duration::from_secs(2), |e| {
                e.timeout(RPC_TIMEOUT)
            }),
        }
    }

    /// One exchange with the endpoint in use; a failure moves to the next.
    async fn exchange(
        &mut self,
        node: &Node,
        summary: Summary,
        records: Vec<(u64, Record)>,
    ) -> Result<ExchangeReply, String> {
        let body = ExchangeBody { summary, records }
            .encode()
            .map_err(|e| format!("encoding: {e}"))?;
        let addr = self.endpoints[self.current % self.endpoints.len()].clone();
        let result = self.exchange_with(node, &addr, body).await;
        if result.is_err() {
            self.current = self.current.wrapping_add(1);
        }
        result
    }

    async fn exchange_with(
        &mut self,
        node: &Node,
        addr: &str,
        body: Vec<u8>,
    ) -> Result<ExchangeReply, String> {
        let channel = self.channels.get(addr)?;
        let mut client = DcsClient::new(channel)
            .max_decoding_message_size(MAX_EXCHANGE_MESSAGE)
            .max_encoding_message_size(MAX_EXCHANGE_MESSAGE);
        let request = v1::ExchangeRequest {
            origin_dc: node.config.dc.clone(),
            target_dc: self.dc.clone(),
            body,
        };
        let resp = client
            .exchange(request)
            .await
            .map_err(|s| format!("{addr}: {}", s.message()))?
            .into_inner();
        if resp.dc != self.dc {
            return Err(format!("{addr} is DC {:?}, not {:?}", resp.dc, self.dc));
        }
        tidal_store::codec::decode("exchange reply", &resp.body)
            .map_err(|e| format!("decoding the answer of {addr}: {e}"))
    }
}
