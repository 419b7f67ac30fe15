//! Regrants: a new session's held tasks that its process does not run are granted again under new tokens, once whoever may still run them has stopped.
//!
//! A session's reconcile ([`super::leases`]) finds the assignments the agent
//! id holds that the registering process did not report running. They wait
//! until `regrant_at` (the lease of the process that may still run them has
//! ended), then the handler proposes `Regrant`. When another known process
//! held the id (a take-over), it first proposes them as started
//! (`StartedBatch`), so the regrant spends an attempt: that process may have
//! started them without its report reaching the leader. Tokens already
//! running or settled are refused there, harmlessly. The same goes for the
//! assignments the process itself names as killed when it fenced itself
//! (`Register.fenced`): it started them. (After an election the holder is
//! unknown: what no process names keeps its attempt.) The granted
//! assignments go to the agent's session like any other (`Leases::granted`).
//!
//! Each session's regrant is its own: a later session of the same agent
//! does not cancel an earlier one's (a regrant of tokens already regranted
//! is refused, harmlessly).

use std::collections::BTreeMap;

use tidal_core::command::{Command, Granted, Response};
use tidal_core::model::{AgentId, FencingToken, TaskId};

use super::ctx::{Ctx, Purpose};
use super::event::ProposeError;

/// What a new session's reconcile leaves to regrant.
#[derive(Debug, Default)]
pub(crate) struct Held {
    /// Assignments of the agent id that the process did not report running.
    pub(crate) tasks: Vec<(TaskId, FencingToken)>,
    /// Another process may still run them until then (`mono_ms`): regrant
    /// no earlier (`None`: now).
    pub(crate) at: Option<u64>,
    /// Another known agent process held the id: count them as started first.
    pub(crate) taken_over: bool,
    /// Those of `tasks` the process killed when it fenced itself: counted
    /// as started first.
    pub(crate) ran: Vec<(TaskId, FencingToken)>,
}

/// One session's tasks to regrant.
#[derive(Debug)]
struct Waiting {
    agent: AgentId,
    tasks: Vec<(TaskId, FencingToken)>,
    /// What to count as started before the regrant.
    started: Vec<(TaskId, FencingToken)>,
}

/// The regrants waiting for their time.
#[derive(Debug, Default)]
pub(crate) struct Regrants {
    /// By (due `mono_ms`, arrival): each proposed once due.
    waiting: BTreeMap<(u64, u64), Waiting>,
    arrivals: u64,
}

impl Regrants {
    /// A session of `agent` attached: what it holds and does not run waits
    /// for its time.
    pub(crate) fn add(&mut self, cx: &mut Ctx, agent: AgentId, held: Held) {
        let Held {
            tasks,
            at,
            taken_over,
            ran,
        } = held;
        if tasks.is_empty() {
            return;
        }
        let now = cx.now.mono_ms;
        if let Some(at) = at {
            tracing::info!(
                agent_id = %agent,
                held = tasks.len(),
                wait_ms = at.saturating_sub(now),
                "tasks the agent id holds that this process does not run are regranted once the \
                 lease of the process that may still run them has ended"
            );
        }
        self.arrivals += 1;
        self.waiting.insert(
            (at.unwrap_or(now), self.arrivals),
            Waiting {
                agent,
                started: if taken_over { tasks.clone() } else { ran },
                tasks,
            },
        );
    }

    /// When the next regrant is due.
    pub(crate) fn next_wake(&self) -> Option<u64> {
        self.waiting.keys().next().map(|(at, _)| *at)
    }

    /// Proposes every regrant that is due (its started batch first, if any).
    pub(crate) fn fire(&mut self, cx: &mut Ctx) {
        while let Some(entry) = self.waiting.first_entry() {
            if entry.key().0 > cx.now.mono_ms {
                return;
            }
            let Waiting {
                agent,
                tasks,
                started,
            } = entry.remove();
            if !started.is_empty() {
                cx.out.propose(
                    Purpose::RegrantStarted { agent, tasks },
                    Command::StartedBatch(started),
                );
            } else {
                propose_regrant(cx, agent, tasks);
            }
        }
    }

    /// The held tasks were recorded as started: regrant them now. (Every
    /// result is fine: a token already running or settled was refused.)
    pub(crate) fn started(
        &mut self,
        cx: &mut Ctx,
        agent: AgentId,
        tasks: Vec<(TaskId, FencingToken)>,
        response: Response,
    ) {
        match response {
            Response::StartedBatch(_) => propose_regrant(cx, agent, tasks),
            other => {
                tracing::warn!(agent_id = %agent, response = ?other, "could not record the held tasks as started; not regranting them now")
            }
        }
    }

    /// The started batch did not commit: the regrant is dropped (the tasks
    /// stay held under their old tokens, which are never pushed again; the
    /// next session, or the lease, settles them).
    pub(crate) fn not_started(&mut self, agent: AgentId, error: &ProposeError) {
        tracing::warn!(agent_id = %agent, error = %error, "could not record the held tasks as started; not regranting them now");
    }

    /// The regrant committed: its granted assignments, to push on the
    /// agent's session (none if it was not applied as a regrant).
    pub(crate) fn committed(
        &mut self,
        agent: AgentId,
        held: usize,
        index: u64,
        response: Response,
    ) -> Option<Vec<Granted>> {
        match response {
            Response::Regranted {
                granted,
                requeued,
                failed,
                rejected,
            } => {
                tracing::info!(
                    agent_id = %agent,
                    log_index = index,
                    held,
                    regranted = granted.len(),
                    requeued = requeued.len(),
                    failed = failed.len(),
                    settled_elsewhere = rejected.len(),
                    "the agent did not run tasks it held: granted again under new tokens"
                );
                Some(granted)
            }
            other => {
                tracing::warn!(agent_id = %agent, response = ?other, "unexpected response to regrant");
                None
            }
        }
    }

    /// Not committed: the tasks stay held under their old tokens, which are
    /// never pushed again; the next session (or the lease) settles them.
    pub(crate) fn not_committed(&mut self, agent: AgentId, error: &ProposeError) {
        tracing::warn!(agent_id = %agent, error = %error, "could not commit the regrant");
    }
}

fn propose_regrant(cx: &mut Ctx, agent: AgentId, tasks: Vec<(TaskId, FencingToken)>) {
    let held = tasks.len();
    cx.out.propose(
        Purpose::Regrant {
            agent: agent.clone(),
            held,
        },
        Command::Regrant { agent, tasks },
    );
}
