//! The openraft type configuration for tidal and the names this crate gives its types.

use tidal_core::{Envelope, Response};

/// Raft node ids are plain integers.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// openraft's type configuration for tidal: entries carry an [`Envelope`],
    /// apply returns a [`Response`].
    pub TypeConfig:
        D = Envelope,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle of a tidal node.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log id (term, leader node, index).
pub type LogId = openraft::LogId<NodeId>;
/// A vote.
pub type Vote = openraft::Vote<NodeId>;
/// One Raft log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A membership config.
pub type Membership = openraft::Membership<NodeId, openraft::BasicNode>;
/// A membership config and the log id it was written at.
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
/// What a snapshot covers.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
/// A snapshot: its meta and its data.
pub type Snapshot = openraft::storage::Snapshot<TypeConfig>;
/// openraft's storage error, as this crate's trait impls return it.
pub type StorageError = openraft::StorageError<NodeId>;
