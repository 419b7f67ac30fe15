//! Raft beside openraft: the transport, elections with a pre-vote, leadership
//! transfer, check-quorum and the hooks the Raft service calls.
//!
//! - [`network`]: openraft's RPCs over tonic, client side (the server side is
//!   `grpc::raft_service`), and when each peer last accepted this node's entries.
//! - `elections`: when to elect, the driver: a pre-vote first, then
//!   openraft's election.
//! - `pre_vote`: the pre-vote's rules, a pure state machine (time and seed
//!   passed in).
//! - [`transfer`]: handing leadership over (`transfer-leader`, shutdown).
//! - [`quorum`]: check-quorum and the leader's lease.
//! - [`vote_gate`]: a node that started on an empty store votes only once it
//!   holds what was committed when it came back.
//! - [`contact`]: when this node last heard from a leader.

pub mod contact;
mod elections;
pub mod network;
mod pre_vote;
pub mod quorum;
pub mod transfer;
pub mod vote_gate;

pub use elections::{openraft_timeouts, Elections};
