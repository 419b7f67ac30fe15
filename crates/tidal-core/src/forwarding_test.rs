//! Unit tests of forwarding in the state: two DCs' states and a hand-driven
//! link between them (ship = read the outbox, ingest there, ack here).

use super::*;
use crate::command::{Command, Completion, Response};
use crate::model::Outcome;
use crate::state::tests::{agent, task, Log};

/// Ships every unacknowledged record from `from` to `to` and commits the ack
/// at `from`; returns the verdicts.
fn ship(from: &mut Log, from_dc: &str, to: &mut Log, to_dc: &str) -> Vec<(u64, Verdict)> {
    let records = from.state.unshipped(to_dc, 0, usize::MAX);
    let Response::Ingested { verdicts, .. } = to.apply(Command::Ingest {
        origin: from_dc.into(),
        records,
    }) else {
        panic!("ingest answered something else")
    };
    assert_eq!(
        from.apply(Command::ForwardAck {
            peer: to_dc.into(),
            verdicts: verdicts.clone(),
        }),
        Response::Ok
    );
    verdicts
}

fn forward(log: &mut Log, id: TaskId, dc: &str) -> Result<u64, Rejection> {
    match log.apply(Command::Forward(vec![(id, dc.into())])) {
        Response::Forwarded(mut v) => v.remove(0),
        other => panic!("{other:?}"),
    }
}

fn tts_agent(id: &str) -> AgentSpec {
    AgentSpec {
        task_types: ["tts".to_string()].into(),
        ..agent(id, 2)
    }
}

fn remote(log: &Log, id: TaskId) -> Option<RemoteView> {
    match &log.state.task(id).unwrap().state {
        TaskState::Forwarded { remote, .. } => remote.clone(),
        other => panic!("{id} is {other:?}"),
    }
}

#[test]
fn forwarded_task_runs_remotely_and_its_status_comes_back() {
    let (mut a, mut b) = (Log::new(), Log::new());
    b.register(tts_agent("b1"));
    let id = a.submit(task("tts")).unwrap().id;
    assert_eq!(forward(&mut a, id, "dc-b"), Ok(1));
    assert_eq!(a.state.pending_total(), 0);
    assert_eq!(remote(&a, id), None);

    let verdicts = ship(&mut a, "dc-a", &mut b, "dc-b");
    let remote_id = b.state.inbound("dc-a").unwrap().tasks[&id];
    assert_eq!(
        verdicts,
        vec![(
            1,
            Verdict::Accepted {
                remote_task: Some(remote_id)
            }
        )]
    );
    assert!(a.state.outbox("dc-b").unwrap().records.is_empty());
    assert_eq!(remote(&a, id).unwrap().task, remote_id);
    assert_eq!(b.state.origin_of(remote_id), Some(&("dc-a".into(), id)));

    let g = b.assign(remote_id, "b1").unwrap();
    b.apply(Command::Complete(vec![Completion {
        task: remote_id,
        token: g.token,
        outcome: Outcome {
            success: true,
            result: b"audio".to_vec(),
            error: String::new(),
            exit_code: 0,
        },
    }]));
    // Two status records: assigned, then succeeded.
    assert_eq!(b.state.outbox("dc-a").unwrap().records.len(), 2);
    ship(&mut b, "dc-b", &mut a, "dc-a");
    let view = remote(&a, id).unwrap();
    assert_eq!(view.state, TaskStateKind::Succeeded);
    assert_eq!(view.agent.as_deref(), Some("b1"));
    assert_eq!(view.attempt, 1);
    let t = a.state.task(id).unwrap();
    assert_eq!(t.result, b"audio");
    assert!(t.state.is_terminal());
    assert!(b.state.outbox("dc-a").unwrap().records.is_empty());
}

#[test]
fn ingest_is_idempotent_by_sequence_and_by_origin_task() {
    let (mut a, mut b) = (Log::new(), Log::new());
    b.register(tts_agent("b1"));
    let ids: Vec<TaskId> = (0..3).map(|_| a.submit(task("tts")).unwrap().id).collect();
    for id in &ids {
        forward(&mut a, *id, "dc-b").unwrap();
    }
    let records = a.state.unshipped("dc-b", 0, usize::MAX);
    let first = b.apply(Command::Ingest {
        origin: "dc-a".into(),
        records: records.clone(),
    });
    let digest = b.state.digest();
    // The same frame again (a lost answer, a new leader resending): same
    // verdicts, no change.
    let again = b.apply(Command::Ingest {
        origin: "dc-a".into(),
        records: records.clone(),
    });
    assert_eq!(first, again);
    assert_eq!(b.state.digest(), digest);
    assert_eq!(b.state.pending_total(), 3);
    let Response::Ingested { hwm, .. } = again else {
        panic!()
    };
    assert_eq!(hwm, 3);
}

#[test]
fn a_gap_stops_ingest_until_the_missing_record_arrives() {
    let (mut a, mut b) = (Log::new(), Log::new());
    b.register(tts_agent("b1"));
    for _ in 0..3 {
        let id = a.submit(task("tts")).unwrap().id;
        forward(&mut a, id, "dc-b").unwrap();
    }
    let records = a.state.unshipped("dc-b", 0, usize::MAX);
    let Response::Ingested { verdicts, hwm, .. } = b.apply(Command::Ingest {
        origin: "dc-a".into(),
        records: records[1..].to_vec(),
    }) else {
        panic!()
    };
    assert!(verdicts.is_empty());
    assert_eq!(hwm, 0);
    assert_eq!(b.state.pending_total(), 0);
    let Response::Ingested { verdicts, hwm, .. } = b.apply(Command::Ingest {
        origin: "dc-a".into(),
        records,
    }) else {
        panic!()
    };
    assert_eq!(verdicts.len(), 3);
    assert_eq!(hwm, 3);
    // FIFO: ids in the receiving DC follow the origin's order.
    let local: Vec<TaskId> = b
        .state
        .inbound("dc-a")
        .unwrap()
        .tasks
        .values()
        .copied()
        .collect();
    assert!(local.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn refused_task_comes_back_and_is_not_offered_to_that_peer_again() {
    let (mut a, mut b) = (Log::new(), Log::new());
    // b has no tts agent.
    b.register(agent("b1", 2));
    let id = a.submit(task("tts")).unwrap().id;
    forward(&mut a, id, "dc-b").unwrap();
    let verdicts = ship(&mut a, "dc-a", &mut b, "dc-b");
    assert!(matches!(verdicts[0].1, Verdict::Rejected { .. }));
    assert_eq!(a.state.task(id).unwrap().state, TaskState::Pending);
    assert!(a.state.task(id).unwrap().error.contains("dc-b"));
    assert_eq!(b.state.tasks_after(None).count(), 0);
    // A duplicate ingest of the refused record says refused again.
    let records = vec![(
        1,
        Record::Task {
            origin_task: id,
            spec: task("tts"),
        },
    )];
    let Response::Ingested { verdicts, .. } = b.apply(Command::Ingest {
        origin: "dc-a".into(),
        records,
    }) else {
        panic!()
    };
    assert!(matches!(verdicts[0].1, Verdict::Rejected { .. }));

    // The planner skips dc-b for this task but would use dc-c.
    let summary = CapabilitySummary::of(&{
        let mut c = Log::new();
        c.register(tts_agent("c1"));
        c.state
    });
    let mut peers = vec![
        PeerView {
            dc: "dc-b".into(),
            summary: Some(summary.clone()),
            room: 10,
            outbox_room: 10,
        },
        PeerView {
            dc: "dc-c".into(),
            summary: Some(summary),
            room: 10,
            outbox_room: 10,
        },
    ];
    let plan = plan_forwards(&a.state, &mut peers, |_| ALLOW_AFTER_MINUTE, 0, 10);
    assert_eq!(plan, vec![(id, "dc-c".to_string())]);
}

const ALLOW_AFTER_MINUTE: QueuePolicy = QueuePolicy {
    allow: true,
    forward_after_ms: 60_000,
};

#[test]
fn forwarded_task_cannot_be_assigned_here_or_forwarded_twice() {
    let (mut a, mut b) = (Log::new(), Log::new());
    a.register(tts_agent("a1"));
    b.register(tts_agent("b1"));
    let id = a.submit(task("tts")).unwrap().id;
    forward(&mut a, id, "dc-b").unwrap();
    assert!(matches!(
        a.assign(id, "a1"),
        Err(Rejection::WrongState { .. })
    ));
    assert!(matches!(
        forward(&mut a, id, "dc-c"),
        Err(Rejection::WrongState { .. })
    ));
    ship(&mut a, "dc-a", &mut b, "dc-b");
    let remote_id = b.state.inbound("dc-a").unwrap().tasks[&id];
    // An ingested task stays in the DC that took it.
    assert!(matches!(
        forward(&mut b, remote_id, "dc-c"),
        Err(Rejection::Invalid(_))
    ));
}

#[test]
fn cancel_of_a_forwarded_task_travels_and_the_end_comes_back() {
    let (mut a, mut b) = (Log::new(), Log::new());
    b.register(tts_agent("b1"));
    let id = a.submit(task("tts")).unwrap().id;
    forward(&mut a, id, "dc-b").unwrap();
    // Cancelled before the peer even answered: the cancel follows the task.
    assert!(matches!(
        a.apply(Command::Cancel { task: id }),
        Response::Cancelled { holder: None, .. }
    ));
    assert!(matches!(
        a.apply(Command::Cancel { task: id }),
        Response::Rejected(_)
    ));
    ship(&mut a, "dc-a", &mut b, "dc-b");
    let remote_id = b.state.inbound("dc-a").unwrap().tasks[&id];
    assert!(matches!(
        b.state.task(remote_id).unwrap().state,
        TaskState::Cancelled { .. }
    ));
    ship(&mut b, "dc-b", &mut a, "dc-a");
    assert_eq!(remote(&a, id).unwrap().state, TaskStateKind::Cancelled);
    assert!(a.state.task(id).unwrap().state.is_terminal());
}

#[test]
fn cancel_in_flight_then_refusal_ends_cancelled() {
    let (mut a, mut b) = (Log::new(), Log::new());
    let id = a.submit(task("tts")).unwrap().id;
    forward(&mut a, id, "dc-b").unwrap();
    a.apply(Command::Cancel { task: id });
    ship(&mut a, "dc-a", &mut b, "dc-b");
    assert!(matches!(
        a.state.task(id).unwrap().state,
        TaskState::Cancelled { agent: None, .. }
    ));
    assert_eq!(a.state.pending_total(), 0);
}

#[test]
fn requeue_in_the_remote_dc_is_reported() {
    let (mut a, mut b) = (Log::new(), Log::new());
    b.register(tts_agent("b1"));
    let id = a.submit(task("tts")).unwrap().id;
    forward(&mut a, id, "dc-b").unwrap();
    ship(&mut a, "dc-a", &mut b, "dc-b");
    let remote_id = b.state.inbound("dc-a").unwrap().tasks[&id];
    b.assign(remote_id, "b1").unwrap();
    b.apply(Command::AgentDown { agent: "b1".into() });
    ship(&mut b, "dc-b", &mut a, "dc-a");
    let view = remote(&a, id).unwrap();
    assert_eq!(view.state, TaskStateKind::Pending);
    assert_eq!(view.attempt, 1);
}

#[test]
fn acks_are_idempotent() {
    let (mut a, mut b) = (Log::new(), Log::new());
    b.register(tts_agent("b1"));
    let id = a.submit(task("tts")).unwrap().id;
    forward(&mut a, id, "dc-b").unwrap();
    let verdicts = ship(&mut a, "dc-a", &mut b, "dc-b");
    let digest = a.state.digest();
    a.apply(Command::ForwardAck {
        peer: "dc-b".into(),
        verdicts,
    });
    assert_eq!(a.state.digest(), digest);
    assert_eq!(a.state.outbox("dc-b").unwrap().acked, 1);
}

#[test]
fn planner_forwards_what_cannot_run_here_and_what_waited_too_long() {
    let mut a = Log::new();
    a.register(agent("a1", 1)); // runs t2i only
    let tts = a.submit(task("tts")).unwrap().id;
    let t2i = a.submit(task("t2i")).unwrap().id;
    let mut b = Log::new();
    b.register(tts_agent("b1"));
    b.register(agent("b2", 1));
    let full_b = CapabilitySummary::of(&b.state);
    assert_eq!(full_b.free_slots(), 3);
    assert!(full_b.can_run(&task("tts")));
    assert!(!full_b.can_run(&task("sr")));
    let peers = |room| {
        vec![PeerView {
            dc: "dc-b".into(),
            summary: Some(full_b.clone()),
            room,
            outbox_room: 10,
        }]
    };
    let created = a.state.task(t2i).unwrap().updated_ms;
    // Early: only the task no local agent runs goes, even to a full peer.
    let plan = plan_forwards(&a.state, &mut peers(0), |_| ALLOW_AFTER_MINUTE, created, 10);
    assert_eq!(plan, vec![(tts, "dc-b".to_string())]);
    // After forward_after: the other one too, if the peer has room.
    let late = created + 60_000;
    let plan = plan_forwards(&a.state, &mut peers(0), |_| ALLOW_AFTER_MINUTE, late, 10);
    assert_eq!(plan, vec![(tts, "dc-b".to_string())]);
    let mut p = peers(5);
    let plan = plan_forwards(&a.state, &mut p, |_| ALLOW_AFTER_MINUTE, late, 10);
    assert_eq!(plan.len(), 2);
    assert_eq!(p[0].room, 3);
    // A queue that does not allow forwarding keeps everything.
    let deny = |_: &str| QueuePolicy {
        allow: false,
        forward_after_ms: 0,
    };
    assert!(plan_forwards(&a.state, &mut peers(5), deny, late, 10).is_empty());
    // A peer at its outbox limit, or without a summary, gets nothing.
    let mut p = peers(5);
    p[0].outbox_room = 0;
    assert!(plan_forwards(&a.state, &mut p, |_| ALLOW_AFTER_MINUTE, late, 10).is_empty());
    // The outbox limit bounds a round too.
    let mut p = peers(5);
    p[0].outbox_room = 1;
    assert_eq!(
        plan_forwards(&a.state, &mut p, |_| ALLOW_AFTER_MINUTE, late, 10).len(),
        1
    );
    let mut p = peers(5);
    p[0].summary = None;
    assert!(plan_forwards(&a.state, &mut p, |_| ALLOW_AFTER_MINUTE, late, 10).is_empty());
    // A task nobody runs stays.
    let sr = a.submit(task("sr")).unwrap().id;
    let plan = plan_forwards(&a.state, &mut peers(5), |_| ALLOW_AFTER_MINUTE, late, 10);
    assert!(plan.iter().all(|(id, _)| *id != sr));
}

#[test]
fn a_round_examines_a_bounded_front_of_each_queue() {
    let mut a = Log::new();
    a.register(agent("a1", 1)); // runs t2i
    for _ in 0..SCAN_FACTOR {
        a.submit(task("t2i")).unwrap();
    }
    let deep = a.submit(task("tts")).unwrap().id;
    let mut b = Log::new();
    b.register(tts_agent("b1"));
    let peers = || {
        vec![PeerView {
            dc: "dc-b".into(),
            summary: Some(CapabilitySummary::of(&b.state)),
            room: 10,
            outbox_room: 10,
        }]
    };
    // max 1: SCAN_FACTOR tasks examined, all runnable here; the tts task
    // behind them waits for the next rounds.
    assert!(plan_forwards(&a.state, &mut peers(), |_| ALLOW_AFTER_MINUTE, 0, 1).is_empty());
    // A larger round reaches it.
    let plan = plan_forwards(&a.state, &mut peers(), |_| ALLOW_AFTER_MINUTE, 0, 2);
    assert_eq!(plan, vec![(deep, "dc-b".to_string())]);
}

#[test]
fn summary_groups_agents_and_counts_free_slots() {
    let mut b = Log::new();
    b.register(tts_agent("b1"));
    b.register(tts_agent("b2"));
    b.register(agent("b3", 4));
    let id = b.submit(task("tts")).unwrap().id;
    b.assign(id, "b1").unwrap();
    b.apply(Command::AgentDown { agent: "b3".into() });
    let s = CapabilitySummary::of(&b.state);
    assert_eq!(s.groups.len(), 1, "down agents are left out: {s:?}");
    assert_eq!(s.groups[0].agents, 2);
    assert_eq!(s.groups[0].slots, 4);
    assert_eq!(s.groups[0].free_slots, 3);
}

#[test]
fn a_task_that_asks_for_placement_is_not_forwarded() {
    use crate::placement::types::{PlaceAsk, PLACEMENT_VERSION};
    let mut a = Log::new();
    a.state.restore_cluster_version(PLACEMENT_VERSION);
    a.register(agent("a1", 1)); // runs t2i only
    let plain = a.submit(task("tts")).unwrap().id;
    let tagged = match a.apply(Command::SubmitWithPlacement {
        specs: vec![task("tts")],
        place: vec![],
        by: vec![],
        opts: vec![Default::default()],
        asks: vec![PlaceAsk {
            tags: vec!["web".into()],
            ..PlaceAsk::default()
        }],
    }) {
        Response::SubmittedPlaced { submitted, .. } => submitted[0].as_ref().unwrap().id,
        other => panic!("{other:?}"),
    };
    let mut b = Log::new();
    b.register(tts_agent("b1"));
    let mut peers = vec![PeerView {
        dc: "dc-b".into(),
        summary: Some(CapabilitySummary::of(&b.state)),
        room: 5,
        outbox_room: 10,
    }];
    // Neither runs here; only the plain one goes.
    let plan = plan_forwards(&a.state, &mut peers, |_| ALLOW_AFTER_MINUTE, 0, 10);
    assert_eq!(plan, vec![(plain, "dc-b".to_string())]);
    assert!(!forwardable(&a.state, tagged));
    // Apply refuses it too, whoever proposes it.
    assert!(matches!(
        forward(&mut a, tagged, "dc-b"),
        Err(Rejection::Invalid(_))
    ));
    assert_eq!(a.state.task(tagged).unwrap().state, TaskState::Pending);
}
