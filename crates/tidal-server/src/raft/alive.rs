//! A leader whose disk stalls, or whose voters' disks do, stays the leader.
//!
//! openraft 0.9's core waits for each log append's fdatasync before it does
//! anything else, on the leader and on its voters alike: a leader whose
//! disk stalls for a few hundred ms sends no heartbeat meanwhile, and a
//! voter whose disk stalls answers nothing, so an election timeout passes
//! in silence and another leader is elected (on a cloud VM's disk shared by
//! three servers, syncs of 230-300 ms came about once a minute; with the
//! default 150-300 ms timeout each could cost an election). Etcd's
//! heartbeats do not wait for the disk. Here, every Raft heartbeat while
//! this node leads and either its core has waited for its disk
//! (`tidal_store::DiskWait`) a heartbeat interval or more, or the answers to
//! its entries are late but its core answers at once, [`run`] tells every
//! other voter that the leader lives (`Raft/LeaderAlive`, from outside the
//! core). A voter that has this node as its leader counts that as having
//! heard from it (no pre-vote asked or granted meanwhile) and says so; a
//! majority saying so keeps the leader from stepping down (check-quorum,
//! [`crate::raft::quorum`]).
//!
//! Neither gives the leader anything it could not prove: it acknowledges no
//! agent heartbeat without a majority accepting its entries within the
//! lease, so a voter that elects another leader meanwhile (one that heard
//! no `LeaderAlive`) breaks nothing. And it ends: a core that neither
//! answers nor waits for the disk sends none (a hung leader is replaced),
//! and past [`STALL_TOLERANCE_TIMEOUTS`] election timeouts of waiting for
//! its disk the leader stops, so the voters elect one whose disk answers.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidal_proto::raft::raft_client::RaftClient;
use tidal_proto::raft::LeaderAliveRequest;

use crate::node::Node;
use crate::raft::member_addr::peer_addr;

/// How many election timeouts (the upper bound) a leader's wait for its
/// disk may last before it no longer holds its voters' elections off.
pub const STALL_TOLERANCE_TIMEOUTS: u32 = 3;

/// The longest wait of the leader's Raft core for its disk that keeps the
/// voters from electing another leader.
pub fn stall_tolerance(election_max_ms: u64) -> Duration {
    Duration::from_millis(election_max_ms) * STALL_TOLERANCE_TIMEOUTS
}

/// Every Raft heartbeat: while this node leads and its core waits for its
/// disk (a heartbeat interval or more, up to the tolerance), or the answers
/// to its entries are late while its core answers, tells every other voter
/// that the leader is alive, and records who says it follows.
pub async fn run(node: Arc<Node>) {
    let heartbeat = Duration::from_millis(node.config.raft_heartbeat_ms);
    let tolerance = stall_tolerance(node.config.election_timeout.1);
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Voters of a build without LeaderAlive: asked no more.
    let mut unsupported: HashSet<u64> = HashSet::new();
    let mut told = false;
    let mut gave_up = false;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let (term, voters, configs) = {
            let m = node.raft.metrics();
            let m = m.borrow();
            let leads = m.current_leader == Some(node.id) && m.state.is_leader();
            let membership = m.membership_config.membership();
            let voters: Vec<(u64, String)> = membership
                .voter_ids()
                .filter(|v| *v != node.id)
                .filter_map(|v| membership.get_node(&v).map(|n| (v, peer_addr(n))))
                .collect();
            (
                leads.then_some(m.current_term),
                voters,
                membership.get_joint_config().clone(),
            )
        };
        let Some(term) = term.filter(|_| !node.is_shutting_down()) else {
            (told, gave_up) = (false, false);
            continue;
        };
        let waited = node.disk.waiting(now).unwrap_or_default();
        let on_disk = waited >= heartbeat;
        if on_disk && waited >= tolerance {
            if !gave_up {
                tracing::warn!(
                    node_id = node.id,
                    term,
                    waited_ms = waited.as_millis() as u64,
                    "this leader's Raft has waited for its disk longer than the tolerance; \
                     the voters may elect a leader whose disk answers"
                );
                gave_up = true;
            }
            continue;
        }
        let late = node
            .quorum_contact(&configs, term, now)
            .is_none_or(|c| now.saturating_duration_since(c) >= 2 * heartbeat);
        if !on_disk && !late {
            (told, gave_up) = (false, false);
            continue;
        }
        // Answers are late but the core does not wait for the disk: say
        // the leader lives only if its core does (answers within a beat).
        if !on_disk {
            let probe = tokio::time::timeout(heartbeat, node.raft.with_raft_state(|_| ())).await;
            if !matches!(probe, Ok(Ok(()))) {
                continue;
            }
        }
        if !told {
            // Once per spell; a loaded machine's late answers at debug.
            if on_disk {
                tracing::info!(
                    node_id = node.id,
                    term,
                    waited_ms = waited.as_millis() as u64,
                    "this leader's Raft waits for its disk; telling the voters it is alive"
                );
            } else {
                tracing::debug!(
                    node_id = node.id,
                    term,
                    "the answers to this leader's entries are late; telling the voters it is alive"
                );
            }
            told = true;
        }
        let channels = node.elections.channels();
        let sent = Instant::now();
        let asks = voters
            .into_iter()
            .filter(|(id, _)| !unsupported.contains(id))
            .map(|(id, addr)| {
                let channel = channels.member(&addr, id);
                let req = LeaderAliveRequest {
                    term,
                    leader_id: node.id,
                    waited_ms: waited.as_millis() as u64,
                };
                async move {
                    let asked = async {
                        RaftClient::new(channel.map_err(tonic::Status::unavailable)?)
                            .leader_alive(req)
                            .await
                            .map(|r| r.into_inner().heard)
                    };
                    (id, tokio::time::timeout(heartbeat, asked).await)
                }
            });
        for (id, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(Ok(true)) => node.contacts.vouched(id, term, sent),
                Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                    unsupported.insert(id);
                }
                _ => {}
            }
        }
    }
}
