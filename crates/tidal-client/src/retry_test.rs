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
