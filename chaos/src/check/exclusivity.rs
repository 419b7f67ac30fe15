//! I4-I5: at most one holder per task, tokens rise, the sink never accepts a
//! stale token.
//!
//! - One token, one holder: every observation (reads, the end state, what
//!   workers presented to the sink) of a task's token names the same agent.
//! - Tokens rise with attempts: a later attempt of a task holds a higher
//!   token. An attempt holds a second token only when its first never ran
//!   (a regrant of an assignment its agent never started), or when its
//!   agent stopped it on the leader's order (a drain's deadline: the task
//!   is requeued keeping its attempt; the runner records these `stopped`
//!   from the agents' logs).
//! - The sink (a resource that checks fencing tokens, as a user's storage
//!   would) accepted per task a non-decreasing sequence of tokens, and never
//!   a token below one it had already seen.
//! - A task that ends succeeded was committed to the sink under its final
//!   token by its final agent (the success really is that holder's work).
//! - Unless agents were paused, the work of two holders of a task never
//!   overlapped in time: an agent that loses its lease stops its worker
//!   before the task can be granted again. The problem names both tokens,
//!   their agents and their times (seconds since the run began).

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
    Verdict {
        checker: "exclusivity",
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::fixtures::H;

    fn good() -> H {
        let mut h = H::new();
        h.submit("c1", "k1", "t1", 5);
        h.sink("begin", "t1", 7, "a1", true)
            .sink("end", "t1", 7, "a1", true);
        h.sink("begin", "t1", 12, "a2", true)
            .sink("commit", "t1", 12, "a2", true)
            .sink("end", "t1", 12, "a2", true);
        h.get("c1", "t1", "running", 1, 7, "a1", 8);
        h.get("c1", "t1", "succeeded", 2, 12, "a2", 13);
        h.final_task("t1", "k1", "succeeded", 2, 12, "a2")
            .final_done();
        h
    }

    #[test]
    fn a_clean_history_passes() {
        let v = check(&good().events, &Facts::default());
        assert!(v.ok(), "{:?}", v.problems);
    }

    #[test]
    fn a_double_grant_is_caught() {
        let mut h = good();
        h.get("c2", "t1", "running", 1, 7, "a3", 9);
        let v = check(&h.events, &Facts::default());
        assert!(
            v.problems.iter().any(|p| p.contains("double grant")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn a_stale_token_through_the_sink_is_caught() {
        let mut h = good();
        h.sink("commit", "t1", 7, "a1", true);
        let v = check(&h.events, &Facts::default());
        assert!(
            v.problems
                .iter()
                .any(|p| p.contains("stale token got through")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn tokens_that_do_not_rise_are_caught() {
        let mut h = H::new();
        h.get("c1", "t1", "running", 1, 9, "a1", 10);
        h.get("c1", "t1", "running", 2, 9, "a1", 11);
        let v = check(&h.events, &Facts::default());
        assert!(
            v.problems.iter().any(|p| p.contains("not above")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn an_attempt_has_a_second_token_only_if_the_first_never_ran() {
        // Token 7 was granted, never ran, and was regranted as 9 (attempt 1).
        let mut h = H::new();
        h.get("c1", "t1", "assigned", 1, 7, "a1", 8);
        h.sink("begin", "t1", 9, "a1", true)
            .sink("end", "t1", 9, "a1", true);
        h.get("c1", "t1", "running", 1, 9, "a1", 10);
        let v = check(&h.events, &Facts::default());
        assert!(v.ok(), "{:?}", v.problems);
        // Had token 7 run, its task may not keep the attempt.
        h.sink("begin", "t1", 7, "a1", true);
        let v = check(&h.events, &Facts::default());
        assert!(
            v.problems.iter().any(|p| p.contains("two tokens")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn a_token_its_agent_stopped_on_a_drain_may_share_its_attempt() {
        // Token 7 ran and was stopped at a drain's deadline; the task was
        // requeued keeping attempt 1 and ran again as token 9.
        let mut h = H::new();
        h.get("c1", "t1", "running", 1, 7, "a1", 8);
        h.sink("begin", "t1", 7, "a1", true)
            .sink("end", "t1", 7, "a1", true);
        h.sink("begin", "t1", 9, "a2", true)
            .sink("end", "t1", 9, "a2", true);
        h.get("c1", "t1", "running", 1, 9, "a2", 10);
        let v = check(&h.events, &Facts::default());
        assert!(
            v.problems.iter().any(|p| p.contains("two tokens")),
            "without the agent's stop it is a problem: {:?}",
            v.problems
        );
        h.events.push(Event {
            task: Some("t1".into()),
            token: Some(7),
            agent: Some("a1".into()),
            ..Event::new("runner", "event", "stopped")
        });
        let v = check(&h.events, &Facts::default());
        assert!(v.ok(), "{:?}", v.problems);
    }

    #[test]
    fn overlapping_holders_are_caught_unless_agents_were_paused() {
        let mut h = H::new();
        h.sink("begin", "t1", 7, "a1", true);
        h.sink("begin", "t1", 12, "a2", true);
        h.sink("end", "t1", 7, "a1", true)
            .sink("end", "t1", 12, "a2", true);
        let v = check(&h.events, &Facts::default());
        assert!(
            v.problems.iter().any(|p| p.contains("still running")),
            "{:?}",
            v.problems
        );
        assert!(check(
            &h.events,
            &Facts {
                agents_paused: true
            }
        )
        .ok());
    }

    #[test]
    fn overlapping_tokens_are_reported_with_agents_and_times() {
        let mut h = H::new();
        h.sink("begin", "t1", 7, "a1", true)
            .sink("begin", "t1", 12, "a2", true)
            .sink("end", "t1", 7, "a1", true)
            .sink("end", "t1", 12, "a2", true)
            .sink("begin", "t2", 8, "a1", true)
            .sink("begin", "t2", 15, "a2", true)
            .sink("end", "t2", 15, "a2", true);
        // The fixture's clock ticks 10 ns per event: make it 1 s.
        for e in &mut h.events {
            e.t *= 100_000_000;
        }
        let v = check(&h.events, &Facts::default());
        assert_eq!(
            v.problems,
            vec![
                "task t1: the worker of token 12 on a2 (from 2.000s to 4.000s) began while \
                 the worker of token 7 on a1 (from 1.000s to 3.000s) was still running: \
                 two different tokens of one task overlapped for 1.000s"
                    .to_string(),
                "task t2: the worker of token 15 on a2 (from 6.000s to 7.000s) began while \
                 the worker of token 8 on a1 (from 5.000s to the end of the history) was still \
                 running: two different tokens of one task overlapped for 1.000s"
                    .to_string(),
            ]
        );
    }

    #[test]
    fn a_worker_running_after_its_token_was_taken_back_is_caught() {
        // Token 7 (attempt 1) runs on a1 while reads see the task requeued
        // and then granted to a2 under token 12; a2's worker has not begun.
        let mut h = H::new();
        h.get("c1", "t1", "running", 1, 7, "a1", 8);
        h.sink("begin", "t1", 7, "a1", true);
        h.get("c1", "t1", "pending", 1, 7, "a1", 10);
        h.get("c2", "t1", "assigned", 2, 12, "a2", 12);
        h.sink("end", "t1", 7, "a1", true);
        for e in &mut h.events {
            e.t *= 100_000_000;
        }
        let v = check(&h.events, &Facts::default());
        assert_eq!(
            v.problems,
            vec![
                "task t1: the worker of token 7 on a1 (from 3.000s to 8.000s) was still running \
                 after a linearizable read (c1 at 5.000s) had seen the task pending again \
                 (attempt 1: requeued): token 7 was taken back, yet its worker ran on for 3.000s"
                    .to_string(),
                "task t1: the worker of token 7 on a1 (from 3.000s to 8.000s) was still running \
                 after a linearizable read (c2 at 7.000s) had seen the task assigned under token \
                 12 on a2: token 7 was taken back, yet its worker ran on for 1.000s"
                    .to_string(),
            ]
        );
        // Reads of its own token, or from before its grant, are no problem.
        let mut ok = H::new();
        ok.get("c1", "t1", "pending", 0, 0, "", 4);
        ok.get("c1", "t1", "running", 1, 7, "a1", 8);
        ok.sink("begin", "t1", 7, "a1", true);
        ok.get("c1", "t1", "running", 1, 7, "a1", 9);
        ok.sink("end", "t1", 7, "a1", true);
        ok.get("c1", "t1", "pending", 1, 7, "a1", 10);
        let v = check(&ok.events, &Facts::default());
        assert!(v.ok(), "{:?}", v.problems);
    }

    #[test]
    fn a_success_without_the_holders_work_is_caught() {
        let mut h = H::new();
        h.submit("c1", "k1", "t1", 5);
        h.sink("begin", "t1", 7, "a1", true)
            .sink("commit", "t1", 7, "a1", true);
        h.final_task("t1", "k1", "succeeded", 2, 12, "a2")
            .final_done();
        let v = check(&h.events, &Facts::default());
        assert!(
            v.problems.iter().any(|p| p.contains("never accepted")),
            "{:?}",
            v.problems
        );
    }
}
