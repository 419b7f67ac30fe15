//! I8: each forwarded task ingested exactly once, in order per origin, no
//! phantoms; and every task forwarded to the other DC ends there.
//!
//! Reads the end state of both DCs: the first DC's `final` events (a
//! forwarded task names `DC/ID` where it went in `remote`) and the second
//! DC's `final-remote` events (each ingested task names `DC/ID` of its
//! origin in `remote`).
//!
//! - Exactly once: no two tasks of the second DC come from the same origin
//!   task, and a forwarded task's remote id is the one task that came from it.
//! - No phantoms: every ingested task comes from a task of the first DC that
//!   says it was forwarded there.
//! - In order: the second DC took the first DC's tasks in the order the
//!   first DC forwarded them; the workload forwards in submit order (one
//!   queue, one priority, nothing refused), so the second DC's ids rise with
//!   the origin ids.
//! - Delivered: no task submitted for the second DC (its key ends in
//!   `-remote`) is left unfinished or undelivered after healing.

use std::collections::BTreeMap;

use super::{final_tasks, is_terminal, Verdict};
use crate::history::Event;

/// The suffix of keys of tasks only the second DC can run.
pub const REMOTE_KEY_SUFFIX: &str = "-remote";

pub fn check(events: &[Event]) -> Verdict {
    let mut problems = Vec::new();
    let finals = final_tasks(events);
    let ingested: Vec<&Event> = events
        .iter()
        .filter(|e| e.proc == "runner" && e.f == "final-remote")
        .collect();
    if ingested.is_empty() && !finals.values().any(|f| f.remote.is_some()) {
        return Verdict {
            checker: "forwarding",
            problems,
        };
    }
    let id_of = |r: &str| r.split_once('/').map(|(_, id)| id.to_string());

    // Origin id -> the tasks of the second DC that came from it.
    let mut by_origin: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for e in &ingested {
        let (Some(task), Some(origin)) = (e.task.as_deref(), e.remote.as_deref()) else {
            problems.push(format!("an ingested task without its origin: {e:?}"));
            continue;
        };
        let Some(origin_id) = id_of(origin) else {
            problems.push(format!(
                "ingested task {task} names a malformed origin {origin:?}"
            ));
            continue;
        };
        by_origin.entry(origin_id).or_default().push(task);
    }
    for (origin, tasks) in &by_origin {
        if tasks.len() > 1 {
            problems.push(format!(
                "origin task {origin} was ingested {} times: {tasks:?}",
                tasks.len()
            ));
        }
        match finals.get(origin.as_str()).and_then(|f| f.remote.as_deref()) {
            None => problems.push(format!(
                "ingested {tasks:?} from origin task {origin}, which does not say it was forwarded: a phantom"
            )),
            Some(r) => {
                let named = id_of(r).unwrap_or_default();
                if !named.is_empty() && !tasks.contains(&named.as_str()) {
                    problems.push(format!(
                        "origin task {origin} says it runs as {named}, but the other DC holds it as {tasks:?}"
                    ));
                }
            }
        }
    }

    // In order per origin.
    let num = |s: &str| s.trim_start_matches('t').parse::<u64>().ok();
    let mut order: Vec<(u64, u64)> = by_origin
        .iter()
        .filter_map(|(origin, tasks)| Some((num(tasks.first()?)?, num(origin)?)))
        .collect();
    order.sort_unstable();
    for w in order.windows(2) {
        if w[1].1 < w[0].1 {
            problems.push(format!(
                "out of order: t{:010} ingested as t{:010} after t{:010} as t{:010}",
                w[1].1, w[1].0, w[0].1, w[0].0
            ));
        }
    }

    // Delivered and finished.
    for (id, f) in &finals {
        let remote_task = f
            .key
            .as_deref()
            .is_some_and(|k| k.ends_with(REMOTE_KEY_SUFFIX));
        if !remote_task {
            continue;
        }
        let state = f.state.as_deref().unwrap_or("");
        if state == "cancelled" {
            continue;
        }
        match f.remote.as_deref() {
            None => problems.push(format!(
                "task {id} for the other DC was never forwarded ({state})"
            )),
            Some(r) if id_of(r).is_none_or(|i| i.is_empty()) => problems.push(format!(
                "task {id} was forwarded ({r}) but never accepted ({state})"
            )),
            Some(_) if !is_terminal(state) => problems.push(format!(
                "task {id} runs elsewhere but never finished ({state})"
            )),
            Some(_) => {}
        }
    }
    Verdict {
        checker: "forwarding",
        problems,
    }
}

#[cfg(test)]
#[path = "forwarding_test.rs"]
mod tests;
