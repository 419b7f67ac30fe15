//! What may be retried, and how long to wait between attempts.

use std::time::Duration;

use tidal_proto::{LEADER_ADDR_KEY, NOT_PROPOSED_KEY};
use tidal_tls::rustls;
use tonic::{Code, Status};

use crate::endpoint;
use crate::idempotency::random_u64;
use crate::Error;

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
    /// The TLS handshake failed in a way no retry can mend (a certificate
    /// refused by either side, a server that does not speak TLS): pass this
    /// endpoint over, and give up with this reason when every one refused.
    Refused(String),
    /// The request is not safe to repeat ([`Repeat::Once`]) and this attempt
    /// may have been applied: give up, saying the outcome is unknown.
    Unknown,
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

/// Whether a request may be sent again after an attempt that may have
/// reached the leader.
///
/// Most requests are safe to repeat ([`Repeat::Safe`]): reads; submits
/// carry idempotency keys; set-queue, add-learner, promote and token revoke
/// are idempotent at the server; a token create repeated after a lost
/// answer makes a second token, which is listed and can be revoked. For
/// those the policy depends on the answer only ([`classify`]).
///
/// `Tasks.Cancel`, `Tasks.Replay` and `Agents.Deregister` are not
/// ([`Repeat::Once`]): when the first attempt was applied and only its
/// answer was lost, a second one reports FAILED_PRECONDITION (the task is
/// cancelled already), NOT_FOUND (the agent is gone already) or, for a
/// replay of a queue's dead letters, replays others and omits the ones
/// replayed, for an operation that worked. Treating the "already done"
/// answer as success is not unambiguous for them (a replay cannot tell;
/// NOT_FOUND may be a wrong id), so they are sent again only after an
/// attempt that certainly was not applied ([`never_applied`]); any other
/// failure ends the call with UNAVAILABLE saying the outcome is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Repeat {
    Safe,
    Once,
}

/// True when the failed attempt certainly was not applied:
/// - the connection could not be made (refused, timed out, TLS handshake):
///   no byte of the request was sent;
/// - the server answered that it is not the leader before proposing
///   anything (UNAVAILABLE with `tidal-not-proposed: 1`, with or without
///   the leader named).
///
/// A connection lost after the request went out, a deadline passed, or
/// another UNAVAILABLE may follow an applied request: no quorum, a leader
/// that stepped down before the entry committed, and a "not the leader"
/// answer without the mark (openraft's, for a write whose entry a new
/// leader's log replaced on this node: with five voters another voter may
/// still hold that entry and commit it under a later leader).
pub(crate) fn never_applied(status: &Status) -> bool {
    if is_transport(status) {
        return !failed_after_connect(status);
    }
    status.code() == Code::Unavailable && status.metadata().get(NOT_PROPOSED_KEY).is_some()
}

/// What to do after a failed attempt of a request that may be repeated as
/// `repeat` says: [`classify`]'s verdict, but a retry or redirect of a
/// [`Repeat::Once`] request that may have been applied is [`Verdict::Unknown`].
pub(crate) fn classify_for(status: &Status, repeat: Repeat) -> Verdict {
    match classify(status) {
        Verdict::Retry | Verdict::Redirect(_)
            if repeat == Repeat::Once && !never_applied(status) =>
        {
            Verdict::Unknown
        }
        v => v,
    }
}

/// The error of a [`Repeat::Once`] call whose attempt at `addr` may have
/// been applied.
pub(crate) fn outcome_unknown(addr: &str, status: &Status) -> Error {
    Error::new(
        Code::Unavailable,
        format!(
            "the request to {addr} may or may not have been applied (its answer was lost: {}); \
             it is not sent again, as repeating it is not safe: check the result before retrying",
            status.message()
        ),
    )
}

/// What to do after a failed attempt of a request that is safe to repeat:
/// the policy depends on the answer only.
pub(crate) fn classify(status: &Status) -> Verdict {
    if let Some(why) = tls_refusal(status) {
        return Verdict::Refused(why);
    }
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

/// The error a call ends with when `addr` refused TLS (`why` from
/// [`tls_refusal`]): `Unauthenticated`, final.
pub(crate) fn refused(addr: &str, why: &str) -> Error {
    Error::new(
        Code::Unauthenticated,
        format!("{}{addr} failed: {why}", crate::error::TLS_REFUSAL),
    )
}

/// Why a status made on this side from a failed connection is a TLS
/// failure that retrying cannot mend, if it is one. rustls' error is in
/// the status' source chain: as itself (wrapped in the `io::Error` of
/// tokio-rustls) when the handshake failed, or only as its text (in an
/// `io::Error` of kind `InvalidData`) when it came later through h2, which
/// keeps an I/O error's kind and message only: that is how a TLS 1.3
/// server's refusal of the client's certificate arrives, after the
/// client's side of the handshake is done.
pub(crate) fn tls_refusal(status: &Status) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = cause {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return explain(tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return explain(tls);
            }
            if io.kind() == std::io::ErrorKind::InvalidData {
                if let Some(name) = io.to_string().strip_prefix(ALERT_RECEIVED) {
                    return alert(name.trim());
                }
            }
        }
        cause = e.source();
    }
    None
}

/// How rustls words an alert from the peer (`Error::AlertReceived`),
/// followed by the alert's name.
const ALERT_RECEIVED: &str = "received fatal alert: ";

/// A rustls error in words, when it is final.
pub(crate) fn explain(e: &rustls::Error) -> Option<String> {
    use rustls::CertificateError as C;
    let theirs = |why: &str| Some(format!("the server's certificate {why}"));
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer | C::BadSignature => {
                theirs("is not signed by ca.pem (the CA this client trusts)")
            }
            C::Expired | C::ExpiredContext { .. } => theirs("has expired"),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                theirs("is not valid yet (are the clocks right?)")
            }
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                theirs("is not a server's (its key usages do not allow TLS server use)")
            }
            // The identity check: its message names what the certificate
            // says and what was expected.
            C::Other(other) => {
                let why = other.to_string();
                if why.starts_with("the server's certificate") {
                    Some(why)
                } else {
                    theirs(&format!("is not usable: {why}"))
                }
            }
            other => theirs(&format!("was refused: {other:?}")),
        },
        rustls::Error::AlertReceived(a) => alert(&format!("{a:?}")),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            Some("the server does not speak TLS (is it running without --tls-dir?)".into())
        }
        _ => None,
    }
}

/// An alert the server sent (by its rustls name), in words, when it is final.
fn alert(name: &str) -> Option<String> {
    match name {
        // DecryptError: rustls' alert for a certificate whose signature
        // does not verify (one from another CA of the same name).
        "BadCertificate"
        | "UnsupportedCertificate"
        | "CertificateRevoked"
        | "CertificateExpired"
        | "CertificateUnknown"
        | "UnknownCA"
        | "AccessDenied"
        | "CertificateRequired"
        | "DecryptError" => Some(format!(
            "the server refused this client's certificate ({name}): is it signed by the CA \
             the server trusts, and valid?"
        )),
        "HandshakeFailure"
        | "ProtocolVersion"
        | "InsufficientSecurity"
        | "NoApplicationProtocol" => Some(format!("the server refused the TLS handshake ({name})")),
        _ => None,
    }
}

/// Whether a transport failure came after the connection was made (the
/// server closed or reset it, or sent what is not HTTP/2), not from
/// making it (tonic's `ConnectError`: refused, timed out, a failed TLS
/// handshake): among other causes, what a TLS server does to a plaintext
/// client, and how HTTP/2 may report a client certificate the server
/// refused.
pub(crate) fn failed_after_connect(status: &Status) -> bool {
    if !is_transport(status) {
        return false;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = cause {
        if e.is::<tonic::ConnectError>() {
            return false;
        }
        cause = e.source();
    }
    true
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
