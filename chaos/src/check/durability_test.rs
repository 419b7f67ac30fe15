//! Unit tests of `durability.rs`.

use super::*;
use crate::check::fixtures::H;
use crate::history::Event;

fn good() -> H {
    let mut h = H::new();
    h.submit("c1", "k1", "t1", 5).submit("c2", "k2", "t2", 6);
    h.get("c1", "t1", "succeeded", 1, 9, "a1", 10);
    h.final_task("t1", "k1", "succeeded", 1, 9, "a1");
    h.final_task("t2", "k2", "pending", 0, 0, "");
    h.final_done();
    h
}

#[test]
fn a_clean_history_passes() {
    let v = check(&good().events);
    assert!(v.ok(), "{:?}", v.problems);
}

#[test]
fn a_lost_submit_is_caught() {
    let mut h = H::new();
    h.submit("c1", "k1", "t1", 5).submit("c2", "k2", "t2", 6);
    h.final_task("t1", "k1", "pending", 0, 0, "").final_done();
    let v = check(&h.events);
    assert!(
        v.problems
            .iter()
            .any(|p| p.contains("t2") && p.contains("lost")),
        "{:?}",
        v.problems
    );
}

#[test]
fn a_duplicate_and_a_phantom_are_caught() {
    let mut h = good();
    h.final_task("t3", "k2", "pending", 0, 0, "");
    h.final_task("t4", "never", "pending", 0, 0, "");
    let v = check(&h.events);
    assert!(
        v.problems.iter().any(|p| p.contains("duplicate")),
        "{:?}",
        v.problems
    );
    assert!(
        v.problems.iter().any(|p| p.contains("phantom")),
        "{:?}",
        v.problems
    );
}

#[test]
fn a_lost_completion_is_caught() {
    let mut h = H::new();
    h.submit("c1", "k1", "t1", 5);
    h.get("c1", "t1", "succeeded", 1, 9, "a1", 10);
    h.final_task("t1", "k1", "pending", 1, 0, "").final_done();
    let v = check(&h.events);
    assert!(
        v.problems.iter().any(|p| p.contains("seen succeeded")),
        "{:?}",
        v.problems
    );
}

#[test]
fn a_certainly_failed_submit_must_leave_nothing() {
    let mut h = H::new();
    h.push(Event {
        key: Some("k9".into()),
        ..Event::new("c1", "invoke", "submit")
    });
    h.push(Event::new("c1", "fail", "submit"));
    h.final_task("t9", "k9", "pending", 0, 0, "").final_done();
    let v = check(&h.events);
    assert!(
        v.problems.iter().any(|p| p.contains("failed for certain")),
        "{:?}",
        v.problems
    );
}

#[test]
fn no_end_state_is_a_problem() {
    let mut h = H::new();
    h.submit("c1", "k1", "t1", 5);
    assert!(!check(&h.events).ok());
}
