//! Leader-only memory, rebuilt on every election: agent sessions, lease
//! deadlines, the dispatch loop, the lease reaper and retention's expirer. It starts when this node
//! becomes leader and is dropped when it steps down.

pub mod dispatcher;
pub mod drainer;
pub mod driver;
pub mod eager;
pub mod engine;
pub mod expirer;
pub mod forwarder;
pub mod quorum;
pub mod reaper;
pub mod sessions;
pub mod shipper;
pub mod upgrader;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::node::Node;
use quorum::Verdict;
use sessions::Sessions;

/// The state of one term of leadership.
///
/// It is made when openraft makes this node leader, and acts (agent
/// sessions, leases, dispatch, forwarding) only once an entry of its own has
/// committed ([`establish`]): a node that openraft restores as leader after
/// a restart, or that a newer leader has replaced without it knowing, never
/// commits one and so never acts. It ends the moment the node sees a higher
/// vote, or when it has not heard from a majority of voters for an election
/// timeout (check-quorum, [`quorum`]).
pub struct Leadership {
    pub term: u64,
    /// When openraft made this node leader of `term`.
    pub since: Instant,
    pub sessions: Sessions,
    /// Wakes the dispatcher: new pending work or freed capacity.
    pub wake: Notify,
    /// Wakes the cross-DC forwarder: new pending work.
    pub forward_wake: Notify,
    /// Wakes the drain driver: a drain or its deadline changed.
    pub drain_wake: Notify,
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
    /// Events for this leadership's engine ([`driver`]).
    inbox: driver::Inbox,
    /// The engine's end of `inbox`, until its driver starts.
    events: Mutex<Option<mpsc::UnboundedReceiver<engine::Event>>>,
}

impl Leadership {
    fn new(term: u64, since: Instant, node: &Node) -> Arc<Leadership> {
        let (alive, _) = watch::channel(true);
        let (reads_ready, _) = watch::channel(false);
        let (inbox, events) = mpsc::unbounded_channel();
        Arc::new(Leadership {
            term,
            since,
            sessions: Sessions::new(node.config.agent_ttl),
            wake: Notify::new(),
            forward_wake: Notify::new(),
            drain_wake: Notify::new(),
            dispatching: Mutex::default(),
            alive,
            reads_ready,
            tasks: Mutex::new(Vec::new()),
            inbox,
            events: Mutex::new(Some(events)),
        })
    }

    /// Tells this leadership's engine of `event` (nothing once it ended).
    pub fn notify(&self, event: engine::Event) {
        let _ = self.inbox.send(event);
    }

    /// A sender of events to this leadership's engine.
    pub fn inbox(&self) -> driver::Inbox {
        self.inbox.clone()
    }

    /// A receiver that sees `false` once this leadership has ended.
    pub fn alive(&self) -> watch::Receiver<bool> {
        self.alive.subscribe()
    }

    pub fn is_alive(&self) -> bool {
        *self.alive.borrow()
    }

    /// Resolves once this leadership has ended.
    pub async fn ended(&self) {
        let mut rx = self.alive.subscribe();
        let _ = rx.wait_for(|a| !*a).await;
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

    fn tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn end(&self) {
        self.alive.send_replace(false);
        for task in self.tasks().drain(..) {
            task.abort();
        }
        self.sessions.clear();
    }
}

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
/// reads, takes agent sessions, renews every known agent's lease for a full
/// TTL (a failover causes no mass requeue: RELIABILITY.md, I7) and starts
/// dispatching, reaping and forwarding.
fn establish(node: &Arc<Node>, leadership: &Arc<Leadership>) {
    let mut tasks = leadership.tasks();
    // Checked under the task lock: `end` flips `alive` before taking it.
    if !leadership.is_alive() {
        return;
    }
    {
        let applied = node.state.read();
        for agent in applied.state.agents() {
            leadership.sessions.grace(&agent.spec.id);
        }
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
    tasks.push(tokio::spawn(dispatcher::run(
        node.clone(),
        leadership.clone(),
    )));
    tasks.push(tokio::spawn(reaper::run(node.clone(), leadership.clone())));
    tasks.push(tokio::spawn(drainer::run(node.clone(), leadership.clone())));
    tasks.push(tokio::spawn(expirer::run(node.clone(), leadership.clone())));
    tasks.push(tokio::spawn(upgrader::run(
        node.clone(),
        leadership.clone(),
    )));
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
                    let leadership = Leadership::new(term, since, &node);
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
