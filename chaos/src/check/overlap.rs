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
mod tests {
    use super::*;
    use crate::check::fixtures::{sink_event as ev, H};

    fn kill(agent: &str) -> Event {
        Event {
            agent: Some(agent.into()),
            ..Event::new("nemesis", "event", "kill-agent")
        }
    }

    /// One second per event.
    fn in_seconds(h: &H) -> Vec<Event> {
        let mut events = h.events.clone();
        for e in &mut events {
            e.t *= 100_000_000;
        }
        events
    }

    fn good() -> H {
        let mut h = H::new();
        h.push(ev("begin", "t1", 7, "a1", 1))
            .push(ev("begin", "t2", 8, "a2", 2))
            .push(kill("a1"))
            .push(ev("end", "t1", 7, "a1", 1))
            .push(ev("end", "t2", 8, "a2", 2))
            // Granted again after the first ended.
            .push(ev("begin", "t1", 12, "a2", 3))
            .push(ev("end", "t1", 12, "a2", 3));
        h
    }

    #[test]
    fn a_clean_history_passes() {
        let v = check(&good().events, &Facts::default());
        assert!(v.ok(), "{:?}", v.problems);
    }

    #[test]
    fn two_executions_of_a_task_at_once_are_caught_whatever_their_tokens() {
        let mut h = H::new();
        h.push(ev("begin", "t1", 7, "a1", 1))
            .push(ev("begin", "t1", 7, "a2", 2))
            .push(ev("end", "t1", 7, "a2", 2))
            .push(ev("begin", "t1", 9, "a2", 3))
            .push(ev("end", "t1", 9, "a2", 3))
            .push(ev("end", "t1", 7, "a1", 1));
        let v = check(&in_seconds(&h), &Facts::default());
        assert_eq!(v.problems.len(), 2, "{:?}", v.problems);
        assert_eq!(
            v.problems[1],
            "task t1: an execution under token 9 on a2 (from 4.000s to 5.000s) began while one \
             under token 7 on a1 (from 1.000s to 6.000s) was still running"
        );
        let paused = Facts {
            agents_paused: true,
        };
        assert!(check(&in_seconds(&h), &paused).ok());
    }

    #[test]
    fn a_worker_that_outlives_its_killed_agent_is_caught() {
        let mut h = H::new();
        h.push(ev("begin", "t1", 7, "a1", 1))
            .push(kill("a1"))
            .push(ev("begin", "t2", 8, "a1", 2))
            .push(ev("end", "t2", 8, "a1", 2))
            .push(ev("end", "t1", 7, "a1", 1));
        let v = check(&in_seconds(&h), &Facts::default());
        assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
        assert!(
            v.problems[0].starts_with(
                "task t1: the worker of token 7 on a1 (from 1.000s to 5.000s) outlived its agent, SIGKILLed at 2.000s"
            ),
            "{:?}",
            v.problems
        );
        // Within the bound: fine (the fixture's clock: 10 ns per event).
        assert!(check(&h.events, &Facts::default()).ok());
    }
}
