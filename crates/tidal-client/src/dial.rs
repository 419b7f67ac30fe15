//! Channels to tidal servers, optionally dialed from a fixed local IP and optionally over mutual TLS.
//!
//! The one transport helper, shared by the client and the server's Raft
//! network. A fixed source address serves multi-homed
//! hosts (pick the interface the peers expect) and fault-injection harnesses,
//! which tell links apart by the source address of each connection. With a
//! TLS configuration (from `tidal_tls::client_config`, which fixes the
//! server identity it accepts), each connection is TCP first, with the same
//! source bind, then a rustls handshake; tonic sees an `http://` endpoint
//! over the established TLS stream.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tidal_tls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tidal_tls::rustls::crypto::{ring, CryptoProvider};
use tidal_tls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tidal_tls::rustls::{self, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tidal_tls::tokio_rustls::TlsConnector;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// A lazily connecting channel to `endpoint`. With `source_ip`, every
/// connection is bound to that local address first; with `tls`, every
/// connection runs a TLS handshake with that configuration before gRPC
/// starts (ALPN h2; the configuration's verifier decides which servers are
/// accepted). `connect_timeout` bounds each TCP connect and each handshake.
pub fn connect_lazy(
    endpoint: Endpoint,
    source_ip: Option<IpAddr>,
    connect_timeout: Duration,
    tls: Option<Arc<ClientConfig>>,
) -> Channel {
    let endpoint = endpoint.connect_timeout(connect_timeout).tcp_nodelay(true);
    match tls {
        None if source_ip.is_none() => endpoint.connect_lazy(),
        None => {
            endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: Uri| async move {
                let stream = tcp(&uri, source_ip, connect_timeout).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }))
        }
        Some(config) => {
            let connector = TlsConnector::from(config);
            endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: Uri| {
                let connector = connector.clone();
                async move {
                    let stream = tcp(&uri, source_ip, connect_timeout).await?;
                    // The verifier checks the server's identity, not this
                    // name; rustls only needs a valid one.
                    let name = ServerName::try_from(host(&uri).to_string())
                        .map_err(|e| std::io::Error::other(format!("{uri}: {e}")))?;
                    let tls =
                        tokio::time::timeout(connect_timeout, connector.connect(name, stream))
                            .await
                            .map_err(|_| {
                                timed_out(format!("the TLS handshake with {uri} timed out"))
                            })??;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            }))
        }
    }
}

/// Why the server at `addr` (`HOST:PORT`) refuses TLS with `config`, if
/// it does: a handshake, then a read, where a TLS 1.3 server's refusal of
/// the client's certificate arrives (a server that accepts sends its
/// HTTP/2 settings). No connection is kept: a TLS client asks this once
/// its connection was closed under it, because by then the refusal itself
/// may have been lost (HTTP/2 reports such a connection as closed).
pub async fn tls_refusal(
    addr: &str,
    source_ip: Option<IpAddr>,
    timeout: Duration,
    config: Arc<ClientConfig>,
) -> Option<rustls::Error> {
    use tokio::io::AsyncReadExt;
    let uri = format!("http://{addr}").parse::<Uri>().ok()?;
    let stream = tcp(&uri, source_ip, timeout).await.ok()?;
    let name = ServerName::try_from(host(&uri).to_string()).ok()?;
    let rustls_error = |e: std::io::Error| {
        e.get_ref()
            .and_then(|i| i.downcast_ref::<rustls::Error>())
            .cloned()
    };
    let mut tls =
        match tokio::time::timeout(timeout, TlsConnector::from(config).connect(name, stream)).await
        {
            Err(_) => return None,
            Ok(Err(e)) => return rustls_error(e),
            Ok(Ok(tls)) => tls,
        };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(timeout, tls.read(&mut byte)).await {
        Ok(Err(e)) => rustls_error(e),
        _ => None,
    }
}

/// Whether the server at `addr` (`HOST:PORT`) speaks TLS: it answers a
/// TLS client hello with a certificate. Nothing is verified and no
/// connection is kept: a plaintext client asks this once its connection
/// was closed under it, to tell a TLS server from a failing one.
pub async fn speaks_tls(addr: &str, source_ip: Option<IpAddr>, timeout: Duration) -> bool {
    let Ok(uri) = format!("http://{addr}").parse::<Uri>() else {
        return false;
    };
    let Ok(stream) = tcp(&uri, source_ip, timeout).await else {
        return false;
    };
    let Ok(name) = ServerName::try_from(host(&uri).to_string()) else {
        return false;
    };
    let provider = Arc::new(ring::default_provider());
    let seen = Arc::new(AtomicBool::new(false));
    let probe = Probe {
        seen: seen.clone(),
        provider: provider.clone(),
    };
    let Ok(config) = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(probe))
                .with_no_client_auth()
        })
    else {
        return false;
    };
    // The probe's verifier fails the handshake once it saw a certificate.
    let _ = tokio::time::timeout(
        timeout,
        TlsConnector::from(Arc::new(config)).connect(name, stream),
    )
    .await;
    seen.load(Ordering::SeqCst)
}

/// A verifier that notes that a certificate arrived and refuses it.
#[derive(Debug)]
struct Probe {
    seen: Arc<AtomicBool>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Probe {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.seen.store(true, Ordering::SeqCst);
        Err(rustls::Error::General("a probe only".into()))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("a probe only".into()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("a probe only".into()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The host of `uri`, without an IPv6 literal's brackets.
fn host(uri: &Uri) -> &str {
    uri.host()
        .unwrap_or_default()
        .trim_matches(|c| c == '[' || c == ']')
}

fn timed_out(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, message)
}

/// A TCP connection to `uri`'s host and port, bound to `source_ip` when given.
async fn tcp(
    uri: &Uri,
    source_ip: Option<IpAddr>,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let host = host(uri);
    let port = uri.port_u16().unwrap_or(80);
    let stream = match source_ip {
        None => tokio::time::timeout(timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| timed_out(format!("connecting to {host}:{port} timed out")))??,
        Some(ip) => {
            let target: SocketAddr = tokio::net::lookup_host((host, port))
                .await?
                .find(|a| a.is_ipv4() == ip.is_ipv4())
                .ok_or_else(|| {
                    std::io::Error::other(format!("{host} has no address of the family of {ip}"))
                })?;
            let socket = match ip {
                IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(ip, 0))?;
            tokio::time::timeout(timeout, socket.connect(target))
                .await
                .map_err(|_| timed_out(format!("connecting to {target} timed out")))??
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}
