//! Tag rules (affinity, anti-affinity, max-per) over the tags of the tasks
//! an agent, or a group of agents sharing a label value, holds.

use std::collections::BTreeMap;

use crate::placement::types::{PlaceAsk, Scope, TagRule};

/// The group an agent is in for a scope: `(Some(key), value)` for a label
/// the agent has; `(None, agent id)` for the agent scope, and for a label it
/// does not have (an agent without the label is a group of its own).
pub fn group_of(
    scope: &Scope,
    agent: &str,
    labels: &BTreeMap<String, String>,
) -> (Option<String>, String) {
    match scope {
        Scope::Label(k) if labels.contains_key(k) => (Some(k.clone()), labels[k].clone()),
        _ => (None, agent.to_string()),
    }
}

/// Every group an agent is in: its own, and one per label.
pub fn groups_of(agent: &str, labels: &BTreeMap<String, String>) -> Vec<(Option<String>, String)> {
    std::iter::once((None, agent.to_string()))
        .chain(labels.iter().map(|(k, v)| (Some(k.clone()), v.clone())))
        .collect()
}

/// The first of the ask's rules that the agent breaks, given `count(group,
/// tag)` (held tasks with the tag in the group) and `total(tag)` (held tasks
/// with the tag anywhere).
pub fn first_broken<'a>(
    _ask: &'a PlaceAsk,
    _agent: &str,
    _labels: &BTreeMap<String, String>,
    _count: impl Fn(&(Option<String>, String), &str) -> u32,
    _total: impl Fn(&str) -> u32,
) -> Option<&'a TagRule> {
    None
}
