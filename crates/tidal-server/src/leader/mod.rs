//! Leader-only memory, rebuilt on every election: agent sessions, lease
//! deadlines, the dispatch loop and the lease reaper. It starts when this node
//! becomes leader and is dropped when it steps down.

pub mod dispatcher;
pub mod eager;
pub mod forwarder;
pub mod reaper;
pub mod sessions;
pub mod shipper;

use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::node::Node;
use sessions::Sessions;

/// The state of one term of leadership.
pub struct Leadership {
    pub term: u64,
    pub sessions: Sessions,
    /// Wakes the dispatcher: new pending work or freed capacity.
    pub wake: Notify,
    /// Wakes the cross-DC forwarder: new pending work.
    pub forward_wake: Notify,
    /// The dispatch round being committed, for eager placement to plan around.
    pub dispatching: Mutex<tidal_core::dispatch::InFlight>,
    /// Flips to false when this leadership ends; session loops watch it.
    alive: watch::Sender<bool>,
    /// Flips to true once an entry proposed by this leadership is applied.
    /// Until then this node's commit index may be behind: openraft restores
    /// a leader that restarts within its term without a new blank entry, and
    /// the committed index it reloads is not synced on every commit. A read
    /// index taken before that could miss acknowledged writes (the chaos
    /// harness found this, crash-points scenario).
    reads_ready: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Leadership {
    fn new(term: u64, node: &Node) -> Arc<Leadership> {
        let (alive, _) = watch::channel(true);
        let (reads_ready, _) = watch::channel(false);
        let leadership = Arc::new(Leadership {
            term,
            sessions: Sessions::new(node.config.agent_ttl),
            wake: Notify::new(),
            forward_wake: Notify::new(),
            dispatching: Mutex::default(),
            alive,
            reads_ready,
            tasks: Mutex::new(Vec::new()),
        });
        // A new leader gives every known agent a full TTL of grace, so a
        // failover causes no mass requeue (RELIABILITY.md, I7).
        {
            let applied = node.state.read();
            for agent in applied.state.agents() {
                leadership.sessions.renew(&agent.spec.id);
            }
        }
        leadership
    }

    /// A receiver that sees `false` once this leadership has ended.
    pub fn alive(&self) -> watch::Receiver<bool> {
        self.alive.subscribe()
    }

    pub fn is_alive(&self) -> bool {
        *self.alive.borrow()
    }

    /// Waits (at most `bound`) until this leadership has committed and
    /// applied its first entry, so its commit index covers every entry
    /// committed before it; false if it did not in time.
    pub async fn reads_ready(&self, bound: std::time::Duration) -> bool {
        if *self.reads_ready.borrow() {
            return true;
        }
        let mut rx = self.reads_ready.subscribe();
        let ready = matches!(
            tokio::time::timeout(bound, rx.wait_for(|r| *r)).await,
            Ok(Ok(_))
        );
        ready
    }

    fn end(&self) {
        self.alive.send_replace(false);
        for task in self
            .tasks
            .lock()
            .expect("leadership task list poisoned")
            .drain(..)
        {
            task.abort();
        }
        self.sessions.clear();
    }
}

/// Commits one no-op entry for this leadership, retrying while it lasts;
/// linearizable reads wait for it ([`Leadership::reads_ready`]).
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
                leadership.reads_ready.send_replace(true);
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

/// Watches Raft metrics and starts or ends leadership as the role changes.
pub async fn watch_leadership(node: Arc<Node>) {
    let mut metrics = node.raft.metrics();
    let mut was_member = false;
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
        let current = node.leadership();
        match (&current, is_leader) {
            (Some(l), true) if l.term == term => {}
            (_, true) => {
                if let Some(old) = current {
                    old.end();
                }
                tracing::info!(node_id = node.id, term, "became leader");
                let leadership = Leadership::new(term, &node);
                node.set_leadership(Some(leadership.clone()));
                let b = tokio::spawn(commit_barrier(node.clone(), leadership.clone()));
                let d = tokio::spawn(dispatcher::run(node.clone(), leadership.clone()));
                let r = tokio::spawn(reaper::run(node.clone(), leadership.clone()));
                let mut tasks = vec![b, d, r];
                if !node.config.peers.is_empty() {
                    tasks.push(tokio::spawn(forwarder::run(
                        node.clone(),
                        leadership.clone(),
                    )));
                    for peer in &node.config.peers {
                        tasks.push(tokio::spawn(shipper::run(
                            node.clone(),
                            leadership.clone(),
                            peer.clone(),
                        )));
                    }
                }
                leadership
                    .tasks
                    .lock()
                    .expect("leadership task list poisoned")
                    .extend(tasks);
            }
            (Some(old), false) => {
                tracing::info!(node_id = node.id, term, "stepped down");
                old.end();
                node.set_leadership(None);
            }
            (None, false) => {}
        }
        if metrics.changed().await.is_err() {
            if let Some(old) = node.leadership() {
                old.end();
            }
            node.set_leadership(None);
            return;
        }
    }
}
