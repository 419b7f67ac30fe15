//! `tidal.v1.Cluster`: membership (add a learner, promote it) and status.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use std::time::Duration;
use tidal_proto::v1::{self, cluster_server::Cluster};
use tonic::{Request, Response, Status};

use super::{convert, joiner};
use crate::error::ServerError;
use crate::node::Node;
use crate::raft::member_addr::{client_addr, peer_addr, MemberAddr};
use crate::raft::transfer::{peer, REACHABLE_WITHIN_ELECTION_TIMEOUTS};

pub struct ClusterService {
    pub node: Arc<Node>,
}

/// Bytes per backup message.
const BACKUP_CHUNK: usize = 1 << 20;

impl ClusterService {
    fn members(&self) -> v1::MembersResponse {
        let m = self.node.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let matched = m.replication.clone().unwrap_or_default();
        let last_log = m.last_log_index.unwrap_or(0);
        let is_leader = m.current_leader == Some(self.node.id);
        let members = membership
            .nodes()
            .map(|(id, n)| {
                let matched_index = if *id == self.node.id {
                    last_log
                } else {
                    matched
                        .get(id)
                        .and_then(|l| l.map(|l| l.index))
                        .unwrap_or(0)
                };
                let last_contact_ms = if *id == self.node.id {
                    0
                } else {
                    self.node
                        .contacts
                        .since(*id)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(-1)
                };
                // What its Raft replies said (this node: its own).
                let max_format_version = if *id == self.node.id {
                    u32::from(self.node.supported_format_version())
                } else if is_leader {
                    self.node
                        .contacts
                        .format_of(*id)
                        .map_or(0, |(max, _)| u32::from(max))
                } else {
                    0
                };
                v1::Member {
                    min_format_version: if max_format_version > 0 {
                        u32::from(tidal_core::FORMAT_VERSION_MIN)
                    } else {
                        0
                    },
                    max_format_version,
                    id: *id,
                    addr: client_addr(n),
                    voter: voters.contains(id),
                    leader: m.current_leader == Some(*id),
                    matched_index: if is_leader { matched_index } else { 0 },
                    lag: if is_leader {
                        last_log.saturating_sub(matched_index)
                    } else {
                        0
                    },
                    last_contact_ms: if is_leader { last_contact_ms } else { -1 },
                }
            })
            .collect();
        v1::MembersResponse {
            members,
            leader_id: m.current_leader.unwrap_or(0),
            term: m.current_term,
            last_log_index: last_log,
            cluster_format_version: u32::from(self.node.state.read().state.cluster_version()),
        }
    }

    /// Refuses to add a server that says it is another node, of another
    /// DC, or does not support the cluster's format version: it would stop
    /// at the first entry or snapshot it could not apply (README: Rolling
    /// upgrade). Best effort: one that does not answer is added
    /// ([`joiner`]). With TLS, one whose handshake fails (its certificate
    /// names another node or DC, or comes from another CA) is refused too.
    async fn check_joiner(&self, id: u64, addr: &MemberAddr) -> Result<(), Status> {
        let dc = &self.node.config.dc;
        let channels = self.node.elections.channels();
        let said = joiner::ask(&channels, addr, id, dc).await.map_err(|why| {
            ServerError::FailedPrecondition(format!(
                "node {id} at {} refused: {why}",
                addr.peer_or_client()
            ))
        })?;
        let Some(said) = said else {
            return Ok(());
        };
        let current = self.node.state.read().state.cluster_version();
        match joiner::refusal(&said, id, dc, current) {
            Some(why) => Err(ServerError::FailedPrecondition(why).into()),
            None => Ok(()),
        }
    }

    /// The voters that answered recently (this node included).
    fn reachable_voters(&self, voters: &BTreeSet<u64>) -> BTreeSet<u64> {
        let bound = std::time::Duration::from_millis(self.node.config.election_timeout.1)
            * REACHABLE_WITHIN_ELECTION_TIMEOUTS;
        voters
            .iter()
            .copied()
            .filter(|v| {
                *v == self.node.id || self.node.contacts.since(*v).is_some_and(|d| d <= bound)
            })
            .collect()
    }

    /// Checks that taking `id` out of the voters is safe, unless `force`:
    /// at least 3 voters remain, and the reachable voters are a majority of
    /// the old and of the new configuration (joint consensus needs both).
    fn check_fewer_voters(&self, id: u64, force: bool) -> Result<(), ServerError> {
        let m = self.node.raft.metrics().borrow().clone();
        let voters: BTreeSet<u64> = m.membership_config.membership().voter_ids().collect();
        let after: BTreeSet<u64> = voters.iter().copied().filter(|v| *v != id).collect();
        if after.is_empty() {
            return Err(ServerError::FailedPrecondition(format!(
                "node {id} is the last voter; a cluster needs at least one (even with --force)"
            )));
        }
        if force {
            return Ok(());
        }
        if after.len() < 3 {
            return Err(ServerError::FailedPrecondition(format!(
                "this would leave {} voter(s) ({after:?}); with fewer than 3 the cluster cannot survive a \
                 failure. Add a node first, or pass --force",
                after.len()
            )));
        }
        let reachable = self.reachable_voters(&voters);
        for (name, set) in [("current", &voters), ("new", &after)] {
            let up = set.intersection(&reachable).count();
            if up * 2 <= set.len() {
                return Err(ServerError::FailedPrecondition(format!(
                    "only {up} of the {} voters of the {name} configuration {set:?} answered recently \
                     ({reachable:?}); the change could not commit. Bring them back, or pass --force",
                    set.len()
                )));
            }
        }
        Ok(())
    }

    /// Moves leadership to voter `target` (`crate::raft::transfer`), with
    /// room for each of its steps.
    async fn transfer_to(&self, target: u64) -> Result<(), ServerError> {
        let election_max = Duration::from_millis(self.node.config.election_timeout.1);
        let deadline = tokio::time::Instant::now() + election_max * 12 + Duration::from_secs(3);
        crate::raft::transfer::transfer(
            &self.node,
            target,
            deadline,
            crate::raft::transfer::Handover::Asked,
        )
        .await
    }

    /// The member `id`, or NotFound.
    fn require_member(&self, id: u64) -> Result<bool, ServerError> {
        let m = self.node.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(ServerError::NotFound(format!(
                "node {id} is not a member (`tidal cluster members` lists them)"
            )));
        }
        Ok(membership.voter_ids().any(|v| v == id))
    }

    /// Changes membership, naming a change already in flight clearly.
    async fn change(
        &self,
        change: ChangeMembers<u64, BasicNode>,
        retain: bool,
        then_tell_removed: Option<(u64, String)>,
    ) -> Result<(), ServerError> {
        // openraft makes a change in two steps (joint, then the new voters),
        // both driven by this call: run it detached, so a client that gives
        // up cannot leave the group in the joint configuration.
        let node = self.node.clone();
        let running = tokio::spawn(async move {
            let done = node.raft.change_membership(change, retain).await;
            if let (Ok(_), Some((id, addr))) = (&done, then_tell_removed) {
                tell_removed(&node, id, &addr).await;
            }
            done
        });
        let outcome = running.await.map_err(|e| {
            ServerError::Internal(format!("the membership change task failed: {e}"))
        })?;
        match outcome {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(p),
            ))) => Err(ServerError::FailedPrecondition(format!(
                "another membership change is in progress (at log index {}); retry when it is done",
                p.membership_log_id.map(|l| l.index).unwrap_or(0)
            ))),
            Err(e) => Err(e.into()),
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
        let joiner = joiner_addr(&req.addr, &req.peer_addr)?;
        let stored = joiner.to_string();
        self.node.require_raft_leader()?;
        {
            let m = self.node.raft.metrics().borrow().clone();
            let membership = m.membership_config.membership();
            for (id, n) in membership.nodes() {
                if *id == req.id && n.addr == stored {
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
                let theirs = MemberAddr::of_stored(&n.addr);
                let theirs = [Some(&theirs.client), theirs.peer.as_ref()];
                let mine = [Some(&joiner.client), joiner.peer.as_ref()];
                if let Some(taken) = mine
                    .into_iter()
                    .flatten()
                    .find(|a| theirs.contains(&Some(a)))
                {
                    return Err(ServerError::AlreadyExists(format!(
                        "address {taken} is already used by member {id}"
                    ))
                    .into());
                }
            }
        }
        self.check_joiner(req.id, &joiner).await?;
        tracing::info!(node_id = self.node.id, learner = req.id, addr = %stored, "adding learner");
        self.node
            .raft
            .add_learner(req.id, BasicNode { addr: stored }, false)
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
        self.node.require_raft_leader()?;
        // The membership as the Raft core has it now, not as its metrics
        // last reported it: those may not show yet the learner an
        // add-learner that just returned committed.
        let (member, voter) = self
            .node
            .raft
            .with_raft_state(move |st| {
                let m = st.membership_state.effective().membership();
                (m.get_node(&id).is_some(), m.voter_ids().any(|v| v == id))
            })
            .await
            .map_err(|e| ServerError::Unavailable(format!("raft is stopped: {e}")))?;
        if !member {
            return Err(ServerError::NotFound(format!(
                "node {id} is not a member; add it first with `tidal cluster add-learner`"
            ))
            .into());
        }
        if voter {
            return Ok(Response::new(self.members()));
        }
        tracing::info!(node_id = self.node.id, voter = id, "promoting learner");
        self.change(
            ChangeMembers::AddVoterIds(BTreeSet::from([id])),
            false,
            None,
        )
        .await?;
        Ok(Response::new(self.members()))
    }

    #[tracing::instrument(skip_all, fields(node_id = self.node.id))]
    async fn transfer_leader(
        &self,
        request: Request<v1::TransferLeaderRequest>,
    ) -> Result<Response<v1::MembersResponse>, Status> {
        let target = request.into_inner().id;
        self.node.require_raft_leader()?;
        if target == self.node.id {
            return Ok(Response::new(self.members()));
        }
        if !self.require_member(target)? {
            return Err(ServerError::FailedPrecondition(format!(
                "node {target} is a learner; promote it before it can lead"
            ))
            .into());
        }
        self.transfer_to(target).await?;
        Ok(Response::new(self.members()))
    }

    #[tracing::instrument(skip_all, fields(node_id = self.node.id))]
    async fn demote(
        &self,
        request: Request<v1::ChangeRequest>,
    ) -> Result<Response<v1::MembersResponse>, Status> {
        let req = request.into_inner();
        self.node.require_raft_leader()?;
        if !self.require_member(req.id)? {
            // Already a learner: nothing to do, so retries are safe.
            return Ok(Response::new(self.members()));
        }
        self.check_fewer_voters(req.id, req.force)?;
        tracing::info!(
            node_id = self.node.id,
            voter = req.id,
            force = req.force,
            "demoting voter to learner"
        );
        self.change(
            ChangeMembers::RemoveVoters(BTreeSet::from([req.id])),
            true,
            None,
        )
        .await?;
        Ok(Response::new(self.members()))
    }

    #[tracing::instrument(skip_all, fields(node_id = self.node.id))]
    async fn remove(
        &self,
        request: Request<v1::ChangeRequest>,
    ) -> Result<Response<v1::MembersResponse>, Status> {
        let req = request.into_inner();
        self.node.require_raft_leader()?;
        let voter = self.require_member(req.id)?;
        let addr = self
            .node
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&req.id)
            .map(peer_addr);
        // The leader cannot tell itself; it sees the entry and stops.
        let tell = addr.filter(|_| req.id != self.node.id).map(|a| (req.id, a));
        if voter {
            self.check_fewer_voters(req.id, req.force)?;
            tracing::info!(
                node_id = self.node.id,
                voter = req.id,
                force = req.force,
                "removing voter"
            );
            self.change(
                ChangeMembers::RemoveVoters(BTreeSet::from([req.id])),
                false,
                tell,
            )
            .await?;
        } else {
            tracing::info!(node_id = self.node.id, learner = req.id, "removing learner");
            self.change(
                ChangeMembers::RemoveNodes(BTreeSet::from([req.id])),
                false,
                tell,
            )
            .await?;
        }
        Ok(Response::new(self.members()))
    }

    #[tracing::instrument(skip_all, fields(node_id = self.node.id))]
    async fn snapshot(
        &self,
        _request: Request<v1::SnapshotRequest>,
    ) -> Result<Response<v1::SnapshotResponse>, Status> {
        let applied = self.node.applied_index();
        self.node
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| ServerError::Unavailable(format!("raft is stopped: {e}")))?;
        let m = self
            .node
            .raft
            .wait(Some(std::time::Duration::from_secs(30)))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= applied),
                "snapshot taken",
            )
            .await
            .map_err(|e| ServerError::Unavailable(format!("the snapshot did not complete: {e}")))?;
        Ok(Response::new(v1::SnapshotResponse {
            node_id: self.node.id,
            snapshot_index: m.snapshot.map(|s| s.index).unwrap_or(0),
            purged_index: m.purged.map(|p| p.index).unwrap_or(0),
        }))
    }

    type BackupStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<v1::BackupChunk, Status>> + Send>>;

    #[tracing::instrument(skip_all, fields(node_id = self.node.id))]
    async fn backup(
        &self,
        _request: Request<v1::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        // Read linearizably, then encode a copy taken under the read lock.
        self.node.linearizable().await?;
        let copy = self.node.state.read().clone();
        let applied_index = copy.last_applied.map(|l| l.index).unwrap_or(0);
        let data = tokio::task::spawn_blocking(move || tidal_store::encode_snapshot(&copy))
            .await
            .map_err(|e| ServerError::Internal(format!("encoding the backup: {e}")))?
            .map_err(|e| ServerError::Internal(format!("encoding the backup: {e}")))?;
        let chunks: Vec<Result<v1::BackupChunk, Status>> = data
            .chunks(BACKUP_CHUNK)
            .map(|c| {
                Ok(v1::BackupChunk {
                    data: c.to_vec(),
                    applied_index,
                })
            })
            .collect();
        tracing::info!(
            node_id = self.node.id,
            log_index = applied_index,
            bytes = data.len(),
            "backup served"
        );
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn members(
        &self,
        _request: Request<v1::MembersRequest>,
    ) -> Result<Response<v1::MembersResponse>, Status> {
        Ok(Response::new(self.members()))
    }

    async fn status(
        &self,
        request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        let with_digest = request.into_inner().digest;
        let node = &self.node;
        let m = node.raft.metrics().borrow().clone();
        let leader_addr = m
            .current_leader
            .and_then(|l| {
                m.membership_config
                    .membership()
                    .get_node(&l)
                    .map(client_addr)
            })
            .unwrap_or_default();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let acting = node.leadership();
        let connected = acting.as_ref().map(|l| l.connected().len()).unwrap_or(0);
        let report = if with_digest {
            // The digest walks the whole state: off the async runtime, so
            // this node's Raft heartbeats and sessions go on meanwhile.
            let state = node.state.clone();
            tokio::task::spawn_blocking(move || StateReport::of(&state.read(), true))
                .await
                .map_err(|e| Status::internal(format!("computing the state digest: {e}")))?
        } else {
            StateReport::of(&node.state.read(), false)
        };
        Ok(Response::new(v1::StatusResponse {
            node_id: node.id,
            dc: node.config.dc.clone(),
            leader_id: m.current_leader.unwrap_or(0),
            leader_addr,
            term: m.current_term,
            // Raft publishes its metrics after the state machine has moved on,
            // so the log index it reports can trail what is already applied
            // (the chaos harness's leaders checker caught it); the log holds
            // at least every applied entry.
            last_log_index: m.last_log_index.unwrap_or(0).max(report.applied_index),
            applied_index: report.applied_index,
            role: role.to_string(),
            tasks_by_state: report.tasks_by_state,
            agents: report.agents,
            agents_connected: connected as u32,
            queues: report.queues,
            state_digest: report.digest,
            acting: acting.is_some(),
            cluster_format_version: u32::from(report.cluster_format_version),
            min_format_version: u32::from(tidal_core::FORMAT_VERSION_MIN),
            max_format_version: u32::from(node.supported_format_version()),
            auth: node.config.auth.as_str().to_string(),
            tls: node.tls.is_some(),
            deadlines_missed: report.deadlines_missed,
            gpu_weight_milli: gpu_weights(&node.state.read().state),
        }))
    }
}

/// The GPU weights in force (thousandths), from cluster format version 5;
/// none below it.
fn gpu_weights(state: &tidal_core::State) -> std::collections::HashMap<String, u32> {
    if state.cluster_version() < tidal_core::placement::types::PLACEMENT_VERSION {
        return Default::default();
    }
    state.placement().gpu_weights().into_iter().collect()
}

/// A joiner's addresses from `AddLearner`'s `addr` and `peer_addr` (empty:
/// none): the client address `HOST:PORT` with a numeric host; the peer
/// address also with a DNS name as host, which the peer plane's rules
/// resolve (`grpc::peer_names`).
fn joiner_addr(addr: &str, peer_addr: &str) -> Result<MemberAddr, ServerError> {
    if addr.parse::<SocketAddr>().is_err() {
        return Err(ServerError::InvalidArgument(format!(
            "address {addr:?} is not HOST:PORT with a numeric host"
        )));
    }
    let peer = match peer_addr {
        "" => None,
        p if p.parse::<SocketAddr>().is_ok() || is_host_name_and_port(p) => Some(p.to_string()),
        p => {
            return Err(ServerError::InvalidArgument(format!(
                "peer address {p:?} is not HOST:PORT with an IP or a DNS name as host"
            )))
        }
    };
    Ok(MemberAddr {
        client: addr.to_string(),
        peer,
    })
}

/// Whether `a` is `NAME:PORT` with a DNS name (letters, digits, `-` and
/// `.`, not starting with `-` or `.`) and a port other than 0.
fn is_host_name_and_port(a: &str) -> bool {
    let Some((host, port)) = a.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['-', '.'])
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && port.parse::<u16>().is_ok_and(|p| p != 0)
}

/// What a status answer reads from the applied state, in one hold of it.
struct StateReport {
    applied_index: u64,
    cluster_format_version: u8,
    tasks_by_state: std::collections::HashMap<String, u64>,
    agents: u32,
    queues: Vec<v1::Queue>,
    digest: u64,
    deadlines_missed: u64,
}

impl StateReport {
    fn of(applied: &tidal_store::Applied, with_digest: bool) -> StateReport {
        let state = &applied.state;
        StateReport {
            applied_index: applied.last_applied.map(|l| l.index).unwrap_or(0),
            cluster_format_version: state.cluster_version(),
            tasks_by_state: state
                .counts_by_state()
                .into_iter()
                .map(|(k, v)| (k.as_str().to_string(), v))
                .collect(),
            agents: state.agents().count() as u32,
            queues: state
                .queues()
                .map(|q| convert::queue_to(state, q, state.pending_in_queue(&q.name)))
                .collect(),
            digest: if with_digest { state.digest() } else { 0 },
            deadlines_missed: state.lifecycle().deadlines_missed(),
        }
    }
}

/// Tells node `id` at `addr` that it was removed (best effort): the
/// leader no longer replicates to it, so it may never see the entry.
async fn tell_removed(node: &Node, id: u64, addr: &str) {
    let membership_index = node
        .raft
        .metrics()
        .borrow()
        .membership_config
        .log_id()
        .map(|l| l.index)
        .unwrap_or(0);
    let notice = tidal_proto::raft::RemovedNotice {
        node_id: id,
        leader_id: node.id,
        membership_index,
    };
    let sent = async {
        peer(node, id, addr)?
            .removed(notice)
            .await
            .map_err(|s| crate::channels::why(&s))
    };
    match tokio::time::timeout(std::time::Duration::from_secs(2), sent).await {
        Ok(Ok(_)) => tracing::info!(node_id = node.id, removed = id, "told the removed node"),
        Ok(Err(e)) => {
            tracing::warn!(node_id = node.id, removed = id, error = %e, "could not tell the removed node; stop it by hand")
        }
        Err(_) => tracing::warn!(
            node_id = node.id,
            removed = id,
            "the removed node did not answer; stop it by hand"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joiner_s_peer_address_may_name_a_host_its_client_address_may_not() {
        let j = joiner_addr("127.0.0.1:7001", "node-2.dc1:7101").unwrap();
        assert_eq!(j.to_string(), "127.0.0.1:7001|node-2.dc1:7101");
        assert!(joiner_addr("127.0.0.1:7001", "[::1]:7101").is_ok());
        assert!(joiner_addr("localhost:7001", "").is_err());
        for bad in [
            "localhost",
            "localhost:0",
            ":7101",
            "-x:7101",
            "a b:7101",
            "a|b:7101",
            "x:y",
        ] {
            assert!(joiner_addr("127.0.0.1:7001", bad).is_err(), "{bad}");
        }
    }
}
