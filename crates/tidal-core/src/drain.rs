//! What a drain asks of the leader between entries: which tasks to have
//! their agents stop now, and when to look again.
//!
//! A drain's deadline is in the state (`AgentState::Draining`), as an
//! absolute time on the leader's clock, so whichever node leads when it
//! passes acts on it. The leader's drain driver calls [`due_stops`] with
//! its clock and tells each agent to stop the tasks listed; the agent
//! reports each stopped task, which the leader commits as
//! `Command::Stopped` (the task goes back to Pending, keeping its attempt).

use crate::model::{AgentId, FencingToken, TaskId};
use crate::state::State;

/// A task whose agent must stop it: its drain's deadline has passed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DueStop {
    pub agent: AgentId,
    pub task: TaskId,
    pub token: FencingToken,
}

/// Every task held by an agent whose drain deadline is at or before
/// `now_ms`, in agent then task order.
pub fn due_stops(state: &State, now_ms: u64) -> Vec<DueStop> {
    let mut out = Vec::new();
    for agent in state.agents() {
        if agent.drain_deadline().is_some_and(|d| d <= now_ms) {
            for (task, token) in &agent.tasks {
                out.push(DueStop {
                    agent: agent.spec.id.clone(),
                    task: *task,
                    token: *token,
                });
            }
        }
    }
    out
}

/// The earliest drain deadline after `now_ms` of an agent that holds
/// tasks: when [`due_stops`] next has something new to say.
pub fn next_deadline(state: &State, now_ms: u64) -> Option<u64> {
    state
        .agents()
        .filter(|a| !a.tasks.is_empty())
        .filter_map(|a| a.drain_deadline())
        .filter(|d| *d > now_ms)
        .min()
}

#[cfg(test)]
#[path = "drain_test.rs"]
mod tests;
