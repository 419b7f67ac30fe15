//! tidal-tls: the certificates of tidal's mutual TLS and what reads them.
//!
//! Every process (server, agent, client) holds a TLS directory: `ca.pem`
//! (the CA every peer must chain to), `cert.pem` and `key.pem`. A
//! certificate carries its holder's identity in a SAN URI
//! `tidal://<role>/<dc>/<name>` (role server, agent or client; a server's
//! name is its node id; an empty DC means any DC). Peers are checked by
//! that identity, never by host name, so proxies and network namespaces
//! need no certificate changes. Only servers' certificates allow TLS
//! server use (extended key usage ServerAuth); agents' and clients' allow
//! ClientAuth only.
//!
//! Module map:
//! - [`identity`]: `Role`, `CertIdentity` (URI codec, reading a DER
//!   certificate), `Expect` (which server a client accepts).
//! - [`files`]: `TlsDir::load`, which checks the three files together.
//! - [`info`]: `CertInfo`, what a certificate says, for display.
//! - [`server`]: `server_config` (client certificate required) and
//!   `peer_identity` of an accepted connection.
//! - [`client`]: `client_config`, whose verifier checks the server's
//!   chain and then its identity against an `Expect`, not a host name.
//! - [`plaintext`]: the rule of clients and agents without TLS
//!   (loopback servers only, unless `--insecure`).
//! - [`issue`] (feature `issue`): a new CA, and certificates signed by it
//!   (rcgen), for `tidal cert`.
//! - `error`: `TlsError`, which names the file involved.
//!
//! Dependency rule: rustls, tokio-rustls and x509-parser (rcgen only with
//! `issue`), with the ring crypto provider only. No tonic, no runtime logic.

#![warn(missing_docs)]

pub mod client;
pub mod files;
pub mod identity;
pub mod info;
#[cfg(any(test, feature = "issue"))]
pub mod issue;
pub mod plaintext;
pub mod server;

mod error;

pub use client::client_config;
pub use error::TlsError;
pub use files::{tls_or_plaintext, TlsDir};
pub use identity::{CertIdentity, Expect, IdentityError, Role};
pub use info::CertInfo;
pub use plaintext::{check_plaintext_endpoints, is_loopback_host, PlaintextRefused};
/// The rustls this crate builds its configurations with (callers use it,
/// so versions cannot drift apart).
pub use rustls;
pub use server::{peer_identity, server_config};
/// The tokio-rustls that runs those configurations over tokio sockets.
pub use tokio_rustls;
