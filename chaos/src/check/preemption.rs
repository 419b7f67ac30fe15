//! Preemption (issue "task lifecycle"): online work takes capacity from
//! offline work only the way the tasks declared and the cluster committed.
//!
//! The runner records what the agents did, from their logs: `notice` (a
//! worker given notice to stop; `stopped` once it did), `suspend` and
//! `resume` (a worker paused in place and continued), each with the task,
//! token and agent. Reads and the end state carry the task's `preempted`
//! count and whether it was suspended; the workload's keys say what each
//! task is ([`Kind`]).
//!
//! - Online work and tasks submitted `preemptible = false` are never given
//!   notice, suspended, or counted preempted.
//! - A task is preempted the way it declared: a suspendable task is
//!   suspended, never given notice; any other is given notice, never
//!   suspended.
//! - Every preemption an agent carried out was committed: a task's final
//!   `preempted` count is at least the number of its tokens suspended or
//!   given notice and then stopped (an agent acting on an order no
//!   committed `Preempt` backs, e.g. a deposed leader's, would exceed it).
//!   A worker that finished its work within its notice ended the attempt
//!   as any other: it was not preempted, and is not counted; nor is a stop
//!   the leader refused to count (`rejected`, from the agents' logs: the
//!   task was cancelled meanwhile) or a stop of a task that ended
//!   cancelled (a cancel may overtake the stop's report).
//! - The count never goes back: a linearizable read that began after
//!   another had completed never shows fewer preemptions.
//! - A worker is resumed only under the token it was suspended under, on
//!   the agent that suspended it; no task ends suspended.
//!
//! Whether the preempted work stayed exclusive (a stopped victim's worker
//! ended before its task was granted again; a suspended worker, one run
//! across its suspension, overlapped no other holder) is the exclusivity,
//! overlap and one-run-per-token checkers' part: a preemption stop is a
//! `stopped` token like a drain's.

use std::collections::{BTreeMap, BTreeSet};

use super::Verdict;
use crate::history::{ops, Event};
use crate::workload::Kind;

pub fn check(events: &[Event]) -> Verdict {
    let mut problems = Vec::new();
    // What each task is, from its key (submits and the end state).
    let kinds: BTreeMap<&str, Kind> = events
        .iter()
        .filter(|e| e.is("ok", "submit") || (e.proc == "runner" && e.f == "final"))
        .filter_map(|e| Some((e.task.as_deref()?, Kind::of_key(e.key.as_deref()?)?)))
        .collect();
    let agents_did = |f: &'static str| {
        events
            .iter()
            .filter(move |e| e.proc == "runner" && e.f == f)
            .filter_map(|e| Some((e.task.as_deref()?, e.token?, e.agent.as_deref()?)))
    };

    // Never online or non-preemptible work; each the way it declared.
    for (what, f) in [("given notice", "notice"), ("suspended", "suspend")] {
        for (task, token, agent) in agents_did(f) {
            let Some(kind) = kinds.get(task) else {
                continue;
            };
            if !kind.preemptible() {
                problems.push(format!(
                    "task {task} ({kind:?}) was {what} on {agent} under token {token}: \
                     online and non-preemptible work is never preempted"
                ));
            } else if (*kind == Kind::Suspendable) != (f == "suspend") {
                problems.push(format!(
                    "task {task} ({kind:?}) was {what} on {agent} under token {token}: \
                     a task is preempted the way it declared (suspended if suspendable, \
                     else stopped with notice)"
                ));
            }
        }
    }
    let observed = events.iter().filter(|e| {
        e.preempted.is_some() && (e.kind == "ok" || (e.proc == "runner" && e.f == "final"))
    });
    for e in observed {
        let (Some(task), Some(n)) = (e.task.as_deref(), e.preempted) else {
            continue;
        };
        if n > 0 && kinds.get(task).is_some_and(|k| !k.preemptible()) {
            problems.push(format!(
                "task {task} ({:?}) was read preempted {n} times ({} at {}): \
                 online and non-preemptible work is never preempted",
                kinds[task],
                e.proc,
                super::secs(e.t)
            ));
        }
    }

    // Every preemption carried out was committed.
    let finals = super::final_tasks(events);
    let rejected: BTreeSet<(&str, u64)> =
        agents_did("rejected").map(|(t, tok, _)| (t, tok)).collect();
    let stopped: BTreeSet<(&str, u64)> = agents_did("stopped")
        .map(|(t, tok, _)| (t, tok))
        .filter(|run| !rejected.contains(run))
        .filter(|(t, _)| finals.get(t).and_then(|f| f.state.as_deref()) != Some("cancelled"))
        .collect();
    let mut carried: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    let notice_then_stop = agents_did("notice").filter(|(t, tok, _)| stopped.contains(&(*t, *tok)));
    for (task, token, _) in notice_then_stop.chain(agents_did("suspend")) {
        carried.entry(task).or_default().insert(token);
    }
    for (task, tokens) in &carried {
        let Some(n) = finals.get(task).and_then(|f| f.preempted) else {
            continue;
        };
        if (n as usize) < tokens.len() {
            problems.push(format!(
                "task {task} was preempted under {} tokens ({tokens:?}) by its agents, \
                 but the cluster counted {n} preemptions: an agent acted on a preemption \
                 that was never committed",
                tokens.len()
            ));
        }
    }

    // The count never goes back, in real time.
    let mut reads: BTreeMap<&str, Vec<(u64, u64, u32)>> = BTreeMap::new();
    for op in ops(events) {
        let Some(done) = op.ok() else {
            continue;
        };
        if let (Some(task), Some(n)) = (done.task.as_deref(), done.preempted) {
            reads
                .entry(task)
                .or_default()
                .push((op.invoke.t, done.t, n));
        }
    }
    for (task, f) in &finals {
        if let Some(n) = f.preempted {
            reads.entry(task).or_default().push((f.t, f.t, n));
        }
    }
    for (task, rs) in &reads {
        // The most preemptions any read completed by time t had seen.
        let mut by_end = rs.clone();
        by_end.sort_by_key(|r| r.1);
        for &(begin, _, n) in rs {
            let before = by_end
                .iter()
                .take_while(|r| r.1 < begin)
                .max_by_key(|r| r.2);
            if let Some(&(_, end, m)) = before {
                if m > n {
                    problems.push(format!(
                        "task {task}: a read that began at {} saw {n} preemptions, \
                         after one that completed at {} had seen {m}: the count went back",
                        super::secs(begin),
                        super::secs(end)
                    ));
                }
            }
        }
    }

    // Resumed only as suspended (a new leader may re-send a resume that
    // was carried out already: one suspension may see several); nothing
    // ends suspended.
    let mut held: BTreeSet<(&str, u64, &str)> = BTreeSet::new();
    for e in events.iter().filter(|e| e.proc == "runner") {
        let (Some(task), Some(token), Some(agent)) =
            (e.task.as_deref(), e.token, e.agent.as_deref())
        else {
            continue;
        };
        match e.f.as_str() {
            "suspend" => {
                held.insert((task, token, agent));
            }
            "resume" if !held.contains(&(task, token, agent)) => problems.push(format!(
                "task {task} was resumed under token {token} on {agent}, \
                 which had not suspended it under that token"
            )),
            _ => {}
        }
    }
    for (task, f) in &finals {
        if f.suspended == Some(true) {
            problems.push(format!(
                "task {task} ended {} and still suspended",
                f.state.as_deref().unwrap_or("?")
            ));
        }
    }
    Verdict {
        checker: "preemption",
        problems,
    }
}

#[cfg(test)]
#[path = "preemption_test.rs"]
mod tests;
