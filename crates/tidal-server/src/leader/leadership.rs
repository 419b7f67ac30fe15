//! The state of one term of leadership, shared by the leader's loops, and
//! the slot through which the rest of the node sees the current one.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use super::engine;
use super::session_input::SessionInput;

/// This node's current leadership, if it leads; shared with what must see
/// it outside a request (the submit batcher's placement).
pub type LeadershipSlot = Arc<Mutex<Option<Arc<Leadership>>>>;

/// The state of one term of leadership.
///
/// It is made when openraft makes this node leader, and acts (agent
/// sessions, leases, dispatch, forwarding) only once an entry of its own has
/// committed (`establish` in [`super`]): a node that openraft restores as leader after
/// a restart, or that a newer leader has replaced without it knowing, never
/// commits one and so never acts. It ends the moment the node sees a higher
/// vote, or when it has not heard from a majority of voters for an election
/// timeout (check-quorum, [`crate::raft::quorum`]).
pub struct Leadership {
    pub term: u64,
    /// When openraft made this node leader of `term`.
    pub since: Instant,
    /// Flips to false when this leadership ends; session loops watch it.
    alive: watch::Sender<bool>,
    /// Flips to true once an entry proposed by this leadership is applied.
    /// Until then this node's commit index may be behind: openraft restores
    /// a leader that restarts within its term without a new blank entry, and
    /// the committed index it reloads is not synced on every commit. A read
    /// index taken before that could miss acknowledged writes (chaos
    /// scenario crash-points exercises this).
    reads_ready: watch::Sender<bool>,
    /// Events for this leadership's engine (`super::driver`).
    inbox: mpsc::UnboundedSender<engine::Event>,
    /// The engine's end of `inbox`, until its driver starts.
    pub(super) events: Mutex<Option<mpsc::UnboundedReceiver<engine::Event>>>,
    /// Agent sessions' requests to the driver (`super::session_input::SessionInput`).
    sessions: mpsc::UnboundedSender<SessionInput>,
    /// The driver's end of `sessions`, until it starts.
    pub(super) session_inputs: Mutex<Option<mpsc::UnboundedReceiver<SessionInput>>>,
    /// What the engine last published: the connected agents and the
    /// dispatch round in flight.
    pub(super) view: watch::Sender<engine::View>,
}

impl Leadership {
    pub(super) fn new(term: u64, since: Instant) -> Arc<Leadership> {
        let (alive, _) = watch::channel(true);
        let (reads_ready, _) = watch::channel(false);
        let (inbox, events) = mpsc::unbounded_channel();
        let (sessions, session_inputs) = mpsc::unbounded_channel();
        let (view, _) = watch::channel(engine::View::default());
        Arc::new(Leadership {
            term,
            since,
            alive,
            reads_ready,
            inbox,
            events: Mutex::new(Some(events)),
            sessions,
            session_inputs: Mutex::new(Some(session_inputs)),
            view,
        })
    }

    /// Asks this leadership's driver about or for an agent session; false
    /// once the leadership ended.
    pub fn session_input(&self, input: SessionInput) -> bool {
        self.sessions.send(input).is_ok()
    }

    /// Agents with a live session: the only ones placement may use.
    pub fn connected(&self) -> Arc<BTreeSet<String>> {
        self.view.borrow().connected.clone()
    }

    /// What the engine last published (for eager placement).
    pub fn view(&self) -> engine::View {
        self.view.borrow().clone()
    }

    /// Tells this leadership's engine of `event` (nothing once it ended).
    pub fn notify(&self, event: engine::Event) {
        let _ = self.inbox.send(event);
    }

    /// A sender of events to this leadership's engine.
    pub fn inbox(&self) -> mpsc::UnboundedSender<engine::Event> {
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

    /// Opens this leadership to linearizable reads: an entry of its own has
    /// been applied.
    pub(crate) fn open_reads(&self) {
        self.reads_ready.send_replace(true);
    }

    /// Ends this leadership: `alive` flips to false, and the task that runs
    /// it (`super::lead`, its driver) ends.
    pub(crate) fn end(&self) {
        self.alive.send_replace(false);
    }
}
