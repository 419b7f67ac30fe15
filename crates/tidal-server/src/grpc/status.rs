//! A [`ServerError`] as a gRPC status: its code, its message, and the leader it names in the metadata.

use tidal_proto::{LEADER_ADDR_KEY, LEADER_ID_KEY, NOT_PROPOSED_KEY};
use tonic::Status;

use crate::error::ServerError;

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Status {
        let mut status = Status::new(e.code(), e.to_string());
        if let ServerError::NotLeader {
            leader_id,
            leader_addr,
            before_proposal,
        } = &e
        {
            let md = status.metadata_mut();
            if *before_proposal {
                md.insert(
                    NOT_PROPOSED_KEY,
                    tonic::metadata::MetadataValue::from_static("1"),
                );
            }
            if let Some(id) = leader_id {
                if let Ok(v) = id.to_string().parse() {
                    md.insert(LEADER_ID_KEY, v);
                }
            }
            if let Some(addr) = leader_addr {
                if let Ok(v) = addr.parse() {
                    md.insert(LEADER_ADDR_KEY, v);
                }
            }
        }
        status
    }
}
