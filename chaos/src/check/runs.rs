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
mod tests {
    use super::*;
    use crate::check::fixtures::{sink_event as ev, H};

    fn good() -> H {
        let mut h = H::new();
        h.push(ev("begin", "t1", 7, "a1", 1))
            .push(ev("begin", "t2", 8, "a2", 2))
            .push(ev("commit", "t1", 7, "a1", 1))
            .push(ev("end", "t1", 7, "a1", 1))
            .push(ev("commit", "t2", 8, "a2", 2))
            .push(ev("end", "t2", 8, "a2", 2))
            // Granted again: a new token, a new run.
            .push(ev("begin", "t1", 12, "a2", 3))
            .push(ev("end", "t1", 12, "a2", 3));
        h
    }

    /// The fixture's clock ticks 10 ns per event: make it one second, so
    /// event k happens at k s.
    fn in_seconds(h: &H) -> Vec<Event> {
        let mut events = h.events.clone();
        for e in &mut events {
            e.t *= 100_000_000;
        }
        events
    }

    #[test]
    fn a_clean_history_passes() {
        let v = check(&in_seconds(&good()));
        assert!(v.ok(), "{:?}", v.problems);
    }

    #[test]
    fn a_second_run_of_one_token_is_caught_with_both_times() {
        let mut h = good();
        h.push(ev("begin", "t1", 7, "a1", 4))
            .push(ev("end", "t1", 7, "a1", 4));
        let v = check(&in_seconds(&h));
        assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
        assert_eq!(
            v.problems[0],
            "task t1 token 7 was run 2 times: run 1 on a1 from 1.000s to 4.000s; \
             run 2 on a1 from 9.000s to 10.000s"
        );
    }

    #[test]
    fn a_second_run_still_going_at_the_end_is_caught() {
        let mut h = good();
        h.push(ev("begin", "t2", 8, "a1", 4));
        let v = check(&h.events);
        assert!(
            v.problems
                .iter()
                .any(|p| p.contains("token 8 was run 2 times")
                    && p.contains("to the end of the history")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn unnumbered_begins_count_as_runs() {
        let mut h = H::new();
        h.sink("begin", "t1", 7, "a1", true)
            .sink("end", "t1", 7, "a1", true)
            .sink("begin", "t1", 7, "a1", true);
        let v = check(&h.events);
        assert!(
            v.problems.iter().any(|p| p.contains("was run 2 times")),
            "{:?}",
            v.problems
        );
        let mut once = H::new();
        once.sink("begin", "t1", 7, "a1", true)
            .sink("commit", "t1", 7, "a1", true)
            .sink("end", "t1", 7, "a1", true);
        assert!(check(&once.events).ok());
    }
}
