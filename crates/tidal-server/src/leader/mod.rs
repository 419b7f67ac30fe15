//! Leader-only memory, rebuilt on every election: the leader engine and its
//! driver (agent sessions, lease deadlines, the reaper, dispatch rounds,
//! drains, retention's expirer, cross-DC forwarding). It starts when this
//! node becomes leader and is dropped when it steps down.

pub mod driver;
pub mod eager;
pub mod engine;
pub mod leadership;
pub mod link;
pub mod push;
pub mod session_input;

use std::sync::Arc;
use std::time::Instant;

use crate::node::Node;
use crate::raft::quorum::Verdict;
use leadership::Leadership;

/// Commits one no-op entry for this leadership, retrying while it lasts,
/// then establishes it ([`establish`]).
async fn commit_barrier(node: Arc<Node>, leadership: Arc<Leadership>) {
    let mut backoff = std::time::Duration::from_millis(20);
    while leadership.is_alive() {
        match node.propose(tidal_core::command::Command::Noop).await {
            Ok((_, index)) => {
                tracing::debug!(
                    node_id = node.id,
                    log_index = index,
                    "leadership barrier committed"
                );
                establish(&node, &leadership);
                return;
            }
            Err(e) => {
                tracing::debug!(node_id = node.id, error = %e, "leadership barrier not committed yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_millis(500));
            }
        }
    }
}

/// The leadership has committed an entry of its own: it serves linearizable
/// reads, takes agent sessions, and starts its engine's driver (whose first
/// event gives every known agent's lease a full TTL: a failover causes no
/// mass requeue, RELIABILITY.md, I7), dispatching and forwarding.
fn establish(node: &Arc<Node>, leadership: &Arc<Leadership>) {
    let mut tasks = leadership.tasks();
    // Checked under the task lock: `end` flips `alive` before taking it.
    if !leadership.is_alive() {
        return;
    }
    leadership.reads_ready.send_replace(true);
    node.set_leadership(Some(leadership.clone()));
    let events = leadership
        .events
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(events) = events {
        tasks.push(tokio::spawn(driver::run(
            node.clone(),
            leadership.clone(),
            events,
        )));
    }
    tracing::info!(
        node_id = node.id,
        term = leadership.term,
        "acting as leader: sessions, leases and dispatch"
    );
}

/// Why this node should stop: it was a member, and its latest membership no
/// longer names it (it was removed with `tidal cluster remove`). Only a node
/// that has seen itself as a member can be removed: a joining learner first
/// sees older configurations (from the log or a snapshot) without itself.
/// The leader stops replicating to a removed node once the change commits,
/// so the membership entry itself is the signal; a node cut off while it was
/// removed never receives it and must be stopped by hand.
fn removed_from(
    m: &openraft::RaftMetrics<u64, openraft::BasicNode>,
    id: u64,
    was_member: &mut bool,
) -> Option<String> {
    let stored = &m.membership_config;
    let at = stored.log_id().as_ref()?;
    let membership = stored.membership();
    if membership.get_node(&id).is_some() {
        *was_member = true;
        return None;
    }
    (*was_member && membership.nodes().count() > 0).then(|| {
        format!(
            "node {id} was removed from the cluster (membership at log index {}); it stops serving. \
             To bring this machine back, wipe its data directory and add it again with `tidal cluster add-learner`",
            at.index
        )
    })
}

/// Watches Raft metrics (and, every Raft heartbeat, the contact with a
/// majority) and starts or ends leadership as the role changes.
pub async fn watch_leadership(node: Arc<Node>) {
    let mut metrics = node.raft.metrics();
    let mut was_member = false;
    // The term openraft has this node lead, and since when.
    let mut led: Option<(u64, Instant)> = None;
    // The leadership of that term (establishing or acting), if any.
    let mut current: Option<Arc<Leadership>> = None;
    // Set when check-quorum ended the leadership of `led`'s term: it starts
    // again only once a majority is heard within the lease.
    let mut deposed = false;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(
        node.config.raft_heartbeat_ms,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (is_leader, term) = {
            let m = metrics.borrow_and_update();
            if let Some(why) = removed_from(&m, node.id, &mut was_member) {
                tracing::error!(node_id = node.id, "{why}");
                node.removed.send_replace(Some(why));
            }
            (
                m.current_leader == Some(node.id) && m.state.is_leader(),
                m.current_term,
            )
        };
        let now = Instant::now();
        if !is_leader {
            led = None;
        } else if led.map(|(t, _)| t) != Some(term) {
            led = Some((term, now));
            deposed = false;
        }
        match (led, &current) {
            (Some((term, since)), Some(l)) if l.term == term => {
                if node.quorum_verdict(term, since) == Verdict::StepDown {
                    tracing::warn!(
                        node_id = node.id,
                        term,
                        after_ms = node.config.election_timeout.1,
                        "stepped down: no contact with a majority of voters within the election timeout; \
                         acknowledging no heartbeat and accepting no work until a majority is heard again"
                    );
                    l.end();
                    node.set_leadership(None);
                    current = None;
                    deposed = true;
                }
            }
            (Some((term, since)), _) => {
                if let Some(old) = current.take() {
                    old.end();
                    node.set_leadership(None);
                }
                if !deposed || node.quorum_verdict(term, since) == Verdict::Lease {
                    if deposed {
                        tracing::info!(node_id = node.id, term, "a majority hears this node again");
                    }
                    tracing::info!(node_id = node.id, term, "became leader");
                    deposed = false;
                    let leadership = Leadership::new(term, since);
                    let barrier = tokio::spawn(commit_barrier(node.clone(), leadership.clone()));
                    leadership.tasks().push(barrier);
                    current = Some(leadership);
                }
            }
            (None, Some(_)) => {
                if let Some(old) = current.take() {
                    tracing::info!(node_id = node.id, term, "stepped down");
                    old.end();
                    node.set_leadership(None);
                }
            }
            (None, None) => {}
        }
        node.deposed.store(
            deposed && led.is_some(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let tick_needed = led.is_some();
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    if let Some(old) = current.take() {
                        old.end();
                    }
                    node.set_leadership(None);
                    return;
                }
            }
            _ = tick.tick(), if tick_needed => {}
        }
    }
}
