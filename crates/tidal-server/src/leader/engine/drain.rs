//! Drains: once a draining agent's deadline has passed, tells the session that holds each of its tasks to stop it.
//!
//! The deadline is in the state, so a new leader carries on an old
//! leader's drain. The agent reports each stopped task, which its session
//! commits as `Command::Stopped`. Only a session that holds the task
//! (reported it running when it registered, or had it pushed) is told.
//! Which stops are due is tidal-core's pure [`tidal_core::drain::due_stops`];
//! this handler decides whom to tell, and remembers on which session it did.

use std::collections::HashMap;

use tidal_core::drain::{due_stops, next_deadline, DueStop};
use tidal_core::model::{FencingToken, TaskId};

use super::action::{Action, ToAgent};
use super::ctx::Ctx;
use super::event::Now;
use super::sessions::{SessionTable, StopTarget};

/// The longest it goes without looking: a new session of a draining agent
/// past its deadline is told within this.
pub const LOOK_EVERY_MS: u64 = 250;

/// The reason a stop order gives the agent.
const DEADLINE_PASSED: &str = "the agent's drain deadline passed";

#[derive(Debug, Default)]
pub(crate) struct Drain {
    /// When the next look is due.
    next: Option<u64>,
    /// (task, token) -> the session generation the stop went out on (or was
    /// found not to hold it): told again only on a newer session (the old
    /// one may have lost it).
    sent: HashMap<(TaskId, FencingToken), u64>,
}

impl Drain {
    pub(crate) fn start(&mut self, now: Now) {
        self.next = Some(now.mono_ms);
    }

    /// A drain started, ended or changed: look now.
    pub(crate) fn changed(&mut self, now: Now) {
        if self.next.is_some() {
            self.next = Some(now.mono_ms);
        }
    }

    pub(crate) fn next_wake(&self) -> Option<u64> {
        self.next
    }

    pub(crate) fn fire(&mut self, cx: &mut Ctx, table: &SessionTable) {
        match self.next {
            Some(at) if at <= cx.now.mono_ms => {}
            _ => return,
        }
        let wall = cx.now.wall_ms;
        let due = due_stops(cx.state, wall);
        let wait = next_deadline(cx.state, wall)
            .map(|d| d.saturating_sub(wall))
            .unwrap_or(LOOK_EVERY_MS)
            .min(LOOK_EVERY_MS);
        self.next = Some(cx.now.mono_ms + wait);
        self.sent
            .retain(|(task, token), _| due.iter().any(|d| d.task == *task && d.token == *token));
        for stop in &due {
            self.tell(cx, table, stop);
        }
    }

    fn tell(&mut self, cx: &mut Ctx, table: &SessionTable, stop: &DueStop) {
        let Some(generation) = table.generation(&stop.agent) else {
            // Not connected: told when it reconnects, or its lease runs out
            // and the agent is marked down (its tasks requeued then).
            return;
        };
        let key = (stop.task, stop.token);
        if self.sent.get(&key) == Some(&generation) {
            return;
        }
        // Only the session that holds the assignment is told: a process that
        // took the id over (or the first session after an election) did not
        // report it running, so another process may still run it; the
        // session's delayed Regrant settles it once that process's lease has
        // ended.
        match table.stop_target(&stop.agent, stop.task, stop.token) {
            StopTarget::Holds(generation) => {
                tracing::info!(
                    agent_id = %stop.agent,
                    task_id = %stop.task,
                    token = stop.token,
                    "drain deadline passed: told the agent to stop the task"
                );
                cx.out.push(Action::Send {
                    agent: stop.agent.clone(),
                    generation,
                    msg: ToAgent::Stop {
                        task: stop.task,
                        token: stop.token,
                        reason: DEADLINE_PASSED.into(),
                        preempt: None,
                    },
                });
                self.sent.insert(key, generation);
            }
            StopTarget::NotHeld(generation) => {
                tracing::info!(
                    agent_id = %stop.agent,
                    task_id = %stop.task,
                    token = stop.token,
                    "drain deadline passed, but the agent's session does not run the task (another process \
                     under this id may still run it): not stopping it here; it is requeued once that \
                     process's lease has ended"
                );
                self.sent.insert(key, generation);
            }
            StopTarget::NoSession => {}
        }
    }
}
