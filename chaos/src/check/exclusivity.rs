//! I4-I5: at most one holder per task, tokens rise, the sink never accepts a
//! stale token.
//!
//! - One token, one holder: every observation (reads, the end state, what
//!   workers presented to the sink) of a task's token names the same agent.
//! - Tokens rise with attempts: a later attempt of a task holds a higher
//!   token. An attempt holds a second token only when its first never ran
//!   (a regrant of an assignment its agent never started), or when its
//!   agent stopped it on the leader's order (a drain's deadline, or a
//!   preemption's notice: the task is requeued keeping its attempt; the
//!   runner records these `stopped` from the agents' logs). A task
//!   suspended for a preemption keeps its token and its one worker run,
//!   whose span covers the suspension: no other holder's work may overlap
//!   it either.
//! - The sink (a resource that checks fencing tokens, as a user's storage
//!   would) accepted per task a non-decreasing sequence of tokens, and never
//!   a token below one it had already seen.
//! - A task that ends succeeded was committed to the sink under its final
//!   token by its final agent (the success really is that holder's work).
//! - Unless agents were paused, the work of two holders of a task never
//!   overlapped in time: an agent that loses its lease stops its worker
//!   before the task can be granted again. The problem names both tokens,
//!   their agents and their times (seconds since the run began).
//! - No GPU device is given to two workers at once ([`super::devices`]).

use std::collections::{BTreeMap, BTreeSet};

use super::{final_tasks, secs, Facts, Verdict};
use crate::history::{ops, Event};

pub fn check(events: &[Event], facts: &Facts) -> Verdict {
    let mut problems = Vec::new();

    // One token, one holder.
    let mut holder: BTreeMap<(&str, u64), (&str, &str)> = BTreeMap::new();
    let reads: Vec<&Event> = ops(events)
        .into_iter()
        .filter(|o| o.f() == "get" || o.f() == "cancel")
        .filter_map(|o| o.ok())
        .collect();
    let finals = final_tasks(events);
    let sink: Vec<&Event> = events.iter().filter(|e| e.proc == "sink").collect();
    for e in reads
        .iter()
        .copied()
        .chain(finals.values().copied())
        .chain(sink.iter().copied())
    {
        let (Some(task), Some(token), Some(agent)) =
            (e.task.as_deref(), e.token, e.agent.as_deref())
        else {
            continue;
        };
        if token == 0 || agent.is_empty() {
            continue;
        }
        let source = if e.proc == "sink" {
            "the sink"
        } else if e.proc == "runner" {
            "the end state"
        } else {
            "a read"
        };
        match holder.get(&(task, token)) {
            Some((a, src)) if *a != agent => problems.push(format!(
                "task {task} token {token} is held by {a} ({src}) and by {agent} ({source}): a double grant"
            )),
            Some(_) => {}
            None => {
                holder.insert((task, token), (agent, source));
            }
        }
    }

    // Tokens rise with attempts. One attempt holds several tokens only when
    // an assignment that never ran was granted again (a regrant keeps the
    // attempt of a task its agent never started): every token of an
    // attempt but its last must never have reached the sink.
    let mut by_attempt: BTreeMap<&str, BTreeMap<u32, BTreeSet<u64>>> = BTreeMap::new();
    for e in reads.iter().chain(finals.values()) {
        if let (Some(t), Some(tok), Some(att)) = (e.task.as_deref(), e.token, e.attempt) {
            if tok > 0 && att > 0 {
                by_attempt
                    .entry(t)
                    .or_default()
                    .entry(att)
                    .or_default()
                    .insert(tok);
            }
        }
    }
    let stopped: BTreeSet<(&str, u64)> = events
        .iter()
        .filter(|e| e.proc == "runner" && e.f == "stopped")
        .filter_map(|e| Some((e.task.as_deref()?, e.token?)))
        .collect();
    let ran: BTreeSet<(&str, u64)> = sink
        .iter()
        .filter(|e| e.f == "begin")
        .filter_map(|e| Some((e.task.as_deref()?, e.token?)))
        .filter(|run| !stopped.contains(run))
        .collect();
    for (t, attempts) in &by_attempt {
        for (att, tokens) in attempts {
            let last = tokens.iter().next_back().copied().unwrap_or(0);
            for tok in tokens.iter().filter(|tok| **tok != last) {
                if ran.contains(&(*t, *tok)) {
                    problems.push(format!(
                        "task {t} attempt {att} has two tokens, {tok} and {last}, and token {tok} ran: \
                         a task that ran is granted again only under a new attempt"
                    ));
                }
            }
        }
        let spans: Vec<(u32, u64, u64)> = attempts
            .iter()
            .map(|(a, toks)| {
                (
                    *a,
                    toks.iter().next().copied().unwrap_or(0),
                    toks.iter().next_back().copied().unwrap_or(0),
                )
            })
            .collect();
        for w in spans.windows(2) {
            if w[1].1 <= w[0].2 {
                problems.push(format!(
                    "task {t}: attempt {} has token {}, not above attempt {}'s {}",
                    w[1].0, w[1].1, w[0].0, w[0].2
                ));
            }
        }
    }

    // The sink never accepted a stale token.
    let mut highest: BTreeMap<&str, u64> = BTreeMap::new();
    for e in sink.iter().filter(|e| e.f == "begin" || e.f == "commit") {
        let (Some(t), Some(tok)) = (e.task.as_deref(), e.token) else {
            continue;
        };
        let top = highest.get(t).copied().unwrap_or(0);
        if e.accepted == Some(true) {
            if tok < top {
                problems.push(format!("the sink accepted token {tok} for task {t} after token {top}: a stale token got through"));
            }
            highest.insert(t, tok.max(top));
        }
    }

    // A success is its final holder's committed work.
    for (t, f) in &finals {
        // A task that ran in another DC is checked in that DC's history.
        if f.state.as_deref() != Some("succeeded") || f.remote.is_some() {
            continue;
        }
        let committed = sink.iter().any(|e| {
            e.f == "commit"
                && e.accepted == Some(true)
                && e.task.as_deref() == Some(t)
                && e.token == f.token
                && e.agent == f.agent
        });
        if !committed {
            problems.push(format!("task {t} succeeded with token {:?} on {:?}, but the sink never accepted that holder's work", f.token, f.agent));
        }
    }

    // Holders' work never overlapped.
    if !facts.agents_paused {
        let mut spans: BTreeMap<(&str, u64), (u64, u64, &str)> = BTreeMap::new();
        for e in &sink {
            let (Some(t), Some(tok)) = (e.task.as_deref(), e.token) else {
                continue;
            };
            let agent = e.agent.as_deref().unwrap_or("?");
            let span = spans.entry((t, tok)).or_insert((u64::MAX, u64::MAX, agent));
            match e.f.as_str() {
                "begin" => span.0 = span.0.min(e.t),
                "end" => span.1 = e.t,
                _ => {}
            }
        }
        let mut per_task: BTreeMap<&str, Vec<(u64, u64, u64, &str)>> = BTreeMap::new();
        for ((t, tok), (b, e, agent)) in spans {
            if b != u64::MAX {
                per_task.entry(t).or_default().push((b, e, tok, agent));
            }
        }
        let until = |e: u64| {
            if e == u64::MAX {
                "the end of the history".to_string()
            } else {
                secs(e)
            }
        };
        for (t, s) in per_task.iter_mut() {
            s.sort();
            for w in s.windows(2) {
                let ((b0, e0, tok0, a0), (b1, e1, tok1, a1)) = (w[0], w[1]);
                if b1 < e0 {
                    problems.push(format!(
                        "task {t}: the worker of token {tok1} on {a1} (from {} to {}) began while \
                         the worker of token {tok0} on {a0} (from {} to {}) was still running: \
                         two different tokens of one task overlapped {}",
                        secs(b1),
                        until(e1),
                        secs(b0),
                        until(e0),
                        match e0.min(e1) {
                            u64::MAX => "until the end of the history".to_string(),
                            e => format!("for {}", secs(e - b1)),
                        }
                    ));
                }
            }
        }

        // A worker ran on after a linearizable read had seen its token
        // taken back: the task granted under a higher token, or pending
        // again at or past the worker's attempt (a requeue). The new
        // holder's lease and the old worker overlapped, whether or not the
        // new holder's worker had started yet.
        let attempt_of: BTreeMap<(&str, u64), u32> = by_attempt
            .iter()
            .flat_map(|(t, m)| {
                m.iter()
                    .flat_map(move |(a, toks)| toks.iter().map(move |tok| ((*t, *tok), *a)))
            })
            .collect();
        for r in &reads {
            let (Some(t), Some(state)) = (r.task.as_deref(), r.state.as_deref()) else {
                continue;
            };
            let Some(runs) = per_task.get(t) else {
                continue;
            };
            let read_token = r.token.unwrap_or(0);
            let read_attempt = r.attempt.unwrap_or(0);
            for &(b, e, tok, agent) in runs {
                if e <= r.t || tok == 0 {
                    continue;
                }
                let taken_back = if read_token > tok && state != "pending" {
                    format!(
                        "{state} under token {read_token} on {}",
                        r.agent.as_deref().unwrap_or("?")
                    )
                } else if state == "pending"
                    && attempt_of
                        .get(&(t, tok))
                        .is_some_and(|&a| read_attempt >= a)
                {
                    format!("pending again (attempt {read_attempt}: requeued)")
                } else {
                    continue;
                };
                problems.push(format!(
                    "task {t}: the worker of token {tok} on {agent} (from {} to {}) was still running \
                     after a linearizable read ({} at {}) had seen the task {taken_back}: \
                     token {tok} was taken back, yet its worker ran on for {}",
                    secs(b),
                    until(e),
                    r.proc,
                    secs(r.t),
                    if e == u64::MAX {
                        "the rest of the history".to_string()
                    } else {
                        secs(e - r.t)
                    }
                ));
            }
        }
    }
    problems.extend(super::devices::problems(events, facts));
    Verdict {
        checker: "exclusivity",
        problems,
    }
}

#[cfg(test)]
#[path = "exclusivity_test.rs"]
mod tests;
