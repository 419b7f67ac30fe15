//! Agent sessions and lease deadlines, in leader memory only: heartbeats are
//! not written to the log; only the transition to Down is (DESIGN.md).
//!
//! One live session per agent id. Each agent process names itself with an
//! instance id in `Register`. A new session of the same instance replaces
//! its older one (a reconnect). A session of another instance takes the id
//! over: the old session is closed ([`Closed::Displaced`]) and stops being
//! renewed, and the tasks the agent id held that the new process does not
//! report running are only regranted once the old process's lease has ended
//! (it may run them until then): `Attached::regrant_at`. A leadership that
//! does not know which instance held an id (it was just elected) treats
//! every first session as another instance.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidal_core::model::TaskId;
use tidal_proto::v1;
use tokio::sync::{mpsc, watch};

pub type Outbound = mpsc::UnboundedSender<v1::ServerMessage>;

/// Displaced instances remembered per agent id (refused if they come back).
const DISPLACED_REMEMBERED: usize = 16;

/// Why the leader closed a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// Another agent process registered under this id and took it over.
    Displaced { by: String, from: String },
    /// The same agent process opened a newer session.
    Replaced,
    /// The lease ran out: the agent was marked down.
    Expired,
}

/// Who opened a session.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The agent process's instance id (empty: an agent that sends none).
    pub instance: String,
    /// The address it connected from, for the operator.
    pub addr: String,
}

struct Session {
    generation: u64,
    peer: Peer,
    tx: Outbound,
    /// The applied index the session's reconcile looked at: assignments
    /// with a token at or below it were settled there (kept or regranted),
    /// so only later ones are pushed on this session.
    attached_at: u64,
    /// The (task, token) pairs the agent process reported running (or
    /// ended, its report not yet acknowledged) in its Register. With the
    /// pairs pushed on this session (token above `attached_at`), these are
    /// the assignments this session holds: the only ones it may be told to
    /// stop, and the only ones whose stop report it may make.
    reported: BTreeSet<(TaskId, u64)>,
    close: watch::Sender<Option<Closed>>,
}

impl Session {
    fn holds(&self, task: TaskId, token: u64) -> bool {
        token > self.attached_at || self.reported.contains(&(task, token))
    }
}

/// What [`Sessions::send_stop`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSent {
    /// Sent on the session of this generation, which holds the assignment.
    Sent(u64),
    /// Not sent: the session of this generation never held the assignment
    /// (another process under the agent id, or one an earlier leadership
    /// knew, may still run it).
    NotHeld(u64),
    /// The agent has no session.
    NoSession,
}

/// A session just attached.
#[derive(Debug)]
pub struct Attached {
    pub generation: u64,
    /// Becomes `Some` when the leader closes this session.
    pub closed: watch::Receiver<Option<Closed>>,
    /// The other agent process whose live session this one displaced.
    pub displaced: Option<Peer>,
    /// Tasks of this agent not reported running by the new session may
    /// still run in another process until then: regrant them no earlier.
    pub regrant_at: Option<Instant>,
    /// Another known agent process held this id (not merely one this
    /// leadership does not know): it may have started the tasks it held
    /// without its report arriving, so they count as started.
    pub taken_over: bool,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Session>,
    deadlines: HashMap<String, Instant>,
    /// The instance whose heartbeats the deadline counts (absent: unknown,
    /// as after an election).
    holders: HashMap<String, String>,
    /// Until when a displaced or unknown process may still run tasks of
    /// this agent id.
    fenced_until: HashMap<String, Instant>,
    /// The part of `fenced_until` owed to another known instance.
    taken_over_until: HashMap<String, Instant>,
    displaced: HashMap<String, VecDeque<String>>,
    next_generation: u64,
    /// The ids of `sessions`, built when asked for after a change: planning
    /// reads it for every dispatch round and submit batch, sessions change
    /// rarely.
    connected: Option<Arc<BTreeSet<String>>>,
}

pub struct Sessions {
    ttl: Duration,
    inner: Mutex<Inner>,
}

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("sessions lock poisoned")
    }

    /// Attaches a new session for `agent`, reconciled against the state at
    /// applied index `attached_at`, closing an older one: as replaced when
    /// it is the same instance, as displaced when it is another. `reported`:
    /// the assignments the process named in its Register.
    pub fn attach(
        &self,
        agent: &str,
        peer: Peer,
        tx: Outbound,
        attached_at: u64,
        reported: BTreeSet<(TaskId, u64)>,
    ) -> Attached {
        let now = Instant::now();
        let mut inner = self.lock();
        let same = !peer.instance.is_empty()
            && inner
                .holders
                .get(agent)
                .is_some_and(|h| *h == peer.instance);
        let mut displaced = None;
        if let Some(old) = inner.sessions.remove(agent) {
            if same {
                old.close.send_replace(Some(Closed::Replaced));
            } else {
                old.close.send_replace(Some(Closed::Displaced {
                    by: peer.instance.clone(),
                    from: peer.addr.clone(),
                }));
                if !old.peer.instance.is_empty() {
                    let list = inner.displaced.entry(agent.to_string()).or_default();
                    list.push_back(old.peer.instance.clone());
                    while list.len() > DISPLACED_REMEMBERED {
                        list.pop_front();
                    }
                }
                displaced = Some(old.peer);
            }
        }
        if !same {
            // Whoever the lease was renewed for may run this id's tasks
            // until it ends (and fences itself before that).
            if let Some(d) = inner.deadlines.get(agent).copied().filter(|d| *d > now) {
                let f = inner.fenced_until.entry(agent.to_string()).or_insert(d);
                *f = (*f).max(d);
                let known_other = inner
                    .holders
                    .get(agent)
                    .is_some_and(|h| !h.is_empty() && *h != peer.instance);
                if known_other || displaced.is_some() {
                    let f = inner.taken_over_until.entry(agent.to_string()).or_insert(d);
                    *f = (*f).max(d);
                }
            }
        }
        let regrant_at = inner.fenced_until.get(agent).copied().filter(|f| *f > now);
        let taken_over = inner.taken_over_until.get(agent).is_some_and(|f| *f > now);
        inner.next_generation += 1;
        let generation = inner.next_generation;
        let (close, closed) = watch::channel(None);
        inner
            .holders
            .insert(agent.to_string(), peer.instance.clone());
        inner.sessions.insert(
            agent.to_string(),
            Session {
                generation,
                peer,
                tx,
                attached_at,
                reported,
                close,
            },
        );
        inner.connected = None;
        inner.deadlines.insert(agent.to_string(), now + self.ttl);
        Attached {
            generation,
            closed,
            displaced,
            regrant_at,
            taken_over,
        }
    }

    /// True if this instance's session under `agent` was displaced by
    /// another process: it may not come back.
    pub fn was_displaced(&self, agent: &str, instance: &str) -> bool {
        !instance.is_empty()
            && self
                .lock()
                .displaced
                .get(agent)
                .is_some_and(|l| l.iter().any(|i| i == instance))
    }

    /// Detaches the session if it is still the given generation.
    pub fn detach(&self, agent: &str, generation: u64) {
        let mut inner = self.lock();
        if inner
            .sessions
            .get(agent)
            .is_some_and(|s| s.generation == generation)
        {
            inner.sessions.remove(agent);
            inner.connected = None;
        }
    }

    /// A heartbeat on session `generation`: restarts the agent's lease (it
    /// may not be marked down before now + TTL). False, renewing nothing,
    /// if that session is no longer the agent's.
    pub fn renew(&self, agent: &str, generation: u64) -> bool {
        let deadline = Instant::now() + self.ttl;
        let mut inner = self.lock();
        if inner
            .sessions
            .get(agent)
            .is_none_or(|s| s.generation != generation)
        {
            return false;
        }
        inner.deadlines.insert(agent.to_string(), deadline);
        true
    }

    /// A new leadership gives every known agent a full TTL, held by no
    /// known instance.
    pub fn grace(&self, agent: &str) {
        let deadline = Instant::now() + self.ttl;
        self.lock().deadlines.insert(agent.to_string(), deadline);
    }

    /// Agents whose lease ran out before `now`.
    pub fn expired(&self, now: Instant) -> Vec<String> {
        let inner = self.lock();
        let mut out: Vec<String> = inner
            .deadlines
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(a, _)| a.clone())
            .collect();
        out.sort();
        out
    }

    /// Forgets an agent that was marked down: its session (if any) ends.
    pub fn forget(&self, agent: &str) {
        let mut inner = self.lock();
        if let Some(s) = inner.sessions.remove(agent) {
            s.close.send_replace(Some(Closed::Expired));
        }
        inner.deadlines.remove(agent);
        inner.holders.remove(agent);
        inner.fenced_until.remove(agent);
        inner.taken_over_until.remove(agent);
        inner.connected = None;
    }

    /// Agents with a live session: the only ones the dispatcher may use.
    pub fn connected(&self) -> Arc<BTreeSet<String>> {
        let mut inner = self.lock();
        if inner.connected.is_none() {
            inner.connected = Some(Arc::new(inner.sessions.keys().cloned().collect()));
        }
        inner.connected.clone().unwrap_or_default()
    }

    /// The generation of the agent's session, if it has one.
    pub fn generation(&self, agent: &str) -> Option<u64> {
        self.lock().sessions.get(agent).map(|s| s.generation)
    }

    /// True if the agent's session `generation` holds the assignment
    /// (task, token): reported in its Register, or pushed on it.
    pub fn holds(&self, agent: &str, generation: u64, task: TaskId, token: u64) -> bool {
        self.lock()
            .sessions
            .get(agent)
            .is_some_and(|s| s.generation == generation && s.holds(task, token))
    }

    /// Sends a stop order for (task, token) to the agent's session, only if
    /// that session holds the assignment: a process that does not run it
    /// would report it stopped while the process that does runs on.
    pub fn send_stop(
        &self,
        agent: &str,
        task: TaskId,
        token: u64,
        msg: v1::ServerMessage,
    ) -> StopSent {
        match self.lock().sessions.get(agent) {
            None => StopSent::NoSession,
            Some(s) if !s.holds(task, token) => StopSent::NotHeld(s.generation),
            Some(s) => match s.tx.send(msg) {
                Ok(()) => StopSent::Sent(s.generation),
                Err(_) => StopSent::NoSession,
            },
        }
    }

    pub fn is_connected(&self, agent: &str) -> bool {
        self.lock().sessions.contains_key(agent)
    }

    /// Sends to the agent's session; false if it has none.
    pub fn send(&self, agent: &str, msg: v1::ServerMessage) -> bool {
        match self.lock().sessions.get(agent) {
            Some(s) => s.tx.send(msg).is_ok(),
            None => false,
        }
    }

    /// Sends an assignment under `token` to the agent's session, unless the
    /// session began after that entry applied: its reconcile settled it
    /// (the agent reported it running, or it was regranted under a new
    /// token), and sending it now could run one token twice.
    pub fn send_assignment(&self, agent: &str, token: u64, msg: v1::ServerMessage) -> bool {
        match self.lock().sessions.get(agent) {
            Some(s) if token > s.attached_at => s.tx.send(msg).is_ok(),
            _ => false,
        }
    }

    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.sessions.clear();
        inner.deadlines.clear();
        inner.holders.clear();
        inner.fenced_until.clear();
        inner.taken_over_until.clear();
        inner.connected = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(instance: &str) -> Peer {
        Peer {
            instance: instance.into(),
            addr: "127.0.0.1:1".into(),
        }
    }

    #[test]
    fn newer_session_replaces_older_and_old_detach_is_ignored() {
        let s = Sessions::new(Duration::from_secs(10));
        let (tx1, _rx1) = mpsc::unbounded_channel();
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        let a1 = s.attach("a", peer("p1"), tx1, 0, BTreeSet::new());
        let a2 = s.attach("a", peer("p1"), tx2, 0, BTreeSet::new());
        assert_eq!(*a1.closed.borrow(), Some(Closed::Replaced));
        assert!(a2.displaced.is_none());
        assert!(
            a2.regrant_at.is_none(),
            "the same process: nothing to wait for"
        );
        s.detach("a", a1.generation);
        assert!(s.is_connected("a"));
        assert!(s.send("a", v1::ServerMessage::default()));
        assert!(rx2.try_recv().is_ok());
        assert!(
            !s.renew("a", a1.generation),
            "the replaced session renews nothing"
        );
        assert!(s.renew("a", a2.generation));
        s.detach("a", a2.generation);
        assert!(!s.is_connected("a"));
    }

    #[test]
    fn another_instance_displaces_and_waits_out_the_old_lease() {
        let s = Sessions::new(Duration::from_secs(10));
        let (tx1, _rx1) = mpsc::unbounded_channel();
        let (tx2, _rx2) = mpsc::unbounded_channel();
        let before = Instant::now();
        let a1 = s.attach("a", peer("p1"), tx1, 0, BTreeSet::new());
        assert!(
            a1.regrant_at.is_none(),
            "a first session with no lease before it"
        );
        let a2 = s.attach("a", peer("p2"), tx2, 0, BTreeSet::new());
        assert_eq!(
            *a1.closed.borrow(),
            Some(Closed::Displaced {
                by: "p2".into(),
                from: "127.0.0.1:1".into()
            })
        );
        assert_eq!(a2.displaced.unwrap().instance, "p1");
        let at = a2.regrant_at.expect("the old lease still runs");
        assert!(a2.taken_over);
        assert!(at >= before + Duration::from_secs(10));
        assert!(!s.renew("a", a1.generation));
        assert!(s.was_displaced("a", "p1"));
        assert!(!s.was_displaced("a", "p2"));
        // The new process reconnecting is still fenced by the old lease.
        let (tx3, _rx3) = mpsc::unbounded_channel();
        let a3 = s.attach("a", peer("p2"), tx3, 0, BTreeSet::new());
        assert_eq!(*a2.closed.borrow(), Some(Closed::Replaced));
        assert_eq!(a3.regrant_at, Some(at));
    }

    #[test]
    fn after_an_election_the_first_session_waits_out_the_grace() {
        let s = Sessions::new(Duration::from_secs(10));
        s.grace("a");
        let (tx, _rx) = mpsc::unbounded_channel();
        let a = s.attach("a", peer("p1"), tx, 0, BTreeSet::new());
        assert!(a.regrant_at.is_some());
        assert!(!a.taken_over, "an unknown holder is not another process");
        s.forget("a");
        assert_eq!(*a.closed.borrow(), Some(Closed::Expired));
        let (tx, _rx) = mpsc::unbounded_channel();
        assert!(s
            .attach("a", peer("p1"), tx, 0, BTreeSet::new())
            .regrant_at
            .is_none());
    }

    #[test]
    fn assignments_settled_by_the_reconcile_are_not_pushed() {
        let s = Sessions::new(Duration::from_secs(10));
        let (tx, mut rx) = mpsc::unbounded_channel();
        s.attach("a", peer("p1"), tx, 40, BTreeSet::new());
        assert!(!s.send_assignment("a", 40, v1::ServerMessage::default()));
        assert!(rx.try_recv().is_err());
        assert!(s.send_assignment("a", 41, v1::ServerMessage::default()));
        assert!(rx.try_recv().is_ok());
        assert!(!s.send_assignment("b", 41, v1::ServerMessage::default()));
    }

    #[test]
    fn a_stop_goes_only_to_a_session_that_holds_the_assignment() {
        let s = Sessions::new(Duration::from_secs(10));
        let stop = v1::ServerMessage::default;
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let a1 = s.attach("a", peer("p1"), tx1, 40, BTreeSet::from([(TaskId(1), 30)]));
        // Reported in the Register, or pushed on the session (token > 40).
        assert_eq!(
            s.send_stop("a", TaskId(1), 30, stop()),
            StopSent::Sent(a1.generation)
        );
        assert_eq!(
            s.send_stop("a", TaskId(2), 41, stop()),
            StopSent::Sent(a1.generation)
        );
        assert_eq!(rx1.try_recv().map(|_| ()), Ok(()));
        assert_eq!(rx1.try_recv().map(|_| ()), Ok(()));
        // Settled by the reconcile and not reported: not this session's.
        assert_eq!(
            s.send_stop("a", TaskId(3), 35, stop()),
            StopSent::NotHeld(a1.generation)
        );
        assert!(rx1.try_recv().is_err());
        assert!(s.holds("a", a1.generation, TaskId(1), 30));
        assert!(!s.holds("a", a1.generation, TaskId(3), 35));
        // Another process takes the id over: it reported nothing, so what
        // the first one held (and may still run) is not its to stop.
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        let a2 = s.attach("a", peer("p2"), tx2, 50, BTreeSet::new());
        assert_eq!(
            s.send_stop("a", TaskId(1), 30, stop()),
            StopSent::NotHeld(a2.generation)
        );
        assert_eq!(
            s.send_stop("a", TaskId(2), 41, stop()),
            StopSent::NotHeld(a2.generation)
        );
        assert!(rx2.try_recv().is_err());
        assert!(!s.holds("a", a2.generation, TaskId(1), 30));
        assert!(
            !s.holds("a", a1.generation, TaskId(1), 30),
            "a closed session holds nothing"
        );
        assert!(s.holds("a", a2.generation, TaskId(4), 51));
        assert_eq!(s.send_stop("b", TaskId(1), 30, stop()), StopSent::NoSession);
    }

    #[test]
    fn lease_expires_only_after_ttl() {
        let s = Sessions::new(Duration::from_secs(10));
        s.grace("a");
        let now = Instant::now();
        assert!(s.expired(now).is_empty());
        assert_eq!(
            s.expired(now + Duration::from_secs(11)),
            vec!["a".to_string()]
        );
        s.forget("a");
        assert!(s.expired(now + Duration::from_secs(11)).is_empty());
    }
}
