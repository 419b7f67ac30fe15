//! `tidal.v1.Cluster`: membership (add a learner, promote it) and status.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use openraft::{BasicNode, ChangeMembers, ServerState};
use tidal_proto::v1::{self, cluster_server::Cluster};
use tonic::{Request, Response, Status};

use super::convert;
use crate::error::ServerError;
use crate::node::Node;

pub struct ClusterService {
    pub node: Arc<Node>,
}

impl ClusterService {
    fn members(&self) -> v1::MembersResponse {
        let m = self.node.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let matched = m.replication.clone().unwrap_or_default();
        let members = membership
            .nodes()
            .map(|(id, n)| v1::Member {
                id: *id,
                addr: n.addr.clone(),
                voter: voters.contains(id),
                leader: m.current_leader == Some(*id),
                matched_index: matched
                    .get(id)
                    .and_then(|l| l.map(|l| l.index))
                    .unwrap_or(0),
            })
            .collect();
        v1::MembersResponse {
            members,
            leader_id: m.current_leader.unwrap_or(0),
            term: m.current_term,
        }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    #[tracing::instrument(skip_all, fields(node_id = self.node.id))]
    async fn add_learner(
        &self,
        request: Request<v1::AddLearnerRequest>,
    ) -> Result<Response<v1::MembersResponse>, Status> {
        let req = request.into_inner();
        if req.id == 0 {
            return Err(ServerError::InvalidArgument("member id must be 1 or more".into()).into());
        }
        if req.addr.parse::<SocketAddr>().is_err() {
            return Err(ServerError::InvalidArgument(format!(
                "address {:?} is not HOST:PORT with a numeric host",
                req.addr
            ))
            .into());
        }
        self.node.require_leader()?;
        {
            let m = self.node.raft.metrics().borrow().clone();
            let membership = m.membership_config.membership();
            for (id, n) in membership.nodes() {
                if *id == req.id && n.addr == req.addr {
                    // Already there: adding again is a no-op, so retries are safe.
                    return Ok(Response::new(self.members()));
                }
                if *id == req.id {
                    return Err(ServerError::AlreadyExists(format!(
                        "member id {} is already in use (at {})",
                        id, n.addr
                    ))
                    .into());
                }
                if n.addr == req.addr {
                    return Err(ServerError::AlreadyExists(format!(
                        "address {} is already used by member {}",
                        n.addr, id
                    ))
                    .into());
                }
            }
        }
        tracing::info!(node_id = self.node.id, learner = req.id, addr = %req.addr, "adding learner");
        self.node
            .raft
            .add_learner(req.id, BasicNode { addr: req.addr }, true)
            .await
            .map_err(ServerError::from)?;
        Ok(Response::new(self.members()))
    }

    #[tracing::instrument(skip_all, fields(node_id = self.node.id))]
    async fn promote(
        &self,
        request: Request<v1::PromoteRequest>,
    ) -> Result<Response<v1::MembersResponse>, Status> {
        let id = request.into_inner().id;
        self.node.require_leader()?;
        {
            let m = self.node.raft.metrics().borrow().clone();
            let membership = m.membership_config.membership();
            if membership.get_node(&id).is_none() {
                return Err(ServerError::NotFound(format!(
                    "node {id} is not a member; add it first with `tidal cluster add-learner`"
                ))
                .into());
            }
            if membership.voter_ids().any(|v| v == id) {
                return Ok(Response::new(self.members()));
            }
        }
        tracing::info!(node_id = self.node.id, voter = id, "promoting learner");
        self.node
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(ServerError::from)?;
        Ok(Response::new(self.members()))
    }

    async fn members(
        &self,
        _request: Request<v1::MembersRequest>,
    ) -> Result<Response<v1::MembersResponse>, Status> {
        Ok(Response::new(self.members()))
    }

    async fn status(
        &self,
        _request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        let node = &self.node;
        let m = node.raft.metrics().borrow().clone();
        let leader_addr = m
            .current_leader
            .and_then(|l| {
                m.membership_config
                    .membership()
                    .get_node(&l)
                    .map(|n| n.addr.clone())
            })
            .unwrap_or_default();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let connected = node
            .leadership()
            .map(|l| l.sessions.connected().len())
            .unwrap_or(0);
        let applied = node.state.read();
        let state = &applied.state;
        Ok(Response::new(v1::StatusResponse {
            node_id: node.id,
            dc: node.config.dc.clone(),
            leader_id: m.current_leader.unwrap_or(0),
            leader_addr,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: applied.last_applied.map(|l| l.index).unwrap_or(0),
            role: role.to_string(),
            tasks_by_state: state
                .counts_by_state()
                .into_iter()
                .map(|(k, v)| (k.as_str().to_string(), v))
                .collect(),
            agents: state.agents().count() as u32,
            agents_connected: connected as u32,
            queues: state
                .queues()
                .map(|q| convert::queue_to(q, state.pending_in_queue(&q.name)))
                .collect(),
            state_digest: state.digest(),
        }))
    }
}
