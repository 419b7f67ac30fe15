//! Unit tests of `retry.rs`.

use super::*;
use tonic::metadata::MetadataValue;

fn with_leader(addr: &str) -> Status {
    let mut s = Status::unavailable("not the leader");
    s.metadata_mut()
        .insert(LEADER_ADDR_KEY, MetadataValue::try_from(addr).unwrap());
    s
}

#[test]
fn classifies_answers() {
    assert_eq!(
        classify(&with_leader("10.0.0.2:7000")),
        Verdict::Redirect("10.0.0.2:7000".into())
    );
    assert_eq!(
        classify(&with_leader("http://10.0.0.2:7000")),
        Verdict::Redirect("10.0.0.2:7000".into())
    );
    assert_eq!(classify(&with_leader("garbage")), Verdict::Retry);
    assert_eq!(classify(&Status::unavailable("no leader")), Verdict::Retry);
    assert_eq!(classify(&Status::deadline_exceeded("slow")), Verdict::Retry);
    for s in [
        Status::invalid_argument("x"),
        Status::not_found("x"),
        Status::already_exists("x"),
        Status::failed_precondition("x"),
        Status::resource_exhausted("x"),
        Status::unknown("server said so"),
        Status::internal("server bug"),
    ] {
        assert_eq!(classify(&s), Verdict::Fail, "{s:?}");
    }
    let local = Status::from_error(Box::new(std::io::Error::other("transport error")));
    assert_eq!(local.code(), Code::Unknown);
    assert_eq!(classify(&local), Verdict::Retry);
}

#[test]
fn backoff_doubles_to_cap_with_jitter() {
    let mut b = Backoff::default();
    let ds: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
    assert!(ds[0] >= Duration::from_millis(25) && ds[0] <= Duration::from_millis(50));
    assert!(ds[1] >= Duration::from_millis(50) && ds[1] <= Duration::from_millis(100));
    for d in &ds[5..] {
        assert!(
            *d >= Duration::from_millis(500) && *d <= Duration::from_secs(1),
            "{d:?}"
        );
    }
}

/// A status made on this side from `e`, as tonic makes one from a failed
/// connection.
fn local(e: std::io::Error) -> Status {
    Status::from_error(Box::new(e))
}

#[test]
fn certificate_failures_are_final_and_told_in_words() {
    use rustls::{AlertDescription as A, CertificateError as C};
    use std::io::{Error as IoError, ErrorKind};
    let tls = |e: rustls::Error| local(IoError::new(ErrorKind::InvalidData, e));
    for (status, why) in [
        (
            tls(rustls::Error::InvalidCertificate(C::UnknownIssuer)),
            "the server's certificate is not signed by ca.pem",
        ),
        (
            tls(rustls::Error::InvalidCertificate(C::InvalidPurpose)),
            "the server's certificate is not a server's",
        ),
        (
            tls(rustls::Error::InvalidCertificate(C::Expired)),
            "the server's certificate has expired",
        ),
        (
            tls(rustls::Error::AlertReceived(A::CertificateRequired)),
            "the server refused this client's certificate (CertificateRequired)",
        ),
        // Through h2, only the error's kind and text survive.
        (
            local(IoError::new(
                ErrorKind::InvalidData,
                "received fatal alert: UnknownCA",
            )),
            "the server refused this client's certificate (UnknownCA)",
        ),
        (
            tls(rustls::Error::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType,
            )),
            "the server does not speak TLS",
        ),
    ] {
        match classify(&status) {
            Verdict::Refused(said) => assert!(said.contains(why), "{said:?} lacks {why:?}"),
            other => panic!("{status:?}: {other:?}"),
        }
    }
    // Alerts that say nothing of certificates, other I/O errors and
    // statuses from a server keep their verdicts.
    for status in [
        tls(rustls::Error::AlertReceived(A::CloseNotify)),
        local(IoError::new(
            ErrorKind::InvalidData,
            "received fatal alert: DecodeError",
        )),
        local(IoError::new(ErrorKind::ConnectionRefused, "refused")),
    ] {
        assert_eq!(classify(&status), Verdict::Retry, "{status:?}");
    }
    assert_eq!(
        classify(&Status::unauthenticated("received fatal alert: UnknownCA")),
        Verdict::Fail
    );
    let e = refused("10.0.0.1:7001", "the server's certificate has expired");
    assert_eq!(e.code, Code::Unauthenticated);
    assert_eq!(
        e.message,
        "TLS with 10.0.0.1:7001 failed: the server's certificate has expired"
    );
    assert!(e.is_tls_refusal());
    assert!(!Error::new(Code::Unauthenticated, "bad token").is_tls_refusal());
}

#[test]
fn failures_after_the_connection_was_made_are_told_apart() {
    use std::io::{Error as IoError, ErrorKind};
    for kind in [
        ErrorKind::BrokenPipe,
        ErrorKind::ConnectionReset,
        ErrorKind::UnexpectedEof,
    ] {
        assert!(
            failed_after_connect(&local(IoError::new(kind, "x"))),
            "{kind:?}"
        );
    }
    let connect = |kind| {
        Status::from_error(Box::new(tonic::ConnectError(Box::new(IoError::new(
            kind, "x",
        )))))
    };
    for kind in [ErrorKind::ConnectionRefused, ErrorKind::TimedOut] {
        let s = connect(kind);
        assert_eq!(s.code(), Code::Unavailable);
        assert!(!failed_after_connect(&s), "{kind:?}");
    }
    assert!(!failed_after_connect(&Status::unavailable("no leader")));
}

#[test]
fn requests_not_safe_to_repeat_are_repeated_only_when_never_applied() {
    // A not-leader answer given before anything was proposed, naming the
    // leader (redirected there) or not (an election: retried).
    let mut named = with_leader("10.0.0.2:7000");
    named
        .metadata_mut()
        .insert(NOT_PROPOSED_KEY, MetadataValue::from_static("1"));
    assert!(never_applied(&named));
    assert_eq!(
        classify_for(&named, Repeat::Once),
        Verdict::Redirect("10.0.0.2:7000".into())
    );
    let mut electing = Status::unavailable("this node is not the leader; no leader is known yet");
    electing
        .metadata_mut()
        .insert(NOT_PROPOSED_KEY, MetadataValue::from_static("1"));
    assert!(never_applied(&electing));
    assert_eq!(classify_for(&electing, Repeat::Once), Verdict::Retry);
    // The same answer without the mark (openraft's, for a write whose
    // entry was dropped here and may live on elsewhere): maybe applied.
    let unmarked = with_leader("10.0.0.2:7000");
    assert!(!never_applied(&unmarked));
    assert_eq!(classify_for(&unmarked, Repeat::Once), Verdict::Unknown);
    assert_eq!(
        classify_for(&unmarked, Repeat::Safe),
        Verdict::Redirect("10.0.0.2:7000".into())
    );
    // Refused before connecting: no byte was sent.
    let refused = Status::from_error(Box::new(tonic::ConnectError(Box::new(
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
    ))));
    assert!(never_applied(&refused), "{refused:?}");
    // Maybe applied: a lost connection, a deadline, another UNAVAILABLE
    // (no quorum, a leader that stepped down before the entry committed).
    for s in [
        local(std::io::Error::other("connection reset")),
        Status::deadline_exceeded("no answer within 5s"),
        Status::unavailable("cannot confirm leadership"),
        Status::unavailable("the leader stepped down before the entry committed"),
    ] {
        assert!(!never_applied(&s), "{s:?}");
        assert_eq!(classify_for(&s, Repeat::Once), Verdict::Unknown, "{s:?}");
        assert_eq!(classify_for(&s, Repeat::Safe), Verdict::Retry, "{s:?}");
    }
    // Final answers stay final.
    assert_eq!(
        classify_for(&Status::not_found("x"), Repeat::Once),
        Verdict::Fail
    );
}
