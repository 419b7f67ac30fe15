//! Who may call what: the caller a connection proves ([`caller`]) and the pure rules over it ([`policy`]).
//!
//! Confined to std, tidal_core, ring, base64 and tracing (tools/modcheck):
//! the gRPC edge (`grpc/auth_layer.rs`, `grpc/raft_service.rs`) gathers what
//! the rules need, asks them, and answers a refusal.

pub mod caller;
pub mod policy;
