//! The Raft transport, server side: decodes openraft's RPCs and hands them to
//! the local Raft node.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use openraft::raft::AppendEntriesRequest;
use tidal_proto::raft::raft_server::Raft as RaftRpc;
use tidal_proto::raft::RaftPayload;
use tidal_store::{Raft, TypeConfig};
use tonic::{Request, Response, Status};

use crate::raft_network::{decode, encode};

/// Keeps a node that started on an empty store from voting until it holds
/// everything committed when it came back. A member restarted on a wiped
/// disk has lost entries it acknowledged; if its empty log helped elect a
/// candidate that misses them, committed entries would be lost. So such a
/// node votes only once it has applied the commit index of the first
/// leader it hears from (a brand-new learner waits the same way, harmlessly).
pub struct VoteGate {
    open: AtomicBool,
    /// The first leader commit index heard since start (`u64::MAX`: none yet).
    target: AtomicU64,
}

impl VoteGate {
    /// Closed for a node that started on an empty store, open otherwise.
    pub fn new(started_empty: bool) -> VoteGate {
        VoteGate {
            open: AtomicBool::new(!started_empty),
            target: AtomicU64::new(u64::MAX),
        }
    }

    fn saw_leader_commit(&self, commit: Option<u64>) {
        if !self.open.load(Ordering::Relaxed) {
            let _ = self.target.compare_exchange(
                u64::MAX,
                commit.unwrap_or(0),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    pub(crate) fn check(&self, applied: u64) -> Result<(), String> {
        if self.open.load(Ordering::Relaxed) {
            return Ok(());
        }
        match self.target.load(Ordering::Relaxed) {
            u64::MAX => Err("this node started on an empty store and has not heard from a leader yet; it does not vote".into()),
            t if applied >= t => {
                self.open.store(true, Ordering::Relaxed);
                tracing::info!(log_index = applied, "caught up after starting empty; this node votes again");
                Ok(())
            }
            t => Err(format!(
                "this node started on an empty store and has applied {applied} of the {t} entries committed when it \
                 came back; it does not vote until it has them all"
            )),
        }
    }
}

pub struct RaftService {
    pub raft: Raft,
    pub node_id: u64,
    pub vote_gate: Arc<VoteGate>,
    /// Set when the leader says this node was removed; the server then stops.
    pub removed: tokio::sync::watch::Sender<Option<String>>,
    /// When a leader last replicated to this node.
    pub contact: crate::node::LeaderContact,
    /// Pre-votes, holds and campaigns.
    pub elections: Arc<crate::elections::Elections>,
    /// The highest cluster format version this node supports, sent in
    /// every reply so the leader knows (README: Rolling upgrade).
    pub max_format_version: u8,
}

/// Decodes a Raft payload of this server's wire format.
fn payload<T: serde::de::DeserializeOwned>(request: Request<RaftPayload>) -> Result<T, Status> {
    let p = request.into_inner();
    crate::raft_network::check_format(p.format).map_err(Status::failed_precondition)?;
    decode(&p.data).map_err(bad_request)
}

fn bad_request(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("undecodable raft message: {e}"))
}

impl RaftService {
    fn reply<T: serde::Serialize>(&self, value: &T) -> Result<Response<RaftPayload>, Status> {
        let data =
            encode(value).map_err(|e| Status::internal(format!("encoding raft reply: {e}")))?;
        Ok(Response::new(RaftPayload {
            data,
            format: crate::raft_network::WIRE_FORMAT,
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
        let req: AppendEntriesRequest<TypeConfig> = payload(request)?;
        self.vote_gate
            .saw_leader_commit(req.leader_commit.map(|l| l.index));
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
        let req = payload(request)?;
        self.reply(&self.raft.vote(req).await)
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

    async fn hold_elections(
        &self,
        request: Request<tidal_proto::raft::HoldElectionsRequest>,
    ) -> Result<Response<tidal_proto::raft::RemovedAck>, Status> {
        // Bounded, and ends by itself: a transfer that dies half way must
        // not leave a voter that never campaigns.
        let hold = std::time::Duration::from_millis(request.into_inner().millis.min(10_000));
        self.elections.hold(hold);
        Ok(Response::new(tidal_proto::raft::RemovedAck {}))
    }

    async fn campaign(
        &self,
        request: Request<tidal_proto::raft::CampaignRequest>,
    ) -> Result<Response<tidal_proto::raft::RemovedAck>, Status> {
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
        let req = request.into_inner();
        crate::raft_network::check_format(req.format).map_err(Status::failed_precondition)?;
        let last_log_id = crate::elections::Elections::decode_last_log_id(&req.last_log_id)
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

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let req = payload(request)?;
        self.reply(&self.raft.install_snapshot(req).await)
    }
}

#[cfg(test)]
mod tests {
    use super::VoteGate;

    #[test]
    fn an_empty_start_votes_only_after_applying_the_first_leader_commit() {
        let gate = VoteGate::new(true);
        assert!(gate.check(0).is_err(), "no leader heard yet");
        gate.saw_leader_commit(Some(40));
        gate.saw_leader_commit(Some(90)); // the first commit index heard is the target
        assert!(gate.check(39).unwrap_err().contains("applied 39 of the 40"));
        assert!(gate.check(40).is_ok());
        assert!(gate.check(0).is_ok(), "once open, it stays open");
    }

    #[test]
    fn a_node_with_state_votes_at_once() {
        assert!(VoteGate::new(false).check(0).is_ok());
    }
}
