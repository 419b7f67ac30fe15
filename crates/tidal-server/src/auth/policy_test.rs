//! Tests of the peer plane's rules: every peer RPC against every listener, member and non-member.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn caller(addr: &str, listener: Listener) -> Caller {
    Caller::plain(addr.parse::<SocketAddr>().unwrap(), listener)
}

/// Members 1-3 on 127.0.0.11-13; peer DC endpoint 127.0.0.21.
fn peers() -> Peers {
    Peers {
        has_membership: true,
        member_ips: ["127.0.0.11", "127.0.0.12", "127.0.0.13"].map(ip).into(),
        peer_dc_ips: [ip("127.0.0.21")].into(),
    }
}

#[test]
fn paths_are_sorted_into_peer_and_public_rpcs() {
    for (path, rpc) in [
        (
            "/tidal.raft.v1.Raft/AppendEntries",
            Rpc::Peer(PeerRpc::AppendEntries),
        ),
        ("/tidal.raft.v1.Raft/Vote", Rpc::Peer(PeerRpc::Vote)),
        (
            "/tidal.raft.v1.Raft/InstallSnapshot",
            Rpc::Peer(PeerRpc::InstallSnapshot),
        ),
        ("/tidal.raft.v1.Raft/Removed", Rpc::Peer(PeerRpc::Removed)),
        (
            "/tidal.raft.v1.Raft/HoldElections",
            Rpc::Peer(PeerRpc::HoldElections),
        ),
        ("/tidal.raft.v1.Raft/Campaign", Rpc::Peer(PeerRpc::Campaign)),
        ("/tidal.raft.v1.Raft/PreVote", Rpc::Peer(PeerRpc::PreVote)),
        ("/tidal.raft.v1.Raft/Hello", Rpc::Peer(PeerRpc::Hello)),
        ("/tidal.raft.v1.Raft/Future", Rpc::Peer(PeerRpc::OtherRaft)),
        ("/tidal.v1.Dcs/Exchange", Rpc::Peer(PeerRpc::Exchange)),
        ("/tidal.v1.Dcs/Status", Rpc::Public),
        ("/tidal.v1.Tasks/Submit", Rpc::Public),
        ("/tidal.v1.Agents/Session", Rpc::AgentSession),
        ("/tidal.v1.Agents/List", Rpc::Public),
        ("/tidal.v1.Cluster/Status", Rpc::Public),
        ("/nothing", Rpc::Public),
    ] {
        assert_eq!(Rpc::of_path(path), rpc, "{path}");
    }
}

#[test]
fn every_peer_rpc_against_every_listener_and_caller() {
    let peers = peers();
    for rpc in PEER_RPCS {
        for (addr, member, peer_dc) in [
            ("127.0.0.11:40000", true, false),
            ("[::ffff:127.0.0.12]:40000", true, false),
            ("127.0.0.1:40000", false, false),
            ("10.0.0.5:40000", false, false),
            ("127.0.0.21:40000", false, true),
        ] {
            let on_public = authorize(Rpc::Peer(rpc), &caller(addr, Listener::Public), &peers);
            assert_eq!(
                on_public,
                Err(Denied::PeerListenerOnly(rpc)),
                "{rpc:?} {addr}"
            );
            let on_peer = authorize(Rpc::Peer(rpc), &caller(addr, Listener::Peer), &peers);
            let allowed = member || (peer_dc && rpc == PeerRpc::Exchange);
            assert_eq!(on_peer.is_ok(), allowed, "{rpc:?} from {addr}: {on_peer:?}");
            if let Err(e) = on_peer {
                assert!(e.to_string().contains(rpc.name()), "{e}");
                assert!(!e.to_string().contains("::ffff"), "{e}");
            }
        }
    }
}

#[test]
fn public_rpcs_are_served_on_the_public_listener_only() {
    let peers = peers();
    for addr in ["127.0.0.11:1", "127.0.0.1:1"] {
        assert_eq!(
            authorize(Rpc::Public, &caller(addr, Listener::Public), &peers),
            Ok(())
        );
        assert_eq!(
            authorize(Rpc::Public, &caller(addr, Listener::Peer), &peers),
            Err(Denied::PublicListenerOnly)
        );
    }
}

#[test]
fn a_node_without_a_membership_takes_raft_rpcs_from_anyone_on_the_peer_listener() {
    let empty = Peers::default();
    for rpc in PEER_RPCS {
        let r = authorize(
            Rpc::Peer(rpc),
            &caller("10.0.0.5:1", Listener::Peer),
            &empty,
        );
        assert_eq!(r.is_ok(), rpc != PeerRpc::Exchange, "{rpc:?}: {r:?}");
        let r = authorize(
            Rpc::Peer(rpc),
            &caller("10.0.0.5:1", Listener::Public),
            &empty,
        );
        assert!(r.is_err(), "{rpc:?} on the public listener");
    }
}

#[test]
fn an_exchange_comes_from_its_origin_dc_or_is_passed_on_by_a_member() {
    let p = peers();
    let origin: BTreeSet<IpAddr> = [ip("127.0.0.21")].into();
    let check = |addr: &str, passed_on| {
        exchange_origin(
            &caller(addr, Listener::Peer),
            "dc-b",
            &origin,
            &p.member_ips,
            passed_on,
        )
    };
    assert!(check("127.0.0.21:1", false).is_ok());
    assert!(check("127.0.0.12:1", true).is_ok());
    let e = check("127.0.0.12:1", false).unwrap_err();
    assert!(e.to_string().contains("peer DC \"dc-b\""), "{e}");
    assert!(check("127.0.0.22:1", true).is_err());
}

fn members() -> Vec<Member> {
    vec![
        Member {
            id: 1,
            voter: true,
            ip: Some(ip("127.0.0.11")),
        },
        Member {
            id: 2,
            voter: true,
            ip: Some(ip("127.0.0.12")),
        },
        Member {
            id: 3,
            voter: false,
            ip: Some(ip("127.0.0.13")),
        },
        // Two members on one host: their IP names neither.
        Member {
            id: 4,
            voter: true,
            ip: Some(ip("127.0.0.14")),
        },
        Member {
            id: 5,
            voter: true,
            ip: Some(ip("127.0.0.14")),
        },
    ]
}

#[test]
fn a_raft_message_must_name_the_member_at_the_callers_ip() {
    let m = members();
    let from = |a: &str| caller(a, Listener::Peer);
    let rpc = PeerRpc::AppendEntries;
    assert!(bind(rpc, &from("127.0.0.11:1"), &m, Sender::Named(1)).is_ok());
    let e = bind(rpc, &from("127.0.0.11:1"), &m, Sender::Named(2)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "peer RPC Raft/AppendEntries refused: it names node 2, but 127.0.0.11 is node 1"
    );
    assert!(
        bind(rpc, &from("127.0.0.13:1"), &m, Sender::Named(3)).is_ok(),
        "a learner"
    );
    assert!(
        bind(rpc, &from("127.0.0.14:1"), &m, Sender::Named(1)).is_ok(),
        "a shared IP names no one"
    );
    assert!(
        bind(rpc, &from("127.0.0.14:1"), &[], Sender::Named(9)).is_ok(),
        "no membership"
    );

    let removed = PeerRpc::Removed;
    assert!(bind(removed, &from("127.0.0.11:1"), &m, Sender::NamedVoter(1)).is_ok());
    assert!(
        bind(removed, &from("127.0.0.13:1"), &m, Sender::NamedVoter(3)).is_err(),
        "a learner"
    );
    assert!(bind(removed, &from("127.0.0.12:1"), &m, Sender::NamedVoter(1)).is_err());
}

#[test]
fn holds_and_campaigns_come_from_the_known_leader_a_voter() {
    let m = members();
    let from = |a: &str| caller(a, Listener::Peer);
    let hold = |a: &str, known, release| {
        bind(
            PeerRpc::HoldElections,
            &from(a),
            &m,
            Sender::Leader { known, release },
        )
    };
    assert!(hold("127.0.0.11:1", Some(1), false).is_ok());
    assert!(
        hold("127.0.0.11:1", None, false).is_ok(),
        "no known leader: any voter"
    );
    let e = hold("127.0.0.12:1", Some(1), false).unwrap_err();
    assert!(
        e.to_string().contains("not the leader this node knows"),
        "{e}"
    );
    assert!(
        hold("127.0.0.12:1", Some(1), true).is_ok(),
        "a release needs a voter only"
    );
    assert!(hold("127.0.0.13:1", None, true).is_err(), "a learner");
}

fn cert(role: Role, dc: Option<&str>, name: &str) -> Option<Arc<CertIdentity>> {
    Some(Arc::new(CertIdentity::new(role, dc, name).unwrap()))
}

/// A caller from 127.0.0.1 on `listener` with `cert`.
fn tls_caller(listener: Listener, cert: Option<Arc<CertIdentity>>) -> Caller {
    Caller {
        cert,
        ..caller("127.0.0.1:40000", listener)
    }
}

/// dc1 with members 1-3 and peer DC dc2, on one listener.
fn tls_peers() -> TlsPeers {
    TlsPeers {
        dc: "dc1".into(),
        members: [1, 2, 3].into(),
        peer_dcs: ["dc2".to_string()].into(),
        peer_listener: false,
    }
}

/// Every RPC kind against every kind of certificate: who may call what
/// with TLS (on one listener: the IP plays no part).
#[test]
fn with_tls_every_rpc_against_every_certificate() {
    let p = tls_peers();
    let server = |dc, id: &str| cert(Role::Server, Some(dc), id);
    let member = server("dc1", "2");
    let stranger = server("dc1", "9");
    let other_dc = server("dc3", "2");
    let peer_dc = server("dc2", "1");
    let agent = cert(Role::Agent, Some("dc1"), "gpu-1");
    let other_agent = cert(Role::Agent, Some("dc3"), "gpu-1");
    let client = cert(Role::Client, None, "alice");
    let certs = [
        ("member", member),
        ("non-member", stranger),
        ("other dc", other_dc),
        ("peer dc", peer_dc),
        ("agent", agent),
        ("agent of another dc", other_agent),
        ("client", client),
        ("none", None),
    ];
    let rpcs: Vec<Rpc> = PEER_RPCS
        .iter()
        .map(|r| Rpc::Peer(*r))
        .chain([Rpc::Public, Rpc::AgentSession])
        .collect();
    for rpc in rpcs {
        for (who, c) in &certs {
            let got = authorize_tls(rpc, &tls_caller(Listener::Public, c.clone()), &p);
            let allowed = matches!(
                (rpc, *who),
                (Rpc::Peer(PeerRpc::Hello), "member" | "non-member")
                    | (
                        Rpc::Peer(PeerRpc::Exchange),
                        "member" | "non-member" | "peer dc"
                    )
                    | (Rpc::Peer(_), "member")
                    | (Rpc::Public, "agent" | "agent of another dc" | "client")
                    | (Rpc::AgentSession, "agent")
            );
            assert_eq!(got.is_ok(), allowed, "{rpc:?} with {who}: {got:?}");
        }
    }
}

#[test]
fn with_tls_a_refusal_says_what_the_certificate_named() {
    let p = tls_peers();
    let from = |c| tls_caller(Listener::Public, c);
    let e = authorize_tls(
        Rpc::Peer(PeerRpc::Vote),
        &from(cert(Role::Client, None, "alice")),
        &p,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "peer RPC Raft/Vote refused: the caller's certificate names client 'alice' of any dc, \
         not a server of dc 'dc1'"
    );
    let e = authorize_tls(
        Rpc::Peer(PeerRpc::HoldElections),
        &from(cert(Role::Server, Some("dc1"), "9")),
        &p,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("server '9', which is not a member"),
        "{e}"
    );
    let e =
        authorize_tls(Rpc::Public, &from(cert(Role::Server, Some("dc1"), "1")), &p).unwrap_err();
    assert!(
        e.to_string()
            .contains("names server '1' of dc 'dc1', not a client or an agent"),
        "{e}"
    );
    let e = authorize_tls(
        Rpc::AgentSession,
        &from(cert(Role::Client, None, "alice")),
        &p,
    )
    .unwrap_err();
    assert!(e.to_string().contains("not an agent of dc 'dc1'"), "{e}");
    let e = authorize_tls(Rpc::Public, &from(None), &p).unwrap_err();
    assert!(e.to_string().contains("no certificate"), "{e}");
}

#[test]
fn with_tls_a_node_without_membership_takes_raft_rpcs_from_any_server_of_its_dc() {
    let p = TlsPeers {
        members: BTreeSet::new(),
        ..tls_peers()
    };
    let from = |c| tls_caller(Listener::Public, c);
    for rpc in PEER_RPCS {
        let r = authorize_tls(
            Rpc::Peer(rpc),
            &from(cert(Role::Server, Some("dc1"), "9")),
            &p,
        );
        assert!(r.is_ok(), "{rpc:?}: {r:?}");
        let r = authorize_tls(
            Rpc::Peer(rpc),
            &from(cert(Role::Server, Some("dc3"), "9")),
            &p,
        );
        assert!(r.is_err(), "{rpc:?} from another dc");
        let r = authorize_tls(Rpc::Peer(rpc), &from(cert(Role::Client, None, "9")), &p);
        assert!(r.is_err(), "{rpc:?} from a client");
    }
}

#[test]
fn with_tls_and_a_peer_listener_both_rules_hold() {
    let p = TlsPeers {
        peer_listener: true,
        ..tls_peers()
    };
    let member = cert(Role::Server, Some("dc1"), "1");
    let client = cert(Role::Client, None, "alice");
    let vote = Rpc::Peer(PeerRpc::Vote);
    assert!(authorize_tls(vote, &tls_caller(Listener::Peer, member.clone()), &p).is_ok());
    assert_eq!(
        authorize_tls(vote, &tls_caller(Listener::Public, member), &p),
        Err(Denied::PeerListenerOnly(PeerRpc::Vote))
    );
    assert!(authorize_tls(
        Rpc::Public,
        &tls_caller(Listener::Public, client.clone()),
        &p
    )
    .is_ok());
    assert_eq!(
        authorize_tls(Rpc::Public, &tls_caller(Listener::Peer, client), &p),
        Err(Denied::PublicListenerOnly)
    );
}

#[test]
fn with_tls_an_exchange_comes_from_its_origin_dc_or_a_member_passing_it_on() {
    let members: BTreeSet<u64> = [1, 2, 3].into();
    let check = |c, passed_on| {
        exchange_origin_tls(
            &tls_caller(Listener::Public, c),
            "dc2",
            "dc1",
            &members,
            passed_on,
        )
    };
    assert!(check(cert(Role::Server, Some("dc2"), "7"), false).is_ok());
    assert!(check(cert(Role::Server, Some("dc1"), "2"), true).is_ok());
    let e = check(cert(Role::Server, Some("dc1"), "2"), false).unwrap_err();
    assert!(e.to_string().contains("a server of dc 'dc2'"), "{e}");
    assert!(
        check(cert(Role::Server, Some("dc1"), "9"), true).is_err(),
        "not a member"
    );
    assert!(check(cert(Role::Server, Some("dc3"), "1"), false).is_err());
    assert!(check(cert(Role::Agent, Some("dc2"), "a"), false).is_err());
}

/// With TLS the certificate names the member; the IP plays no part.
#[test]
fn with_tls_a_raft_message_must_name_the_node_of_the_callers_certificate() {
    let m = members();
    let from = |id: &str| tls_caller(Listener::Public, cert(Role::Server, Some("dc1"), id));
    let rpc = PeerRpc::AppendEntries;
    assert!(bind(rpc, &from("1"), &m, Sender::Named(1)).is_ok());
    let e = bind(rpc, &from("1"), &m, Sender::Named(2)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "peer RPC Raft/AppendEntries refused: it names node 2, but the caller's certificate \
         names node 1"
    );
    // Nodes 4 and 5 share an IP; their certificates still tell them apart.
    assert!(bind(rpc, &from("4"), &m, Sender::Named(5)).is_err());
    assert!(
        bind(rpc, &from("9"), &m, Sender::Named(9)).is_err(),
        "not a member"
    );
    let removed = PeerRpc::Removed;
    assert!(bind(removed, &from("1"), &m, Sender::NamedVoter(1)).is_ok());
    assert!(
        bind(removed, &from("3"), &m, Sender::NamedVoter(3)).is_err(),
        "a learner"
    );
    let hold = |id: &str, known| {
        bind(
            PeerRpc::HoldElections,
            &from(id),
            &m,
            Sender::Leader {
                known,
                release: false,
            },
        )
    };
    assert!(hold("1", Some(1)).is_ok());
    assert!(hold("2", Some(1)).is_err(), "not the known leader");
    assert!(hold("3", None).is_err(), "a learner");
}
