//! Unit tests of `preemption.rs`.

use super::*;
use crate::check::fixtures::H;

fn agent_did(h: &mut H, f: &str, task: &str, token: u64, agent: &str) {
    h.push(Event {
        task: Some(task.into()),
        token: Some(token),
        agent: Some(agent.into()),
        ..Event::new("runner", "event", f)
    });
}

fn read(h: &mut H, proc: &str, task: &str, preempted: u32, suspended: bool) {
    h.push(Event {
        task: Some(task.into()),
        ..Event::new(proc, "invoke", "get")
    });
    h.push(Event {
        task: Some(task.into()),
        state: Some("running".into()),
        preempted: Some(preempted),
        suspended: suspended.then_some(true),
        ..Event::new(proc, "ok", "get")
    });
}

fn finish(h: &mut H, task: &str, key: &str, preempted: u32) {
    h.final_task(task, key, "succeeded", 1, 9, "a1");
    let last = h.events.last_mut().expect("just pushed");
    last.preempted = Some(preempted);
}

/// t1 stopped with notice once, t2 suspended and resumed, t3 online and
/// t4 non-preemptible never touched.
fn good() -> H {
    let mut h = H::new();
    h.submit("c1", "w1-1.stop", "t1", 1)
        .submit("c1", "w1-2.susp", "t2", 2)
        .submit("c2", "w2-1.on", "t3", 3)
        .submit("c2", "w2-2.keep", "t4", 4);
    read(&mut h, "c1", "t1", 1, false);
    read(&mut h, "c2", "t2", 1, true);
    read(&mut h, "c1", "t3", 0, false);
    finish(&mut h, "t1", "w1-1.stop", 1);
    finish(&mut h, "t2", "w1-2.susp", 1);
    finish(&mut h, "t3", "w2-1.on", 0);
    finish(&mut h, "t4", "w2-2.keep", 0);
    h.final_done();
    agent_did(&mut h, "notice", "t1", 5, "a1");
    agent_did(&mut h, "stopped", "t1", 5, "a1");
    agent_did(&mut h, "suspend", "t2", 6, "a2");
    agent_did(&mut h, "resume", "t2", 6, "a2");
    // A new leader re-sent the resume.
    agent_did(&mut h, "resume", "t2", 6, "a2");
    h
}

#[test]
fn a_clean_history_passes() {
    let v = check(&good().events);
    assert!(v.ok(), "{:?}", v.problems);
}

#[test]
fn online_and_non_preemptible_work_is_never_preempted() {
    let mut h = good();
    agent_did(&mut h, "notice", "t3", 7, "a1");
    agent_did(&mut h, "stopped", "t3", 7, "a1");
    agent_did(&mut h, "suspend", "t4", 8, "a1");
    read(&mut h, "c3", "t4", 1, false);
    let v = check(&h.events);
    assert_eq!(v.problems.len(), 5, "{:?}", v.problems);
    assert!(v.problems[0].starts_with("task t3 (Online) was given notice on a1 under token 7"));
    assert!(v.problems[1].starts_with("task t4 (Unpreemptible) was suspended on a1"));
    assert!(v.problems[2].starts_with("task t4 (Unpreemptible) was read preempted 1 times"));
    // Neither preemption was counted by the cluster either.
    assert!(v.problems[3].starts_with("task t3 was preempted under 1 tokens"));
    assert!(v.problems[4].starts_with("task t4 was preempted under 1 tokens"));
}

#[test]
fn a_task_is_preempted_the_way_it_declared() {
    let mut h = good();
    agent_did(&mut h, "suspend", "t1", 9, "a1");
    agent_did(&mut h, "notice", "t2", 6, "a2");
    let v = check(&h.events);
    assert!(
        v.problems
            .iter()
            .any(|p| p.starts_with("task t1 (Stoppable) was suspended")),
        "{:?}",
        v.problems
    );
    assert!(
        v.problems
            .iter()
            .any(|p| p.starts_with("task t2 (Suspendable) was given notice")),
        "{:?}",
        v.problems
    );
}

#[test]
fn a_preemption_never_committed_is_caught() {
    let mut h = good();
    // t1 given notice under a second token and stopped, but counted once.
    agent_did(&mut h, "notice", "t1", 9, "a2");
    let v = check(&h.events);
    assert!(
        v.ok(),
        "a notice its worker finished within is no preemption: {:?}",
        v.problems
    );
    agent_did(&mut h, "stopped", "t1", 9, "a2");
    let mut refused = h.events.clone();
    let v = check(&h.events);
    assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
    assert!(
        v.problems[0].contains("preempted under 2 tokens ({5, 9})")
            && v.problems[0].contains("the cluster counted 1"),
        "{:?}",
        v.problems
    );
    // The leader refused that stop's report (the task was cancelled
    // meanwhile): not a preemption.
    let mut r = H::new();
    agent_did(&mut r, "rejected", "t1", 9, "a2");
    refused.extend(r.events);
    let v = check(&refused);
    assert!(v.ok(), "{:?}", v.problems);
}

#[test]
fn the_count_going_back_is_caught_only_in_real_time_order() {
    let mut h = good();
    // A read that began after one saw 1 (t1's) and saw 0.
    read(&mut h, "c3", "t1", 0, false);
    let v = check(&h.events);
    assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
    assert!(v.problems[0].contains("saw 0 preemptions") && v.problems[0].contains("had seen 1"));

    // Concurrent reads may see either: c1's read is in flight while c2's
    // completes with 1, then c1's completes with 0.
    let mut h = H::new();
    h.submit("c1", "w1-1.stop", "t1", 1);
    h.push(Event {
        task: Some("t1".into()),
        ..Event::new("c1", "invoke", "get")
    });
    read(&mut h, "c2", "t1", 1, false);
    h.push(Event {
        task: Some("t1".into()),
        state: Some("running".into()),
        preempted: Some(0),
        ..Event::new("c1", "ok", "get")
    });
    let v = check(&h.events);
    assert!(v.ok(), "{:?}", v.problems);
}

#[test]
fn a_resume_of_a_worker_never_suspended_there_is_caught() {
    let mut h = good();
    agent_did(&mut h, "resume", "t2", 6, "a1");
    agent_did(&mut h, "resume", "t1", 5, "a1");
    let v = check(&h.events);
    assert_eq!(v.problems.len(), 2, "{:?}", v.problems);
    assert!(v.problems[0].starts_with("task t2 was resumed under token 6 on a1"));
}

#[test]
fn a_task_that_ends_suspended_is_caught() {
    let mut h = good();
    finish(&mut h, "t2", "w1-2.susp", 1);
    h.events.last_mut().expect("pushed").suspended = Some(true);
    let v = check(&h.events);
    assert_eq!(
        v.problems,
        vec!["task t2 ended succeeded and still suspended"]
    );
}
