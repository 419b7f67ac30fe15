//! What the connection a request came on tells about its caller.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tidal_tls::CertIdentity;

/// Which of the server's sockets accepted a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Listener {
    /// `--listen`: clients, agents and, without `--peer-listen`, other servers.
    Public,
    /// `--peer-listen`: other servers of this DC and peer DCs.
    Peer,
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Listener::Public => "public",
            Listener::Peer => "peer",
        })
    }
}

/// What the connection a request came on tells about its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The caller's address as the kernel reported it at accept.
    pub remote: SocketAddr,
    /// The socket that accepted the connection.
    pub listener: Listener,
    /// The identity the caller's client certificate names (None on a
    /// plaintext connection).
    pub cert: Option<Arc<CertIdentity>>,
}

impl Caller {
    /// A caller on a plain TCP connection: all it tells is its address.
    pub fn plain(remote: SocketAddr, listener: Listener) -> Caller {
        Caller {
            remote,
            listener,
            cert: None,
        }
    }

    /// The caller's IP, an IPv4-mapped IPv6 address as the IPv4 one.
    pub fn ip(&self) -> IpAddr {
        canonical(self.remote.ip())
    }
}

/// `ip`, with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) turned into IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}
