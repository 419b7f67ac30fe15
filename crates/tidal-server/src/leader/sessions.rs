//! Agent sessions and lease deadlines, in leader memory only: heartbeats are
//! not written to the log; only the transition to Down is (DESIGN.md).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidal_proto::v1;
use tokio::sync::mpsc;

pub type Outbound = mpsc::UnboundedSender<v1::ServerMessage>;

struct Session {
    generation: u64,
    tx: Outbound,
    /// The applied index the session's reconcile looked at: assignments
    /// with a token at or below it were settled there (kept or regranted),
    /// so only later ones are pushed on this session.
    attached_at: u64,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Session>,
    deadlines: HashMap<String, Instant>,
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

    /// Attaches a new session for `agent`, replacing an older one (whose
    /// stream then ends), reconciled against the state at applied index
    /// `attached_at`. Returns the session's generation.
    pub fn attach(&self, agent: &str, tx: Outbound, attached_at: u64) -> u64 {
        let mut inner = self.lock();
        inner.next_generation += 1;
        let generation = inner.next_generation;
        inner.sessions.insert(
            agent.to_string(),
            Session {
                generation,
                tx,
                attached_at,
            },
        );
        inner.connected = None;
        inner
            .deadlines
            .insert(agent.to_string(), Instant::now() + self.ttl);
        generation
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

    /// Restarts the agent's lease: it may not be marked down before now + TTL.
    pub fn renew(&self, agent: &str) {
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
        inner.sessions.remove(agent);
        inner.deadlines.remove(agent);
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_session_replaces_older_and_old_detach_is_ignored() {
        let s = Sessions::new(Duration::from_secs(10));
        let (tx1, _rx1) = mpsc::unbounded_channel();
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        let g1 = s.attach("a", tx1, 0);
        let g2 = s.attach("a", tx2, 0);
        s.detach("a", g1);
        assert!(s.is_connected("a"));
        assert!(s.send("a", v1::ServerMessage::default()));
        assert!(rx2.try_recv().is_ok());
        s.detach("a", g2);
        assert!(!s.is_connected("a"));
    }

    #[test]
    fn assignments_settled_by_the_reconcile_are_not_pushed() {
        let s = Sessions::new(Duration::from_secs(10));
        let (tx, mut rx) = mpsc::unbounded_channel();
        s.attach("a", tx, 40);
        assert!(!s.send_assignment("a", 40, v1::ServerMessage::default()));
        assert!(rx.try_recv().is_err());
        assert!(s.send_assignment("a", 41, v1::ServerMessage::default()));
        assert!(rx.try_recv().is_ok());
        assert!(!s.send_assignment("b", 41, v1::ServerMessage::default()));
    }

    #[test]
    fn lease_expires_only_after_ttl() {
        let s = Sessions::new(Duration::from_secs(10));
        s.renew("a");
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
