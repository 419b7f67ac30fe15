//! The session table: one live session per agent id and every agent's lease deadline, with the time passed in.
//!
//! Leader memory only: heartbeats are not written to the log; only the
//! transition to Down is (DESIGN.md). Times are `mono_ms`, the engine's
//! monotonic clock.
//!
//! Each agent process names itself with an instance id in `Register`. A new
//! session of the same instance replaces its older one (a reconnect). A
//! session of another instance takes the id over: the old session is closed
//! ([`Closed::Displaced`]) and stops being renewed, and the tasks the agent
//! id held that the new process does not report running are only regranted
//! once the old process's lease has ended (it may run them until then):
//! [`Attached::regrant_at`]. A leadership that does not know which instance
//! held an id (it was just elected) treats every first session as another
//! instance.
//!
//! The table decides; it sends nothing. Closing a session, and sending on
//! one, are the caller's to do with what the table returns.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use tidal_core::access::TokenId;
use tidal_core::model::{AgentId, FencingToken, TaskId, TaskState};
use tidal_core::State;

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
    /// The token the session opened with was revoked or expired: the
    /// lease is not renewed again, so it runs out and the agent's tasks
    /// are granted again elsewhere.
    Revoked { token: TokenId },
}

/// Who opened a session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// The agent process's instance id (empty: an agent that sends none).
    pub instance: String,
    /// The address it connected from, for the operator.
    pub addr: String,
    /// The token it presented, when the state knows it (cluster format
    /// version 3, `--auth tokens`): the session lasts only while that
    /// token is active. `None`: a session of a server that checks no
    /// tokens.
    pub token: Option<TokenId>,
}

#[derive(Debug)]
struct Session {
    generation: u64,
    peer: Peer,
    /// The applied index the session's reconcile looked at: assignments
    /// with a token at or below it were settled there (kept or regranted),
    /// so only later ones are pushed on this session.
    attached_at: u64,
    /// The (task, token) pairs the agent process reported running (or
    /// ended, its report not yet acknowledged) in its Register. With the
    /// pairs pushed on this session (token above `attached_at`), these are
    /// the assignments this session holds: the only ones it may be told to
    /// stop, and the only ones whose stop report it may make.
    reported: BTreeSet<(TaskId, FencingToken)>,
    /// The models the process last reported loaded (Register, then each
    /// heartbeat): planning prefers agents with a task's models warm.
    warm: BTreeSet<String>,
}

impl Session {
    fn holds(&self, task: TaskId, token: FencingToken) -> bool {
        token > self.attached_at || self.reported.contains(&(task, token))
    }
}

/// Where a stop order for an assignment may go ([`SessionTable::stop_target`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopTarget {
    /// The session of this generation holds the assignment: tell it.
    Holds(u64),
    /// The session of this generation never held the assignment (another
    /// process under the agent id, or one an earlier leadership knew, may
    /// still run it): not to be told.
    NotHeld(u64),
    /// The agent has no session.
    NoSession,
}

/// A session just attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub generation: u64,
    /// The agent's older session that this one closed (its generation), and why.
    pub closed: Option<(u64, Closed)>,
    /// The other agent process whose live session this one displaced.
    pub displaced: Option<Peer>,
    /// Tasks of this agent not reported running by the new session may
    /// still run in another process until then (`mono_ms`): regrant them
    /// no earlier.
    pub regrant_at: Option<u64>,
    /// Another known agent process held this id (not merely one this
    /// leadership does not know): it may have started the tasks it held
    /// without its report arriving, so they count as started.
    pub taken_over: bool,
}

/// The sessions and leases of one leadership.
#[derive(Debug)]
pub struct SessionTable {
    ttl_ms: u64,
    sessions: BTreeMap<AgentId, Session>,
    /// When each agent's lease ends: it may be marked down from then on.
    deadlines: BTreeMap<AgentId, u64>,
    /// `deadlines` in deadline order.
    by_deadline: BTreeSet<(u64, AgentId)>,
    /// The instance whose heartbeats the deadline counts (absent: unknown,
    /// as after an election).
    holders: BTreeMap<AgentId, String>,
    /// Until when a displaced or unknown process may still run tasks of
    /// this agent id.
    fenced_until: BTreeMap<AgentId, u64>,
    /// The part of `fenced_until` owed to another known instance.
    taken_over_until: BTreeMap<AgentId, u64>,
    displaced: BTreeMap<AgentId, VecDeque<String>>,
    next_generation: u64,
    /// The ids of `sessions`, built when asked for after a change: planning
    /// reads it for every dispatch round and submit batch, sessions change
    /// rarely.
    connected: Option<Arc<BTreeSet<AgentId>>>,
    /// The sessions' warm models (agents with none left out), built when
    /// asked for after a change, as `connected`.
    warm: Option<Arc<BTreeMap<AgentId, BTreeSet<String>>>>,
}

impl SessionTable {
    /// An empty table whose leases last `ttl_ms` from each renewal.
    pub fn new(ttl_ms: u64) -> SessionTable {
        SessionTable {
            ttl_ms,
            sessions: BTreeMap::new(),
            deadlines: BTreeMap::new(),
            by_deadline: BTreeSet::new(),
            holders: BTreeMap::new(),
            fenced_until: BTreeMap::new(),
            taken_over_until: BTreeMap::new(),
            displaced: BTreeMap::new(),
            next_generation: 0,
            connected: None,
            warm: None,
        }
    }

    /// Attaches a new session for `agent` at `now`, reconciled against the
    /// state at applied index `attached_at`, closing an older one: as
    /// replaced when it is the same instance, as displaced when it is
    /// another. `reported`: the assignments the process named in its
    /// Register. The lease restarts at `now`.
    pub fn attach(
        &mut self,
        agent: &str,
        peer: Peer,
        attached_at: u64,
        reported: BTreeSet<(TaskId, FencingToken)>,
        now: u64,
    ) -> Attached {
        let same = !peer.instance.is_empty()
            && self.holders.get(agent).is_some_and(|h| *h == peer.instance);
        let mut displaced = None;
        let mut closed = None;
        if let Some(old) = self.sessions.remove(agent) {
            if same {
                closed = Some((old.generation, Closed::Replaced));
            } else {
                closed = Some((
                    old.generation,
                    Closed::Displaced {
                        by: peer.instance.clone(),
                        from: peer.addr.clone(),
                    },
                ));
                if !old.peer.instance.is_empty() {
                    let list = self.displaced.entry(agent.to_string()).or_default();
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
            if let Some(d) = self.deadlines.get(agent).copied().filter(|d| *d > now) {
                let f = self.fenced_until.entry(agent.to_string()).or_insert(d);
                *f = (*f).max(d);
                let known_other = self
                    .holders
                    .get(agent)
                    .is_some_and(|h| !h.is_empty() && *h != peer.instance);
                if known_other || displaced.is_some() {
                    let f = self.taken_over_until.entry(agent.to_string()).or_insert(d);
                    *f = (*f).max(d);
                }
            }
        }
        let regrant_at = self.fenced_until.get(agent).copied().filter(|f| *f > now);
        let taken_over = self.taken_over_until.get(agent).is_some_and(|f| *f > now);
        self.next_generation += 1;
        let generation = self.next_generation;
        self.holders
            .insert(agent.to_string(), peer.instance.clone());
        self.sessions.insert(
            agent.to_string(),
            Session {
                generation,
                peer,
                attached_at,
                reported,
                warm: BTreeSet::new(),
            },
        );
        self.connected = None;
        self.warm = None;
        self.set_deadline(agent, now.saturating_add(self.ttl_ms));
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
                .displaced
                .get(agent)
                .is_some_and(|l| l.iter().any(|i| i == instance))
    }

    /// Detaches the session if it is still the given generation; true if it was.
    pub fn detach(&mut self, agent: &str, generation: u64) -> bool {
        if self
            .sessions
            .get(agent)
            .is_some_and(|s| s.generation == generation)
        {
            self.sessions.remove(agent);
            self.connected = None;
            self.warm = None;
            return true;
        }
        false
    }

    /// A heartbeat on session `generation` at `now`: restarts the agent's
    /// lease (it may not be marked down before now + TTL). False, renewing
    /// nothing, if that session is no longer the agent's.
    pub fn renew(&mut self, agent: &str, generation: u64, now: u64) -> bool {
        if self
            .sessions
            .get(agent)
            .is_none_or(|s| s.generation != generation)
        {
            return false;
        }
        self.set_deadline(agent, now.saturating_add(self.ttl_ms));
        true
    }

    /// A new leadership gives every known agent a full TTL from `now`, held
    /// by no known instance.
    pub fn grace(&mut self, agent: &str, now: u64) {
        self.set_deadline(agent, now.saturating_add(self.ttl_ms));
    }

    fn set_deadline(&mut self, agent: &str, deadline: u64) {
        if let Some(old) = self.deadlines.insert(agent.to_string(), deadline) {
            self.by_deadline.remove(&(old, agent.to_string()));
        }
        self.by_deadline.insert((deadline, agent.to_string()));
    }

    /// Agents whose lease ran out at or before `now`, in id order.
    pub fn expired(&self, now: u64) -> Vec<AgentId> {
        let mut out: Vec<AgentId> = self
            .by_deadline
            .iter()
            .take_while(|(d, _)| *d <= now)
            .map(|(_, a)| a.clone())
            .collect();
        out.sort();
        out
    }

    /// The lease deadlines in the order they end.
    pub fn deadlines(&self) -> impl Iterator<Item = (u64, &AgentId)> + '_ {
        self.by_deadline.iter().map(|(d, a)| (*d, a))
    }

    /// The earliest lease deadline, if any agent has one.
    pub fn next_deadline(&self) -> Option<u64> {
        self.by_deadline.first().map(|(d, _)| *d)
    }

    /// The agent's lease deadline, if it has one.
    pub fn deadline(&self, agent: &str) -> Option<u64> {
        self.deadlines.get(agent).copied()
    }

    /// Forgets an agent that was marked down or deregistered; returns the
    /// generation of its session, if it had one, which ends as
    /// [`Closed::Expired`].
    pub fn forget(&mut self, agent: &str) -> Option<u64> {
        let closed = self.sessions.remove(agent).map(|s| s.generation);
        if let Some(d) = self.deadlines.remove(agent) {
            self.by_deadline.remove(&(d, agent.to_string()));
        }
        self.holders.remove(agent);
        self.fenced_until.remove(agent);
        self.taken_over_until.remove(agent);
        self.connected = None;
        self.warm = None;
        closed
    }

    /// Agents with a live session: the only ones the dispatcher may use.
    pub fn connected(&mut self) -> Arc<BTreeSet<AgentId>> {
        self.connected
            .get_or_insert_with(|| Arc::new(self.sessions.keys().cloned().collect()))
            .clone()
    }

    /// Sets the models the agent's session `generation` reports loaded
    /// now. True if they changed (false for a session that is no longer
    /// the agent's).
    pub fn set_warm(&mut self, agent: &str, generation: u64, models: BTreeSet<String>) -> bool {
        match self.sessions.get_mut(agent) {
            Some(s) if s.generation == generation && s.warm != models => {
                s.warm = models;
                self.warm = None;
                true
            }
            _ => false,
        }
    }

    /// Per connected agent, the models it reported warm (agents that
    /// reported none are left out). Leader memory: a new leadership knows
    /// none until the agents register or heartbeat.
    pub fn warm(&mut self) -> Arc<BTreeMap<AgentId, BTreeSet<String>>> {
        self.warm
            .get_or_insert_with(|| {
                Arc::new(
                    self.sessions
                        .iter()
                        .filter(|(_, s)| !s.warm.is_empty())
                        .map(|(a, s)| (a.clone(), s.warm.clone()))
                        .collect(),
                )
            })
            .clone()
    }

    pub fn is_connected(&self, agent: &str) -> bool {
        self.sessions.contains_key(agent)
    }

    /// The generation of the agent's session, if it has one.
    pub fn generation(&self, agent: &str) -> Option<u64> {
        self.sessions.get(agent).map(|s| s.generation)
    }

    /// The token the agent's session `generation` opened with, if any.
    pub fn token(&self, agent: &str, generation: u64) -> Option<&TokenId> {
        self.sessions
            .get(agent)
            .filter(|s| s.generation == generation)
            .and_then(|s| s.peer.token.as_ref())
    }

    /// The sessions that opened with a token: (agent, generation, token).
    pub fn with_tokens(&self) -> impl Iterator<Item = (&AgentId, u64, &TokenId)> + '_ {
        self.sessions
            .iter()
            .filter_map(|(a, s)| Some((a, s.generation, s.peer.token.as_ref()?)))
    }

    /// True if the agent's session `generation` holds the assignment
    /// (task, token): reported in its Register, or pushed on it.
    pub fn holds(&self, agent: &str, generation: u64, task: TaskId, token: FencingToken) -> bool {
        self.sessions
            .get(agent)
            .is_some_and(|s| s.generation == generation && s.holds(task, token))
    }

    /// Whether the agent's session `generation` may report the start or the
    /// end of the assignment (task, token): it holds it ([`Self::holds`]),
    /// and the state does not name another agent as holding that token
    /// (tokens are log indexes, easy to guess; a session pushed or
    /// reported an assignment of its own agent only). A report of an
    /// assignment the task has since moved on from passes here; apply
    /// refuses its stale token.
    pub fn may_report(
        &self,
        state: &State,
        agent: &str,
        generation: u64,
        task: TaskId,
        token: FencingToken,
    ) -> bool {
        let other = state.task(task).is_some_and(|t| match &t.state {
            TaskState::Assigned { agent: a, token: k }
            | TaskState::Running { agent: a, token: k }
            | TaskState::Succeeded { agent: a, token: k } => *k == token && a != agent,
            TaskState::Failed {
                agent: Some(a),
                token: k,
            }
            | TaskState::Cancelled {
                agent: Some(a),
                token: k,
            } => *k == token && a != agent,
            _ => false,
        });
        !other && self.holds(agent, generation, task, token)
    }

    /// Where a stop order for (task, token) may go: only to a session that
    /// holds the assignment, since a process that does not run it would
    /// report it stopped while the process that does runs on.
    pub fn stop_target(&self, agent: &str, task: TaskId, token: FencingToken) -> StopTarget {
        match self.sessions.get(agent) {
            None => StopTarget::NoSession,
            Some(s) if !s.holds(task, token) => StopTarget::NotHeld(s.generation),
            Some(s) => StopTarget::Holds(s.generation),
        }
    }

    /// The generation of the session an assignment under `token` goes to,
    /// unless the session began after that entry applied: its reconcile
    /// settled it (the agent reported it running, or it was regranted under
    /// a new token), and sending it now could run one token twice.
    pub fn assignment_target(&self, agent: &str, token: FencingToken) -> Option<u64> {
        self.sessions
            .get(agent)
            .filter(|s| token > s.attached_at)
            .map(|s| s.generation)
    }
}

#[cfg(test)]
#[path = "sessions_test.rs"]
mod tests;
