//! Unit tests of `forwarding.rs`.

use super::*;
use crate::check::fixtures::H;

fn forwarded(h: &mut H, id: &str, key: &str, remote: &str) {
    h.push(Event {
        task: Some(id.into()),
        key: Some(key.into()),
        state: Some("succeeded".into()),
        remote: Some(remote.into()),
        ..Event::new("runner", "event", "final")
    });
}

fn ingested(h: &mut H, id: &str, origin: &str) {
    h.push(Event {
        task: Some(id.into()),
        state: Some("succeeded".into()),
        remote: Some(format!("a/{origin}")),
        ..Event::new("runner", "event", "final-remote")
    });
}

fn good() -> H {
    let mut h = H::new();
    forwarded(&mut h, "t0000000001", "k1-remote", "b/t0000000001");
    forwarded(&mut h, "t0000000003", "k3-remote", "b/t0000000002");
    h.final_task("t0000000002", "k2", "succeeded", 1, 9, "a1");
    ingested(&mut h, "t0000000001", "t0000000001");
    ingested(&mut h, "t0000000002", "t0000000003");
    h.final_done();
    h
}

#[test]
fn once_in_order_and_delivered_passes() {
    let v = check(&good().events);
    assert!(v.ok(), "{:?}", v.problems);
}

#[test]
fn a_task_ingested_twice_is_caught() {
    let mut h = good();
    ingested(&mut h, "t0000000003", "t0000000003");
    let v = check(&h.events);
    assert!(
        v.problems.iter().any(|p| p.contains("ingested 2 times")),
        "{:?}",
        v.problems
    );
}

#[test]
fn a_phantom_is_caught() {
    let mut h = good();
    ingested(&mut h, "t0000000003", "t0000000002");
    let v = check(&h.events);
    assert!(
        v.problems.iter().any(|p| p.contains("phantom")),
        "{:?}",
        v.problems
    );
}

#[test]
fn out_of_order_is_caught() {
    let mut h = H::new();
    forwarded(&mut h, "t0000000001", "k1-remote", "b/t0000000002");
    forwarded(&mut h, "t0000000002", "k2-remote", "b/t0000000001");
    ingested(&mut h, "t0000000002", "t0000000001");
    ingested(&mut h, "t0000000001", "t0000000002");
    let v = check(&h.events);
    assert!(
        v.problems.iter().any(|p| p.contains("out of order")),
        "{:?}",
        v.problems
    );
}

#[test]
fn an_undelivered_or_unfinished_task_is_caught() {
    let mut h = good();
    h.final_task("t0000000004", "k4-remote", "pending", 0, 0, "");
    h.push(Event {
        task: Some("t0000000005".into()),
        key: Some("k5-remote".into()),
        state: Some("forwarded".into()),
        remote: Some("b/".into()),
        ..Event::new("runner", "event", "final")
    });
    let v = check(&h.events);
    assert!(
        v.problems.iter().any(|p| p.contains("never forwarded")),
        "{:?}",
        v.problems
    );
    assert!(
        v.problems.iter().any(|p| p.contains("never accepted")),
        "{:?}",
        v.problems
    );
}

#[test]
fn a_wrong_remote_id_is_caught() {
    let mut h = good();
    forwarded(&mut h, "t0000000006", "k6-remote", "b/t0000000009");
    ingested(&mut h, "t0000000003", "t0000000006");
    let v = check(&h.events);
    assert!(
        v.problems.iter().any(|p| p.contains("says it runs as")),
        "{:?}",
        v.problems
    );
}
