//! Leadership transfer: `tidal cluster transfer-leader`, and a leader's
//! graceful shutdown (SIGTERM, SIGINT), which hands leadership to the most
//! up-to-date voter ([`best_target`]) before it stops.

use std::time::Duration;

use tidal_proto::raft::raft_client::RaftClient;
use tokio::time::Instant;

use crate::error::ServerError;
use crate::node::Node;
use crate::raft::member_addr::peer_addr;

/// A voter that may take leadership over, as the leader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: u64,
    /// The last log index the leader knows this voter has.
    pub matched: u64,
    /// It answered the leader recently.
    pub reachable: bool,
}

/// The voter to hand leadership to: the reachable one with the most of the
/// log (the lowest id among equals), never `me`. `None` when no other
/// voter is reachable.
pub fn best_target(me: u64, candidates: &[Candidate]) -> Option<u64> {
    candidates
        .iter()
        .filter(|c| c.id != me && c.reachable)
        .max_by_key(|c| (c.matched, std::cmp::Reverse(c.id)))
        .map(|c| c.id)
}

/// A voter is reachable when it answered within this many election
/// timeouts (or is this node).
pub const REACHABLE_WITHIN_ELECTION_TIMEOUTS: u32 = 3;

/// The voters other than this node, as candidates for a transfer.
pub fn candidates(node: &Node) -> Vec<Candidate> {
    let m = node.raft.metrics().borrow().clone();
    let bound =
        Duration::from_millis(node.config.election_timeout.1) * REACHABLE_WITHIN_ELECTION_TIMEOUTS;
    let matched = m.replication.clone().unwrap_or_default();
    m.membership_config
        .membership()
        .voter_ids()
        .filter(|v| *v != node.id)
        .map(|id| Candidate {
            id,
            matched: matched
                .get(&id)
                .and_then(|l| l.map(|l| l.index))
                .unwrap_or(0),
            reachable: node.contacts.since(id).is_some_and(|d| d <= bound),
        })
        .collect()
}

/// Why leadership is handed over, which decides what a transfer leaves
/// behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handover {
    /// `tidal cluster transfer-leader`: this node serves on, so if the
    /// transfer fails it leads as before, heartbeats included.
    Asked,
    /// A graceful shutdown: this node stops whatever the outcome, so its
    /// heartbeats stay off; after a failed transfer the other voters stop
    /// hearing from it and elect one election timeout later, instead of
    /// waiting until its Raft has stopped.
    Leaving,
}

impl Handover {
    /// Whether this node sends Raft heartbeats again once the transfer is
    /// over, moved or not.
    pub fn heartbeats_after(self) -> bool {
        match self {
            Handover::Asked => true,
            Handover::Leaving => false,
        }
    }
}

/// Moves leadership to voter `target` by `deadline`: no new entries (the
/// write gate), no heartbeats and no own election here, the other voters
/// hold theirs, the target campaigns once it has the whole log. Everything
/// is put back whatever the outcome, except the heartbeats of a node that
/// is leaving (see [`Handover`]); a hold on the other voters ends by
/// itself.
pub async fn transfer(
    node: &Node,
    target: u64,
    deadline: Instant,
    why: Handover,
) -> Result<(), ServerError> {
    let election_max = Duration::from_millis(node.config.election_timeout.1);
    let left = || deadline.saturating_duration_since(Instant::now());
    // One RPC: at most a second, at least a little even past the deadline
    // (putting things back must be tried).
    let rpc = || left().clamp(Duration::from_millis(50), Duration::from_secs(1));
    let hold = election_max * HOLD_ELECTION_TIMEOUTS;
    let (voters, target_addr) = {
        let m = node.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<(u64, String)> = membership
            .voter_ids()
            .filter(|v| *v != node.id && *v != target)
            .filter_map(|v| membership.get_node(&v).map(|n| (v, peer_addr(n))))
            .collect();
        (
            voters,
            membership
                .get_node(&target)
                .map(peer_addr)
                .unwrap_or_default(),
        )
    };
    let _no_writes = match tokio::time::timeout(left(), node.write_gate.write()).await {
        Ok(g) => g,
        Err(_) => {
            return Err(ServerError::Unavailable(format!(
                "writes in flight did not finish in time to transfer leadership to node {target}"
            )))
        }
    };
    let last = node.raft.metrics().borrow().last_log_index;
    let caught_up = node
        .raft
        .wait(Some((election_max * 4).min(left())))
        .metrics(
            |m| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&target).copied().flatten())
                    .map(|l| l.index)
                    >= last
            },
            "the target has the whole log",
        )
        .await;
    if caught_up.is_err() {
        return Err(ServerError::FailedPrecondition(format!(
            "node {target} is behind the leader's log; try again when `tidal cluster members` shows it caught up"
        )));
    }
    tracing::info!(node_id = node.id, target, "transferring leadership");
    hold_elections(node, &voters, hold, rpc()).await;
    let rt = node.raft.runtime_config();
    node.elections.hold(hold);
    rt.heartbeat(false);
    let campaign = async {
        peer(node, target, &target_addr)?
            .campaign(tidal_proto::raft::CampaignRequest { node_id: target })
            .await
            .map_err(|s| crate::channels::why(&s))
    };
    let asked = tokio::time::timeout(rpc(), campaign)
        .await
        .unwrap_or_else(|_| Err("timed out".into()));
    let moved = match asked {
        Ok(_) => node
            .raft
            .wait(Some(hold.min(left())))
            .metrics(|m| m.current_leader == Some(target), "the target leads")
            .await
            .is_ok(),
        Err(e) => {
            tracing::warn!(node_id = node.id, target, error = %e, "the target did not take the campaign request");
            false
        }
    };
    rt.heartbeat(why.heartbeats_after());
    node.elections.release();
    // Done either way: the other voters may elect again (a new leader
    // that dies now must not wait for their holds to run out).
    hold_elections(node, &voters, Duration::ZERO, rpc()).await;
    if moved {
        tracing::info!(node_id = node.id, target, "leadership transferred");
        Ok(())
    } else {
        let now = node.raft.metrics().borrow().current_leader;
        Err(ServerError::Unavailable(format!(
            "leadership did not move to node {target} in time (the leader is now {now:?}); retry"
        )))
    }
}

/// How many election timeouts (the upper bound) a transfer holds the other
/// voters' elections for; a voter takes no longer hold.
pub const HOLD_ELECTION_TIMEOUTS: u32 = 8;

/// Asks each of `voters` to start no election for `hold` (zero: ends a
/// hold), best effort, each within `timeout`.
async fn hold_elections(node: &Node, voters: &[(u64, String)], hold: Duration, timeout: Duration) {
    let asks = voters.iter().map(|(id, addr)| async move {
        let held = async {
            peer(node, *id, addr)?
                .hold_elections(tidal_proto::raft::HoldElectionsRequest {
                    millis: hold.as_millis() as u64,
                })
                .await
                .map_err(|s| crate::channels::why(&s))
        };
        if let Err(e) = tokio::time::timeout(timeout, held)
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
        {
            tracing::warn!(node_id = node.id, voter = id, error = %e, "could not hold or release the voter's elections");
        }
    });
    futures::future::join_all(asks).await;
}

/// A client of the internal Raft service of member `id` at `addr` (with
/// TLS, only a server whose certificate names that node is accepted).
pub(crate) fn peer(
    node: &Node,
    id: u64,
    addr: &str,
) -> Result<RaftClient<tonic::transport::Channel>, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?;
    let tls = match &node.tls {
        None => None,
        Some(dir) => Some(
            tidal_tls::client_config(
                dir,
                tidal_tls::Expect::Node {
                    dc: node.config.dc.clone(),
                    id,
                },
            )
            .map_err(|e| e.to_string())?,
        ),
    };
    let channel = tidal_client::dial::connect_lazy(
        endpoint,
        node.config.source_ip,
        Duration::from_secs(1),
        tls,
    );
    Ok(RaftClient::new(channel))
}

#[cfg(test)]
mod tests {
    use super::{best_target, Candidate, Handover};

    fn c(id: u64, matched: u64, reachable: bool) -> Candidate {
        Candidate {
            id,
            matched,
            reachable,
        }
    }

    #[test]
    fn the_most_up_to_date_reachable_voter_is_chosen() {
        assert_eq!(best_target(1, &[c(2, 10, true), c(3, 12, true)]), Some(3));
        assert_eq!(best_target(1, &[c(2, 12, true), c(3, 10, true)]), Some(2));
    }

    #[test]
    fn an_unreachable_voter_is_never_chosen_however_far_it_got() {
        assert_eq!(best_target(1, &[c(2, 10, true), c(3, 99, false)]), Some(2));
        assert_eq!(best_target(1, &[c(2, 10, false), c(3, 99, false)]), None);
    }

    #[test]
    fn equals_go_to_the_lowest_id_and_self_is_never_a_target() {
        assert_eq!(best_target(1, &[c(3, 7, true), c(2, 7, true)]), Some(2));
        assert_eq!(best_target(1, &[c(1, 50, true), c(2, 7, true)]), Some(2));
        assert_eq!(best_target(1, &[c(1, 50, true)]), None);
        assert_eq!(best_target(1, &[]), None);
    }

    /// A leaving leader never turns its heartbeats back on, whatever the
    /// transfer's outcome; one asked to transfer serves on as before.
    #[test]
    fn only_an_asked_transfer_turns_heartbeats_back_on() {
        assert!(!Handover::Leaving.heartbeats_after());
        assert!(Handover::Asked.heartbeats_after());
    }
}
