//! The ends of a link (nodes, agents, clients, each with its own address)
//! and the faults a directed link can carry, whichever layer enforces them
//! (the proxy or nftables in network namespaces).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// One end of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    Node(u8),
    Agent(u8),
    Client(u8),
}

impl Peer {
    /// The loopback address this peer dials from.
    pub fn ip(self) -> IpAddr {
        let (group, n) = match self {
            Peer::Node(n) => (1, n),
            Peer::Agent(n) => (2, n),
            Peer::Client(n) => (3, n),
        };
        IpAddr::V4(Ipv4Addr::new(127, 0, group, n))
    }

    /// Who dialed from `ip`; `None` for anyone else (e.g. the observer).
    pub fn from_ip(ip: IpAddr) -> Option<Peer> {
        let IpAddr::V4(v4) = ip else { return None };
        match v4.octets() {
            [127, 0, 1, n] => Some(Peer::Node(n)),
            [127, 0, 2, n] => Some(Peer::Agent(n)),
            [127, 0, 3, n] => Some(Peer::Client(n)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Node(n) => write!(f, "n{n}"),
            Peer::Agent(n) => write!(f, "a{n}"),
            Peer::Client(n) => write!(f, "c{n}"),
        }
    }
}

/// Faults on the directed link `from -> to` (bytes sent by `from`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkFault {
    pub blocked: bool,
    pub delay: Duration,
    pub jitter: Duration,
    /// Probability that a chunk stalls for a retransmission timeout.
    pub loss: f64,
}

impl LinkFault {
    pub(crate) fn is_clear(&self) -> bool {
        *self == LinkFault::default()
    }
}
