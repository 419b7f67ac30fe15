//! Explain: the first failing check per agent, counted in order; the
//! queue position; a task that is not pending.

use std::collections::{BTreeMap, BTreeSet};

use super::explain;
use crate::command::{ApplyCtx, Command, Response};
use crate::dispatch::Live;
use crate::model::{AgentSpec, Gpu, TaskId, TaskSpec, TaskStateKind};
use crate::placement::types::{Constraint, Op, PlaceAsk, PLACEMENT_VERSION};
use crate::state::State;

fn apply(state: &mut State, index: &mut u64, cmd: Command) -> Response {
    *index += 1;
    state.apply(
        cmd,
        ApplyCtx {
            log_index: *index,
            time_ms: 1_000 * *index,
        },
    )
}

fn agent(id: &str, gpus: &[&str], zone: &str) -> AgentSpec {
    AgentSpec {
        id: id.into(),
        dc: "dc1".into(),
        task_types: ["t".to_string()].into(),
        pipelines: Default::default(),
        models: Default::default(),
        slots: 4,
        weight: 1,
        gpus: gpus
            .iter()
            .map(|m| Gpu {
                model: m.to_string(),
                memory_mb: 40_960,
            })
            .collect(),
        labels: [("zone".to_string(), zone.to_string())].into(),
    }
}

fn submit(state: &mut State, index: &mut u64, task_type: &str, gpus: u32, ask: PlaceAsk) -> TaskId {
    let spec = TaskSpec {
        task_type: task_type.into(),
        gpus,
        ..TaskSpec::default()
    };
    let r = apply(
        state,
        index,
        Command::SubmitWithPlacement {
            specs: vec![spec],
            place: vec![],
            by: vec![],
            opts: vec![],
            asks: vec![ask],
        },
    );
    match r {
        Response::SubmittedPlaced { mut submitted, .. } => submitted.remove(0).unwrap().id,
        other => panic!("{other:?}"),
    }
}

#[test]
fn counts_the_first_failing_check_of_each_agent_in_order() {
    let mut state = State::new();
    state.restore_cluster_version(PLACEMENT_VERSION);
    let mut i = 0;
    for (id, gpus, zone) in [
        ("a1", &["A100"][..], "a"),
        ("a2", &["A40"][..], "b"),
        ("a3", &["A40"][..], "b"),
        ("a4", &[][..], "a"),
        ("a5", &["A40"][..], "a"),
    ] {
        assert_eq!(
            apply(
                &mut state,
                &mut i,
                Command::RegisterAgent(agent(id, gpus, zone))
            ),
            Response::Ok
        );
    }
    let zone_b = Constraint {
        key: "zone".into(),
        op: Op::Eq,
        values: vec!["b".into()],
    };
    let ask = PlaceAsk {
        constraints: vec![zone_b],
        ..PlaceAsk::default()
    };
    let first = submit(&mut state, &mut i, "t", 1, ask.clone());
    let id = submit(&mut state, &mut i, "t", 1, ask);
    let connected: BTreeSet<String> = ["a1", "a2", "a4", "a5"].map(String::from).into();
    let warm = BTreeMap::new();
    let live = Live {
        connected: &connected,
        warm: &warm,
        warm_weight_milli: 1000,
    };
    let e = explain(&state, id, Some(&live)).unwrap();
    assert_eq!(e.state, Some(TaskStateKind::Pending));
    assert_eq!(e.agents_total, 5);
    assert_eq!(e.agents_eligible_now, 1, "{e:?}");
    assert_eq!(
        e.reasons,
        vec![
            ("constraint zone=b unmet".to_string(), 3),
            ("not connected".to_string(), 1),
        ]
    );
    assert_eq!(e.queue_position, 2);
    assert!(!e.position_capped && !e.in_backoff);
    assert_eq!(
        e.summary,
        "1 of 5 agents can take it now; 1 ahead of it in its queue"
    );

    // Without the leader's connections nobody is "not connected"; a task
    // type no agent runs is the reason on every agent.
    let other = submit(&mut state, &mut i, "u", 0, PlaceAsk::default());
    let e = explain(&state, other, None).unwrap();
    assert_eq!(
        e.reasons,
        vec![("does not run task type \"u\"".to_string(), 5)]
    );
    assert_eq!(e.summary, "does not run task type \"u\" (5 of 5 agents)");
    assert_eq!(e.queue_position, 3);

    // Not pending: only the state.
    assert!(matches!(
        apply(
            &mut state,
            &mut i,
            Command::Assign(vec![(first, "a2".into())])
        ),
        Response::Assigned { .. }
    ));
    let e = explain(&state, first, None).unwrap();
    assert_eq!(e.state, Some(TaskStateKind::Assigned));
    assert!(e.summary.is_empty() && e.reasons.is_empty());
    assert_eq!(explain(&state, TaskId(999), None), None);
}

#[test]
fn gpu_devices_busy_and_missing_are_reasons() {
    let mut state = State::new();
    state.restore_cluster_version(PLACEMENT_VERSION);
    let mut i = 0;
    for (id, gpus) in [("g1", &["A40"][..]), ("g2", &[][..])] {
        apply(
            &mut state,
            &mut i,
            Command::RegisterAgent(agent(id, gpus, "a")),
        );
    }
    let holder = submit(&mut state, &mut i, "t", 1, PlaceAsk::default());
    apply(
        &mut state,
        &mut i,
        Command::Assign(vec![(holder, "g1".into())]),
    );
    let id = submit(&mut state, &mut i, "t", 1, PlaceAsk::default());
    let e = explain(&state, id, None).unwrap();
    assert_eq!(e.agents_eligible_now, 0);
    assert_eq!(
        e.reasons,
        vec![
            ("full: no free GPUs for 1xany".to_string(), 1),
            ("has no GPUs for 1xany".to_string(), 1),
        ]
    );
    assert_eq!(e.queue_position, 1);
}

#[test]
fn the_gpu_quota_is_a_reason_where_the_gpus_weigh_too_much() {
    let mut state = State::new();
    state.restore_cluster_version(PLACEMENT_VERSION);
    let mut i = 0;
    let limits = crate::access::TenantLimits {
        max_gpus: Some(1),
        ..Default::default()
    };
    let r = apply(
        &mut state,
        &mut i,
        Command::SetTenant {
            name: crate::access::DEFAULT_TENANT.into(),
            limits,
        },
    );
    assert_eq!(r, Response::Ok);
    for (id, gpus) in [("a40s", &["A40", "A40"][..]), ("a100", &["A100"][..])] {
        apply(
            &mut state,
            &mut i,
            Command::RegisterAgent(agent(id, gpus, "a")),
        );
    }
    let holder = submit(&mut state, &mut i, "t", 1, PlaceAsk::default());
    apply(
        &mut state,
        &mut i,
        Command::Assign(vec![(holder, "a40s".into())]),
    );
    // Half a weighted GPU is in use: another A40 fits, an A100 does not.
    let id = submit(&mut state, &mut i, "t", 1, PlaceAsk::default());
    let e = explain(&state, id, None).unwrap();
    assert_eq!(e.agents_eligible_now, 1);
    assert_eq!(e.reasons.len(), 1, "{:?}", e.reasons);
    let (reason, n) = &e.reasons[0];
    assert!(
        reason.starts_with("tenant quota: ") && reason.contains("max-gpus of 1"),
        "{reason}"
    );
    assert_eq!(*n, 1);
}
