//! Unit tests of `plaintext.rs`: which hosts are loopback, and the rule over endpoint lists.

use super::*;

#[test]
fn loopback_hosts() {
    let cases = [
        ("127.0.0.1", true),
        ("127.0.0.11", true),
        ("127.255.255.254", true),
        ("localhost", true),
        ("LocalHost", true),
        ("[::1]", true),
        ("::1", true),
        ("[::ffff:127.0.0.2]", true),
        ("10.1.2.3", false),
        ("192.168.0.7", false),
        ("128.0.0.1", false),
        ("0.0.0.0", false),
        ("[::]", false),
        ("[fe80::1]", false),
        ("[::ffff:10.0.0.1]", false),
        // Names other than localhost are not resolved.
        ("localhost.example.com", false),
        ("my-localhost", false),
        ("node1", false),
        ("127.0.0.1.nip.io", false),
        ("", false),
    ];
    for (host, loopback) in cases {
        assert_eq!(is_loopback_host(host), loopback, "{host:?}");
    }
}

#[test]
fn hosts_of_endpoints() {
    let cases = [
        ("127.0.0.1:7001", "127.0.0.1"),
        (" 10.1.2.3:7001 ", "10.1.2.3"),
        ("http://10.1.2.3:7001/", "10.1.2.3"),
        ("https://node1:7001", "node1"),
        ("[::1]:7001", "[::1]"),
        ("http://[fe80::1]:7001", "[fe80::1]"),
        ("localhost:7001", "localhost"),
        // No port: the whole text, which is never loopback.
        ("nope", "nope"),
        ("::1", "::1"),
    ];
    for (endpoint, host) in cases {
        assert_eq!(endpoint_host(endpoint), host, "{endpoint:?}");
    }
}

#[test]
fn plaintext_to_a_remote_server_needs_insecure() {
    let refused = |e: &str| {
        Err(PlaintextRefused {
            endpoint: e.to_string(),
        })
    };
    /// Endpoints, TLS, --insecure, the outcome.
    type Case<'a> = (&'a [&'a str], bool, bool, Result<(), PlaintextRefused>);
    let cases: [Case; 10] = [
        (&["127.0.0.1:7001"], false, false, Ok(())),
        (
            &["127.0.0.1:7001", "localhost:7002", "[::1]:7003"],
            false,
            false,
            Ok(()),
        ),
        (&["http://127.0.0.2:7001"], false, false, Ok(())),
        (&["10.1.2.3:7001"], false, false, refused("10.1.2.3:7001")),
        (
            &["127.0.0.1:7001", "node2:7001"],
            false,
            false,
            refused("node2:7001"),
        ),
        (
            &["https://10.1.2.3:7001"],
            false,
            false,
            refused("https://10.1.2.3:7001"),
        ),
        (&["0.0.0.0:7001"], false, false, refused("0.0.0.0:7001")),
        (&["10.1.2.3:7001"], true, false, Ok(())),
        (&["10.1.2.3:7001", "node2:7001"], false, true, Ok(())),
        (&[], false, false, Ok(())),
    ];
    for (endpoints, tls, insecure, outcome) in cases {
        assert_eq!(
            check_plaintext_endpoints(endpoints, tls, insecure),
            outcome,
            "{endpoints:?} tls={tls} insecure={insecure}"
        );
    }
}

#[test]
fn the_refusal_names_the_endpoint_and_both_ways_out() {
    let e = check_plaintext_endpoints(&["10.1.2.3:7001"], false, false)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "refusing to connect in plaintext to 10.1.2.3:7001 (not a loopback address): give \
         --tls-dir DIR or TIDAL_TLS_DIR (see `tidal cert`), or --insecure or TIDAL_INSECURE=true"
    );
}
