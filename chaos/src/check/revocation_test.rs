//! Unit tests of `revocation.rs`.

use super::*;
use crate::check::fixtures::sink_event;

/// Events at explicit times (milliseconds since the run began).
struct Timed(Vec<Event>);

impl Timed {
    fn at(&mut self, ms: u64, mut e: Event) -> &mut Timed {
        e.i = self.0.len() as u64;
        e.t = ms * 1_000_000;
        self.0.push(e);
        self
    }
}

fn revoke(agent: &str, acknowledged: bool) -> Event {
    Event {
        agent: Some(agent.into()),
        accepted: Some(acknowledged),
        within_ms: Some(750),
        ..Event::new("nemesis", "event", "revoke")
    }
}

fn exited(agent: &str, code_8: bool) -> Event {
    Event {
        agent: Some(agent.into()),
        accepted: Some(code_8),
        detail: Some(
            if code_8 {
                "exit status: 8"
            } else {
                "exit status: 1"
            }
            .into(),
        ),
        ..Event::new("nemesis", "event", "revoked-exit")
    }
}

fn rejoin(agent: &str) -> Event {
    Event {
        agent: Some(agent.into()),
        ..Event::new("nemesis", "event", "rejoin")
    }
}

fn read(proc: &str, kind: &str, task: &str, state: &str, token: u64, agent: &str) -> Event {
    Event {
        task: Some(task.into()),
        state: (kind == "ok").then(|| state.into()),
        token: (kind == "ok").then_some(token),
        agent: (kind == "ok").then(|| agent.into()),
        ..Event::new(proc, kind, "get")
    }
}

fn final_task(task: &str, state: &str, token: u64, agent: &str) -> Event {
    Event {
        task: Some(task.into()),
        state: Some(state.into()),
        token: Some(token),
        agent: Some(agent.into()),
        ..Event::new("runner", "event", "final")
    }
}

/// a1's token revoked at 10 s (bound 10.75 s); it exits 8 at 11 s and
/// comes back at 12 s. Its worker of t1 (token 7) ran 9.5-10.2 s and t1
/// ended succeeded there; after the rejoin, t2 runs on a1 under token 20.
fn good() -> Timed {
    let mut h = Timed(Vec::new());
    h.at(9_500, sink_event("begin", "t1", 7, "a1", 1))
        .at(10_000, revoke("a1", true))
        .at(10_200, sink_event("end", "t1", 7, "a1", 1))
        // A worker started just before the bound reaches the sink late.
        .at(11_000, sink_event("begin", "t3", 9, "a1", 2))
        .at(11_050, sink_event("end", "t3", 9, "a1", 2))
        .at(11_100, exited("a1", true))
        .at(12_000, rejoin("a1"))
        .at(13_000, read("c1.0", "invoke", "t2", "", 0, ""))
        .at(13_010, read("c1.0", "ok", "t2", "assigned", 20, "a1"))
        .at(13_100, sink_event("begin", "t2", 20, "a1", 3))
        .at(13_500, sink_event("end", "t2", 20, "a1", 3))
        .at(20_000, final_task("t1", "succeeded", 7, "a1"))
        .at(20_001, final_task("t2", "succeeded", 20, "a1"))
        .at(20_002, final_task("t3", "succeeded", 30, "a2"));
    h
}

#[test]
fn a_clean_history_passes() {
    let v = check(&good().0);
    assert!(v.ok(), "{:?}", v.problems);
}

#[test]
fn no_revocation_no_problem() {
    let mut h = Timed(Vec::new());
    h.at(1, sink_event("begin", "t1", 7, "a1", 1));
    assert!(check(&h.0).ok());
}

#[test]
fn a_worker_begun_on_the_revoked_session_past_the_bound_is_caught() {
    let mut h = good();
    // 10.75 s + 1 s of start-up allowance have passed.
    h.at(11_800, sink_event("begin", "t4", 11, "a1", 4));
    h.0.sort_by_key(|e| e.t);
    let v = check(&h.0);
    assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
    assert!(
        v.problems[0].contains("task t4 token 11") && v.problems[0].contains("began at 11.800s"),
        "{:?}",
        v.problems
    );
}

#[test]
fn a_completion_whose_every_run_ended_past_the_bound_is_caught() {
    let mut h = Timed(Vec::new());
    h.at(9_000, sink_event("begin", "t1", 7, "a1", 1))
        .at(10_000, revoke("a1", true))
        .at(10_900, sink_event("commit", "t1", 7, "a1", 1))
        .at(10_950, sink_event("end", "t1", 7, "a1", 1))
        .at(11_000, exited("a1", true))
        .at(20_000, final_task("t1", "succeeded", 7, "a1"));
    let v = check(&h.0);
    assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
    assert!(
        v.problems[0].contains("task t1 ended succeeded under token 7 on a1")
            && v.problems[0].contains("ended at 10.950s"),
        "{:?}",
        v.problems
    );
    // The same run ending within the bound is fine.
    h.0[3].t = 10_700 * 1_000_000;
    h.0[2].t = 10_690 * 1_000_000;
    assert!(check(&h.0).ok(), "{:?}", check(&h.0).problems);
}

#[test]
fn a_start_a_read_past_the_bound_saw_still_to_come_is_caught() {
    let mut h = Timed(Vec::new());
    h.at(10_000, revoke("a1", true))
        .at(10_800, read("c1.0", "invoke", "t1", "", 0, ""))
        .at(10_810, read("c1.0", "ok", "t1", "assigned", 7, "a1"))
        .at(10_900, read("c2.0", "invoke", "t1", "", 0, ""))
        .at(10_910, read("c2.0", "ok", "t1", "running", 7, "a1"))
        .at(11_000, exited("a1", true))
        .at(20_000, final_task("t1", "succeeded", 12, "a2"));
    let v = check(&h.0);
    assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
    assert!(
        v.problems[0].contains("task t1 token 7")
            && v.problems[0].contains("saw it running")
            && v.problems[0].contains("started on the session"),
        "{:?}",
        v.problems
    );
}

#[test]
fn a_read_within_the_bound_or_after_the_rejoin_blames_nothing() {
    let mut h = Timed(Vec::new());
    // Begun before the bound: the start may have come before it too.
    h.at(10_000, revoke("a1", true))
        .at(10_700, read("c1.0", "invoke", "t1", "", 0, ""))
        .at(10_810, read("c1.0", "ok", "t1", "assigned", 7, "a1"))
        .at(10_900, read("c2.0", "invoke", "t1", "", 0, ""))
        .at(10_910, read("c2.0", "ok", "t1", "running", 7, "a1"))
        .at(11_000, exited("a1", true))
        .at(12_000, rejoin("a1"))
        // The next session's own tasks.
        .at(12_500, read("c1.1", "invoke", "t2", "", 0, ""))
        .at(12_510, read("c1.1", "ok", "t2", "assigned", 30, "a1"))
        .at(12_600, read("c2.1", "invoke", "t2", "", 0, ""))
        .at(12_610, read("c2.1", "ok", "t2", "running", 30, "a1"))
        .at(20_000, final_task("t1", "succeeded", 7, "a1"))
        .at(20_001, final_task("t2", "succeeded", 30, "a1"));
    let v = check(&h.0);
    assert!(v.ok(), "{:?}", v.problems);
}

#[test]
fn an_unacknowledged_revocation_and_a_wrong_exit_are_caught() {
    let mut h = Timed(Vec::new());
    h.at(1_000, revoke("a1", false))
        .at(5_000, revoke("a2", true))
        .at(6_000, exited("a2", false))
        .at(7_000, revoke("a3", true));
    let v = check(&h.0);
    assert_eq!(v.problems.len(), 3, "{:?}", v.problems);
    assert!(v.problems[0].contains("a1's token was not acknowledged"));
    assert!(
        v.problems[1].contains("a2 did not exit 8") && v.problems[1].contains("exit status: 1")
    );
    assert!(
        v.problems[2].contains("a3's token was revoked at 7.000s, and its exit was never recorded")
    );
}
