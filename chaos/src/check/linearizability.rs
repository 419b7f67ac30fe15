//! I1-I3: task operations are linearizable.
//!
//! The committed log is the witness: every acknowledged write names the
//! index it committed at and every linearizable read the applied index it
//! was served at, so checking is a sort and a sweep (O(n log n)):
//!
//! - I1: ids are handed out in log order (a submit that created its task at
//!   a higher index has a higher id; a retried submit that found its key
//!   already used commits later than the task was created, so it is left
//!   out) and no two different keys claim the same id.
//! - I2: real time agrees with log order: an operation that began after
//!   another finished has a higher index (a write) or one at least as high
//!   (a read).
//! - I3: a task's state is a function of the index it was read at: reads of
//!   one task, ordered by index, never go back; a read at or after the
//!   submit's index finds the task, one before it does not; a read at or
//!   after a cancel's index sees it finished.
//!
//! As a cross-check, each small per-task history is also searched
//! exhaustively for an order that respects real time and never moves the
//! task's version back.
//!
//! One move back is legitimate: a task its agent stopped on the leader's
//! order (a drain's deadline passed) goes from assigned or running back to
//! pending without spending its attempt (`Command::Stopped`), so a read
//! sees the attempt it had before that grant. Only a token the runner
//! recorded as `stopped` (from the agents' logs, as the exclusivity checker
//! uses them) allows it: such a pending read may sit just after that
//! token's hold, and every later read must be of a later token. A task
//! that goes back for any other reason, or a stopped token read again
//! after its task went back, is still a problem.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{final_tasks, version, Verdict};
use crate::history::{ops, Event, Op};

/// Per-task histories at most this long are searched exhaustively.
const SEARCH_LIMIT: usize = 14;

fn id_number(id: &str) -> Option<u64> {
    id.trim_start_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

/// The index an acknowledged operation is ordered by, and whether it wrote.
fn position(op: &Op) -> Option<(u64, bool)> {
    let d = op.ok()?;
    match op.f() {
        "submit" | "cancel" => d.log_index.map(|i| (i, true)),
        "get" => d.applied.map(|i| (i, false)),
        _ => None,
    }
}

pub fn check(events: &[Event]) -> Verdict {
    let mut problems = Vec::new();
    let ops = ops(events);

    // I1: ids in log order; one task per id.
    let mut submits: Vec<(u64, u64, &str, &str)> = ops
        .iter()
        .filter(|o| o.f() == "submit")
        .filter_map(|o| {
            let d = o.ok()?;
            if d.existed == Some(true) {
                return None;
            }
            let id = d.task.as_deref()?;
            Some((
                d.log_index?,
                id_number(id)?,
                id,
                o.invoke.key.as_deref().unwrap_or(""),
            ))
        })
        .collect();
    submits.sort();
    let mut key_of: HashMap<&str, &str> = HashMap::new();
    for (_, _, id, key) in &submits {
        if let Some(other) = key_of.insert(id, key) {
            if other != *key {
                problems.push(format!(
                    "task {id} was acknowledged to two keys, {other:?} and {key:?}"
                ));
            }
        }
    }
    for w in submits.windows(2) {
        let ((ia, na, a, _), (ib, nb, b, _)) = (w[0], w[1]);
        if ia < ib && na >= nb {
            problems.push(format!(
                "{a} committed at {ia} before {b} at {ib} but has a higher id"
            ));
        }
        if ia == ib && na == nb && a == b && key_of.get(a) != key_of.get(b) {
            problems.push(format!("two submits claim task {a} at index {ia}"));
        }
    }

    // I2: a sweep in real time.
    let mut positioned: Vec<(&Op, u64, bool)> = ops
        .iter()
        .filter_map(|o| position(o).map(|(i, w)| (o, i, w)))
        .collect();
    let mut by_end: Vec<(u64, u64, bool, u64)> = positioned
        .iter()
        .map(|(o, i, w)| (o.end(), *i, *w, o.invoke.i))
        .collect();
    by_end.sort();
    positioned.sort_by_key(|(o, _, _)| o.invoke.t);
    let (mut next, mut max_any, mut max_write) = (0usize, None::<(u64, u64)>, None::<(u64, u64)>);
    for (op, index, write) in &positioned {
        while next < by_end.len() && by_end[next].0 < op.invoke.t {
            let (_, i, w, at) = by_end[next];
            if max_any.is_none_or(|(m, _)| i > m) {
                max_any = Some((i, at));
            }
            if w && max_write.is_none_or(|(m, _)| i > m) {
                max_write = Some((i, at));
            }
            next += 1;
        }
        let what = format!("{} #{} at index {index}", op.f(), op.invoke.i);
        if *write {
            if let Some((m, at)) = max_any.filter(|(m, _)| index <= m) {
                problems.push(format!(
                    "{what} began after operation #{at} at index {m} had finished"
                ));
            }
        } else if let Some((m, at)) = max_write.filter(|(m, _)| index < m) {
            problems.push(format!(
                "{what} misses write #{at} at index {m}, finished before it began (a stale read)"
            ));
        } else if let Some((m, at)) = max_any.filter(|(m, _)| index < m) {
            problems.push(format!(
                "{what} went back behind operation #{at} at index {m}"
            ));
        }
    }

    // I3: per task, state as a function of the read index.
    let mut per_task: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in &ops {
        let task = op
            .ok()
            .and_then(|d| d.task.as_deref())
            .or(op.invoke.task.as_deref());
        if let Some(t) = task {
            if op.ok().is_some() {
                per_task.entry(t).or_default().push(op);
            }
        }
    }
    let mut stopped: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.proc == "runner" && e.f == "stopped")
    {
        if let (Some(t), Some(tok)) = (e.task.as_deref(), e.token) {
            stopped.entry(t).or_default().insert(tok);
        }
    }
    let finals = final_tasks(events);
    for (task, tops) in &per_task {
        let stops = Stops::new(
            stopped.get(task),
            tops.iter()
                .filter_map(|o| o.ok())
                .chain(finals.get(task).copied()),
        );
        check_task(task, tops, &stops, &mut problems);
        if tops.len() <= SEARCH_LIMIT && !search(tops, &stops) {
            problems.push(format!("task {task}: no order of its {} operations respects real time and never moves it back", tops.len()));
        }
    }
    Verdict {
        checker: "linearizability",
        problems,
    }
}

/// A task's version with the stops its agents made: (attempt, how many
/// stopped tokens lie below the hold, phase). See [`version`].
type V = (u32, u32, u8);

/// The tokens of one task its agents stopped on the leader's order, and
/// the attempt each observed token held (reads and the end state).
struct Stops {
    tokens: Vec<u64>,
    attempts: BTreeMap<u64, u32>,
}

impl Stops {
    fn new<'a>(stopped: Option<&BTreeSet<u64>>, seen: impl Iterator<Item = &'a Event>) -> Stops {
        let attempts = seen
            .filter(|d| d.remote.is_none())
            .filter_map(|d| Some((d.token?, d.attempt?)))
            .filter(|(tok, att)| *tok > 0 && *att > 0)
            .collect();
        Stops {
            tokens: stopped
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default(),
            attempts,
        }
    }

    /// How many stopped tokens are below `token`.
    fn rank(&self, token: u64) -> u32 {
        self.tokens.partition_point(|s| *s < token) as u32
    }

    /// Whether stopped token `s` may have held attempt `attempt`: the
    /// attempt a read saw it hold or, unseen (e.g. a regrant stopped before
    /// any read), one between those of the nearest seen tokens around it.
    fn may_hold(&self, s: u64, attempt: u32) -> bool {
        if let Some(a) = self.attempts.get(&s) {
            return *a == attempt;
        }
        let lo = self.attempts.range(..s).next_back().map_or(1, |(_, a)| *a);
        let hi = self
            .attempts
            .range(s + 1..)
            .next()
            .map_or(u32::MAX, |(_, a)| *a);
        (lo..=hi).contains(&attempt)
    }

    /// The versions a read may stand for: its own, and for a pending read,
    /// the places just after each stop of a token that held the next
    /// attempt (the stop gave that attempt back).
    fn versions(&self, d: &Event) -> Vec<V> {
        let state = d.state.as_deref().unwrap_or("");
        let attempt = d.attempt.unwrap_or(0);
        let remote = d.remote.is_some();
        let (major, minor) = version(state, attempt, remote);
        let below = match state {
            "pending" => u32::MAX,
            "assigned" | "running" if !remote => self.rank(d.token.unwrap_or(0)),
            _ => 0,
        };
        let mut all = vec![(major, below, minor)];
        if state == "pending" && !remote {
            let next = attempt.saturating_add(1);
            all.extend(
                self.tokens
                    .iter()
                    .filter(|s| self.may_hold(**s, next))
                    .map(|s| (next, self.rank(*s) + 1, 0)),
            );
        }
        all
    }
}

fn check_task(task: &str, tops: &[&Op], stops: &Stops, problems: &mut Vec<String>) {
    let submit_at = tops
        .iter()
        .find(|o| o.f() == "submit")
        .and_then(|o| o.ok()?.log_index);
    // A cancel of a task that runs in another DC is a request: it travels
    // there and the end comes back later, so it does not end the task here.
    let cancel_at = tops
        .iter()
        .filter(|o| o.f() == "cancel")
        .filter_map(|o| o.ok())
        .filter(|d| d.remote.is_none())
        .filter_map(|d| d.log_index)
        .min();
    let mut reads: Vec<&Event> = tops
        .iter()
        .filter(|o| o.f() == "get")
        .filter_map(|o| o.ok())
        .collect();
    reads.sort_by_key(|d| (d.applied, d.t));
    for d in &reads {
        let (Some(at), Some(state)) = (d.applied, d.state.as_deref()) else {
            continue;
        };
        if let Some(s) = submit_at {
            if at >= s && state == "absent" {
                problems.push(format!("task {task} read as absent at {at}, after its submit at {s} (a lost or stale read)"));
            }
            if at < s && state != "absent" {
                problems.push(format!(
                    "task {task} read as {state} at {at}, before its submit at {s}"
                ));
            }
        }
        if let Some(c) = cancel_at {
            if at >= c && !super::is_terminal(state) {
                problems.push(format!(
                    "task {task} read as {state} at {at}, after it was cancelled at {c}"
                ));
            }
        }
    }
    // The lowest version each read may stand for that does not go back.
    let mut prev: Option<(&Event, V)> = None;
    for b in &reads {
        let vs = stops.versions(b);
        let lowest = vs.iter().copied().min().unwrap_or_default();
        let v = match prev {
            None => lowest,
            Some((a, va)) => match vs.iter().copied().filter(|v| *v >= va).min() {
                Some(v) => v,
                None => {
                    problems.push(format!(
                        "task {task} went back: {:?} at index {:?}, then {:?} at index {:?}",
                        a.state, a.applied, b.state, b.applied
                    ));
                    lowest
                }
            },
        };
        prev = Some((b, v));
    }
    for w in reads.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.applied == b.applied
            && (a.state != b.state
                || a.token != b.token
                || a.attempt != b.attempt
                || a.agent != b.agent)
        {
            problems.push(format!(
                "task {task} read two ways at index {:?}: {:?}/{:?} and {:?}/{:?}",
                a.applied, a.state, a.token, b.state, b.token
            ));
        }
    }
}

/// Searches for an order of one task's acknowledged operations that respects
/// real time (an operation that finished before another began comes first)
/// in which the submit comes before every read that finds the task, after
/// every read that does not, and the task's version never moves back.
fn search(tops: &[&Op], stops: &Stops) -> bool {
    enum Seen {
        /// The submit that created the task.
        Create,
        /// A retried submit that found the task (created by it or before it).
        Exists,
        /// A read or cancel that observed one of these versions.
        Version(Vec<V>),
    }
    struct Item {
        start: u64,
        end: u64,
        seen: Seen,
    }
    let items: Vec<Item> = tops
        .iter()
        .filter_map(|o| {
            let d = o.ok()?;
            let seen = match o.f() {
                "submit" if d.existed == Some(true) => Seen::Exists,
                "submit" => Seen::Create,
                _ => {
                    d.state.as_deref()?;
                    Seen::Version(stops.versions(d))
                }
            };
            Some(Item {
                start: o.invoke.t,
                end: d.t,
                seen,
            })
        })
        .collect();
    let n = items.len();
    let must_precede: Vec<u32> = (0..n)
        .map(|i| {
            (0..n)
                .filter(|&j| items[j].end < items[i].start)
                .fold(0u32, |m, j| m | (1 << j))
        })
        .collect();
    // State: which are placed, whether the task exists, the highest version seen.
    let mut seen_states: std::collections::HashSet<(u32, bool, V)> = Default::default();
    fn dfs(
        placed: u32,
        created: bool,
        cur: V,
        items: &[Item],
        pre: &[u32],
        memo: &mut std::collections::HashSet<(u32, bool, V)>,
    ) -> bool {
        if placed.count_ones() as usize == items.len() {
            return true;
        }
        if !memo.insert((placed, created, cur)) {
            return false;
        }
        for (i, it) in items.iter().enumerate() {
            if placed & (1 << i) != 0 || pre[i] & !placed != 0 {
                continue;
            }
            // Of the versions a read may stand for, the lowest that does
            // not go back leaves the most room for the rest.
            let next = match &it.seen {
                Seen::Create => (!created).then_some((true, cur)),
                Seen::Exists => Some((true, cur)),
                Seen::Version(vs) if vs[..] == [(0, 0, 0)] => (!created).then_some((false, cur)),
                Seen::Version(vs) => vs
                    .iter()
                    .copied()
                    .filter(|v| created && *v >= cur)
                    .min()
                    .map(|v| (true, v)),
            };
            if let Some((c, v)) = next {
                if dfs(placed | (1 << i), c, v, items, pre, memo) {
                    return true;
                }
            }
        }
        false
    }
    dfs(0, false, (0, 0, 0), &items, &must_precede, &mut seen_states)
}

#[cfg(test)]
#[path = "linearizability_test.rs"]
mod tests;
