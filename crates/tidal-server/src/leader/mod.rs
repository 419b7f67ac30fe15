//! Leader-only memory, rebuilt on every election: the leader engine and its
//! driver (agent sessions, lease deadlines, the reaper, dispatch rounds,
//! drains, retention's expirer, cross-DC forwarding). It starts when this
//! node becomes leader and is dropped when it steps down.

pub mod driver;
pub mod eager;
pub mod engine;
pub mod leadership;
pub mod push;
pub mod session_input;
pub mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::node::Node;
use crate::raft::quorum::Bounds;
use leadership::Leadership;
use watch::{Barrier, Decision, LeadershipWatch, Membership, Observation};

/// One leadership's life: it commits an entry of its own, then runs its
/// engine's driver until it ends. Dropping (or aborting) this future ends
/// the leadership's work with it.
async fn lead(node: Arc<Node>, leadership: Arc<Leadership>) {
    tokio::select! {
        () = commit_barrier(&node, &leadership) => {}
        () = leadership.ended() => return,
    }
    if !establish(&node, &leadership) {
        return;
    }
    let events = leadership
        .events
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(events) = events {
        // The driver stops at its next await once the leadership ends, as
        // an aborted task would, with whatever events are still queued.
        let ended = leadership.clone();
        tokio::select! {
            biased;
            () = ended.ended() => {}
            () = driver::run(node, leadership, events) => {}
        }
    }
}

/// Commits one no-op entry for this leadership, retrying while it lasts.
async fn commit_barrier(node: &Node, leadership: &Leadership) {
    let mut barrier = Barrier::default();
    while leadership.is_alive() {
        match node.propose(tidal_core::command::Command::Noop).await {
            Ok((_, index)) => {
                tracing::debug!(
                    node_id = node.id,
                    log_index = index,
                    "leadership barrier committed"
                );
                return;
            }
            Err(e) => {
                tracing::debug!(node_id = node.id, error = %e, "leadership barrier not committed yet");
                tokio::time::sleep(barrier.failed()).await;
            }
        }
    }
    std::future::pending().await
}

/// The leadership has committed an entry of its own: it serves linearizable
/// reads and takes agent sessions, and its engine's driver starts (whose
/// first event gives every known agent's lease a full TTL: a failover
/// causes no mass requeue, RELIABILITY.md, I7). False, and nothing done,
/// once the leadership has ended.
fn establish(node: &Node, leadership: &Arc<Leadership>) -> bool {
    if !node.install_leadership(leadership) {
        return false;
    }
    tracing::info!(
        node_id = node.id,
        term = leadership.term,
        "acting as leader: sessions, leases and dispatch"
    );
    true
}

/// What the watch observes now: Raft's metrics and, while this node leads,
/// its contact with a majority in that term.
fn observe(
    node: &Node,
    m: &openraft::RaftMetrics<u64, openraft::BasicNode>,
    now: Instant,
) -> Observation {
    let is_leader = m.current_leader == Some(node.id) && m.state.is_leader();
    let stored = &m.membership_config;
    let membership = stored.log_id().as_ref().map(|at| Membership {
        index: at.index,
        names_me: stored.membership().get_node(&node.id).is_some(),
        has_nodes: stored.membership().nodes().count() > 0,
    });
    let configs = stored.membership().get_joint_config();
    Observation {
        now,
        term: m.current_term,
        is_leader,
        contact: is_leader
            .then(|| node.quorum_contact(configs, m.current_term, now))
            .flatten(),
        membership,
        vouched: is_leader && node.vouched(configs, m.current_term, now),
    }
}

/// A leadership and the task that runs it ([`lead`]); dropping this aborts the task.
struct Running {
    leadership: Arc<Leadership>,
    _task: JoinSet<()>,
}

impl Running {
    fn end(self, node: &Node) {
        self.leadership.end();
        node.set_leadership(None);
    }
}

/// Watches Raft metrics (and, every Raft heartbeat, the contact with a
/// majority) and starts or ends leadership as [`LeadershipWatch`] decides.
pub async fn watch_leadership(node: Arc<Node>) {
    let mut metrics = node.raft.metrics();
    let (min, max) = node.config.election_timeout;
    let mut watch = LeadershipWatch::new(
        node.id,
        Bounds {
            lease: Duration::from_millis(min),
            step_down: Duration::from_millis(max),
        },
    );
    let mut current: Option<Running> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(node.config.raft_heartbeat_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let seen = observe(&node, &metrics.borrow_and_update(), Instant::now());
        for decision in watch.step(seen) {
            match decision {
                Decision::Removed(why) => {
                    tracing::error!(node_id = node.id, "{why}");
                    node.removed.send_replace(Some(why));
                }
                Decision::StepDown { term } => {
                    tracing::warn!(
                        node_id = node.id,
                        term,
                        after_ms = max,
                        "stepped down: no contact with a majority of voters within the election timeout; \
                         acknowledging no heartbeat and accepting no work until a majority is heard again"
                    );
                    if let Some(r) = current.take() {
                        r.end(&node);
                    }
                }
                Decision::End { term } => {
                    tracing::info!(node_id = node.id, term, "stepped down");
                    if let Some(r) = current.take() {
                        r.end(&node);
                    }
                }
                Decision::Replace { .. } => {
                    if let Some(r) = current.take() {
                        r.end(&node);
                    }
                }
                Decision::Start {
                    term,
                    since,
                    heard_again,
                } => {
                    if heard_again {
                        tracing::info!(node_id = node.id, term, "a majority hears this node again");
                    }
                    tracing::info!(node_id = node.id, term, "became leader");
                    let leadership = Leadership::new(term, since);
                    let mut task = JoinSet::new();
                    task.spawn(lead(node.clone(), leadership.clone()));
                    current = Some(Running {
                        leadership,
                        _task: task,
                    });
                }
            }
        }
        node.deposed
            .store(watch.deposed(), std::sync::atomic::Ordering::Relaxed);
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    if let Some(old) = current.take() {
                        old.leadership.end();
                    }
                    node.set_leadership(None);
                    return;
                }
            }
            _ = tick.tick(), if watch.leading() => {}
        }
    }
}
