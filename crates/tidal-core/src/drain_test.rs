//! Drains in the state machine and the planner: placement skips a draining
//! agent, a stop requeues without spending an attempt, stale stops are
//! refused, undrain, and which stops are due when.

use std::collections::BTreeSet;

use super::*;
use crate::command::{Command, Rejection, Response};
use crate::dispatch::{place_new, plan, DispatchCursor, InFlight};
use crate::model::{AgentState, TaskState};
use crate::state::tests::{agent, task, Log};

fn drain(log: &mut Log, a: &str, deadline_ms: Option<u64>) -> Response {
    log.apply(Command::DrainAgent {
        agent: a.into(),
        deadline_ms,
    })
}

fn stopped(log: &mut Log, task: TaskId, token: FencingToken) -> Result<(), Rejection> {
    match log.apply(Command::Stopped(vec![(task, token)])) {
        Response::Stopped(mut v) => v.remove(0),
        other => panic!("{other:?}"),
    }
}

fn connected(ids: &[&str]) -> BTreeSet<AgentId> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[test]
fn placement_skips_a_draining_agent() {
    let mut log = Log::new();
    log.register(agent("a1", 4));
    log.register(agent("a2", 4));
    assert_eq!(drain(&mut log, "a1", None), Response::Ok);
    for _ in 0..4 {
        log.submit(task("t2i")).unwrap();
    }
    let mut cursor = DispatchCursor::default();
    let round = plan(&log.state, &connected(&["a1", "a2"]), 100, &mut cursor);
    assert_eq!(round.len(), 4);
    assert!(round.iter().all(|(_, a)| a == "a2"), "{round:?}");
    // Eager placement of new tasks skips it too.
    let placed = place_new(
        &log.state,
        &connected(&["a1"]),
        &[task("t2i")],
        &InFlight::default(),
        &mut cursor,
    );
    assert!(placed.is_empty(), "{placed:?}");
}

#[test]
fn apply_refuses_to_assign_to_a_draining_agent() {
    let mut log = Log::new();
    log.register(agent("a1", 4));
    let t1 = log.submit(task("t2i")).unwrap().id;
    drain(&mut log, "a1", Some(5000));
    // A plan made before the drain applied is refused at apply...
    let r = log.assign(t1, "a1").unwrap_err();
    assert!(
        matches!(&r, Rejection::Ineligible { reason, .. } if reason == "is draining"),
        "{r:?}"
    );
    // ...and so is a placement in a submit entry.
    let r = log.apply(Command::SubmitPlaced {
        specs: vec![task("t2i")],
        place: vec![(0, "a1".into())],
    });
    match r {
        Response::SubmittedPlaced { submitted, granted } => {
            assert!(submitted[0].is_ok());
            assert!(granted.is_empty(), "{granted:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(log.state.pending_total(), 2);
}

#[test]
fn running_tasks_finish_then_the_agent_is_drained() {
    let mut log = Log::new();
    log.register(agent("a1", 4));
    let t1 = log.submit(task("t2i")).unwrap().id;
    let g = log.assign(t1, "a1").unwrap();
    drain(&mut log, "a1", None);
    let a = log.state.agent("a1").unwrap();
    assert!(a.is_draining() && !a.is_drained());
    log.complete(t1, g.token, true).unwrap();
    assert!(log.state.agent("a1").unwrap().is_drained());
    // No deadline: nothing is ever due.
    assert!(due_stops(&log.state, u64::MAX).is_empty());
}

#[test]
fn a_drain_survives_the_agents_reconnect() {
    let mut log = Log::new();
    log.register(agent("a1", 4));
    drain(&mut log, "a1", Some(7000));
    log.register(agent("a1", 2));
    let a = log.state.agent("a1").unwrap();
    assert_eq!(
        a.state,
        AgentState::Draining {
            deadline_ms: Some(7000)
        }
    );
    assert_eq!(a.spec.slots, 2);
}

#[test]
fn due_stops_follow_the_deadline_in_the_state() {
    let mut log = Log::new();
    log.register(agent("a1", 4));
    log.register(agent("a2", 4));
    let t1 = log.submit(task("t2i")).unwrap().id;
    let t2 = log.submit(task("t2i")).unwrap().id;
    let g1 = log.assign(t1, "a1").unwrap();
    log.assign(t2, "a2").unwrap();
    drain(&mut log, "a1", Some(5000));
    assert!(due_stops(&log.state, 4999).is_empty());
    assert_eq!(next_deadline(&log.state, 4999), Some(5000));
    assert_eq!(
        due_stops(&log.state, 5000),
        vec![DueStop {
            agent: "a1".into(),
            task: t1,
            token: g1.token
        }]
    );
    assert_eq!(next_deadline(&log.state, 5000), None);
    // A new leader reads the same state: the same stops are due (the
    // deadline is in the state, not in the old leader's memory).
    let copy = log.state.clone();
    assert_eq!(due_stops(&copy, 6000), due_stops(&log.state, 6000));
}

#[test]
fn a_stop_requeues_without_spending_an_attempt() {
    let mut log = Log::new();
    log.register(agent("a1", 4));
    log.register(agent("a2", 4));
    let t1 = log.submit(task("t2i")).unwrap().id;
    let g1 = log.assign(t1, "a1").unwrap();
    assert_eq!(g1.attempt, 1);
    log.apply(Command::StartedBatch(vec![(t1, g1.token)]));
    drain(&mut log, "a1", Some(0));
    assert_eq!(stopped(&mut log, t1, g1.token), Ok(()));
    let t = log.state.task(t1).unwrap();
    assert_eq!((t.state.clone(), t.attempt), (TaskState::Pending, 0));
    let a1 = log.state.agent("a1").unwrap();
    assert!(a1.is_drained());
    assert_eq!(a1.slots_in_use, 0);
    // It runs elsewhere with the attempt it had, under a new token.
    let mut cursor = DispatchCursor::default();
    let round = plan(&log.state, &connected(&["a1", "a2"]), 10, &mut cursor);
    assert_eq!(round, vec![(t1, "a2".to_string())]);
    let g2 = log.assign(t1, "a2").unwrap();
    assert_eq!(g2.attempt, 1);
    assert!(g2.token > g1.token);
}

#[test]
fn a_stop_with_a_stale_token_is_refused() {
    let mut log = Log::new();
    log.register(agent("a1", 4));
    log.register(agent("a2", 4));
    let t1 = log.submit(task("t2i")).unwrap().id;
    let g1 = log.assign(t1, "a1").unwrap();
    // An older token than the current one.
    assert_eq!(
        stopped(&mut log, t1, g1.token - 1),
        Err(Rejection::StaleToken {
            task: t1,
            presented: g1.token - 1,
            current: Some(g1.token)
        })
    );
    assert_eq!(stopped(&mut log, t1, g1.token), Ok(()));
    // A resent report after the requeue, and one after a new grant.
    assert!(matches!(
        stopped(&mut log, t1, g1.token),
        Err(Rejection::StaleToken { current: None, .. })
    ));
    let g2 = log.assign(t1, "a2").unwrap();
    assert!(matches!(
        stopped(&mut log, t1, g1.token),
        Err(Rejection::StaleToken { current: Some(c), .. }) if c == g2.token
    ));
    // A finished task cannot be stopped into Pending again.
    log.complete(t1, g2.token, true).unwrap();
    assert!(stopped(&mut log, t1, g2.token).is_err());
    assert!(matches!(
        log.state.task(t1).unwrap().state,
        TaskState::Succeeded { .. }
    ));
    assert_eq!(
        stopped(&mut log, TaskId(99), 1),
        Err(Rejection::TaskNotFound(TaskId(99)))
    );
}

#[test]
fn undrain_makes_the_agent_ready_again() {
    let mut log = Log::new();
    log.register(agent("a1", 4));
    drain(&mut log, "a1", Some(100));
    assert_eq!(
        log.apply(Command::UndrainAgent { agent: "a1".into() }),
        Response::Ok
    );
    assert_eq!(log.state.agent("a1").unwrap().state, AgentState::Ready);
    // Undrain of a ready agent changes nothing.
    assert_eq!(
        log.apply(Command::UndrainAgent { agent: "a1".into() }),
        Response::Ok
    );
    let t1 = log.submit(task("t2i")).unwrap().id;
    assert!(log.assign(t1, "a1").is_ok());
    // Unknown and down agents.
    assert_eq!(
        drain(&mut log, "nope", None),
        Response::Rejected(Rejection::AgentNotFound("nope".into()))
    );
    log.apply(Command::AgentDown { agent: "a1".into() });
    assert!(matches!(
        drain(&mut log, "a1", None),
        Response::Rejected(Rejection::AgentWrongState { .. })
    ));
    assert!(matches!(
        log.apply(Command::UndrainAgent { agent: "a1".into() }),
        Response::Rejected(Rejection::AgentWrongState { .. })
    ));
}

#[test]
fn a_draining_agent_that_goes_down_ends_its_drain() {
    let mut log = Log::new();
    log.register(agent("a1", 4));
    let t1 = log.submit(task("t2i")).unwrap().id;
    log.assign(t1, "a1").unwrap();
    drain(&mut log, "a1", Some(5000));
    log.apply(Command::AgentDown { agent: "a1".into() });
    assert_eq!(log.state.agent("a1").unwrap().state, AgentState::Down);
    assert!(due_stops(&log.state, u64::MAX).is_empty());
    log.register(agent("a1", 4));
    assert_eq!(log.state.agent("a1").unwrap().state, AgentState::Ready);
}
