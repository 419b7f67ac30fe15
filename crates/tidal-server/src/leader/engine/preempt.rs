//! Preemption: proposes `Preempt` for online work no agent can take, tells
//! agents to stop or suspend the victims, proposes `Resume` once a
//! suspended task's preemptor has ended, and tells agents to resume them.
//!
//! Which preemption is tidal-core's pure
//! [`tidal_core::lifecycle::plan_preemption`], looked at after the dispatch
//! round of the same step and at most [`LOOK_EVERY_MS`] apart; one
//! `Preempt` and one `Resume` are in flight at a time. The orders derive
//! from the state, so a new leader (or an agent's new session) carries on:
//! each is sent once per session that holds the task (all are idempotent at
//! the agent):
//!
//! - `ToAgent::Stop`, with its notice and its whole grace, to every task told
//!   to stop for a preemption whose preemptor still waits for it (Pending
//!   and not in backoff). A preemptor that went elsewhere, was cancelled or
//!   ended needs no room: its victims are not told (again). Their marker
//!   stays in the state until their hold ends (no entry clears it at this
//!   format version): another preemption may take them again (it points
//!   the marker at its own task), and a stop for another reason counts as
//!   a preemption;
//! - `ToAgent::Suspend` to every suspended task;
//! - `ToAgent::Resume` to the resumes this leadership owes: the tasks a
//!   `Resume` it committed let go on, and, when it began, every held task
//!   that may have been resumed without being told (suspendable, preempted
//!   before, not suspended now: only a suspendable task is ever
//!   suspended). A resume is not acknowledged, so one is owed until the
//!   session it went out on has carried the agent's heartbeats for
//!   [`RESUME_SETTLE_BEATS`] heartbeat intervals after it (the agent drops a
//!   session whose heartbeat goes unanswered for two intervals, and the
//!   answers follow the resume on the same ordered stream), or the task's
//!   hold under that token ends, or it is suspended again.
//!
//! A task an online task was granted with by the `Preempt` entry goes to the
//! agent like a dispatch round's.
//!
//! A suspended task whose preemptor is Pending again (stopped victims of
//! the same preemption have stopped) is resumed only after [`PATIENCE_MS`],
//! so the dispatcher places the preemptor first.
//!
//! Cost of a look: the marked tasks (told to stop or suspended), the owed
//! resumes, and the planner's bounded scan (none when no online task
//! waits); never every task.

use std::collections::{BTreeMap, HashMap, HashSet};

use tidal_core::command::{Command, Granted, Response};
use tidal_core::lifecycle::{plan_preemption, LIFECYCLE_VERSION};
use tidal_core::model::{FencingToken, TaskId};
use tidal_core::State;

use super::action::{Action, ToAgent};
use super::ctx::{Ctx, Purpose};
use super::event::{Now, ProposeError};
use super::sessions::{SessionTable, StopTarget};

/// The longest it goes without looking.
pub const LOOK_EVERY_MS: u64 = 100;
/// How long a suspended task waits for a Pending preemptor to be placed.
pub const PATIENCE_MS: u64 = 2_000;
/// Tasks per `Resume` entry.
const RESUME_BATCH: usize = 256;
/// Heartbeat intervals a session must go on carrying the agent's
/// heartbeats after a resume went out on it for the resume to count as
/// delivered.
pub const RESUME_SETTLE_BEATS: u64 = 4;

/// What an order told the agent (resumes are kept apart: `Preempt::owed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Order {
    Stop,
    Suspend,
}

#[derive(Debug, Default)]
pub(crate) struct Preempt {
    next: Option<u64>,
    preempting: bool,
    /// The tasks of the `Resume` in flight, if one is.
    resuming: Option<Vec<TaskId>>,
    /// (task, token, order) -> the session generation it went out on.
    sent: HashMap<(TaskId, FencingToken, Order), u64>,
    /// Resumes owed: (task, token) -> the session generation it last went
    /// out on and when (mono ms).
    owed: BTreeMap<(TaskId, FencingToken), Option<(u64, u64)>>,
    /// Whether the resumes an earlier leadership may owe were taken on.
    seeded: bool,
    /// Suspended tasks whose preemptor was seen Pending, since when (mono).
    waiting: BTreeMap<TaskId, u64>,
}

/// Whether online task `by` still waits for the room its preemption makes:
/// Pending and not in backoff.
fn waits(state: &State, by: TaskId) -> bool {
    state.preemptor_waits(by)
}

/// Whether held task `id` may have been suspended and resumed under its
/// current token: suspendable (others are stopped, never suspended),
/// preempted before, and not suspended now.
fn may_be_resumed(state: &State, id: TaskId) -> bool {
    state
        .lifecycle()
        .task(id)
        .is_some_and(|l| l.opts.suspendable && l.preempted > 0 && l.suspended.is_none())
}

impl Preempt {
    pub(crate) fn start(&mut self, now: Now) {
        self.next = Some(now.mono_ms);
        self.seeded = false;
    }

    pub(crate) fn next_wake(&self) -> Option<u64> {
        self.next
    }

    /// Something may have changed: look in this step.
    pub(crate) fn look(&mut self, now: Now) {
        if self.next.is_some() {
            self.next = Some(now.mono_ms);
        }
    }

    pub(crate) fn fire(&mut self, cx: &mut Ctx, table: &mut SessionTable) {
        match self.next {
            Some(at) if at <= cx.now.mono_ms => {}
            _ => return,
        }
        self.next = Some(cx.now.mono_ms + LOOK_EVERY_MS);
        if cx.state.cluster_version() < LIFECYCLE_VERSION {
            return;
        }
        if !self.seeded {
            self.seed(cx.state);
        }
        self.tell(cx, table);
        if !self.preempting {
            let connected = table.connected();
            if let Some(cmd) = plan_preemption(cx.state, &connected, cx.now.wall_ms, 1)
                .into_iter()
                .next()
            {
                if let Command::Preempt {
                    task,
                    agent,
                    victims,
                } = &cmd
                {
                    tracing::info!(task_id = %task, agent_id = %agent, victims = ?victims, "online task waits: preempting");
                }
                cx.out.propose(Purpose::Preempt, cmd);
                self.preempting = true;
            }
        }
        if self.resuming.is_none() {
            let ids = self.resumable(cx);
            if !ids.is_empty() {
                cx.out
                    .propose(Purpose::Resume, Command::Resume(ids.clone()));
                self.resuming = Some(ids);
            }
        }
    }

    /// A new leadership owes a resume to every held task that may have
    /// been resumed by an earlier one without being told (once: every held
    /// task is looked at).
    fn seed(&mut self, state: &State) {
        self.seeded = true;
        for agent in state.agents() {
            for (id, token) in &agent.tasks {
                if may_be_resumed(state, *id) {
                    self.owed.insert((*id, *token), None);
                }
            }
        }
    }

    /// Suspended tasks that may go on now.
    fn resumable(&mut self, cx: &Ctx) -> Vec<TaskId> {
        let state = cx.state;
        let mut ids = Vec::new();
        let mut waiting = BTreeMap::new();
        for (id, s) in state.suspended() {
            if ids.len() >= RESUME_BATCH {
                break;
            }
            if state.check_resume(id).is_err() {
                continue;
            }
            if waits(state, s.by) {
                let since = *self.waiting.get(&id).unwrap_or(&cx.now.mono_ms);
                waiting.insert(id, since);
                if cx.now.mono_ms < since + PATIENCE_MS {
                    continue;
                }
            }
            ids.push(id);
        }
        self.waiting = waiting;
        ids
    }

    /// Sends each order that is due to the session that holds the task,
    /// once per session.
    fn tell(&mut self, cx: &mut Ctx, table: &SessionTable) {
        let state = cx.state;
        let mut due: Vec<(TaskId, FencingToken, Order, ToAgent, String)> = Vec::new();
        for (id, p) in state.preempting() {
            // A preemptor that no longer waits needs no room.
            if !waits(state, p.by) {
                continue;
            }
            let Some((agent, token)) = state.task(id).and_then(|t| t.state.holder()) else {
                continue;
            };
            let notice = state
                .lifecycle()
                .task(id)
                .map(|l| l.opts.notice)
                .unwrap_or_default();
            // The whole grace, whenever the order goes out: the worker
            // has it from the notice (a leader killed after the commit
            // must not cut it short), and an agent that already gave
            // notice keeps its first deadline. At least 1 ms: 0 would mean
            // "the agent's own grace".
            let grace = p.grace_ms.max(1);
            due.push((
                id,
                token,
                Order::Stop,
                ToAgent::Stop {
                    task: id,
                    token,
                    reason: format!("preempted by online task {}", p.by),
                    preempt: Some((notice, grace)),
                },
                agent.clone(),
            ));
        }
        for (id, _) in state.suspended() {
            let Some((agent, token)) = state.task(id).and_then(|t| t.state.holder()) else {
                continue;
            };
            due.push((
                id,
                token,
                Order::Suspend,
                ToAgent::Suspend { task: id, token },
                agent.clone(),
            ));
        }
        let keep: HashSet<_> = due.iter().map(|d| (d.0, d.1, d.2)).collect();
        self.sent.retain(|k, _| keep.contains(k));
        for (task, token, order, msg, agent) in due {
            let key = (task, token, order);
            match table.stop_target(&agent, task, token) {
                StopTarget::Holds(generation) => {
                    if self.sent.get(&key) == Some(&generation) {
                        continue;
                    }
                    tracing::info!(agent_id = %agent, task_id = %task, token, ?order, "preemption order");
                    cx.out.push(Action::Send {
                        agent,
                        generation,
                        msg,
                    });
                    self.sent.insert(key, generation);
                }
                StopTarget::NotHeld(generation) => {
                    // Another process may run it: its lease settles it.
                    self.sent.insert(key, generation);
                }
                StopTarget::NoSession => {}
            }
        }
        self.tell_resumes(cx, table);
    }

    /// Sends each owed resume to the session that holds the task, once per
    /// session, and forgets those settled (see the module's documentation).
    fn tell_resumes(&mut self, cx: &mut Ctx, table: &SessionTable) {
        let state = cx.state;
        let now = cx.now.mono_ms;
        let settle = cx
            .cfg
            .heartbeat_interval_ms
            .saturating_mul(RESUME_SETTLE_BEATS);
        let ttl = cx.cfg.agent_ttl_ms;
        self.owed.retain(|&(task, token), sent| {
            let Some((agent, current)) = state.task(task).and_then(|t| t.state.holder()) else {
                return false;
            };
            if current != token || !may_be_resumed(state, task) {
                return false;
            }
            let StopTarget::Holds(generation) = table.stop_target(agent, task, token) else {
                // No session, or another process may run it: its lease
                // settles it.
                return true;
            };
            match *sent {
                Some((g, at)) if g == generation => {
                    // The agent's last heartbeat renewed its lease a TTL
                    // before its deadline.
                    let heard = table.deadline(agent).map(|d| d.saturating_sub(ttl));
                    heard.is_none_or(|h| h < at.saturating_add(settle))
                }
                _ => {
                    tracing::info!(agent_id = %agent, task_id = %task, token, "preemption order: resume");
                    cx.out.push(Action::Send {
                        agent: agent.clone(),
                        generation,
                        msg: ToAgent::Resume { task, token },
                    });
                    *sent = Some((generation, now));
                    true
                }
            }
        });
    }

    /// The `Preempt` entry committed: the orders go out at once (a
    /// suspension before the online task's assignment); returns the online
    /// task's grant if the entry made one, for its agent's session.
    pub(crate) fn preempted(
        &mut self,
        cx: &mut Ctx,
        table: &mut SessionTable,
        index: u64,
        response: Response,
    ) -> Vec<Granted> {
        self.preempting = false;
        // At once after a decision (more may wait); after a refusal, not
        // before the next look, so a refusal that would repeat cannot spin.
        self.next = Some(match response {
            Response::Preempted { .. } => cx.now.mono_ms,
            _ => cx.now.mono_ms + LOOK_EVERY_MS,
        });
        if cx.state.cluster_version() >= LIFECYCLE_VERSION {
            self.tell(cx, table);
        }
        match response {
            Response::Preempted {
                agent,
                granted,
                suspended,
                stopping,
            } => {
                tracing::info!(log_index = index, agent_id = %agent, suspended = suspended.len(), stopping = stopping.len(), granted = granted.is_some(), "preemption committed");
                granted.into_iter().collect()
            }
            other => {
                tracing::info!(log_index = index, response = ?other, "preemption refused at apply");
                Vec::new()
            }
        }
    }

    /// The `Resume` entry committed: the orders go out in this step.
    pub(crate) fn resumed(&mut self, cx: &mut Ctx, index: u64, response: Response) {
        let ids = self.resuming.take().unwrap_or_default();
        self.next = Some(cx.now.mono_ms);
        if let Response::Items(items) = &response {
            let done = items.iter().filter(|r| r.is_ok()).count();
            tracing::debug!(log_index = index, done, of = items.len(), "resume entry");
            // Each task resumed is owed its order under the token it holds.
            for (id, _) in ids.iter().zip(items).filter(|(_, r)| r.is_ok()) {
                if let Some((_, token)) = cx.state.task(*id).and_then(|t| t.state.holder()) {
                    self.owed.insert((*id, token), None);
                }
            }
        }
        // Resumed tasks took slots back; refused ones freed nothing.
    }

    pub(crate) fn not_committed(&mut self, cx: &mut Ctx, purpose: &Purpose, error: &ProposeError) {
        match purpose {
            Purpose::Preempt => self.preempting = false,
            _ => self.resuming = None,
        }
        self.next = Some(cx.now.mono_ms + LOOK_EVERY_MS);
        tracing::warn!(error = %error, ?purpose, "could not commit a preemption entry");
    }
}
