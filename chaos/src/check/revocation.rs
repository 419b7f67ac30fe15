//! Revoked agent tokens (token-revoked): a revoked token stops working
//! within one heartbeat interval, open agent sessions included.
//!
//! The nemesis records `revoke` when the revocation of an agent's token was
//! acknowledged (so it had committed before), with the servers' heartbeat
//! interval (`within_ms`): the bound is that moment plus the interval. It
//! records `revoked-exit` when the agent process ended (accepted: with exit
//! code 8) and `rejoin` when it started the agent again under a new token:
//! from then on, the agent id's events belong to the new session. Between
//! the agent's previous start and its rejoin, its events are the revoked
//! session's. None of these may come after the bound:
//!
//! - a start: a linearizable read that began after the bound saw a task
//!   assigned to the revoked session under a token, and a later read (or
//!   the end state) saw it running or finished there under that token;
//! - a completion: a task ended succeeded or failed under the revoked
//!   session's token, and every worker run of that token (the sink's) ended
//!   after the bound, so the agent reported it after the bound (it reports
//!   a task only once its worker has exited);
//! - a worker begun: a worker of the revoked session reached the sink after
//!   the bound plus [`STARTUP_ALLOWANCE`] (a worker process's own start-up:
//!   the agent may have started it, for an assignment it received before
//!   its session closed, just before the bound).
//!
//! Also every revocation was acknowledged and its agent exited 8.

use std::collections::BTreeMap;

use super::{final_tasks, secs, Verdict};
use crate::history::{ops, Event};

/// How long after the bound a worker started just before it may reach the sink.
pub const STARTUP_ALLOWANCE_NANOS: u64 = 1_000_000_000;
/// The same, for the docs.
pub const STARTUP_ALLOWANCE: std::time::Duration =
    std::time::Duration::from_nanos(STARTUP_ALLOWANCE_NANOS);

/// One revocation of an agent's token and the revoked session's span.
struct Revocation<'a> {
    agent: &'a str,
    /// When the revocation was acknowledged.
    acked: u64,
    /// `acked` plus the heartbeat interval.
    bound: u64,
    /// The session's process started after this (its agent's previous
    /// rejoin, or the start of the history).
    from: u64,
    /// ... and the agent's next process started here (`u64::MAX`: none).
    until: u64,
}

impl Revocation<'_> {
    /// Whether an event of the agent at `t` belongs to the revoked session.
    fn owns(&self, t: u64) -> bool {
        self.from < t && t < self.until
    }

    fn describe(&self) -> String {
        format!(
            "{}'s token was revoked (acknowledged at {}; bound {})",
            self.agent,
            secs(self.acked),
            secs(self.bound)
        )
    }
}

/// One worker run as the sink saw it.
struct Run<'a> {
    task: &'a str,
    token: u64,
    agent: &'a str,
    start: u64,
    end: Option<u64>,
}

pub fn check(events: &[Event]) -> Verdict {
    let mut problems = Vec::new();
    let nemesis = |f: &'static str| {
        events
            .iter()
            .filter(move |e| e.proc == "nemesis" && e.f == f)
    };
    let mut revocations = Vec::new();
    for r in nemesis("revoke") {
        let Some(agent) = r.agent.as_deref() else {
            continue;
        };
        if r.accepted != Some(true) {
            problems.push(format!(
                "the revocation of {agent}'s token was not acknowledged: {}",
                r.detail.as_deref().unwrap_or("")
            ));
            continue;
        }
        let same = |e: &&Event| e.agent.as_deref() == Some(agent);
        let from = nemesis("rejoin")
            .filter(same)
            .filter(|e| e.t < r.t)
            .map(|e| e.t)
            .next_back()
            .unwrap_or(0);
        let until = nemesis("rejoin")
            .filter(same)
            .find(|e| e.t > r.t)
            .map_or(u64::MAX, |e| e.t);
        match nemesis("revoked-exit")
            .filter(same)
            .find(|e| e.t > r.t && e.t < until)
        {
            Some(e) if e.accepted == Some(true) => {}
            Some(e) => problems.push(format!(
                "{agent} did not exit 8 after its token was revoked: {}",
                e.detail.as_deref().unwrap_or("")
            )),
            None => problems.push(format!(
                "{agent}'s token was revoked at {}, and its exit was never recorded",
                secs(r.t)
            )),
        }
        revocations.push(Revocation {
            agent,
            acked: r.t,
            bound: r.t + r.within_ms.unwrap_or(0) * 1_000_000,
            from,
            until,
        });
    }
    if revocations.is_empty() {
        return Verdict {
            checker: "revocation",
            problems,
        };
    }

    // The sink's worker runs.
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
    let finals = final_tasks(events);
    let reads: Vec<(&Event, &Event)> = ops(events)
        .into_iter()
        .filter(|o| o.f() == "get")
        .filter_map(|o| Some((o.invoke, o.ok()?)))
        .collect();

    for rv in &revocations {
        // Workers begun after the bound.
        for r in runs.values().filter(|r| r.agent == rv.agent) {
            if rv.owns(r.start) && r.start > rv.bound + STARTUP_ALLOWANCE_NANOS {
                problems.push(format!(
                    "task {} token {}: a worker of {} began at {}, after {}, plus {:?} for a \
                     worker's start: a task started on a revoked session",
                    r.task,
                    r.token,
                    rv.agent,
                    secs(r.start),
                    rv.describe(),
                    STARTUP_ALLOWANCE
                ));
            }
        }

        // Completions reported after the bound: every run of the final
        // holder's token on the revoked session ended after it.
        for (task, f) in &finals {
            let (Some(state), Some(token)) = (f.state.as_deref(), f.token) else {
                continue;
            };
            if f.agent.as_deref() != Some(rv.agent) || !matches!(state, "succeeded" | "failed") {
                continue;
            }
            let ends: Vec<u64> = runs
                .values()
                .filter(|r| r.task == *task && r.token == token && r.agent == rv.agent)
                .filter(|r| rv.owns(r.start))
                .map(|r| r.end.unwrap_or(u64::MAX))
                .collect();
            if let Some(first) = ends.iter().min().filter(|e| **e > rv.bound) {
                problems.push(format!(
                    "task {task} ended {state} under token {token} on {}, whose only worker \
                     run(s) of that token ended at {} or later, after {}: a completion \
                     accepted from a revoked session",
                    rv.agent,
                    if *first == u64::MAX {
                        "the end of the history".to_string()
                    } else {
                        secs(*first)
                    },
                    rv.describe()
                ));
            }
        }

        // Starts and completions a read after the bound saw were still to
        // come on the revoked session.
        for (invoke, seen) in &reads {
            let (Some(task), Some(state), Some(token)) =
                (seen.task.as_deref(), seen.state.as_deref(), seen.token)
            else {
                continue;
            };
            if seen.agent.as_deref() != Some(rv.agent)
                || invoke.t <= rv.bound
                || !rv.owns(invoke.t)
                || !matches!(state, "assigned" | "running")
            {
                continue;
            }
            let same = |e: &Event| {
                e.task.as_deref() == Some(task)
                    && e.token == Some(token)
                    && e.agent.as_deref() == Some(rv.agent)
            };
            // What later reads (finished before the next session began)
            // and the end state (when there was none) saw.
            let later = reads
                .iter()
                .filter(|(_, e)| e.t > seen.t && e.t < rv.until && same(e))
                .map(|(_, e)| *e)
                .chain(
                    finals
                        .get(task)
                        .copied()
                        .filter(|e| rv.until == u64::MAX && same(e)),
                );
            for e in later {
                let after = e.state.as_deref().unwrap_or("");
                let moved = match state {
                    "assigned" => after == "running" || matches!(after, "succeeded" | "failed"),
                    _ => matches!(after, "succeeded" | "failed"),
                };
                if moved {
                    problems.push(format!(
                        "task {task} token {token}: a read begun at {} saw it {state} on {}, and \
                         {} saw it {after} there under the same token: it {} on the session \
                         after {}",
                        secs(invoke.t),
                        rv.agent,
                        if e.proc == "runner" {
                            "the end state".to_string()
                        } else {
                            format!("a read at {}", secs(e.t))
                        },
                        if after == "running" {
                            "started"
                        } else {
                            "completed"
                        },
                        rv.describe()
                    ));
                    break;
                }
            }
        }
    }
    Verdict {
        checker: "revocation",
        problems,
    }
}

#[cfg(test)]
#[path = "revocation_test.rs"]
mod tests;
