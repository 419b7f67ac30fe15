//! Outgoing gRPC channels to other servers, one per address (and, with TLS,
//! per expected identity), created lazily (connected on first use) from this
//! node's source IP and kept for reuse: the Raft transport, the pre-votes,
//! the joiner check, the cross-DC shipper and a follower passing an
//! exchange to its leader all dial through one of these.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidal_tls::{Expect, TlsDir};
use tonic::transport::{Channel, Endpoint};

/// HTTP/2 keepalive of every server-to-server connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(1);

/// A channel's key: the address, and with TLS the server it must reach.
type Key = (String, Option<Expect>);

#[derive(Clone)]
pub struct Channels {
    cache: Arc<Mutex<HashMap<Key, Channel>>>,
    source_ip: Option<IpAddr>,
    connect_timeout: Duration,
    /// Extra endpoint settings (keep-alives, a request timeout).
    configure: fn(Endpoint) -> Endpoint,
    /// This server's DC: [`Channels::member`] expects a server of it.
    dc: String,
    /// This server's certificate: with it, every connection is mutual TLS.
    tls: Option<TlsDir>,
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
            dc: String::new(),
            tls: None,
        }
    }

    /// These channels with mutual TLS from `tls` (when given), as a server of `dc`.
    pub fn with_tls(self, dc: &str, tls: Option<TlsDir>) -> Channels {
        Channels {
            dc: dc.to_string(),
            tls,
            ..self
        }
    }

    /// Whether connections are mutual TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The channel to member `id` of this DC at `addr`: with TLS, only a
    /// server whose certificate names that node of this DC is accepted.
    pub fn member(&self, addr: &str, id: u64) -> Result<Channel, String> {
        self.get(
            addr,
            Expect::Node {
                dc: self.dc.clone(),
                id,
            },
        )
    }

    /// The channel to `addr` (`HOST:PORT`), made on first use. With TLS the
    /// server's certificate must name a server `expect` accepts; without,
    /// `expect` is not checked (one channel per address).
    pub fn get(&self, addr: &str, expect: Expect) -> Result<Channel, String> {
        let key = (addr.to_string(), self.tls.as_ref().map(|_| expect.clone()));
        let mut cache = self.cache.lock().expect("channel cache poisoned");
        if let Some(ch) = cache.get(&key) {
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
        let tls = match &self.tls {
            None => None,
            Some(dir) => Some(
                tidal_tls::client_config(dir, expect)
                    .map_err(|e| format!("TLS configuration for {addr}: {e}"))?,
            ),
        };
        let ch = tidal_client::dial::connect_lazy(
            (self.configure)(endpoint),
            self.source_ip,
            self.connect_timeout,
            tls,
        );
        cache.insert(key, ch.clone());
        Ok(ch)
    }
}

impl Default for Channels {
    fn default() -> Channels {
        Channels::new(None, Duration::from_millis(500), |e| e)
    }
}

/// The TLS failure in `err`'s chain of causes, if a handshake failed: why
/// the peer's certificate was refused (it names another server, or is not
/// signed by this DC's CA), or why the peer refused this server's.
pub fn tls_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(tls) = e.downcast_ref::<tidal_tls::rustls::Error>() {
            return Some(describe(tls));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<tidal_tls::rustls::Error>())
            {
                return Some(describe(tls));
            }
        }
        cause = e.source();
    }
    None
}

/// What went wrong with a call to another server, for a log or a
/// refusal: a failed TLS handshake's reason ([`tls_failure`]), else the
/// status' message.
pub fn why(status: &tonic::Status) -> String {
    tls_failure(status).unwrap_or_else(|| status.message().to_string())
}

/// A rustls error as an operator reads it.
fn describe(e: &tidal_tls::rustls::Error) -> String {
    use tidal_tls::rustls::{CertificateError, Error};
    match e {
        // Our verifier's refusal of the identity: its own message.
        Error::InvalidCertificate(CertificateError::Other(other)) => other.0.to_string(),
        Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => "the server's certificate is not signed by this server's CA (ca.pem)".into(),
        Error::AlertReceived(alert) => {
            format!("the server refused this server's certificate (TLS alert {alert:?})")
        }
        other => format!("TLS handshake failed: {other}"),
    }
}

#[cfg(test)]
#[path = "channels_test.rs"]
mod tests;
