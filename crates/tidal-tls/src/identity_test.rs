//! Identity URIs: round trips, the canonical encoding, refusals, and `Expect`.

use super::*;

fn id(role: Role, dc: Option<&str>, name: &str) -> CertIdentity {
    CertIdentity::new(role, dc, name).expect("a valid identity")
}

#[test]
fn identities_round_trip_through_their_uri() {
    let cases = [
        (id(Role::Server, Some("dc1"), "1"), "tidal://server/dc1/1"),
        (
            id(Role::Agent, Some("eu-west.1"), "gpu_7"),
            "tidal://agent/eu-west.1/gpu_7",
        ),
        (id(Role::Client, None, "alice"), "tidal://client//alice"),
        (id(Role::Client, Some(""), "bob"), "tidal://client//bob"),
        (
            id(Role::Agent, Some("a:b/c"), "x y%é"),
            "tidal://agent/a%3Ab%2Fc/x%20y%25%C3%A9",
        ),
    ];
    for (identity, uri) in cases {
        assert_eq!(identity.to_uri(), uri);
        assert_eq!(CertIdentity::from_uri(uri), Ok(identity.clone()), "{uri}");
    }
    let s = CertIdentity::server("dc1", 42).unwrap();
    assert_eq!(s.node_id(), Some(42));
    assert_eq!(s.to_string(), "server '42' of dc 'dc1'");
    assert_eq!(
        id(Role::Client, None, "a").to_string(),
        "client 'a' of any dc"
    );
    assert_eq!(id(Role::Agent, Some("d"), "7").node_id(), None);
}

#[test]
fn constructors_keep_the_invariants() {
    for (role, dc, name, says) in [
        (Role::Server, None, "1", "needs a DC"),
        (Role::Agent, Some(""), "a", "needs a DC"),
        (Role::Client, None, "", "needs a name"),
        (Role::Server, Some("d"), "0", "node id"),
        (Role::Server, Some("d"), "01", "node id"),
        (Role::Server, Some("d"), "+1", "node id"),
        (Role::Server, Some("d"), "node-1", "node id"),
        (Role::Server, Some("d"), "18446744073709551616", "node id"),
    ] {
        let e = CertIdentity::new(role, dc, name).unwrap_err();
        assert!(e.to_string().contains(says), "{role} {dc:?} {name:?}: {e}");
    }
    assert!(CertIdentity::server("d", 0).is_err());
}

#[test]
fn only_canonical_well_formed_uris_parse() {
    for uri in [
        "",
        "tidal://",
        "tidal:/server/d/1",
        "https://server/d/1",
        "tidal://server/d",
        "tidal://server/d/1/2",
        "tidal://admin/d/1",
        "tidal://Server/d/1",
        "tidal://server//1",
        "tidal://agent/d/",
        "tidal://agent/a%3ab/x",
        "tidal://agent/%61/x",
        "tidal://agent/a:b/x",
        "tidal://agent/d/%FF",
        "tidal://agent/d/%",
        "tidal://agent/d/%4",
    ] {
        assert!(CertIdentity::from_uri(uri).is_err(), "{uri:?} parsed");
    }
}

#[test]
fn expectations_accept_only_the_servers_they_name() {
    let s1 = CertIdentity::server("dc1", 1).unwrap();
    let s2 = CertIdentity::server("dc1", 2).unwrap();
    let b1 = CertIdentity::server("dc2", 1).unwrap();
    let agent = id(Role::Agent, Some("dc1"), "1");
    let client = id(Role::Client, Some("dc1"), "1");
    let node = Expect::Node {
        dc: "dc1".into(),
        id: 1,
    };
    let dc = Expect::Dc("dc1".into());
    assert_eq!(node.check(&s1), Ok(()));
    assert_eq!(dc.check(&s2), Ok(()));
    assert_eq!(Expect::AnyServer.check(&b1), Ok(()));
    let e = node.check(&s2).unwrap_err().to_string();
    assert_eq!(
        e,
        "the server's certificate names server '2' of dc 'dc1', not server '1' of dc 'dc1'"
    );
    assert!(node.check(&b1).is_err());
    assert!(dc
        .check(&b1)
        .unwrap_err()
        .to_string()
        .contains("not a server of dc 'dc1'"));
    for e in [&node, &dc, &Expect::AnyServer] {
        assert!(e.check(&agent).is_err());
        assert!(e.check(&client).is_err());
    }
}

#[test]
fn roles_parse_from_their_names_only() {
    for r in [Role::Server, Role::Agent, Role::Client] {
        assert_eq!(r.as_str().parse::<Role>(), Ok(r));
    }
    assert!("admin".parse::<Role>().is_err());
}
