//! The session table with the time passed in: replace, displace, grace, settled assignments, stops, expiry.

use super::*;

const TTL: u64 = 10_000;

fn peer(instance: &str) -> Peer {
    Peer {
        instance: instance.into(),
        addr: "127.0.0.1:1".into(),
        token: None,
    }
}

#[test]
fn newer_session_replaces_older_and_old_detach_is_ignored() {
    let mut s = SessionTable::new(TTL);
    let a1 = s.attach("a", peer("p1"), 0, BTreeSet::new(), 100);
    assert_eq!(a1.closed, None);
    let a2 = s.attach("a", peer("p1"), 0, BTreeSet::new(), 200);
    assert_eq!(a2.closed, Some((a1.generation, Closed::Replaced)));
    assert!(a2.displaced.is_none());
    assert!(
        a2.regrant_at.is_none(),
        "the same process: nothing to wait for"
    );
    assert!(!s.detach("a", a1.generation));
    assert!(s.is_connected("a"));
    assert_eq!(s.generation("a"), Some(a2.generation));
    assert!(
        !s.renew("a", a1.generation, 300),
        "the replaced session renews nothing"
    );
    assert_eq!(s.deadline("a"), Some(200 + TTL));
    assert!(s.renew("a", a2.generation, 300));
    assert_eq!(s.deadline("a"), Some(300 + TTL));
    assert!(s.detach("a", a2.generation));
    assert!(!s.is_connected("a"));
    assert_eq!(s.generation("a"), None);
}

#[test]
fn another_instance_displaces_and_waits_out_the_old_lease() {
    let mut s = SessionTable::new(TTL);
    let a1 = s.attach("a", peer("p1"), 0, BTreeSet::new(), 100);
    assert!(
        a1.regrant_at.is_none(),
        "a first session with no lease before it"
    );
    let a2 = s.attach("a", peer("p2"), 0, BTreeSet::new(), 500);
    assert_eq!(
        a2.closed,
        Some((
            a1.generation,
            Closed::Displaced {
                by: "p2".into(),
                from: "127.0.0.1:1".into()
            }
        ))
    );
    assert_eq!(a2.displaced.unwrap().instance, "p1");
    assert_eq!(a2.regrant_at, Some(100 + TTL), "the old lease still runs");
    assert!(a2.taken_over);
    assert!(!s.renew("a", a1.generation, 600));
    assert!(s.was_displaced("a", "p1"));
    assert!(!s.was_displaced("a", "p2"));
    assert!(
        !s.was_displaced("a", ""),
        "an unnamed process is never refused"
    );
    // The new process reconnecting is still fenced by the old lease.
    let a3 = s.attach("a", peer("p2"), 0, BTreeSet::new(), 700);
    assert_eq!(a3.closed, Some((a2.generation, Closed::Replaced)));
    assert_eq!(a3.regrant_at, Some(100 + TTL));
    assert!(a3.taken_over);
    // Once the old lease has ended, nothing is owed to it.
    let a4 = s.attach("a", peer("p2"), 0, BTreeSet::new(), 100 + TTL);
    assert_eq!(a4.regrant_at, None);
    assert!(!a4.taken_over);
}

#[test]
fn displaced_instances_remembered_are_bounded() {
    let mut s = SessionTable::new(TTL);
    for i in 0..=DISPLACED_REMEMBERED + 1 {
        s.attach("a", peer(&format!("p{i}")), 0, BTreeSet::new(), 0);
    }
    assert!(!s.was_displaced("a", "p0"), "the oldest is forgotten");
    assert!(s.was_displaced("a", "p1"));
    assert!(s.was_displaced("a", &format!("p{DISPLACED_REMEMBERED}")));
}

#[test]
fn after_an_election_the_first_session_waits_out_the_grace() {
    let mut s = SessionTable::new(TTL);
    s.grace("a", 0);
    let a = s.attach("a", peer("p1"), 0, BTreeSet::new(), 1_000);
    assert_eq!(a.regrant_at, Some(TTL));
    assert!(!a.taken_over, "an unknown holder is not another process");
    assert_eq!(s.forget("a"), Some(a.generation));
    assert_eq!(s.forget("a"), None, "forgotten once");
    assert_eq!(
        s.attach("a", peer("p1"), 0, BTreeSet::new(), 2_000)
            .regrant_at,
        None
    );
}

#[test]
fn assignments_settled_by_the_reconcile_are_not_pushed() {
    let mut s = SessionTable::new(TTL);
    let a = s.attach("a", peer("p1"), 40, BTreeSet::new(), 0);
    assert_eq!(s.assignment_target("a", 40), None);
    assert_eq!(s.assignment_target("a", 41), Some(a.generation));
    assert_eq!(s.assignment_target("b", 41), None);
}

#[test]
fn a_stop_goes_only_to_a_session_that_holds_the_assignment() {
    let mut s = SessionTable::new(TTL);
    let a1 = s.attach("a", peer("p1"), 40, BTreeSet::from([(TaskId(1), 30)]), 0);
    // Reported in the Register, or pushed on the session (token > 40).
    assert_eq!(
        s.stop_target("a", TaskId(1), 30),
        StopTarget::Holds(a1.generation)
    );
    assert_eq!(
        s.stop_target("a", TaskId(2), 41),
        StopTarget::Holds(a1.generation)
    );
    // Settled by the reconcile and not reported: not this session's.
    assert_eq!(
        s.stop_target("a", TaskId(3), 35),
        StopTarget::NotHeld(a1.generation)
    );
    assert!(s.holds("a", a1.generation, TaskId(1), 30));
    assert!(!s.holds("a", a1.generation, TaskId(3), 35));
    // Another process takes the id over: it reported nothing, so what
    // the first one held (and may still run) is not its to stop.
    let a2 = s.attach("a", peer("p2"), 50, BTreeSet::new(), 0);
    assert_eq!(
        s.stop_target("a", TaskId(1), 30),
        StopTarget::NotHeld(a2.generation)
    );
    assert_eq!(
        s.stop_target("a", TaskId(2), 41),
        StopTarget::NotHeld(a2.generation)
    );
    assert!(!s.holds("a", a2.generation, TaskId(1), 30));
    assert!(
        !s.holds("a", a1.generation, TaskId(1), 30),
        "a closed session holds nothing"
    );
    assert!(s.holds("a", a2.generation, TaskId(4), 51));
    assert_eq!(s.stop_target("b", TaskId(1), 30), StopTarget::NoSession);
}

#[test]
fn lease_expires_only_after_ttl() {
    let mut s = SessionTable::new(TTL);
    s.grace("a", 1_000);
    s.grace("b", 2_000);
    assert_eq!(s.next_deadline(), Some(1_000 + TTL));
    assert!(s.expired(1_000 + TTL - 1).is_empty());
    assert_eq!(s.expired(1_000 + TTL), vec!["a".to_string()]);
    assert_eq!(
        s.expired(2_000 + TTL),
        vec!["a".to_string(), "b".to_string()]
    );
    assert_eq!(s.forget("a"), None, "no session to close");
    assert!(s.expired(2_000 + TTL - 1).is_empty());
    assert_eq!(s.next_deadline(), Some(2_000 + TTL));
}

#[test]
fn a_renewal_moves_the_deadline_only_for_the_live_session() {
    let mut s = SessionTable::new(TTL);
    s.grace("a", 0);
    let a = s.attach("a", peer("p1"), 0, BTreeSet::new(), 100);
    assert_eq!(s.deadline("a"), Some(100 + TTL), "attaching starts a lease");
    assert!(s.renew("a", a.generation, 5_000));
    assert!(s.expired(100 + TTL).is_empty());
    assert!(!s.renew("a", a.generation + 1, 9_000));
    assert_eq!(s.deadline("a"), Some(5_000 + TTL));
    assert!(s.detach("a", a.generation));
    assert!(
        !s.renew("a", a.generation, 6_000),
        "a detached session renews nothing"
    );
    assert_eq!(
        s.expired(5_000 + TTL),
        vec!["a".to_string()],
        "a detached agent's lease runs out"
    );
}

#[test]
fn connected_is_rebuilt_after_a_change() {
    let mut s = SessionTable::new(TTL);
    assert!(s.connected().is_empty());
    let a = s.attach("a", peer("p1"), 0, BTreeSet::new(), 0);
    s.attach("b", peer("p2"), 0, BTreeSet::new(), 0);
    assert_eq!(
        *s.connected(),
        BTreeSet::from(["a".to_string(), "b".to_string()])
    );
    s.detach("a", a.generation);
    assert_eq!(*s.connected(), BTreeSet::from(["b".to_string()]));
    s.forget("b");
    assert!(s.connected().is_empty());
}

#[test]
fn warm_models_live_with_the_session() {
    let models = |m: &[&str]| {
        m.iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<String>>()
    };
    let mut s = SessionTable::new(TTL);
    let a = s.attach("a", peer("p1"), 0, BTreeSet::new(), 0);
    s.attach("b", peer("p2"), 0, BTreeSet::new(), 0);
    assert!(s.set_warm("a", a.generation, models(&["m1", "m2"])));
    // The same list again is no change; a stale generation sets nothing.
    assert!(!s.set_warm("a", a.generation, models(&["m1", "m2"])));
    assert!(!s.set_warm("a", a.generation + 7, models(&["m3"])));
    // An agent that reports none is left out.
    assert_eq!(
        *s.warm(),
        BTreeMap::from([("a".to_string(), models(&["m1", "m2"]))])
    );
    // A new session of the agent starts with none; its end drops them.
    let a2 = s.attach("a", peer("p1"), 0, BTreeSet::new(), 10);
    assert!(s.warm().is_empty());
    assert!(s.set_warm("a", a2.generation, models(&["m3"])));
    assert_eq!(s.warm().len(), 1);
    s.detach("a", a2.generation);
    assert!(s.warm().is_empty());
}
