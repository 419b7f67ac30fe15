//! Raft beside openraft: what tidal adds to openraft 0.9's elections.
//!
//! - [`vote_gate`]: a node that started on an empty store votes only once it
//!   holds what was committed when it came back.
//! - [`contact`]: when this node last heard from a leader.

pub mod contact;
pub mod vote_gate;
