//! The Raft transport, server side: decodes openraft's RPCs and hands them to
//! the local Raft node.

use tidal_proto::raft::raft_server::Raft as RaftRpc;
use tidal_proto::raft::RaftPayload;
use tidal_store::Raft;
use tonic::{Request, Response, Status};

use crate::raft_network::{decode, encode};

pub struct RaftService {
    pub raft: Raft,
}

fn bad_request(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("undecodable raft message: {e}"))
}

fn reply<T: serde::Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    let data = encode(value).map_err(|e| Status::internal(format!("encoding raft reply: {e}")))?;
    Ok(Response::new(RaftPayload { data }))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let req = decode(&request.into_inner().data).map_err(bad_request)?;
        reply(&self.raft.append_entries(req).await)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let req = decode(&request.into_inner().data).map_err(bad_request)?;
        reply(&self.raft.vote(req).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let req = decode(&request.into_inner().data).map_err(bad_request)?;
        reply(&self.raft.install_snapshot(req).await)
    }
}
