//! The `Dcs.Exchange` client: the leader's link to one peer DC, its endpoints and the one in use.
//!
//! The leader engine's shippers decide what to send and when
//! (`leader/engine/ship.rs`); the driver makes the call through the
//! [`PeerLink`] that [`dial`] returns.

use std::time::Duration;

use futures::future::BoxFuture;
use tidal_core::forwarding::Record;
use tidal_proto::v1;
use tidal_proto::v1::dcs_client::DcsClient;
use tidal_tls::{Expect, TlsDir};

use crate::channels::Channels;
use crate::config::{Peer, ServerConfig};
use crate::links::{ExchangeBody, ExchangeReply, PeerLink, Summary, MAX_EXCHANGE_MESSAGE};

/// How long one exchange may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection to one peer DC: its endpoints and the one in use. Any
/// server of the peer takes an exchange (a follower passes it to its leader),
/// so the shipper never needs the peer's internal addresses: the endpoints
/// may be a proxy or a load balancer.
pub struct Link {
    /// This node's DC, named in each request.
    origin_dc: String,
    dc: String,
    endpoints: Vec<String>,
    current: usize,
    channels: Channels,
}

/// The link from this node (`config`) to `peer`, with its own connections.
/// With `tls`, only a server whose certificate names the peer DC is accepted.
pub fn dial(config: &ServerConfig, tls: Option<&TlsDir>, peer: &Peer) -> Box<dyn PeerLink> {
    Box::new(Link {
        origin_dc: config.dc.clone(),
        dc: peer.dc.clone(),
        endpoints: peer.endpoints.clone(),
        current: 0,
        channels: Channels::new(config.source_ip, Duration::from_secs(2), |e| {
            e.timeout(RPC_TIMEOUT)
        })
        .with_tls(&config.dc, tls.cloned()),
    })
}

impl PeerLink for Link {
    /// One exchange with the endpoint in use; a failure moves to the next.
    fn exchange(
        &mut self,
        summary: Summary,
        records: Vec<(u64, Record)>,
    ) -> BoxFuture<'_, Result<ExchangeReply, String>> {
        Box::pin(async move {
            let body = ExchangeBody { summary, records }
                .encode()
                .map_err(|e| format!("encoding: {e}"))?;
            let addr = self.endpoints[self.current % self.endpoints.len()].clone();
            let result = self.exchange_with(&addr, body).await;
            if result.is_err() {
                self.current = self.current.wrapping_add(1);
            }
            result
        })
    }
}

impl Link {
    async fn exchange_with(&self, addr: &str, body: Vec<u8>) -> Result<ExchangeReply, String> {
        let channel = self.channels.get(addr, Expect::Dc(self.dc.clone()))?;
        let mut client = DcsClient::new(channel)
            .max_decoding_message_size(MAX_EXCHANGE_MESSAGE)
            .max_encoding_message_size(MAX_EXCHANGE_MESSAGE);
        let request = v1::ExchangeRequest {
            origin_dc: self.origin_dc.clone(),
            target_dc: self.dc.clone(),
            body,
        };
        let resp = client
            .exchange(request)
            .await
            .map_err(|s| format!("{addr}: {}", crate::channels::why(&s)))?
            .into_inner();
        if resp.dc != self.dc {
            return Err(format!("{addr} is DC {:?}, not {:?}", resp.dc, self.dc));
        }
        tidal_store::codec::decode("exchange reply", &resp.body)
            .map_err(|e| format!("decoding the answer of {addr}: {e}"))
    }
}
