//! What a registering agent's session settles: the held tasks to regrant and the reported runs to cancel.
//!
//! When an agent process opens a session it names the (task, token) pairs
//! it runs. The leader compares them with what the state says the agent id
//! holds. A held assignment the process does not report under its current
//! token is regranted under a new token, never sent again under the old
//! one (the process may have run it and stopped it when it fenced itself).
//! A reported run whose task is not held by this agent under that token is
//! cancelled.

use std::collections::BTreeSet;

use crate::model::{FencingToken, TaskId};
use crate::state::State;

/// What a session's reconcile decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settlement {
    /// Assignments the agent id holds that the process did not report, in
    /// task order: to be regranted under new tokens.
    pub regrant: Vec<(TaskId, FencingToken)>,
    /// Reported runs (the task id as the agent sent it, and its token) that
    /// are not the task's current assignment to this agent, in the order
    /// reported: to be cancelled on the session.
    pub cancel: Vec<(String, FencingToken)>,
}

/// Settles the runs `reported` by a new session of `agent` (task ids as the
/// agent sent them) against `state`.
///
/// A held assignment counts as reported only when the agent named it by its
/// canonical id (`t` and ten digits, as the leader sends it) and its token. A
/// reported run is cancelled unless its id parses to a task whose current
/// holder is `agent` under the reported token; an id that does not parse is
/// always cancelled.
pub fn settle(state: &State, agent: &str, reported: &[(String, FencingToken)]) -> Settlement {
    let named: BTreeSet<(&str, FencingToken)> = reported
        .iter()
        .map(|(id, tok)| (id.as_str(), *tok))
        .collect();
    let regrant = state
        .agent(agent)
        .map(|a| {
            a.tasks
                .iter()
                .filter(|(task, token)| !named.contains(&(task.to_string().as_str(), **token)))
                .map(|(task, token)| (*task, *token))
                .collect()
        })
        .unwrap_or_default();
    let cancel = reported
        .iter()
        .filter(|(id, token)| {
            let current = id
                .parse::<TaskId>()
                .ok()
                .and_then(|task| state.task(task))
                .and_then(|t| t.state.holder());
            !matches!(current, Some((holder, t)) if holder == agent && t == *token)
        })
        .cloned()
        .collect();
    Settlement { regrant, cancel }
}

/// The assignments among `regrant` that the process named as killed when it
/// fenced itself (`fenced`, task ids as it sent them), in `regrant`'s order:
/// it started them, so they are counted as started before they are granted
/// again, and the new grant spends an attempt.
pub fn ran_here(
    regrant: &[(TaskId, FencingToken)],
    fenced: &[(String, FencingToken)],
) -> Vec<(TaskId, FencingToken)> {
    let named: BTreeSet<(&str, FencingToken)> =
        fenced.iter().map(|(id, tok)| (id.as_str(), *tok)).collect();
    regrant
        .iter()
        .filter(|(task, token)| named.contains(&(task.to_string().as_str(), *token)))
        .copied()
        .collect()
}

#[cfg(test)]
#[path = "reconcile_test.rs"]
mod tests;
