//! Code generated from `proto/`: the public API (`tidal.v1`) and the internal
//! Raft transport (`tidal.raft.v1`), and [`codec`], the codec the generated
//! code names for every service, and [`FILE_DESCRIPTOR_SET`], the public
//! API's descriptors for server reflection. No other logic lives here.

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

/// The descriptors of `proto/tidal.proto` (an encoded
/// `google.protobuf.FileDescriptorSet`, with the proto's comments): what
/// server reflection serves. `raft.proto`, the servers' own transport, is
/// not in it.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tidal_descriptor.bin"));

/// Metadata key naming the leader's id on an `Unavailable` answer.
pub const LEADER_ID_KEY: &str = "tidal-leader-id";
/// Metadata key naming the leader's address on an `Unavailable` answer.
pub const LEADER_ADDR_KEY: &str = "tidal-leader-addr";
/// Metadata key (value `1`) on a "not the leader" answer given before the
/// request was proposed to Raft: it certainly was not applied, so even a
/// request that is not safe to repeat may be sent again.
pub const NOT_PROPOSED_KEY: &str = "tidal-not-proposed";

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn the_descriptor_set_holds_the_public_api_only() {
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["tidal.proto"]);
        let file = &set.file[0];
        assert_eq!(file.package(), "tidal.v1");
        assert!(
            file.service.iter().any(|s| s.name() == "Tasks"),
            "{names:?}"
        );
        // The comments come along, for `grpcurl describe`.
        assert!(file.source_code_info.is_some());
    }
}
