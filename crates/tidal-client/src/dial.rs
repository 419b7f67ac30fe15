//! Channels to tidal servers, optionally dialed from a fixed local IP.
//!
//! The one transport helper, shared by the client and the server's Raft
//! network. A fixed source address serves multi-homed
//! hosts (pick the interface the peers expect) and fault-injection harnesses,
//! which tell links apart by the source address of each connection.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// A lazily connecting channel to `endpoint`. With `source_ip`, every
/// connection is bound to that local address first; `connect_timeout` bounds
/// each connection attempt either way.
pub fn connect_lazy(
    endpoint: Endpoint,
    source_ip: Option<IpAddr>,
    connect_timeout: Duration,
) -> Channel {
    let endpoint = endpoint.connect_timeout(connect_timeout).tcp_nodelay(true);
    let Some(ip) = source_ip else {
        return endpoint.connect_lazy();
    };
    let connector = tower::service_fn(move |uri: Uri| async move {
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_matches(|c| c == '[' || c == ']');
        let port = uri.port_u16().unwrap_or(80);
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
        let stream = tokio::time::timeout(connect_timeout, socket.connect(target))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to {target} timed out"),
                )
            })??;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(TokioIo::new(stream))
    });
    endpoint.connect_with_connector_lazy(connector)
}
