//! What this node knows about its peer DCs beyond the replicated state: their
//! last capability summaries, the health of each link, the wire format of
//! `Dcs.Exchange` and the [`PeerLink`] a leader calls a peer through. The
//! leader's shippers write it; `Exchange` (a peer calling in) writes the
//! caller's summary; `tidal dc status` reads it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tidal_core::forwarding::{CapabilitySummary, Record, Verdict};

use crate::config::{Peer, ServerConfig};

pub use crate::leader::engine::SHIP_BATCH;
/// Largest Exchange message either way.
pub const MAX_EXCHANGE_MESSAGE: usize = 64 << 20;

/// A leader's link to one peer DC: one `Dcs.Exchange` call at a time, made
/// at the gRPC edge (`grpc::dc_link`).
pub trait PeerLink: Send {
    /// Sends this DC's summary and `records` to the peer; its answer, or
    /// why there is none.
    fn exchange(
        &mut self,
        summary: Summary,
        records: Vec<(u64, Record)>,
    ) -> BoxFuture<'_, Result<ExchangeReply, String>>;
}

/// Makes this node's link to a peer DC, with connections of its own (each
/// leadership makes its own), over mutual TLS with this node's certificate
/// when it has one.
pub type DialPeer = fn(&ServerConfig, Option<&tidal_tls::TlsDir>, &Peer) -> Box<dyn PeerLink>;

/// The body of an Exchange request (inside `ExchangeRequest.body`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExchangeBody {
    pub summary: Summary,
    pub records: Vec<(u64, Record)>,
}

impl ExchangeBody {
    /// The bytes of `ExchangeRequest.body`.
    pub fn encode(&self) -> Result<Vec<u8>, tidal_store::StoreError> {
        tidal_store::codec::encode("exchange", self)
    }
}

/// The body of an Exchange answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExchangeReply {
    pub summary: Summary,
    pub verdicts: Vec<(u64, Verdict)>,
    /// The sender's high-water mark at the receiver after this exchange.
    pub hwm: u64,
}

/// A DC's capability summary and how many tasks wait there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub capabilities: CapabilitySummary,
    pub pending: u64,
}

impl Summary {
    pub fn of(state: &tidal_core::State) -> Summary {
        Summary {
            capabilities: CapabilitySummary::of(state),
            pending: state.pending_total() as u64,
        }
    }

    /// Free slots less the tasks already waiting: what a new task may find.
    pub fn room(&self) -> u32 {
        u64::from(self.capabilities.free_slots()).saturating_sub(self.pending) as u32
    }
}

/// Link state of one peer, as the shipper last saw it.
#[derive(Clone, Debug, Default)]
pub struct PeerInfo {
    pub summary: Option<(Summary, Instant)>,
    /// None: not tried yet.
    pub up: Option<bool>,
    pub last_error: String,
    pub last_ack: Option<Instant>,
}

/// Every configured peer's [`PeerInfo`], in preference order.
pub struct PeerTable {
    peers: Vec<Peer>,
    info: Mutex<BTreeMap<String, PeerInfo>>,
}

impl PeerTable {
    pub fn new(peers: Vec<Peer>) -> PeerTable {
        PeerTable {
            info: Mutex::new(
                peers
                    .iter()
                    .map(|p| (p.dc.clone(), PeerInfo::default()))
                    .collect(),
            ),
            peers,
        }
    }

    /// The configured peers, in preference order.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// Each configured peer in preference order, with what the link knows
    /// of it and its outbox in `state`.
    pub fn each<'a>(
        &'a self,
        state: &'a tidal_core::State,
    ) -> impl Iterator<
        Item = (
            &'a Peer,
            PeerInfo,
            Option<&'a tidal_core::forwarding::Outbox>,
        ),
    > + 'a {
        self.peers
            .iter()
            .map(move |p| (p, self.get(&p.dc), state.outbox(&p.dc)))
    }

    pub fn is_peer(&self, dc: &str) -> bool {
        self.peers.iter().any(|p| p.dc == dc)
    }

    pub fn get(&self, dc: &str) -> PeerInfo {
        self.lock().get(dc).cloned().unwrap_or_default()
    }

    /// A peer's summary arrived (in an answer or in its own request).
    pub fn summary(&self, dc: &str, summary: Summary) {
        if let Some(info) = self.lock().get_mut(dc) {
            info.summary = Some((summary, Instant::now()));
        }
    }

    /// The peer answered an exchange.
    pub fn up(&self, dc: &str) {
        if let Some(info) = self.lock().get_mut(dc) {
            info.up = Some(true);
            info.last_ack = Some(Instant::now());
            info.last_error.clear();
        }
    }

    /// An exchange with the peer failed.
    pub fn down(&self, dc: &str, error: String) {
        if let Some(info) = self.lock().get_mut(dc) {
            info.up = Some(false);
            info.last_error = error;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PeerInfo>> {
        self.info.lock().expect("peer table poisoned")
    }
}
