//! Outgoing gRPC channels to other servers, one per address, created lazily
//! (connected on first use) from this node's source IP and kept for reuse:
//! the Raft transport, the cross-DC shipper and a follower passing an
//! exchange to its leader all dial through one of these.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// HTTP/2 keepalive of every server-to-server connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Channels {
    cache: Arc<Mutex<HashMap<String, Channel>>>,
    source_ip: Option<IpAddr>,
    connect_timeout: Duration,
    /// Extra endpoint settings (keep-alives, a request timeout).
    configure: fn(Endpoint) -> Endpoint,
}

impl Channels {
    pub fn new(
        source_ip: Option<IpAddr>,
        connect_timeout: Duration,
        configure: fn(Endpoint) -> Endpoint,
    ) -> Channels {
        Channels {
            cache: Arc::default(),
            source_ip,
            connect_timeout,
            configure,
        }
    }

    /// The channel to `addr` (`HOST:PORT`), made on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, String> {
        let mut cache = self.cache.lock().expect("channel cache poisoned");
        if let Some(ch) = cache.get(addr) {
            return Ok(ch.clone());
        }
        // A silent peer (dropped packets, a paused process) fails its calls
        // within interval + timeout and the connection is closed; the
        // channel dials anew on its next call instead of waiting on it.
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad address {addr:?}: {e}"))?
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let ch = tidal_client::dial::connect_lazy(
            (self.configure)(endpoint),
            self.source_ip,
            self.connect_timeout,
            None,
        );
        cache.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
}

impl Default for Channels {
    fn default() -> Channels {
        Channels::new(None, Duration::from_millis(500), |e| e)
    }
}
