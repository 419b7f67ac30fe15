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
use std::sync::{Arc, Mutex, PoisonError};
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

/// A leader that has told its voters it is alive logs so again only after
/// this long without telling them (disks that are slow under load would
/// otherwise log a line per slow sync).
const QUIET_BEFORE_LOGGING_AGAIN: Duration = Duration::from_secs(10);

/// Every Raft heartbeat: while this node leads and its core waits for its
/// disk (a heartbeat interval or more), or the answers to its entries are
/// late while its core answers, tells every other voter that the leader is
/// alive, and records who says it follows; never once no majority has
/// accepted its entries for the tolerance, nor while its Raft has failed.
pub async fn run(node: Arc<Node>) {
    let heartbeat = Duration::from_millis(node.config.raft_heartbeat_ms);
    let tolerance = stall_tolerance(node.config.election_timeout.1);
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Voters that answered UNIMPLEMENTED (a build without LeaderAlive), in
    // the term they did: asked again in the next term (they may have been
    // upgraded meanwhile).
    let unsupported: Arc<Mutex<(u64, HashSet<u64>)>> = Arc::default();
    let mut last_told: Option<Instant> = None;
    let mut gave_up = false;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let leads = {
            let m = node.raft.metrics();
            let m = m.borrow();
            m.current_leader == Some(node.id)
                && m.state.is_leader()
                && m.running_state.is_ok()
                && !node.is_shutting_down()
        };
        if !leads {
            gave_up = false;
            continue;
        }
        let (term, voters, configs) = {
            let m = node.raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            let voters: Vec<(u64, String)> = membership
                .voter_ids()
                .filter(|v| *v != node.id)
                .filter_map(|v| membership.get_node(&v).map(|n| (v, peer_addr(n))))
                .collect();
            (
                m.current_term,
                voters,
                membership.get_joint_config().clone(),
            )
        };
        let waited = node.disk.waiting(now).unwrap_or_default();
        let on_disk = waited >= heartbeat;
        // How long since a majority last accepted its entries: `None` if
        // none has in this term.
        let quiet = node
            .quorum_contact(&configs, term, now)
            .map(|c| now.saturating_duration_since(c));
        let late = quiet.is_none_or(|q| q >= 2 * heartbeat);
        if !on_disk && !late {
            gave_up = false;
            continue;
        }
        // Bounded: past the tolerance of waiting for its disk, or of no
        // majority accepting its entries, the voters may elect another.
        if waited >= tolerance || quiet.is_none_or(|q| q >= tolerance) {
            if !gave_up && last_told.is_some_and(|t| now.saturating_duration_since(t) < tolerance) {
                tracing::warn!(
                    node_id = node.id,
                    term,
                    waited_ms = waited.as_millis() as u64,
                    quiet_ms = quiet.map(|q| q.as_millis() as u64),
                    "this leader no longer tells its voters it is alive: its Raft has waited for \
                     its disk, or no majority has taken its entries, for longer than the \
                     tolerance; they may elect another leader"
                );
            }
            gave_up = true;
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
        if last_told.is_none_or(|t| now.saturating_duration_since(t) >= QUIET_BEFORE_LOGGING_AGAIN)
        {
            if on_disk {
                tracing::info!(
                    node_id = node.id,
                    term,
                    waited_ms = waited.as_millis() as u64,
                    "this leader's Raft waits for its disk; telling the voters it is alive"
                );
            } else {
                tracing::info!(
                    node_id = node.id,
                    term,
                    quiet_ms = quiet.map(|q| q.as_millis() as u64),
                    "the answers to this leader's entries are late; telling the voters it is alive"
                );
            }
        }
        last_told = Some(now);
        let channels = node.elections.channels();
        {
            let mut u = unsupported.lock().unwrap_or_else(PoisonError::into_inner);
            if u.0 != term {
                *u = (term, HashSet::new());
            }
        }
        // Each on its own: a dead voter must not hold back the others.
        for (id, addr) in voters {
            if unsupported
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .1
                .contains(&id)
            {
                continue;
            }
            let channel = channels.member(&addr, id);
            let req = LeaderAliveRequest {
                term,
                leader_id: node.id,
                waited_ms: waited.as_millis() as u64,
            };
            let (contacts, unsupported) = (node.contacts.clone(), unsupported.clone());
            tokio::spawn(async move {
                let asked = async {
                    RaftClient::new(channel.map_err(tonic::Status::unavailable)?)
                        .leader_alive(req)
                        .await
                        .map(|r| r.into_inner().heard)
                };
                match tokio::time::timeout(heartbeat, asked).await {
                    Ok(Ok(true)) => contacts.vouched(id, term, now),
                    Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                        let mut u = unsupported.lock().unwrap_or_else(PoisonError::into_inner);
                        if u.0 == term {
                            u.1.insert(id);
                        }
                    }
                    _ => {}
                }
            });
        }
    }
}
