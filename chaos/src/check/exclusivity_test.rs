//! Unit tests of `exclusivity.rs`.

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
