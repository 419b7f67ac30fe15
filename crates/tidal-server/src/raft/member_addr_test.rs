//! Tests of the member address codec: the two forms, round trips, malformed strings.

use openraft::BasicNode;
use proptest::prelude::*;

use super::{client_addr, peer_addr, MemberAddr, MemberAddrError};

#[test]
fn a_plain_address_is_a_client_address_that_peers_dial_too() {
    let a = MemberAddr::parse("127.0.0.1:7001").unwrap();
    assert_eq!(a, MemberAddr::client_only("127.0.0.1:7001"));
    assert_eq!(a.peer_or_client(), "127.0.0.1:7001");
    assert_eq!(a.to_string(), "127.0.0.1:7001");
}

#[test]
fn a_combined_address_names_both() {
    let a = MemberAddr::parse("10.0.0.1:7001|10.1.0.1:7101").unwrap();
    assert_eq!(a.client, "10.0.0.1:7001");
    assert_eq!(a.peer.as_deref(), Some("10.1.0.1:7101"));
    assert_eq!(a.peer_or_client(), "10.1.0.1:7101");
    assert_eq!(a.to_string(), "10.0.0.1:7001|10.1.0.1:7101");
    let dns = MemberAddr::parse("node-1.example:7001|[::1]:7101").unwrap();
    assert_eq!(dns.peer.as_deref(), Some("[::1]:7101"));
}

#[test]
fn malformed_strings_are_errors() {
    for (s, want) in [
        ("", MemberAddrError::NoClient(String::new())),
        (
            "|10.0.0.1:7101",
            MemberAddrError::NoClient("|10.0.0.1:7101".into()),
        ),
        ("|", MemberAddrError::NoClient("|".into())),
        (
            "10.0.0.1:7001|",
            MemberAddrError::EmptyPeer("10.0.0.1:7001|".into()),
        ),
        (
            "a:1|b:2|c:3",
            MemberAddrError::TooManyParts("a:1|b:2|c:3".into()),
        ),
        ("a:1||", MemberAddrError::TooManyParts("a:1||".into())),
        ("a:1 |b:2", MemberAddrError::BadCharacter("a:1 |b:2".into())),
        (
            "a:1|b:2\n",
            MemberAddrError::BadCharacter("a:1|b:2\n".into()),
        ),
        ("a:1|\0", MemberAddrError::BadCharacter("a:1|\0".into())),
    ] {
        assert_eq!(MemberAddr::parse(s), Err(want), "{s:?}");
    }
}

#[test]
fn a_stored_string_that_does_not_parse_is_read_whole_as_the_client_address() {
    for s in ["", "a:1|b:2|c:3", "x y"] {
        assert_eq!(MemberAddr::of_stored(s), MemberAddr::client_only(s));
    }
}

#[test]
fn readers_of_a_member_take_their_part() {
    let both = BasicNode {
        addr: "127.0.0.11:7001|127.0.0.11:7101".into(),
    };
    assert_eq!(client_addr(&both), "127.0.0.11:7001");
    assert_eq!(peer_addr(&both), "127.0.0.11:7101");
    let one = BasicNode {
        addr: "127.0.0.1:7001".into(),
    };
    assert_eq!(client_addr(&one), "127.0.0.1:7001");
    assert_eq!(peer_addr(&one), "127.0.0.1:7001");
}

proptest! {
    /// Any string: parse returns (never panics), and what it accepts
    /// prints back to the same string.
    #[test]
    fn parse_is_total_and_round_trips(s in any::<String>()) {
        let _ = MemberAddr::of_stored(&s);
        if let Ok(a) = MemberAddr::parse(&s) {
            prop_assert_eq!(a.to_string(), s);
        }
    }

    /// Strings made of the separator and address characters, which random
    /// strings rarely hit.
    #[test]
    fn parse_of_address_like_strings(s in "[0-9a-z.:\\[\\]|]{0,24}") {
        match MemberAddr::parse(&s) {
            Ok(a) => {
                prop_assert!(!a.client.is_empty() && !a.client.contains('|'));
                prop_assert!(a.peer.as_deref().is_none_or(|p| !p.is_empty() && !p.contains('|')));
                prop_assert_eq!(a.to_string(), s);
            }
            Err(_) => prop_assert!(s.is_empty() || s.starts_with('|') || s.ends_with('|') || s.matches('|').count() > 1),
        }
    }

    /// Two well-formed parts always make an address that reads back as them.
    #[test]
    fn client_and_peer_round_trip(client in "[0-9a-z.\\-]{1,12}:[0-9]{1,5}", peer in proptest::option::of("[0-9a-z.\\-]{1,12}:[0-9]{1,5}")) {
        let a = MemberAddr { client, peer };
        prop_assert_eq!(MemberAddr::parse(&a.to_string()), Ok(a));
    }
}
