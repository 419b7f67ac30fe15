//! Tests of the rules: every peer RPC against every listener, member and non-member; every public RPC against every token role; tokens judged against their records.

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

// ---- the public API under --auth tokens ----

/// Every `rpc` of every service of a .proto file, as gRPC paths
/// (`/tidal.v1.Tasks/Submit`): what the generated servers route.
fn proto_methods(proto: &str) -> Vec<String> {
    let mut package = String::new();
    let mut service = None;
    let mut out = Vec::new();
    for line in proto.lines() {
        let line = line.split("//").next().unwrap_or("").trim();
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || "(){;".contains(c))
            .filter(|w| !w.is_empty())
            .collect();
        match words.as_slice() {
            ["package", p, ..] => package = p.to_string(),
            ["service", name, ..] => service = Some(name.to_string()),
            ["rpc", method, ..] => {
                let service = service.as_ref().expect("an rpc outside a service");
                out.push(format!("/{package}.{service}/{method}"));
            }
            _ => {}
        }
    }
    out
}

fn public_methods() -> Vec<String> {
    proto_methods(include_str!("../../../../proto/tidal.proto"))
}

/// Who may call what, written out apart from [`PUBLIC_RULES`] (README:
/// Tokens): a method of the proto without a line here fails the tests.
const EXPECTED: &[(&str, &str)] = &[
    ("Tasks/Submit", "admin user"),
    ("Tasks/Get", "admin user"),
    ("Tasks/List", "admin user"),
    ("Tasks/Cancel", "admin user"),
    ("Tasks/Replay", "admin user"),
    ("Tasks/Explain", "admin user"),
    ("Agents/Session", "agent"),
    ("Agents/List", "admin"),
    ("Agents/Drain", "admin agent"),
    ("Agents/Undrain", "admin agent"),
    ("Agents/Deregister", "admin agent"),
    ("Queues/Set", "admin"),
    ("Queues/List", "admin user agent"),
    ("Queues/SetHeadroom", "admin"),
    ("Tenants/Set", "admin"),
    ("Tenants/List", "admin user"),
    ("Tokens/Create", "admin"),
    ("Tokens/List", "admin"),
    ("Tokens/Revoke", "admin"),
    ("Cluster/AddLearner", "admin"),
    ("Cluster/Promote", "admin"),
    ("Cluster/Demote", "admin"),
    ("Cluster/TransferLeader", "admin"),
    ("Cluster/Remove", "admin"),
    ("Cluster/Members", "admin"),
    ("Cluster/Status", "admin user agent"),
    ("Cluster/Snapshot", "admin"),
    ("Cluster/Backup", "admin"),
    ("Dcs/Status", "admin"),
    // The peer plane's: servers of peer DCs call it, with no token.
    ("Dcs/Exchange", "peer"),
];

const ROLES: [AccessRole; 3] = [AccessRole::Admin, AccessRole::User, AccessRole::Agent];

#[test]
fn every_public_rpc_against_every_role() {
    let methods = public_methods();
    assert!(methods.len() >= 25, "read {} methods only", methods.len());
    for path in &methods {
        let name = method_name(path);
        let Some((_, who)) = EXPECTED.iter().find(|(m, _)| *m == name) else {
            panic!("{path} has no line in EXPECTED (and needs a row in PUBLIC_RULES)");
        };
        if *who == "peer" {
            assert!(matches!(Rpc::of_path(path), Rpc::Peer(_)), "{path}");
            assert!(roles_of(path).is_empty(), "{path} is the peer plane's");
            continue;
        }
        assert_ne!(Rpc::of_path(path), Rpc::Peer(PeerRpc::OtherRaft), "{path}");
        assert!(
            PUBLIC_RULES.iter().any(|(p, _)| p == path),
            "{path} has no row in PUBLIC_RULES"
        );
        // No token: refused before any role is looked at.
        assert_eq!(bearer(None).err(), Some(TokenDenied::NoToken), "{path}");
        for role in ROLES {
            let may = who.split(' ').any(|w| w == role.as_str());
            match authorize_public(path, role) {
                Ok(()) => assert!(may, "{} may call {name}", role.as_str()),
                Err(denied) => {
                    assert!(!may, "{} is refused {name}: {denied}", role.as_str());
                    assert!(!denied.unauthenticated(), "{denied}");
                    let text = denied.to_string();
                    assert!(
                        text.contains(role.as_str()) && text.contains(name),
                        "{text}"
                    );
                }
            }
        }
    }
    // No row for a method the proto does not have, and no line either.
    for (path, _) in PUBLIC_RULES {
        assert!(
            methods.contains(&path.to_string()),
            "{path} is not in the proto"
        );
    }
    for (name, _) in EXPECTED {
        assert!(
            methods.iter().any(|m| method_name(m) == *name),
            "{name} is not in the proto"
        );
    }
}

#[test]
fn the_peer_rpcs_of_the_proto_are_all_peer_rpcs() {
    let raft = proto_methods(include_str!("../../../../proto/raft.proto"));
    assert!(raft.len() >= 8, "{raft:?}");
    for path in &raft {
        assert!(
            matches!(Rpc::of_path(path), Rpc::Peer(p) if p != PeerRpc::OtherRaft),
            "{path} is not sorted as a peer RPC"
        );
    }
}

#[test]
fn a_method_no_row_names_is_refused_to_every_role() {
    for role in ROLES {
        let denied = authorize_public("/tidal.v1.Tasks/Purge", role).unwrap_err();
        assert_eq!(
            denied.to_string(),
            format!(
                "role {} may not call Tasks/Purge (no role; README: Tokens)",
                role.as_str()
            )
        );
    }
    assert_eq!(
        authorize_public("/tidal.v1.Cluster/AddLearner", AccessRole::User)
            .unwrap_err()
            .to_string(),
        "role user may not call Cluster/AddLearner (role admin only; README: Tokens)"
    );
}

const SECRET_A: &str = "tdl_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const SECRET_B: &str = "tdl_0123456789abcdef_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA";

fn record(role: AccessRole, tenant: Option<&str>, name: &str) -> TokenRecord {
    TokenRecord {
        hash: Token::parse(SECRET_A).unwrap().hash(),
        name: name.into(),
        role,
        tenant: tenant.map(str::to_string),
        created_ms: 1_000,
        expires_ms: None,
        created_by: "token:bootstrap".into(),
        revoked_ms: None,
    }
}

fn view(record: Option<&TokenRecord>) -> TokenView<'_> {
    TokenView {
        tokens_held: true,
        record,
        bootstrap: None,
        now_ms: 5_000,
    }
}

#[test]
fn bearer_headers_that_are_not_a_token_are_malformed() {
    for header in [
        &b"Basic dXNlcjpwYXNz"[..],
        b"Bearer",
        b"Bearer tdl_nothex0123456789_x",
        b"Bearer tdl_0123456789abcdef_short",
        b"bearer \xff\xfe",
        b"tdl_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let denied = bearer(Some(header)).unwrap_err();
        assert!(matches!(denied, TokenDenied::Malformed(_)), "{header:?}");
        assert!(denied.unauthenticated());
        assert_eq!(denied.token_id(), None);
    }
    let ok = bearer(Some(format!("Bearer {SECRET_A}").as_bytes())).unwrap();
    assert_eq!(ok.id(), "0123456789abcdef");
}

#[test]
fn a_token_is_judged_by_its_record() {
    let token = Token::parse(SECRET_A).unwrap();
    let user = record(AccessRole::User, Some("acme"), "ci");
    let grant = authenticate(&token, &view(Some(&user))).unwrap();
    assert_eq!(
        grant,
        Grant {
            principal: Principal {
                id: "token:ci".into(),
                role: AccessRole::User
            },
            token: Some("0123456789abcdef".into()),
            tenant: Some("acme".into()),
        }
    );
    // Without a name the principal is the id; an admin acts for every tenant.
    let admin = record(AccessRole::Admin, None, "");
    let grant = authenticate(&token, &view(Some(&admin))).unwrap();
    assert_eq!(grant.principal.id, "token:0123456789abcdef");
    assert_eq!(grant.tenant, None);

    let id = "0123456789abcdef".to_string();
    let unknown = authenticate(&token, &view(None)).unwrap_err();
    assert_eq!(unknown, TokenDenied::Unknown { id: id.clone() });
    let other = Token::parse(SECRET_B).unwrap();
    let wrong = authenticate(&other, &view(Some(&user))).unwrap_err();
    assert_eq!(wrong, TokenDenied::WrongSecret { id: id.clone() });
    let revoked = TokenRecord {
        revoked_ms: Some(4_000),
        ..user.clone()
    };
    let denied = authenticate(&token, &view(Some(&revoked))).unwrap_err();
    assert_eq!(denied, TokenDenied::Revoked { id: id.clone() });
    assert_eq!(denied.to_string(), "token 0123456789abcdef was revoked");
    let expired = TokenRecord {
        expires_ms: Some(5_000),
        ..user.clone()
    };
    let denied = authenticate(&token, &view(Some(&expired))).unwrap_err();
    assert_eq!(
        denied,
        TokenDenied::Expired {
            id: id.clone(),
            at_ms: 5_000
        }
    );
    let later = TokenRecord {
        expires_ms: Some(5_001),
        ..user.clone()
    };
    assert!(authenticate(&token, &view(Some(&later))).is_ok());
    for denied in [unknown, wrong, denied] {
        assert!(denied.unauthenticated());
        assert_eq!(denied.token_id(), Some(id.as_str()));
        // The secret is never in a refusal.
        assert!(!format!("{denied} {denied:?}").contains("AAAA"));
    }
}

#[test]
fn below_format_version_3_only_the_bootstrap_token_is_taken_as_an_admin() {
    let token = Token::parse(SECRET_A).unwrap();
    let boot = ("0123456789abcdef".to_string(), token.hash());
    let user = record(AccessRole::User, Some("acme"), "ci");
    let old = |bootstrap| TokenView {
        tokens_held: false,
        record: Some(&user),
        bootstrap,
        now_ms: 5_000,
    };
    let grant = authenticate(&token, &old(Some(&boot))).unwrap();
    assert_eq!(grant.role(), AccessRole::Admin);
    assert_eq!(grant.principal.id, "token:bootstrap");
    assert_eq!(grant.tenant, None);
    // Another token, or the bootstrap id with another secret, is not.
    let other = Token::parse(SECRET_B).unwrap();
    for (t, b) in [(&token, None), (&other, Some(&boot))] {
        let denied = authenticate(t, &old(b)).unwrap_err();
        assert!(denied.unauthenticated());
        assert!(
            denied
                .to_string()
                .contains("tokens need cluster format version 3"),
            "{denied}"
        );
    }
}

#[test]
fn without_tokens_a_client_certificate_is_an_admin_and_an_agent_certificate_an_agent() {
    let client = CertIdentity::new(Role::Client, None, "alice").unwrap();
    let grant = grant_of_cert(&client).unwrap();
    assert_eq!(grant.principal.id, "cert:alice");
    assert_eq!(grant.role(), AccessRole::Admin);
    assert_eq!((grant.token, grant.tenant), (None, None));
    let agent = CertIdentity::new(Role::Agent, Some("dc1"), "gpu-7").unwrap();
    let grant = grant_of_cert(&agent).unwrap();
    assert_eq!(grant.principal.id, "cert:gpu-7");
    assert_eq!(grant.role(), AccessRole::Agent);
    assert_eq!(
        grant_of_cert(&CertIdentity::server("dc1", 1).unwrap()),
        None
    );
}
