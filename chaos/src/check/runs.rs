//! One run per token: a fencing token of a task is run at most once.
//!
//! A worker process presents its task and token to the sink once, on one
//! connection: the sink numbers the connection (`run`), and its `begin` is
//! the run's start and its `end` (the connection closing: the worker
//! exited or was killed) the run's end. Two runs under one (task, token)
//! mean an agent started the worker of a token again, e.g. after it had
//! fenced itself and the token was sent to it once more: the second run
//! holds a token whose first run may already have written under it, and
//! the token no longer tells the two apart. Each problem names both runs,
//! their agents and their times (seconds since the run began).
//!
//! Histories written before runs were numbered count each `begin` as a run.

use std::collections::BTreeMap;

use super::{secs, Verdict};
use crate::history::Event;

/// One worker run as the sink saw it.
#[derive(Clone, Debug)]
struct Run<'a> {
    task: &'a str,
    token: u64,
    agent: &'a str,
    start: u64,
    /// `None`: still connected when the history ended.
    end: Option<u64>,
}

pub fn check(events: &[Event]) -> Verdict {
    // By the sink's run number (or, without one, by the begin's position).
    let mut runs: BTreeMap<(bool, u64), Run> = BTreeMap::new();
    for e in events.iter().filter(|e| e.proc == "sink") {
        let (Some(task), Some(token)) = (e.task.as_deref(), e.token) else {
            continue;
        };
        let agent = e.agent.as_deref().unwrap_or("?");
        match (e.f.as_str(), e.run) {
            ("begin", run) => {
                let key = run.map_or((false, e.i), |r| (true, r));
                runs.entry(key).or_insert(Run {
                    task,
                    token,
                    agent,
                    start: e.t,
                    end: None,
                });
            }
            ("end", Some(r)) => {
                if let Some(run) = runs.get_mut(&(true, r)) {
                    run.end = Some(e.t);
                }
            }
            _ => {}
        }
    }
    let mut per_token: BTreeMap<(&str, u64), Vec<Run>> = BTreeMap::new();
    for run in runs.into_values() {
        per_token
            .entry((run.task, run.token))
            .or_default()
            .push(run);
    }
    let mut problems = Vec::new();
    for ((task, token), mut runs) in per_token {
        if runs.len() < 2 {
            continue;
        }
        runs.sort_by_key(|r| r.start);
        let described: Vec<String> = runs
            .iter()
            .enumerate()
            .map(|(n, r)| {
                format!(
                    "run {} on {} from {} to {}",
                    n + 1,
                    r.agent,
                    secs(r.start),
                    r.end.map_or("the end of the history".into(), secs)
                )
            })
            .collect();
        problems.push(format!(
            "task {task} token {token} was run {} times: {}",
            runs.len(),
            described.join("; ")
        ));
    }
    Verdict {
        checker: "one run per token",
        problems,
    }
}

#[cfg(test)]
#[path = "runs_test.rs"]
mod tests;
