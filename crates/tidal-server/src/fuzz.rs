//! Fuzz targets of the server's decoders: what peers, clients and the
//! operator's files send it.
//!
//! Each target takes any bytes and must return without panicking, without
//! allocating more than its input warrants and without looping. The
//! cargo-fuzz crate `fuzz/` calls them (feature `fuzzing`), and the tests
//! replay the committed corpora through them (fuzz/README.md). The targets
//! of the gRPC edge are in `grpc::fuzz`.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use tidal_store::TypeConfig;

use tidal_store::fuzz::with_checksum;

use crate::raft::network::decode;

#[cfg(test)]
#[path = "fuzz_test.rs"]
pub(crate) mod tests;

/// Target `raft_append`: an AppendEntries payload (its entries' commands
/// included, which the store decodes as it does from disk).
pub fn raft_append(bytes: &[u8]) {
    if let Ok(req) = decode::<AppendEntriesRequest<TypeConfig>>(bytes) {
        for entry in &req.entries {
            let again = tidal_store::codec::encode("entry", entry).expect("an entry encodes");
            tidal_store::codec::decode::<tidal_store::Entry>("entry", &again)
                .expect("and decodes again");
        }
    }
}

/// Target `raft_vote`: a Vote payload.
pub fn raft_vote(bytes: &[u8]) {
    let _ = decode::<VoteRequest<u64>>(bytes);
}

/// Target `raft_snapshot`: an InstallSnapshot payload, and the snapshot
/// data it carries when it is whole.
pub fn raft_snapshot(bytes: &[u8]) {
    if let Ok(req) = decode::<InstallSnapshotRequest<TypeConfig>>(bytes) {
        if req.offset == 0 && req.done {
            let _ = tidal_store::decode_snapshot(&req.data);
        }
    }
}

/// Target `raft_replies`: the replies to the three Raft RPCs, as the
/// leader decodes them.
pub fn raft_replies(bytes: &[u8]) {
    let _ = decode::<Result<AppendEntriesResponse<u64>, RaftError<u64>>>(bytes);
    let _ = decode::<Result<VoteResponse<u64>, RaftError<u64>>>(bytes);
    let _ =
        decode::<Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>>(bytes);
}

/// Target `pre_vote_log_id`: a PreVote request's last log id.
pub fn pre_vote_log_id(bytes: &[u8]) {
    let _ = crate::raft::Elections::decode_last_log_id(bytes);
}

/// Target `exchange_body`: the body of a `Dcs.Exchange` request from a peer
/// DC (as it is, and with its checksum made right).
pub fn exchange_body(bytes: &[u8]) {
    for b in [bytes.to_vec(), with_checksum(bytes)] {
        if let Ok(body) = tidal_store::codec::decode::<crate::links::ExchangeBody>("exchange", &b) {
            body.encode().expect("a decoded body encodes");
        }
    }
}

/// Target `exchange_reply`: a peer DC's answer to Exchange.
pub fn exchange_reply(bytes: &[u8]) {
    for b in [bytes.to_vec(), with_checksum(bytes)] {
        let _ = tidal_store::codec::decode::<crate::links::ExchangeReply>("exchange reply", &b);
    }
}

/// Target `config_toml`: a server config file, read, put over the defaults
/// and validated as `tidal server --config` does; and each of its lines as
/// a `--peer` value, an endpoint and a task id.
pub fn config_toml(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    if let Ok(raw) = toml::from_str::<crate::config::RawConfig>(&text) {
        if let Ok(merged) = crate::config::RawConfig::default().merge(raw) {
            let _ = merged.validate();
        }
    }
    for line in text.lines().take(64) {
        let _ = line.parse::<crate::config::RawPeer>();
        let _ = tidal_client::normalize_endpoint(line);
        let _ = line.parse::<tidal_core::TaskId>();
    }
}

/// Target `member_addr`: a member's stored address (`CLIENT` or
/// `CLIENT|PEER`), as every reader of the membership parses it. What
/// parses prints back as the same string.
pub fn member_addr(bytes: &[u8]) {
    use crate::raft::member_addr::MemberAddr;
    let text = String::from_utf8_lossy(bytes);
    if let Ok(addr) = MemberAddr::parse(&text) {
        assert_eq!(
            addr.to_string(),
            text,
            "a member address prints as it was read"
        );
        assert_eq!(MemberAddr::parse(&addr.to_string()), Ok(addr.clone()));
        let _ = addr.peer_or_client().parse::<std::net::SocketAddr>();
    }
    let node = openraft::BasicNode::new(text.as_ref());
    let _ = (
        crate::raft::member_addr::client_addr(&node),
        crate::raft::member_addr::peer_addr(&node),
    );
}

/// Target `tls_identity`: a peer's certificate (DER) as the TLS acceptor
/// reads its identity, and the bytes as an identity URI. An identity has
/// one URI: what parses prints back as the same string.
pub fn tls_identity(bytes: &[u8]) {
    use tidal_tls::{CertIdentity, Expect};
    let check = |id: &CertIdentity| {
        assert_eq!(CertIdentity::from_uri(&id.to_uri()).as_ref(), Ok(id));
        for expect in [
            Expect::AnyServer,
            Expect::Dc("dc1".into()),
            Expect::Node {
                dc: "dc1".into(),
                id: 1,
            },
        ] {
            let _ = expect.check(id);
        }
        let _ = (id.to_string(), id.node_id());
    };
    if let Ok(id) = CertIdentity::from_der(bytes) {
        check(&id);
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        if let Ok(id) = CertIdentity::from_uri(text) {
            assert_eq!(id.to_uri(), text, "an identity URI is canonical");
            check(&id);
        }
    }
}

/// Target `token`: a token's text, an `authorization` header and a TTL, as
/// the server and the CLI read them. A token that parses prints back as
/// the same text.
pub fn token(bytes: &[u8]) {
    use crate::auth::token;
    let text = String::from_utf8_lossy(bytes);
    if let Ok(t) = token::Token::parse(&text) {
        assert_eq!(t.reveal(), text.trim(), "a token prints as it was read");
        assert!(t.verify(&t.hash()));
        assert!(token::is_id(t.id()));
    }
    let _ = token::parse_bearer(&text);
    if let Ok(ms) = token::parse_ttl(&text) {
        assert!(ms > 0);
    }
}
