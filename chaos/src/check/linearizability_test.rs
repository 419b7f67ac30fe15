//! Unit tests of `linearizability.rs`.

use super::*;
use crate::check::fixtures::H;
use crate::history::Event;

#[test]
fn a_clean_history_passes() {
    let mut h = H::new();
    h.submit("c1", "k1", "t0000000001", 5);
    h.get("c2", "t0000000001", "pending", 0, 0, "", 5);
    h.get("c1", "t0000000001", "assigned", 1, 7, "a1", 8);
    h.submit("c2", "k2", "t0000000002", 9);
    h.get("c1", "t0000000001", "succeeded", 1, 7, "a1", 11);
    let v = check(&h.events);
    assert!(v.ok(), "{:?}", v.problems);
}

#[test]
fn a_stale_read_is_caught() {
    let mut h = H::new();
    h.submit("c1", "k1", "t0000000001", 5);
    h.get("c2", "t0000000001", "succeeded", 1, 7, "a1", 9);
    // Began after the read above finished, yet served at an older index.
    h.get("c3", "t0000000001", "running", 1, 7, "a1", 8);
    let v = check(&h.events);
    assert!(
        v.problems.iter().any(|p| p.contains("went back")),
        "{:?}",
        v.problems
    );
    assert!(
        v.problems.iter().any(|p| p.contains("no order")),
        "{:?}",
        v.problems
    );
}

#[test]
fn a_read_missing_an_acknowledged_submit_is_caught() {
    let mut h = H::new();
    h.submit("c1", "k1", "t0000000001", 5);
    h.get("c2", "t0000000001", "absent", 0, 0, "", 4);
    let v = check(&h.events);
    assert!(
        v.problems.iter().any(|p| p.contains("stale read")),
        "{:?}",
        v.problems
    );
    assert!(
        v.problems.iter().any(|p| p.contains("no order")),
        "{:?}",
        v.problems
    );
}

#[test]
fn ids_out_of_log_order_are_caught() {
    let mut h = H::new();
    h.submit("c1", "k1", "t0000000002", 5);
    h.submit("c2", "k2", "t0000000001", 6);
    let v = check(&h.events);
    assert!(
        v.problems.iter().any(|p| p.contains("higher id")),
        "{:?}",
        v.problems
    );
}

#[test]
fn a_retried_submit_that_found_its_task_may_commit_later() {
    let mut h = H::new();
    h.submit("c1", "k1", "t0000000001", 5);
    h.submit("c2", "k2", "t0000000002", 6);
    h.push(Event {
        key: Some("k1".into()),
        ..Event::new("c3", "invoke", "submit")
    });
    h.push(Event {
        key: Some("k1".into()),
        task: Some("t0000000001".into()),
        log_index: Some(9),
        existed: Some(true),
        ..Event::new("c3", "ok", "submit")
    });
    let v = check(&h.events);
    assert!(v.ok(), "{:?}", v.problems);
}

#[test]
fn a_write_ordered_before_an_earlier_one_is_caught() {
    let mut h = H::new();
    h.submit("c1", "k1", "t0000000001", 8);
    h.submit("c2", "k2", "t0000000002", 6);
    let v = check(&h.events);
    assert!(
        v.problems.iter().any(|p| p.contains("began after")),
        "{:?}",
        v.problems
    );
}

#[test]
fn a_task_read_two_ways_at_one_index_is_caught() {
    let mut h = H::new();
    h.submit("c1", "k1", "t0000000001", 5);
    h.push(Event {
        task: Some("t0000000001".into()),
        ..Event::new("c2", "invoke", "get")
    });
    h.push(Event {
        task: Some("t0000000001".into()),
        ..Event::new("c3", "invoke", "get")
    });
    for (p, agent) in [("c2", "a1"), ("c3", "a2")] {
        h.push(Event {
            task: Some("t0000000001".into()),
            state: Some("assigned".into()),
            attempt: Some(1),
            token: Some(7),
            agent: Some(agent.into()),
            applied: Some(9),
            ..Event::new(p, "ok", "get")
        });
    }
    let v = check(&h.events);
    assert!(
        v.problems.iter().any(|p| p.contains("two ways")),
        "{:?}",
        v.problems
    );
}

#[test]
fn concurrent_reads_may_be_ordered_either_way() {
    let mut h = H::new();
    h.submit("c1", "k1", "t0000000001", 5);
    h.push(Event {
        task: Some("t0000000001".into()),
        ..Event::new("c2", "invoke", "get")
    });
    h.push(Event {
        task: Some("t0000000001".into()),
        ..Event::new("c3", "invoke", "get")
    });
    h.push(Event {
        task: Some("t0000000001".into()),
        state: Some("running".into()),
        attempt: Some(1),
        token: Some(7),
        agent: Some("a1".into()),
        applied: Some(9),
        ..Event::new("c2", "ok", "get")
    });
    h.push(Event {
        task: Some("t0000000001".into()),
        state: Some("assigned".into()),
        attempt: Some(1),
        token: Some(7),
        agent: Some("a1".into()),
        applied: Some(8),
        ..Event::new("c3", "ok", "get")
    });
    let v = check(&h.events);
    assert!(v.ok(), "{:?}", v.problems);
}

/// A read of a task that runs in another DC.
fn remote_get(h: &mut H, state: &str, attempt: u32, applied: u64) {
    h.get("c1", "t0000000001", state, attempt, 0, "b1", applied);
    h.events.last_mut().unwrap().remote = Some("b/t0000000007".into());
}

#[test]
fn a_forwarded_task_moves_on_through_the_other_dcs_states() {
    let mut h = H::new();
    h.submit("c1", "k1", "t0000000001", 5);
    h.get("c2", "t0000000001", "pending", 0, 0, "", 5);
    remote_get(&mut h, "forwarded", 0, 6);
    remote_get(&mut h, "pending", 0, 8);
    remote_get(&mut h, "running", 1, 9);
    // A cancel there is a request: the task still runs for a while.
    h.push(Event {
        task: Some("t0000000001".into()),
        ..Event::new("c3", "invoke", "cancel")
    });
    h.push(Event {
        task: Some("t0000000001".into()),
        state: Some("running".into()),
        attempt: Some(1),
        log_index: Some(10),
        remote: Some("b/t0000000007".into()),
        ..Event::new("c3", "ok", "cancel")
    });
    remote_get(&mut h, "running", 1, 11);
    remote_get(&mut h, "cancelled", 1, 12);
    let v = check(&h.events);
    assert!(v.ok(), "{:?}", v.problems);
}

#[test]
fn a_forwarded_task_read_going_back_is_caught() {
    let mut h = H::new();
    h.submit("c1", "k1", "t0000000001", 5);
    remote_get(&mut h, "running", 1, 9);
    remote_get(&mut h, "forwarded", 0, 11);
    let v = check(&h.events);
    assert!(
        v.problems.iter().any(|p| p.contains("went back")),
        "{:?}",
        v.problems
    );
}

/// The runner's record that an agent stopped `token` of `task` on the
/// leader's order.
fn stopped(h: &mut H, task: &str, token: u64) {
    h.push(Event {
        task: Some(task.into()),
        token: Some(token),
        agent: Some("a1".into()),
        ..Event::new("runner", "event", "stopped")
    });
}

fn went_back(v: &Verdict) -> bool {
    v.problems.iter().any(|p| p.contains("went back"))
        && v.problems.iter().any(|p| p.contains("no order"))
}

#[test]
fn a_task_its_agent_stopped_goes_back_to_pending_keeping_its_attempt() {
    // Token 7 ran and was stopped at a drain's deadline: the task went
    // back to pending with attempt 0 and ran again as token 9.
    let mut h = H::new();
    h.submit("c1", "k1", "t1", 5);
    h.get("c2", "t1", "pending", 0, 0, "", 5);
    h.get("c2", "t1", "running", 1, 7, "a1", 8);
    h.get("c2", "t1", "pending", 0, 0, "", 10);
    h.get("c2", "t1", "running", 1, 9, "a2", 11);
    h.get("c2", "t1", "succeeded", 1, 9, "a2", 12);
    let v = check(&h.events);
    assert!(
        went_back(&v),
        "without the agent's stop it is a problem: {:?}",
        v.problems
    );
    // Another task's stop excuses nothing here.
    stopped(&mut h, "t2", 7);
    assert!(went_back(&check(&h.events)));
    stopped(&mut h, "t1", 7);
    let v = check(&h.events);
    assert!(v.ok(), "{:?}", v.problems);
}

#[test]
fn a_stopped_regrant_no_read_saw_may_give_its_attempt_back() {
    // Token 7 was assigned, regranted as 9 (no read saw it), and 9 was
    // stopped before it ran.
    let mut h = H::new();
    h.submit("c1", "k1", "t1", 5);
    h.get("c2", "t1", "assigned", 1, 7, "a1", 8);
    h.get("c2", "t1", "pending", 0, 0, "", 10);
    h.get("c2", "t1", "running", 1, 12, "a2", 13);
    stopped(&mut h, "t1", 9);
    let v = check(&h.events);
    assert!(v.ok(), "{:?}", v.problems);
}

#[test]
fn a_stop_excuses_only_its_own_token() {
    // Token 7 was stopped, token 9 was not: going back after 9 is a bug.
    let mut h = H::new();
    h.submit("c1", "k1", "t1", 5);
    h.get("c2", "t1", "running", 1, 7, "a1", 8);
    h.get("c2", "t1", "pending", 0, 0, "", 10);
    h.get("c2", "t1", "running", 1, 9, "a2", 11);
    h.get("c2", "t1", "pending", 0, 0, "", 12);
    stopped(&mut h, "t1", 7);
    assert!(went_back(&check(&h.events)));

    // A requeue that keeps the attempt (a lease ran out) sorts after
    // it; a stopped token read again after its task went back does not.
    let mut h = H::new();
    h.submit("c1", "k1", "t1", 5);
    h.get("c2", "t1", "running", 1, 7, "a1", 8);
    h.get("c2", "t1", "pending", 0, 0, "", 10);
    h.get("c2", "t1", "running", 1, 7, "a1", 11);
    stopped(&mut h, "t1", 7);
    assert!(went_back(&check(&h.events)));

    // Pending with an attempt a stop cannot explain (two below the hold).
    let mut h = H::new();
    h.submit("c1", "k1", "t1", 5);
    h.get("c2", "t1", "pending", 1, 0, "", 6);
    h.get("c2", "t1", "running", 2, 7, "a1", 8);
    h.get("c2", "t1", "pending", 0, 0, "", 10);
    stopped(&mut h, "t1", 7);
    assert!(went_back(&check(&h.events)));
}
