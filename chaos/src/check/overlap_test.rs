//! Unit tests of `overlap.rs`.

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
