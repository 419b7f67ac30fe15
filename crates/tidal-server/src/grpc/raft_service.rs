//! The Raft transport, server side: decodes openraft's RPCs and hands them to
//! the local Raft node.
//!
//! With `--peer-listen` or `--tls-dir`, each decoded message is also
//! checked against the member the caller is, by its IP or, with TLS, by its
//! certificate ([`policy::bind`]): the leader a vote or an
//! append names, a pre-vote's candidate, a removal notice's leader (a
//! voter), and the sender of a hold or a campaign (a voter, the leader this
//! node knows).

use std::sync::Arc;

use openraft::raft::AppendEntriesRequest;
use tidal_proto::raft::raft_server::Raft as RaftRpc;
use tidal_proto::raft::RaftPayload;
use tidal_store::{Raft, TypeConfig};
use tonic::{Request, Response, Status};

use super::auth_layer::PeerPlane;
use super::conn::{self, Caller};
use crate::auth::policy::{self, PeerRpc, Sender};
use crate::raft::contact::LeaderContact;
use crate::raft::network::{decode, encode};
use crate::raft::vote_gate::VoteGate;

pub struct RaftService {
    pub raft: Raft,
    pub node_id: u64,
    pub vote_gate: Arc<VoteGate>,
    /// Set when the leader says this node was removed; the server then stops.
    pub removed: tokio::sync::watch::Sender<Option<String>>,
    /// When a leader last replicated to this node.
    pub contact: LeaderContact,
    /// Pre-votes, holds and campaigns.
    pub elections: Arc<crate::raft::Elections>,
    /// The highest cluster format version this node supports, sent in
    /// every reply so the leader knows (README: Rolling upgrade).
    pub max_format_version: u8,
    /// This node's DC, named in Hello.
    pub dc: String,
    /// The longest hold of elections taken: what a transfer asks for
    /// (8 election timeouts).
    pub max_hold: std::time::Duration,
    /// The peer plane's rules (enforced with `--peer-listen` or TLS).
    pub plane: Arc<PeerPlane>,
}

/// Decodes a Raft payload of this server's wire format.
fn payload<T: serde::de::DeserializeOwned>(request: Request<RaftPayload>) -> Result<T, Status> {
    let p = request.into_inner();
    crate::raft::network::check_format(p.format).map_err(Status::failed_precondition)?;
    decode(&p.data).map_err(bad_request)
}

fn bad_request(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("undecodable raft message: {e}"))
}

impl RaftService {
    /// Checks that `sender` is the member the caller is (only with `--peer-listen` or TLS).
    fn bind(&self, rpc: PeerRpc, caller: Option<&Caller>, sender: Sender) -> Result<(), Status> {
        let Some(caller) = caller.filter(|_| self.plane.enforced()) else {
            return Ok(());
        };
        policy::bind(rpc, caller, &self.plane.members(), sender)
            .map_err(|denied| self.plane.deny(caller, denied))
    }

    /// The member a vote names as its leader or candidate.
    fn named(vote: &openraft::Vote<u64>) -> Option<Sender> {
        vote.leader_id().voted_for().map(Sender::Named)
    }

    fn reply<T: serde::Serialize>(&self, value: &T) -> Result<Response<RaftPayload>, Status> {
        let data =
            encode(value).map_err(|e| Status::internal(format!("encoding raft reply: {e}")))?;
        Ok(Response::new(RaftPayload {
            data,
            format: crate::raft::network::WIRE_FORMAT,
            max_format_version: self.max_format_version.into(),
        }))
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let caller = conn::caller(&request).cloned();
        let req: AppendEntriesRequest<TypeConfig> = payload(request)?;
        if let Some(sender) = Self::named(&req.vote) {
            self.bind(PeerRpc::AppendEntries, caller.as_ref(), sender)?;
        }
        self.vote_gate
            .saw_leader_commit(req.leader_commit.map(|l| l.index));
        // From the leader this node follows: heard, as it arrives. openraft
        // answers only once the entries are on this node's disk, and a
        // disk that stalls would otherwise make a live leader look silent
        // (raft::alive). Hearing sooner only refuses pre-votes sooner.
        if self.raft.metrics().borrow().vote == req.vote && req.vote.is_committed() {
            self.contact.touch();
        }
        let resp = self.raft.append_entries(req).await;
        if matches!(&resp, Ok(r) if !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_)))
        {
            self.contact.touch();
        }
        self.reply(&resp)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.elections
            .may_vote()
            .map_err(Status::failed_precondition)?;
        let caller = conn::caller(&request).cloned();
        let req: openraft::raft::VoteRequest<u64> = payload(request)?;
        if let Some(sender) = Self::named(&req.vote) {
            self.bind(PeerRpc::Vote, caller.as_ref(), sender)?;
        }
        self.reply(&self.raft.vote(req).await)
    }

    async fn removed(
        &self,
        request: Request<tidal_proto::raft::RemovedNotice>,
    ) -> Result<Response<tidal_proto::raft::RemovedAck>, Status> {
        let caller = conn::caller(&request).cloned();
        let n = request.into_inner();
        self.bind(
            PeerRpc::Removed,
            caller.as_ref(),
            Sender::NamedVoter(n.leader_id),
        )?;
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

    async fn hold_elections(
        &self,
        request: Request<tidal_proto::raft::HoldElectionsRequest>,
    ) -> Result<Response<tidal_proto::raft::RemovedAck>, Status> {
        let caller = conn::caller(&request).cloned();
        let millis = request.into_inner().millis;
        self.bind(
            PeerRpc::HoldElections,
            caller.as_ref(),
            Sender::Leader {
                known: self.plane.known_leader(),
                release: millis == 0,
            },
        )?;
        // Bounded, and ends by itself: a transfer that dies half way must
        // not leave a voter that never campaigns.
        let hold = std::time::Duration::from_millis(millis).min(self.max_hold);
        self.elections.hold(hold);
        Ok(Response::new(tidal_proto::raft::RemovedAck {}))
    }

    async fn campaign(
        &self,
        request: Request<tidal_proto::raft::CampaignRequest>,
    ) -> Result<Response<tidal_proto::raft::RemovedAck>, Status> {
        let caller = conn::caller(&request).cloned();
        self.bind(
            PeerRpc::Campaign,
            caller.as_ref(),
            Sender::Leader {
                known: self.plane.known_leader(),
                release: false,
            },
        )?;
        if request.into_inner().node_id != self.node_id {
            return Err(Status::invalid_argument(
                "the campaign request names another node",
            ));
        }
        tracing::info!(node_id = self.node_id, "asked to campaign for leadership");
        self.elections
            .campaign()
            .await
            .map_err(Status::unavailable)?;
        Ok(Response::new(tidal_proto::raft::RemovedAck {}))
    }

    async fn pre_vote(
        &self,
        request: Request<tidal_proto::raft::PreVoteRequest>,
    ) -> Result<Response<tidal_proto::raft::PreVoteResponse>, Status> {
        let caller = conn::caller(&request).cloned();
        let req = request.into_inner();
        self.bind(
            PeerRpc::PreVote,
            caller.as_ref(),
            Sender::Named(req.candidate_id),
        )?;
        crate::raft::network::check_format(req.format).map_err(Status::failed_precondition)?;
        let last_log_id = crate::raft::Elections::decode_last_log_id(&req.last_log_id)
            .map_err(Status::invalid_argument)?;
        let answer = self
            .elections
            .answer_pre_vote(req.candidate_id, last_log_id)
            .await;
        let retry_after_ms = answer
            .as_ref()
            .err()
            .and_then(|r| self.elections.retry_after(r))
            .map_or(0, |d| d.as_millis() as u64);
        Ok(Response::new(tidal_proto::raft::PreVoteResponse {
            granted: answer.is_ok(),
            reason: answer.err().map(|r| r.to_string()).unwrap_or_default(),
            retry_after_ms,
        }))
    }

    async fn hello(
        &self,
        _request: Request<tidal_proto::raft::HelloRequest>,
    ) -> Result<Response<tidal_proto::raft::HelloResponse>, Status> {
        Ok(Response::new(tidal_proto::raft::HelloResponse {
            node_id: self.node_id,
            dc: self.dc.clone(),
            min_format_version: tidal_core::FORMAT_VERSION_MIN.into(),
            max_format_version: self.max_format_version.into(),
        }))
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let caller = conn::caller(&request).cloned();
        let req: openraft::raft::InstallSnapshotRequest<TypeConfig> = payload(request)?;
        if let Some(sender) = Self::named(&req.vote) {
            self.bind(PeerRpc::InstallSnapshot, caller.as_ref(), sender)?;
        }
        self.reply(&self.raft.install_snapshot(req).await)
    }

    /// The leader's Raft core waits for its disk: if this node has the
    /// sender as the leader of that term, it counts as having heard from it
    /// (no pre-vote asked or granted meanwhile). Nothing else changes.
    async fn leader_alive(
        &self,
        request: Request<tidal_proto::raft::LeaderAliveRequest>,
    ) -> Result<Response<tidal_proto::raft::LeaderAliveResponse>, Status> {
        let caller = conn::caller(&request).cloned();
        let req = request.into_inner();
        self.bind(
            PeerRpc::LeaderAlive,
            caller.as_ref(),
            Sender::NamedVoter(req.leader_id),
        )?;
        let heard = {
            let m = self.raft.metrics();
            let m = m.borrow();
            req.leader_id != self.node_id
                && m.running_state.is_ok()
                && m.current_term == req.term
                && m.current_leader == Some(req.leader_id)
                && m.vote.is_committed()
                && m.vote.leader_id().voted_for() == Some(req.leader_id)
        };
        if heard {
            self.contact.touch();
            tracing::debug!(
                node_id = self.node_id,
                leader = req.leader_id,
                waited_ms = req.waited_ms,
                "the leader is alive; its Raft waits for its disk"
            );
        }
        Ok(Response::new(tidal_proto::raft::LeaderAliveResponse {
            heard,
        }))
    }
}
