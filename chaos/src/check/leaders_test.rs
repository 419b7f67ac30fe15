//! Unit tests of `leaders.rs`.

use super::*;
use crate::check::fixtures::H;

fn status(node: u64, term: u64, role: &str, incarnation: u32, applied: u64) -> Event {
    Event {
        node: Some(node),
        term: Some(term),
        role: Some(role.into()),
        incarnation: Some(incarnation),
        applied: Some(applied),
        last_log: Some(applied + 1),
        ..Event::new("observer", "event", "status")
    }
}

#[test]
fn a_clean_history_passes() {
    let mut h = H::new();
    h.push(status(1, 1, "leader", 0, 5))
        .push(status(2, 1, "follower", 0, 5));
    h.push(status(1, 2, "follower", 1, 3))
        .push(status(2, 2, "leader", 0, 7));
    assert!(check(&h.events).ok());
}

#[test]
fn two_leaders_in_a_term_are_caught() {
    let mut h = H::new();
    h.push(status(1, 3, "leader", 0, 5))
        .push(status(2, 3, "leader", 0, 5));
    let v = check(&h.events);
    assert!(
        v.problems.iter().any(|p| p.contains("2 leaders")),
        "{:?}",
        v.problems
    );
}

#[test]
fn a_term_going_back_after_a_restart_is_caught() {
    let mut h = H::new();
    h.push(status(1, 4, "follower", 0, 5))
        .push(status(1, 3, "follower", 1, 5));
    let v = check(&h.events);
    assert!(
        v.problems
            .iter()
            .any(|p| p.contains("vote was not durable")),
        "{:?}",
        v.problems
    );
}

#[test]
fn applied_going_back_while_running_is_caught() {
    let mut h = H::new();
    h.push(status(1, 1, "follower", 0, 9))
        .push(status(1, 1, "follower", 0, 8));
    let v = check(&h.events);
    assert!(
        v.problems
            .iter()
            .any(|p| p.contains("went back from 9 to 8")),
        "{:?}",
        v.problems
    );
}
