//! Code generated from `proto/`: the public API (`tidal.v1`) and the internal
//! Raft transport (`tidal.raft.v1`), and [`codec`], the codec the generated
//! code names for every service. No other logic lives here.

pub mod codec;

/// The public API (`proto/tidal.proto`).
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("tidal.v1");
}

/// The Raft transport between servers of one data center (`proto/raft.proto`).
#[allow(clippy::all, missing_docs)]
pub mod raft {
    tonic::include_proto!("tidal.raft.v1");
}

/// Metadata key naming the leader's id on an `Unavailable` answer.
pub const LEADER_ID_KEY: &str = "tidal-leader-id";
/// Metadata key naming the leader's address on an `Unavailable` answer.
pub const LEADER_ADDR_KEY: &str = "tidal-leader-addr";
