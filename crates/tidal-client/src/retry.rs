//! What may be retried, and how long to wait between attempts.

use std::time::Duration;

use tidal_proto::LEADER_ADDR_KEY;
use tonic::{Code, Status};

use crate::endpoint;
use crate::idempotency::random_u64;

/// What to do after a failed attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The node is not the leader and named it: try there at once.
    Redirect(String),
    /// A transient failure (no leader yet, connection lost, timed out): try
    /// the next endpoint after a backoff.
    Retry,
    /// The answer is final (InvalidArgument, NotFound, AlreadyExists,
    /// FailedPrecondition, ResourceExhausted, ...): give it to the caller.
    Fail,
}

/// True when the status was made on this side from a transport failure
/// (connect refused, connection reset, h2 error) rather than sent by a server:
/// only local statuses carry a source error.
pub(crate) fn is_transport(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// The leader's address named in an `Unavailable` answer, if any.
pub(crate) fn leader_hint(status: &Status) -> Option<String> {
    let v = status.metadata().get(LEADER_ADDR_KEY)?.to_str().ok()?;
    endpoint::normalize(v).ok()
}

/// Every request the client sends is safe to repeat (reads; submits carry
/// idempotency keys; cancel, set-queue, add-learner and promote are idempotent
/// at the server), so the policy depends on the answer only.
pub(crate) fn classify(status: &Status) -> Verdict {
    match status.code() {
        Code::Unavailable => match leader_hint(status) {
            Some(addr) => Verdict::Redirect(addr),
            None => Verdict::Retry,
        },
        Code::DeadlineExceeded => Verdict::Retry,
        Code::Unknown | Code::Cancelled | Code::Internal if is_transport(status) => Verdict::Retry,
        _ => Verdict::Fail,
    }
}

/// Exponential backoff with jitter: 50ms doubling to 1s, each delay drawn
/// from [d/2, d] so clients that failed together do not retry together.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { next: initial, max }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = d / 2;
        let span = half.as_nanos().max(1) as u64;
        half + Duration::from_nanos(random_u64() % span)
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new(Duration::from_millis(50), Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
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
}
