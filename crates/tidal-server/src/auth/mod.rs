//! Who may call what: the caller a connection proves ([`caller`]), the tokens a request presents ([`token`]) and the pure rules over them ([`policy`]).
//!
//! Confined to std, tidal_core, ring, base64 and tracing (tools/modcheck):
//! the gRPC edge (`grpc/auth_layer.rs`, `grpc/raft_service.rs`) gathers what
//! the rules need, asks them, and answers a refusal.

pub mod caller;
pub mod grant;
pub mod policy;
pub mod token;
