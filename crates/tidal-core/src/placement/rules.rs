//! Tag rules (affinity, anti-affinity, max-per) over the tags of the tasks
//! an agent, or a group of agents sharing a label value, holds.

use std::collections::BTreeMap;

use crate::placement::types::{PlaceAsk, Scope, TagRule};

/// The group an agent is in for a scope: `(None, agent id)` for the agent
/// scope, `(Some(key), value)` for a label (value "" if it has no such label).
pub fn group_of(
    scope: &Scope,
    agent: &str,
    labels: &BTreeMap<String, String>,
) -> (Option<String>, String) {
    match scope {
        Scope::Agent => (None, agent.to_string()),
        Scope::Label(k) => (Some(k.clone()), labels.get(k).cloned().unwrap_or_default()),
    }
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
