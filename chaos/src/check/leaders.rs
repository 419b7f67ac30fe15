//! I9-I10 as far as the nodes' own reports show them: at most one leader per
//! term; a node's term never goes back, across crashes and restarts too (its
//! vote is durable before it answers); applied never passes the last log
//! index, and never goes back while a node runs.

use std::collections::{BTreeMap, BTreeSet};

use super::Verdict;
use crate::history::Event;

pub fn check(events: &[Event]) -> Verdict {
    let mut problems = Vec::new();
    let mut leaders: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut last: BTreeMap<u64, (u64, u32, u64)> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.proc == "observer" && e.f == "status")
    {
        let (Some(node), Some(term)) = (e.node, e.term) else {
            continue;
        };
        let incarnation = e.incarnation.unwrap_or(0);
        let applied = e.applied.unwrap_or(0);
        if e.role.as_deref() == Some("leader") {
            leaders.entry(term).or_default().insert(node);
        }
        if let (Some(a), Some(l)) = (e.applied, e.last_log) {
            if a > l {
                problems.push(format!(
                    "node {node} applied {a} past its last log index {l} (event #{})",
                    e.i
                ));
            }
        }
        if let Some((t, inc, app)) = last.get(&node) {
            if term < *t {
                problems.push(format!(
                    "node {node}'s term went back from {t} to {term}{} (event #{})",
                    if incarnation != *inc {
                        " across a restart: its vote was not durable"
                    } else {
                        ""
                    },
                    e.i
                ));
            }
            if incarnation == *inc && applied < *app {
                problems.push(format!(
                    "node {node}'s applied index went back from {app} to {applied} (event #{})",
                    e.i
                ));
            }
        }
        last.insert(node, (term, incarnation, applied));
    }
    for (term, nodes) in leaders {
        if nodes.len() > 1 {
            problems.push(format!(
                "term {term} had {} leaders: {nodes:?}",
                nodes.len()
            ));
        }
    }
    Verdict {
        checker: "leaders",
        problems,
    }
}

#[cfg(test)]
#[path = "leaders_test.rs"]
mod tests;
