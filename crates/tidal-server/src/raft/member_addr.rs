//! A member's addresses as stored in openraft's `BasicNode.addr`: `CLIENT` or `CLIENT|PEER`.
//!
//! openraft treats `BasicNode.addr` as an opaque string, so a membership
//! that names peer addresses is encoded (bincode, in entries and snapshots)
//! exactly like one that does not. The client address is what clients,
//! agents and redirects (`not_leader`, `Cluster.Members`, `Cluster.Status`)
//! see; the peer address is where other servers of the DC reach the
//! member's Raft service (replication, pre-votes, transfers, removal
//! notices, the joiner check, exchanges passed on to the leader). A member
//! without a peer address serves both on its client address.
//!
//! [`MemberAddr::parse`] is total: it returns an error for any malformed
//! string and never panics (it reads what the network and the disk hold).

use std::fmt;

use openraft::BasicNode;

/// What separates the client from the peer address. It appears in no
/// `HOST:PORT`, so a stored address without it is a client address alone.
pub const SEPARATOR: char = '|';

/// A member's client address and, when it has one, its peer address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberAddr {
    pub client: String,
    pub peer: Option<String>,
}

/// Why a string is not a member's address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemberAddrError {
    #[error("member address {0:?} has no client address")]
    NoClient(String),
    #[error("member address {0:?} has an empty peer address after '|'")]
    EmptyPeer(String),
    #[error("member address {0:?} has more than one '|'")]
    TooManyParts(String),
    #[error("member address {0:?} contains whitespace or a control character")]
    BadCharacter(String),
}

impl MemberAddr {
    /// A member that serves clients and peers on `client` alone.
    pub fn client_only(client: impl Into<String>) -> MemberAddr {
        MemberAddr {
            client: client.into(),
            peer: None,
        }
    }

    /// Reads `CLIENT` or `CLIENT|PEER`; each part must be non-empty, and
    /// neither may hold another `|`, whitespace or a control character.
    pub fn parse(s: &str) -> Result<MemberAddr, MemberAddrError> {
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(MemberAddrError::BadCharacter(s.to_string()));
        }
        let mut parts = s.split(SEPARATOR);
        let client = parts.next().unwrap_or_default();
        let peer = parts.next();
        if parts.next().is_some() {
            return Err(MemberAddrError::TooManyParts(s.to_string()));
        }
        if client.is_empty() {
            return Err(MemberAddrError::NoClient(s.to_string()));
        }
        match peer {
            Some("") => Err(MemberAddrError::EmptyPeer(s.to_string())),
            peer => Ok(MemberAddr {
                client: client.to_string(),
                peer: peer.map(str::to_string),
            }),
        }
    }

    /// The addresses of a stored member. A string that does not parse is
    /// taken whole as the client address, which is how every member's
    /// address was read before peer addresses: a dial to it then fails as
    /// it would have.
    pub fn of_stored(s: &str) -> MemberAddr {
        MemberAddr::parse(s).unwrap_or_else(|_| MemberAddr::client_only(s))
    }

    /// Where other servers reach this member: its peer address, or its
    /// client address when it has none.
    pub fn peer_or_client(&self) -> &str {
        self.peer.as_deref().unwrap_or(&self.client)
    }
}

impl fmt::Display for MemberAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.peer {
            Some(peer) => write!(f, "{}{SEPARATOR}{peer}", self.client),
            None => f.write_str(&self.client),
        }
    }
}

/// The address clients are sent to for member `node`.
pub fn client_addr(node: &BasicNode) -> String {
    MemberAddr::of_stored(&node.addr).client
}

/// The address other servers dial for member `node`'s Raft service.
pub fn peer_addr(node: &BasicNode) -> String {
    MemberAddr::of_stored(&node.addr)
        .peer_or_client()
        .to_string()
}

#[cfg(test)]
#[path = "member_addr_test.rs"]
mod tests;
