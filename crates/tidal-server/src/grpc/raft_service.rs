//! The Raft transport, server side: decodes openraft's RPCs and hands them to
//! the local Raft node.

use tidal_proto::raft::raft_server::Raft as RaftRpc;
use tidal_proto::raft::RaftPayload;
use tidal_store::Raft;
use tonic::{Request, Response, Status};

use crate::raft_network::{decode, encode};

pub struct RaftService {
    pub raft: Raft,
    pub node_id: u64,
    /// Set when the leader says this node was removed; the server then stops.
    pub removed: tokio::sync::watch::Sender<Option<String>>,
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
        // A node that knows no membership has not joined (or lost its data):
        // its empty log must not help elect anyone, so it does not vote.
        if self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .next()
            .is_none()
        {
            return Err(Status::failed_precondition(
                "this node has not joined a cluster (or its data was wiped); it does not vote",
            ));
        }
        let req = decode(&request.into_inner().data).map_err(bad_request)?;
        reply(&self.raft.vote(req).await)
    }

    async fn removed(
        &self,
        request: Request<tidal_proto::raft::RemovedNotice>,
    ) -> Result<Response<tidal_proto::raft::RemovedAck>, Status> {
        let n = request.into_inner();
        if n.node_id != self.node_id {
            return Err(Status::invalid_argument(format!(
                "this is node {}, not node {}",
                self.node_id, n.node_id
            )));
        }
        let why = format!(
            "node {} was removed from the cluster (leader {} committed the membership at log index {}); \
             it stops serving. To bring this machine back, wipe its data directory and add it again \
             with `tidal cluster add-learner`",
            n.node_id, n.leader_id, n.membership_index
        );
        tracing::error!(node_id = self.node_id, "{why}");
        self.removed.send_replace(Some(why));
        Ok(Response::new(tidal_proto::raft::RemovedAck {}))
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let req = decode(&request.into_inner().data).map_err(bad_request)?;
        reply(&self.raft.install_snapshot(req).await)
    }
}
