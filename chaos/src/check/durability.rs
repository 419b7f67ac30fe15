//! I6: no acknowledged submit or observed completion is lost; no task twice;
//! no phantom task.
//!
//! - Every submit acknowledged with an id is in the end state, under its key.
//! - A key maps to one task at the end, whatever retries and unknown
//!   outcomes happened (idempotent submits).
//! - A submit that certainly failed (`fail`) left no task; every task at the
//!   end was asked for by some submit.
//! - A finished task seen by a linearizable read is finished the same way at
//!   the end (an observed completion is durable).

use std::collections::{BTreeMap, BTreeSet};

use super::{final_tasks, has_final, is_terminal, Verdict};
use crate::history::{ops, Event};

pub fn check(events: &[Event]) -> Verdict {
    let mut problems = Vec::new();
    if !has_final(events) {
        problems.push("the run recorded no end state; nothing can be checked".to_string());
        return Verdict {
            checker: "durability",
            problems,
        };
    }
    let finals = final_tasks(events);
    let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, e) in &finals {
        by_key
            .entry(e.key.as_deref().unwrap_or(""))
            .or_default()
            .push(id);
    }
    for (key, ids) in &by_key {
        if ids.len() > 1 {
            problems.push(format!(
                "key {key:?} has {} tasks: {ids:?} (a duplicate submit)",
                ids.len()
            ));
        }
    }
    let ops = ops(events);
    let mut asked: BTreeSet<&str> = BTreeSet::new();
    let mut failed: BTreeSet<&str> = BTreeSet::new();
    for op in ops.iter().filter(|o| o.f() == "submit") {
        let key = op.invoke.key.as_deref().unwrap_or("");
        asked.insert(key);
        match op.done {
            Some(d) if d.kind == "ok" => {
                let id = d.task.as_deref().unwrap_or("");
                match finals.get(id) {
                    None => {
                        problems.push(format!("acknowledged submit of {id} (key {key:?}) is lost"))
                    }
                    Some(f) if f.key.as_deref() != Some(key) => problems.push(format!(
                        "task {id} was acknowledged for key {key:?} but ends with key {:?}",
                        f.key
                    )),
                    Some(_) => {}
                }
            }
            Some(d) if d.kind == "fail" => {
                failed.insert(key);
            }
            _ => {}
        }
    }
    for (key, ids) in &by_key {
        if failed.contains(key) {
            problems.push(format!(
                "submit of key {key:?} failed for certain, yet task(s) {ids:?} exist"
            ));
        }
        if !asked.contains(key) {
            problems.push(format!(
                "task(s) {ids:?} with key {key:?} were never submitted (a phantom)"
            ));
        }
    }
    for op in ops.iter().filter(|o| o.f() == "get" || o.f() == "cancel") {
        let Some(d) = op.ok() else { continue };
        let (Some(id), Some(state)) = (d.task.as_deref(), d.state.as_deref()) else {
            continue;
        };
        if !is_terminal(state) {
            continue;
        }
        match finals.get(id) {
            None => problems.push(format!("task {id}, seen {state} at {}, is lost", d.t)),
            Some(f) if f.state.as_deref() != Some(state) || f.token != d.token => {
                problems.push(format!(
                    "task {id} was seen {state} (token {:?}) but ends {:?} (token {:?})",
                    d.token, f.state, f.token
                ))
            }
            Some(_) => {}
        }
    }
    Verdict {
        checker: "durability",
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::fixtures::H;
    use crate::history::Event;

    fn good() -> H {
        let mut h = H::new();
        h.submit("c1", "k1", "t1", 5).submit("c2", "k2", "t2", 6);
        h.get("c1", "t1", "succeeded", 1, 9, "a1", 10);
        h.final_task("t1", "k1", "succeeded", 1, 9, "a1");
        h.final_task("t2", "k2", "pending", 0, 0, "");
        h.final_done();
        h
    }

    #[test]
    fn a_clean_history_passes() {
        let v = check(&good().events);
        assert!(v.ok(), "{:?}", v.problems);
    }

    #[test]
    fn a_lost_submit_is_caught() {
        let mut h = H::new();
        h.submit("c1", "k1", "t1", 5).submit("c2", "k2", "t2", 6);
        h.final_task("t1", "k1", "pending", 0, 0, "").final_done();
        let v = check(&h.events);
        assert!(
            v.problems
                .iter()
                .any(|p| p.contains("t2") && p.contains("lost")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn a_duplicate_and_a_phantom_are_caught() {
        let mut h = good();
        h.final_task("t3", "k2", "pending", 0, 0, "");
        h.final_task("t4", "never", "pending", 0, 0, "");
        let v = check(&h.events);
        assert!(
            v.problems.iter().any(|p| p.contains("duplicate")),
            "{:?}",
            v.problems
        );
        assert!(
            v.problems.iter().any(|p| p.contains("phantom")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn a_lost_completion_is_caught() {
        let mut h = H::new();
        h.submit("c1", "k1", "t1", 5);
        h.get("c1", "t1", "succeeded", 1, 9, "a1", 10);
        h.final_task("t1", "k1", "pending", 1, 0, "").final_done();
        let v = check(&h.events);
        assert!(
            v.problems.iter().any(|p| p.contains("seen succeeded")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn a_certainly_failed_submit_must_leave_nothing() {
        let mut h = H::new();
        h.push(Event {
            key: Some("k9".into()),
            ..Event::new("c1", "invoke", "submit")
        });
        h.push(Event::new("c1", "fail", "submit"));
        h.final_task("t9", "k9", "pending", 0, 0, "").final_done();
        let v = check(&h.events);
        assert!(
            v.problems.iter().any(|p| p.contains("failed for certain")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn no_end_state_is_a_problem() {
        let mut h = H::new();
        h.submit("c1", "k1", "t1", 5);
        assert!(!check(&h.events).ok());
    }
}
