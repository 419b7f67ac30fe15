//! Preemption: proposes `Preempt` for online work no agent can take, tells
//! agents to stop or suspend the victims, proposes `Resume` once a
//! suspended task's preemptor has ended, and tells agents to resume them.
//!
//! Which preemption is tidal-core's pure
//! [`tidal_core::lifecycle::plan_preemption`], looked at after the dispatch
//! round of the same step and at most [`LOOK_EVERY_MS`] apart; one
//! `Preempt` and one `Resume` are in flight at a time. The orders derive
//! from the state, so a new leader (or an agent's new session) carries on:
//! every task told to stop for a preemption gets `ToAgent::Stop` with its
//! notice and the grace left, every suspended task `ToAgent::Suspend`, and
//! every held task that was preempted and is not suspended now
//! `ToAgent::Resume` (all idempotent at the agent), each once per session
//! that holds it. A task an online task was granted with by the `Preempt`
//! entry goes to the agent like a dispatch round's.
//!
//! A suspended task whose preemptor is Pending again (stopped victims of
//! the same preemption have stopped) is resumed only after [`PATIENCE_MS`],
//! so the dispatcher places the preemptor first.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use tidal_core::command::{Command, Granted, Response};
use tidal_core::lifecycle::{plan_preemption, LIFECYCLE_VERSION};
use tidal_core::model::{AgentId, FencingToken, TaskId, TaskState};

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

/// What an order told the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Order {
    Stop,
    Suspend,
    Resume,
}

#[derive(Debug, Default)]
pub(crate) struct Preempt {
    next: Option<u64>,
    preempting: bool,
    resuming: bool,
    /// (task, token, order) -> the session generation it went out on.
    sent: HashMap<(TaskId, FencingToken, Order), u64>,
    /// Suspended tasks whose preemptor was seen Pending, since when (mono).
    waiting: BTreeMap<TaskId, u64>,
}

impl Preempt {
    pub(crate) fn start(&mut self, now: Now) {
        self.next = Some(now.mono_ms);
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
        let connected = table.connected();
        self.tell(cx, table, &connected);
        if !self.preempting {
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
        if !self.resuming {
            let ids = self.resumable(cx);
            if !ids.is_empty() {
                cx.out.propose(Purpose::Resume, Command::Resume(ids));
                self.resuming = true;
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
            let by_pending = state.task(s.by).is_some_and(|t| {
                t.state == TaskState::Pending
                    && state
                        .lifecycle()
                        .task(s.by)
                        .is_none_or(|l| l.not_before_ms.is_none())
            });
            if by_pending {
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
    fn tell(&mut self, cx: &mut Ctx, table: &SessionTable, connected: &BTreeSet<AgentId>) {
        let state = cx.state;
        let wall = cx.now.wall_ms;
        let mut due: Vec<(TaskId, FencingToken, Order, ToAgent, String)> = Vec::new();
        for (id, p) in state.preempting() {
            let Some((agent, token)) = state.task(id).and_then(|t| t.state.holder()) else {
                continue;
            };
            let notice = state
                .lifecycle()
                .task(id)
                .map(|l| l.opts.notice)
                .unwrap_or_default();
            // At least 1 ms: 0 would mean "the agent's own grace".
            let left = (p.at_ms + p.grace_ms).saturating_sub(wall).max(1);
            due.push((
                id,
                token,
                Order::Stop,
                ToAgent::Stop {
                    task: id,
                    token,
                    reason: format!("preempted by online task {}", p.by),
                    preempt: Some((notice, left)),
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
        // Tasks that were suspended and are not now: a resume may have
        // been lost with a leader or a session (resuming a running task is
        // harmless).
        for agent in connected {
            let Some(a) = state.agent(agent) else {
                continue;
            };
            for (id, token) in &a.tasks {
                let resumed = state
                    .lifecycle()
                    .task(*id)
                    .is_some_and(|l| l.preempted > 0 && l.suspended.is_none());
                if resumed {
                    due.push((
                        *id,
                        *token,
                        Order::Resume,
                        ToAgent::Resume {
                            task: *id,
                            token: *token,
                        },
                        agent.clone(),
                    ));
                }
            }
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
            let connected = table.connected();
            self.tell(cx, table, &connected);
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
        self.resuming = false;
        self.next = Some(cx.now.mono_ms);
        if let Response::Items(items) = &response {
            let done = items.iter().filter(|r| r.is_ok()).count();
            tracing::debug!(log_index = index, done, of = items.len(), "resume entry");
        }
        // Resumed tasks took slots back; refused ones freed nothing.
    }

    pub(crate) fn not_committed(&mut self, cx: &mut Ctx, purpose: &Purpose, error: &ProposeError) {
        match purpose {
            Purpose::Preempt => self.preempting = false,
            _ => self.resuming = false,
        }
        self.next = Some(cx.now.mono_ms + LOOK_EVERY_MS);
        tracing::warn!(error = %error, ?purpose, "could not commit a preemption entry");
    }
}
