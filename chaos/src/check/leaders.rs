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
mod tests {
    use super::*;
    use crate::check::fixtures::H;

    fn status(node: u64, term: u64, role: &str, incarnation: u32, applied: u64) -> Event {
        Event {
            node: Some(node),
            term: Some(term),
            role: Some(role.into()),
            incarnation: Some(incarnation),
            applied: Some(applied),
            last_log: Some(applied + 1),
            ..Event::new("observer", "event", "status")
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let mut h = H::new();
        h.push(status(1, 1, "leader", 0, 5))
            .push(status(2, 1, "follower", 0, 5));
        h.push(status(1, 2, "follower", 1, 3))
            .push(status(2, 2, "leader", 0, 7));
        assert!(check(&h.events).ok());
    }

    #[test]
    fn two_leaders_in_a_term_are_caught() {
        let mut h = H::new();
        h.push(status(1, 3, "leader", 0, 5))
            .push(status(2, 3, "leader", 0, 5));
        let v = check(&h.events);
        assert!(
            v.problems.iter().any(|p| p.contains("2 leaders")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn a_term_going_back_after_a_restart_is_caught() {
        let mut h = H::new();
        h.push(status(1, 4, "follower", 0, 5))
            .push(status(1, 3, "follower", 1, 5));
        let v = check(&h.events);
        assert!(
            v.problems
                .iter()
                .any(|p| p.contains("vote was not durable")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn applied_going_back_while_running_is_caught() {
        let mut h = H::new();
        h.push(status(1, 1, "follower", 0, 9))
            .push(status(1, 1, "follower", 0, 8));
        let v = check(&h.events);
        assert!(
            v.problems
                .iter()
                .any(|p| p.contains("went back from 9 to 8")),
            "{:?}",
            v.problems
        );
    }
}
