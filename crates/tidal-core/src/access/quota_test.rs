//! Unit tests of tenants' quotas at apply and in planning: max-pending at submit and ingest, running quotas at assignment, eager placement and dispatch.

use std::collections::BTreeSet;

use super::*;
use crate::access::DEFAULT_TENANT;
use crate::command::{Command, Response, Submitted};
use crate::dispatch::{place_new, plan, DispatchCursor, InFlight};
use crate::forwarding::types::{Record, Verdict};
use crate::model::{AgentId, Gpu, TaskId, TaskStateKind};
use crate::state::tests::{agent, task, Log};

fn set(log: &mut Log, name: &str, limits: TenantLimits) {
    assert_eq!(
        log.apply(Command::SetTenant {
            name: name.into(),
            limits
        }),
        Response::Ok
    );
}

fn of(tenant: &str, slots: u32) -> TaskSpec {
    TaskSpec {
        tenant: tenant.into(),
        slots,
        ..task("t2i")
    }
}

fn over(tenant: &str, limit: &str, max: u64) -> Rejection {
    Rejection::OverQuota {
        tenant: tenant.into(),
        limit: limit.into(),
        max,
    }
}

fn kind(log: &Log, id: TaskId) -> TaskStateKind {
    log.state.task(id).unwrap().state.kind()
}

fn all(log: &Log) -> BTreeSet<AgentId> {
    log.state.agents().map(|a| a.spec.id.clone()).collect()
}

#[test]
fn max_pending_refuses_the_item_past_it_and_names_the_limit() {
    let mut log = Log::new();
    set(
        &mut log,
        "acme",
        TenantLimits {
            max_pending: Some(2),
            ..TenantLimits::default()
        },
    );
    let r = log.apply(Command::Submit(vec![
        of("acme", 1),
        of("acme", 1),
        of("acme", 1),
        of("beta", 1),
    ]));
    let Response::Submitted(items) = r else {
        panic!("{r:?}")
    };
    assert!(items[0].is_ok() && items[1].is_ok() && items[3].is_ok());
    let err = items[2].clone().unwrap_err();
    assert_eq!(err, over("acme", MAX_PENDING, 2));
    assert_eq!(
        err.to_string(),
        "tenant acme is at its max-pending of 2 (tidal tenant set acme --max-pending)"
    );
    // A repeated idempotency key gets its task back, over the limit or not.
    let keyed = TaskSpec {
        idempotency_key: Some("k".into()),
        ..of("", 1)
    };
    set(
        &mut log,
        DEFAULT_TENANT,
        TenantLimits {
            max_pending: Some(1),
            ..TenantLimits::default()
        },
    );
    let first = log.submit(keyed.clone()).unwrap();
    assert_eq!(
        log.submit(keyed).unwrap(),
        Submitted {
            existed: true,
            ..first
        }
    );
    // Tasks without a tenant count under "default".
    assert_eq!(
        log.submit(of("", 1)).unwrap_err(),
        over(DEFAULT_TENANT, MAX_PENDING, 1)
    );
    // Once one leaves Pending, one more is taken.
    log.register(agent("a1", 4));
    let a = TaskId(1);
    log.assign(a, "a1").unwrap();
    log.submit(of("acme", 1)).unwrap();
}

#[test]
fn lowering_a_limit_evicts_nothing_and_a_lost_task_comes_back_over_it() {
    let mut log = Log::new();
    log.register(agent("a1", 4));
    let ids: Vec<TaskId> = (0..3)
        .map(|_| log.submit(of("acme", 1)).unwrap().id)
        .collect();
    log.assign(ids[0], "a1").unwrap();
    log.assign(ids[1], "a1").unwrap();
    set(
        &mut log,
        "acme",
        TenantLimits {
            max_pending: Some(0),
            max_running_slots: Some(1),
            ..TenantLimits::default()
        },
    );
    // Nothing was taken away.
    assert_eq!(kind(&log, ids[0]), TaskStateKind::Assigned);
    assert_eq!(kind(&log, ids[2]), TaskStateKind::Pending);
    assert_eq!(log.state.access().usage("acme").running_slots, 2);
    // Increases stop.
    assert_eq!(
        log.assign(ids[2], "a1").unwrap_err(),
        over("acme", MAX_RUNNING_SLOTS, 1)
    );
    assert_eq!(kind(&log, ids[2]), TaskStateKind::Pending);
    assert!(log.submit(of("acme", 1)).is_err());
    // The agent's loss puts its tasks back, past max-pending.
    log.apply(Command::AgentDown { agent: "a1".into() });
    assert_eq!(log.state.access().usage("acme").pending, 3);
}

#[test]
fn running_quotas_refuse_the_grant_and_leave_the_task_pending() {
    let mut log = Log::new();
    log.register(crate::model::AgentSpec {
        gpus: vec![
            Gpu {
                model: "A40".into(),
                memory_mb: 1,
            };
            4
        ],
        ..agent("a1", 8)
    });
    log.register(agent("a2", 8));
    set(
        &mut log,
        "acme",
        TenantLimits {
            max_running_slots: Some(3),
            max_gpus: Some(2),
            ..TenantLimits::default()
        },
    );
    let gpu = |n| TaskSpec {
        gpus: n,
        ..of("acme", 1)
    };
    let a = log.submit(gpu(2)).unwrap().id;
    let b = log.submit(gpu(1)).unwrap().id;
    let c = log.submit(of("acme", 3)).unwrap().id;
    let d = log.submit(of("acme", 1)).unwrap().id;
    let other = log.submit(of("beta", 4)).unwrap().id;
    log.assign(a, "a1").unwrap();
    assert_eq!(log.assign(b, "a1").unwrap_err(), over("acme", MAX_GPUS, 2));
    assert_eq!(
        log.assign(c, "a2").unwrap_err(),
        over("acme", MAX_RUNNING_SLOTS, 3)
    );
    log.assign(d, "a2").unwrap();
    // Another tenant is not held back.
    log.assign(other, "a2").unwrap();
    assert_eq!(kind(&log, b), TaskStateKind::Pending);
    assert_eq!(kind(&log, c), TaskStateKind::Pending);
    let u = log.state.access().usage("acme");
    assert!(u.running_slots <= 3 && u.running_gpus <= 2, "{u:?}");
    // A regrant to the same agent does not count twice.
    let ga = log.state.task(a).unwrap().state.holder().unwrap().1;
    let r = log.apply(Command::Regrant {
        agent: "a1".into(),
        tasks: vec![(a, ga)],
    });
    assert!(
        matches!(&r, Response::Regranted { granted, .. } if granted.len() == 1),
        "{r:?}"
    );
}

#[test]
fn submit_placed_refuses_a_pair_over_a_running_quota() {
    let mut log = Log::new();
    log.register(agent("a1", 8));
    set(
        &mut log,
        "acme",
        TenantLimits {
            max_running_slots: Some(1),
            ..TenantLimits::default()
        },
    );
    let r = log.apply(Command::SubmitPlaced {
        specs: vec![of("acme", 1), of("acme", 1), of("beta", 1)],
        place: vec![(0, "a1".into()), (1, "a1".into()), (2, "a1".into())],
    });
    let Response::SubmittedPlaced { submitted, granted } = r else {
        panic!("{r:?}")
    };
    assert!(submitted.iter().all(Result::is_ok));
    let placed: Vec<TaskId> = granted.iter().map(|g| g.task).collect();
    assert_eq!(placed, vec![TaskId(1), TaskId(3)]);
    assert_eq!(kind(&log, TaskId(2)), TaskStateKind::Pending);
}

#[test]
fn ingest_over_max_pending_is_refused_so_the_origin_keeps_the_task() {
    let mut log = Log::new();
    log.register(agent("a1", 1));
    set(
        &mut log,
        "acme",
        TenantLimits {
            max_pending: Some(1),
            ..TenantLimits::default()
        },
    );
    let record = |n| {
        (
            n,
            Record::Task {
                origin_task: TaskId(n),
                spec: of("acme", 1),
            },
        )
    };
    let r = log.apply(Command::Ingest {
        origin: "dc2".into(),
        records: vec![record(1), record(2)],
    });
    let Response::Ingested { verdicts, .. } = r else {
        panic!("{r:?}")
    };
    assert!(matches!(verdicts[0].1, Verdict::Accepted { .. }));
    match &verdicts[1].1 {
        Verdict::Rejected { reason } => assert!(
            reason.contains("tenant acme is at its max-pending of 1"),
            "{reason}"
        ),
        v => panic!("{v:?}"),
    }
}

#[test]
fn planning_respects_running_quotas_and_fills_with_other_tenants() {
    let mut log = Log::new();
    for a in ["a1", "a2", "a3"] {
        log.register(agent(a, 2));
    }
    set(
        &mut log,
        "acme",
        TenantLimits {
            max_running_slots: Some(2),
            ..TenantLimits::default()
        },
    );
    for _ in 0..5 {
        log.submit(of("acme", 1)).unwrap();
    }
    let beta = log.submit(of("beta", 1)).unwrap().id;
    let mut cursor = DispatchCursor::default();
    let round = plan(&log.state, &all(&log), 100, &mut cursor);
    let acme = round.iter().filter(|(t, _)| *t != beta).count();
    assert_eq!(acme, 2, "{round:?}");
    assert!(round.iter().any(|(t, _)| *t == beta));
    let r = log.apply(Command::Assign(round.clone()));
    assert!(
        matches!(&r, Response::Assigned { rejected, .. } if rejected.is_empty()),
        "{r:?}"
    );
    // At its quota, the tenant gets nothing more until a task ends.
    assert!(plan(&log.state, &all(&log), 100, &mut cursor).is_empty());
    let (done, token) = log
        .state
        .tasks_after(None)
        .find_map(|t| {
            t.state
                .holder()
                .filter(|_| t.id != beta)
                .map(|(_, k)| (t.id, k))
        })
        .unwrap();
    log.complete(done, token, true).unwrap();
    let round = plan(&log.state, &all(&log), 100, &mut cursor);
    assert_eq!(round.len(), 1, "{round:?}");
}

#[test]
fn eager_placement_counts_the_round_in_flight() {
    let mut log = Log::new();
    log.register(agent("a1", 8));
    set(
        &mut log,
        "acme",
        TenantLimits {
            max_running_slots: Some(2),
            ..TenantLimits::default()
        },
    );
    let a = log.submit(of("acme", 2)).unwrap().id;
    let in_flight = InFlight::of(&log.state, &[(a, "a1".to_string())]);
    let mut cursor = DispatchCursor::default();
    let specs = vec![of("acme", 1), of("beta", 1)];
    let mut normalized = specs.clone();
    normalized.iter_mut().for_each(crate::state::normalize);
    let placed = place_new(&log.state, &all(&log), &normalized, &in_flight, &mut cursor);
    assert_eq!(placed, vec![(1, "a1".to_string())]);
}
