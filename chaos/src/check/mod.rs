//! Offline checkers over a recorded history, one file per invariant of
//! RELIABILITY.md. Each returns a [`Verdict`] listing every problem found;
//! each has self-tests with hand-made bad histories it must reject.
//!
//! - [`durability`]: I6, no acknowledged submit or observed completion is
//!   lost, no task twice, no phantom task.
//! - [`linearizability`]: I1-I3, log order agrees with id order and real
//!   time, reads never go back; cross-checked by an exhaustive search on
//!   small per-task histories.
//! - [`exclusivity`]: I4-I5, one holder per token, tokens rise, the sink never
//!   accepts a stale token, holders' work never overlaps.
//! - [`overlap`]: no two executions (worker runs) of one task overlap in
//!   time, whatever their tokens; a SIGKILLed agent's workers end within 1 s.
//! - [`runs`]: I5 at the worker, one run per token: no (task, token) is
//!   run by two worker processes.
//! - [`forwarding`]: I8, with two DCs: each forwarded task ingested once,
//!   in order, no phantoms, delivered after healing.
//! - [`leaders`]: I9-I10, one leader per term, terms never go back across
//!   crashes, applied <= last log.
//! - [`convergence`]: I11, after healing one leader, equal digests, service
//!   within the bound, no panic in any log.
//! - [`preemption`]: online work preempts only preemptible offline work,
//!   the way each task declared, and only as committed; the count never
//!   goes back; a worker is resumed as it was suspended.
//! - [`revocation`]: a revoked agent token stops working within one
//!   heartbeat interval: nothing starts or completes on its session after
//!   that, and its agent exits 8.

mod all;
pub mod convergence;
pub mod devices;
pub mod durability;
pub mod exclusivity;
pub mod forwarding;
pub mod leaders;
pub mod linearizability;
pub mod overlap;
pub mod preemption;
pub mod revocation;
pub mod runs;

use std::collections::BTreeMap;

use crate::history::Event;

pub use all::run_all;

/// What a checker found.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub checker: &'static str,
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Facts about the run that change what may be expected.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// Agents were paused (SIGSTOP): a paused agent cannot stop its own
    /// workers, so only the sink's token check keeps them apart (the
    /// overlap check is skipped; the token checks still hold).
    pub agents_paused: bool,
}

/// A history time (nanoseconds since the run began) as seconds, e.g. `12.345s`.
pub fn secs(t: u64) -> String {
    format!("{:.3}s", t as f64 / 1e9)
}

/// The end state the runner recorded (`f: "final"`), by task id.
pub fn final_tasks(events: &[Event]) -> BTreeMap<&str, &Event> {
    events
        .iter()
        .filter(|e| e.proc == "runner" && e.f == "final")
        .filter_map(|e| e.task.as_deref().map(|t| (t, e)))
        .collect()
}

/// Whether the runner recorded the end state at all.
pub fn has_final(events: &[Event]) -> bool {
    events
        .iter()
        .any(|e| e.proc == "runner" && e.f == "final-done")
}

pub fn is_terminal(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "cancelled")
}

/// A task's progress as a totally ordered version: reads of one task must
/// never observe a lower version after a higher one. The attempt counts at
/// assignment, so `pending` after a requeue (attempt a) sorts after the
/// states of attempt a and before attempt a + 1. (A task its agent stopped
/// on the leader's order goes back to pending with attempt a - 1; the
/// linearizability checker places those reads.) A task forwarded to another
/// DC (`forwarded`) has moved past every local version, and what that DC
/// reports of it sorts after that, by its own attempts. (A task refused by
/// the other DC comes back to local pending; the workloads avoid refusals.)
pub fn version(state: &str, attempt: u32, forwarded: bool) -> (u32, u8) {
    let base = if forwarded { REMOTE_PHASE } else { 0 };
    match state {
        "absent" => (0, 0),
        "forwarded" => (REMOTE_PHASE, 1),
        "assigned" => (base + attempt, 2),
        "running" => (base + attempt, 3),
        "pending" => (base + attempt, 9),
        s if is_terminal(s) => (u32::MAX, 0),
        _ => (0, 0),
    }
}

/// Where the versions of a forwarded task start: above any local attempt.
const REMOTE_PHASE: u32 = 1 << 20;

#[cfg(test)]
pub(crate) mod fixtures {
    //! Builders for hand-made histories.
    use crate::history::Event;

    /// A sink event `f` (start, end...) of worker run `run` of a task.
    pub fn sink_event(f: &str, task: &str, token: u64, agent: &str, run: u64) -> Event {
        Event {
            task: Some(task.into()),
            token: Some(token),
            agent: Some(agent.into()),
            accepted: Some(true),
            run: Some(run),
            ..Event::new("sink", "event", f)
        }
    }

    pub struct H {
        pub events: Vec<Event>,
        t: u64,
    }

    impl H {
        pub fn new() -> H {
            H {
                events: Vec::new(),
                t: 0,
            }
        }

        pub fn push(&mut self, mut e: Event) -> &mut H {
            self.t += 10;
            e.i = self.events.len() as u64;
            e.t = self.t;
            self.events.push(e);
            self
        }

        pub fn submit(&mut self, proc: &str, key: &str, id: &str, index: u64) -> &mut H {
            self.push(Event {
                key: Some(key.into()),
                ..Event::new(proc, "invoke", "submit")
            });
            self.push(Event {
                key: Some(key.into()),
                task: Some(id.into()),
                log_index: Some(index),
                ..Event::new(proc, "ok", "submit")
            })
        }

        #[allow(clippy::too_many_arguments)]
        pub fn get(
            &mut self,
            proc: &str,
            id: &str,
            state: &str,
            attempt: u32,
            token: u64,
            agent: &str,
            applied: u64,
        ) -> &mut H {
            self.push(Event {
                task: Some(id.into()),
                ..Event::new(proc, "invoke", "get")
            });
            self.push(Event {
                task: Some(id.into()),
                state: Some(state.into()),
                attempt: Some(attempt),
                token: Some(token),
                agent: Some(agent.into()),
                applied: Some(applied),
                ..Event::new(proc, "ok", "get")
            })
        }

        pub fn final_task(
            &mut self,
            id: &str,
            key: &str,
            state: &str,
            attempt: u32,
            token: u64,
            agent: &str,
        ) -> &mut H {
            self.push(Event {
                task: Some(id.into()),
                key: Some(key.into()),
                state: Some(state.into()),
                attempt: Some(attempt),
                token: Some(token),
                agent: Some(agent.into()),
                ..Event::new("runner", "event", "final")
            })
        }

        pub fn final_done(&mut self) -> &mut H {
            self.push(Event::new("runner", "event", "final-done"))
        }

        pub fn sink(
            &mut self,
            f: &str,
            id: &str,
            token: u64,
            agent: &str,
            accepted: bool,
        ) -> &mut H {
            self.push(Event {
                task: Some(id.into()),
                token: Some(token),
                agent: Some(agent.into()),
                accepted: Some(accepted),
                ..Event::new("sink", "event", f)
            })
        }
    }
}
