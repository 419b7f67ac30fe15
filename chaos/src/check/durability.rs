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
#[path = "durability_test.rs"]
mod tests;
