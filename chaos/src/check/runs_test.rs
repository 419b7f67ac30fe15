//! Unit tests of `runs.rs`.

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
