//! No two executions of one task overlap in time, and a killed agent's
//! workers die with it.
//!
//! An execution is one worker run as the sink saw it: the connection on
//! which a worker presented its task and token, from its `begin` to its
//! `end` (the worker exited or was killed, closing it). Unlike the
//! exclusivity checker's overlap check, which merges the runs of a token,
//! this one compares every run with every other of the same task, whatever
//! their tokens: two runs of one task that overlap mean two copies of it
//! worked at once. Skipped when agents were paused (a paused agent cannot
//! stop its workers; the token checks still hold).
//!
//! A SIGKILLed agent (the nemesis's `kill-agent`, naming the agent)
//! leaves no worker: every run of that agent that had begun and not ended
//! at the kill must end within [`KILL_BOUND`] of it. Each problem names the
//! runs, their agents and their times (seconds since the run began).

use std::collections::BTreeMap;

use super::{secs, Facts, Verdict};
use crate::history::Event;

/// How long a killed agent's workers may outlive it.
pub const KILL_BOUND_NANOS: u64 = 1_000_000_000;
/// The same, for the docs.
pub const KILL_BOUND: std::time::Duration = std::time::Duration::from_nanos(KILL_BOUND_NANOS);

#[derive(Clone, Debug)]
struct Run<'a> {
    task: &'a str,
    token: u64,
    agent: &'a str,
    start: u64,
    /// `None`: still connected when the history ended.
    end: Option<u64>,
}

fn until(end: Option<u64>) -> String {
    end.map_or_else(|| "the end of the history".to_string(), secs)
}

pub fn check(events: &[Event], facts: &Facts) -> Verdict {
    let mut problems = Vec::new();
    let mut runs: BTreeMap<u64, Run> = BTreeMap::new();
    for e in events.iter().filter(|e| e.proc == "sink") {
        let (Some(task), Some(token), Some(run)) = (e.task.as_deref(), e.token, e.run) else {
            continue;
        };
        match e.f.as_str() {
            "begin" => {
                runs.entry(run).or_insert(Run {
                    task,
                    token,
                    agent: e.agent.as_deref().unwrap_or("?"),
                    start: e.t,
                    end: None,
                });
            }
            "end" => {
                if let Some(r) = runs.get_mut(&run) {
                    r.end = Some(e.t);
                }
            }
            _ => {}
        }
    }

    if !facts.agents_paused {
        let mut per_task: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
        for r in runs.values() {
            per_task.entry(r.task).or_default().push(r);
        }
        for (task, rs) in per_task.iter_mut() {
            rs.sort_by_key(|r| r.start);
            // The run that ends last among those begun so far.
            let mut longest: Option<&Run> = None;
            for r in rs.iter() {
                if let Some(l) = longest {
                    if l.end.is_none_or(|e| r.start < e) {
                        problems.push(format!(
                            "task {task}: an execution under token {} on {} (from {} to {}) began \
                             while one under token {} on {} (from {} to {}) was still running",
                            r.token,
                            r.agent,
                            secs(r.start),
                            until(r.end),
                            l.token,
                            l.agent,
                            secs(l.start),
                            until(l.end),
                        ));
                    }
                }
                let later = match longest {
                    None => true,
                    Some(l) => match (l.end, r.end) {
                        (None, _) => false,
                        (Some(_), None) => true,
                        (Some(a), Some(b)) => b > a,
                    },
                };
                if later {
                    longest = Some(r);
                }
            }
        }
    }

    for k in events
        .iter()
        .filter(|e| e.proc == "nemesis" && e.f == "kill-agent")
    {
        let Some(agent) = k.agent.as_deref() else {
            continue;
        };
        for r in runs.values().filter(|r| r.agent == agent && r.start < k.t) {
            let outlived = match r.end {
                Some(e) if e <= k.t => continue,
                Some(e) => e > k.t + KILL_BOUND_NANOS,
                None => true,
            };
            if outlived {
                problems.push(format!(
                    "task {}: the worker of token {} on {agent} (from {} to {}) outlived its agent, \
                     SIGKILLed at {}, by more than {:?}",
                    r.task,
                    r.token,
                    secs(r.start),
                    until(r.end),
                    secs(k.t),
                    KILL_BOUND
                ));
            }
        }
    }

    Verdict {
        checker: "overlap",
        problems,
    }
}

#[cfg(test)]
#[path = "overlap_test.rs"]
mod tests;
