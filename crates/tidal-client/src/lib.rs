//! A typed client of tidal's public gRPC API (`proto/tidal.proto`), with
//! leader discovery and retries. Used by the CLI, the agent, chaos and benches.
//!
//! Module map:
//! - `client`: [`Client`], its options and the agent [`Session`]; one lazily
//!   connected channel per endpoint; the retry loop.
//! - `retry`: which answers may be retried or redirected, which TLS
//!   failures are final; backoff.
//! - `endpoint`: `HOST:PORT` validation (`https://` asks for TLS).
//! - `idempotency`: random keys that make a retried submit safe.
//! - `names`: the lowercase names of API enums users see.
//! - `error`: [`Error`], a gRPC code and a message.
//! - `token`: [`Token`], sent as `authorization: Bearer`.
//! - [`plain_http`]: a minimal HTTP/1.1 responder for the metrics
//!   listeners of the server and the agent (`--metrics-listen`).
//! - [`dial`]: channels to tidal servers, optionally from a fixed local IP
//!   (the server's Raft network uses it too).
//!
//! Leader discovery: a call goes to the last known leader first, then to the
//! endpoints in order. An `Unavailable` answer that names the leader
//! (`tidal-leader-addr`) is followed at once; connection failures and
//! `Unavailable` without a leader move to the next endpoint after a backoff
//! (50ms doubling to 1s, jittered) until `retry_for` has passed. Final answers
//! (InvalidArgument, NotFound, AlreadyExists, FailedPrecondition,
//! ResourceExhausted, ...) are never retried, nor are TLS handshakes that
//! fail for a certificate (either side's) or a server without TLS: those
//! end the call at once with `Unauthenticated` and the reason in words.
//! Cancel, replay and deregister are not safe to repeat: they are sent
//! again only after an attempt that certainly was not applied (a refused
//! connection, a not-leader answer); after any other failure the call ends
//! with `Unavailable` saying the outcome is unknown (see `retry`).
//!
//! Tokens: with `ClientOptions::token` every request carries
//! `authorization: Bearer <token>` ([`Token`] never shows its secret in
//! `Debug`). UNAUTHENTICATED and PERMISSION_DENIED are final, as every
//! answer that is not about reaching the leader is.
//!
//! TLS: with `ClientOptions::tls` (a rustls configuration from
//! `tidal_tls::client_config`) every connection, redirects included, is
//! mutual TLS; the configuration decides which servers are accepted.
//!
//! Dependency rule: this crate uses only `tidal-proto`, `tidal-tls`, `tonic`
//! and `tokio` (with `hyper-util` and `tower` for [`dial`]); it knows
//! nothing of the server's internals.

mod client;
pub mod dial;
mod endpoint;
mod error;
mod idempotency;
mod names;
pub mod plain_http;
mod retry;
mod token;

#[cfg(test)]
mod client_test;
#[cfg(test)]
mod tls_test;

pub use client::{
    Client, ClientOptions, Session, DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE_INTERVAL,
    DEFAULT_KEEPALIVE_TIMEOUT,
};
pub use endpoint::normalize as normalize_endpoint;
pub use error::Error;
pub use idempotency::auto_key;
pub use names::{is_terminal, task_state_name};
pub use tidal_proto::v1;
/// The certificates and rustls configurations of [`ClientOptions::tls`].
pub use tidal_tls;
pub use token::Token;
