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
#[path = "retry_test.rs"]
mod tests;
