//! Placement at apply (cluster format version 5): devices, shapes,
//! constraints, tag rules and idempotency, each entry's invariants checked.

use std::collections::BTreeMap;

use crate::command::{ApplyCtx, Command, Completion, Rejection, Response};
use crate::model::{AgentSpec, Gpu, Outcome, TaskId, TaskSpec, TaskState};
use crate::placement::types::{
    Constraint, GpuShape, Op, PlaceAsk, RuleKind, Scope, TagRule, PLACEMENT_VERSION,
};
use crate::state::State;

struct World {
    state: State,
    index: u64,
}

impl World {
    fn new() -> World {
        let mut state = State::new();
        state.restore_cluster_version(PLACEMENT_VERSION);
        World { state, index: 0 }
    }

    fn apply(&mut self, cmd: Command) -> Response {
        self.index += 1;
        let r = self.state.apply(
            cmd,
            ApplyCtx {
                log_index: self.index,
                time_ms: 1_000 * self.index,
            },
        );
        self.state
            .check_invariants()
            .unwrap_or_else(|e| panic!("after {r:?}: {e}"));
        r
    }

    fn agent(&mut self, id: &str, gpus: &[&str], labels: &[(&str, &str)]) {
        let r = self.apply(Command::RegisterAgent(agent_spec(id, gpus, labels)));
        assert_eq!(r, Response::Ok);
    }

    fn submit(&mut self, gpus: u32, ask: PlaceAsk) -> TaskId {
        self.submit_key(gpus, None, ask).unwrap()
    }

    fn submit_key(
        &mut self,
        gpus: u32,
        key: Option<&str>,
        ask: PlaceAsk,
    ) -> Result<TaskId, Rejection> {
        let spec = TaskSpec {
            task_type: "t".into(),
            gpus,
            idempotency_key: key.map(str::to_string),
            ..TaskSpec::default()
        };
        match self.apply(Command::SubmitWithPlacement {
            specs: vec![spec],
            place: vec![],
            by: vec![],
            opts: vec![],
            asks: vec![ask],
        }) {
            Response::SubmittedPlaced { mut submitted, .. } => submitted.remove(0).map(|s| s.id),
            other => panic!("{other:?}"),
        }
    }

    fn assign(&mut self, id: TaskId, agent: &str) -> Result<u64, Rejection> {
        match self.apply(Command::Assign(vec![(id, agent.into())])) {
            Response::Assigned {
                mut granted,
                mut rejected,
            } => match granted.pop() {
                Some(g) => Ok(g.token),
                None => Err(rejected.remove(0).1),
            },
            other => panic!("{other:?}"),
        }
    }

    fn finish(&mut self, id: TaskId, token: u64) {
        let r = self.apply(Command::Complete(vec![Completion {
            task: id,
            token,
            outcome: Outcome {
                success: true,
                result: vec![],
                error: String::new(),
                exit_code: 0,
            },
        }]));
        assert_eq!(r, Response::Completed(vec![Ok(())]));
    }

    fn devices(&self, id: TaskId) -> Vec<u16> {
        let held = self.state.placement().task(id).and_then(|t| t.held.clone());
        held.map(|h| h.devices).unwrap_or_default()
    }
}

fn agent_spec(id: &str, gpus: &[&str], labels: &[(&str, &str)]) -> AgentSpec {
    AgentSpec {
        id: id.into(),
        dc: "dc1".into(),
        task_types: ["t".to_string()].into(),
        slots: 8,
        weight: 1,
        gpus: gpus
            .iter()
            .map(|m| Gpu {
                model: m.to_string(),
                memory_mb: if *m == "A100" { 81_920 } else { 49_152 },
            })
            .collect(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..AgentSpec::default()
    }
}

fn constraint(key: &str, op: Op, values: &[&str]) -> PlaceAsk {
    PlaceAsk {
        constraints: vec![Constraint {
            key: key.into(),
            op,
            values: values.iter().map(|v| v.to_string()).collect(),
        }],
        ..PlaceAsk::default()
    }
}

fn ineligible(r: Result<u64, Rejection>) -> String {
    match r {
        Err(Rejection::Ineligible { reason, .. }) => reason,
        other => panic!("expected ineligible, got {other:?}"),
    }
}

#[test]
fn each_task_gets_its_own_devices_and_a_freed_device_is_taken_again() {
    let mut w = World::new();
    w.agent("a1", &["A100"; 4], &[]);
    let ids: Vec<TaskId> = (0..4).map(|_| w.submit(1, PlaceAsk::default())).collect();
    let tokens: Vec<u64> = ids.iter().map(|id| w.assign(*id, "a1").unwrap()).collect();
    let got: Vec<Vec<u16>> = ids.iter().map(|id| w.devices(*id)).collect();
    assert_eq!(got, vec![vec![0], vec![1], vec![2], vec![3]]);
    let fifth = w.submit(1, PlaceAsk::default());
    let reason = ineligible(w.assign(fifth, "a1"));
    assert!(reason.contains("full"), "{reason}");
    // Two finish: a two-GPU task takes the freed pair.
    w.finish(ids[1], tokens[1]);
    w.finish(ids[3], tokens[3]);
    assert_eq!(
        w.state.placement().task(ids[1]).unwrap().last_devices,
        vec![1]
    );
    let pair = w.submit(2, PlaceAsk::default());
    w.assign(pair, "a1").unwrap();
    assert_eq!(w.devices(pair), vec![1, 3]);
    assert!(w.devices(ids[1]).is_empty());
}

#[test]
fn the_first_shape_that_fits_wins_and_the_task_counts_its_gpus() {
    let mut w = World::new();
    w.agent("a1", &["A40", "A40", "A100"], &[]);
    let shapes = |a: &str, n: u32, b: &str, m: u32| PlaceAsk {
        shapes: vec![
            GpuShape {
                count: n,
                model: Some(a.into()),
                min_memory_mb: 0,
            },
            GpuShape {
                count: m,
                model: Some(b.into()),
                min_memory_mb: 0,
            },
        ],
        ..PlaceAsk::default()
    };
    // No H100 here: the second shape, two A40s, is taken.
    let id = w.submit(0, shapes("H100", 1, "A40", 2));
    assert_eq!(
        w.state.task(id).unwrap().spec.gpus,
        1,
        "first shape until placed"
    );
    w.assign(id, "a1").unwrap();
    assert_eq!(w.devices(id), vec![0, 1]);
    assert_eq!(w.state.task(id).unwrap().spec.gpus, 2);
    assert_eq!(w.state.placement().task(id).unwrap().last_shape, Some(1));
    assert_eq!(w.state.agent("a1").unwrap().gpus_in_use, 2);
    // The A100 is left; a task that asks for an A40 first takes it second.
    let next = w.submit(0, shapes("A40", 1, "A100", 1));
    w.assign(next, "a1").unwrap();
    assert_eq!(w.devices(next), vec![2]);
    let none = w.submit(0, shapes("A40", 1, "A100", 1));
    assert!(ineligible(w.assign(none, "a1")).contains("full"));
}

#[test]
fn a_model_the_agent_lacks_is_not_full_but_missing() {
    let mut w = World::new();
    w.agent("a1", &["A40"], &[]);
    let id = w.submit(
        0,
        PlaceAsk {
            shapes: vec![GpuShape {
                count: 1,
                model: Some("A100".into()),
                min_memory_mb: 0,
            }],
            ..PlaceAsk::default()
        },
    );
    let reason = ineligible(w.assign(id, "a1"));
    assert!(reason.contains("has no GPUs for 1xA100"), "{reason}");
}

#[test]
fn constraints_are_checked_against_the_agents_labels() {
    let mut w = World::new();
    w.agent("a", &[], &[("zone", "a")]);
    w.agent("b", &[], &[("zone", "b"), ("ssd", "")]);
    w.agent("none", &[], &[]);
    let in_b = w.submit(0, constraint("zone", Op::Eq, &["b"]));
    assert!(ineligible(w.assign(in_b, "a")).contains("constraint"));
    assert!(ineligible(w.assign(in_b, "none")).contains("constraint"));
    w.assign(in_b, "b").unwrap();
    // != and notin also match an agent without the label (Kubernetes).
    let not_a = w.submit(0, constraint("zone", Op::Ne, &["a"]));
    assert!(ineligible(w.assign(not_a, "a")).contains("constraint"));
    w.assign(not_a, "none").unwrap();
    let not_in = w.submit(0, constraint("zone", Op::NotIn, &["a", "b"]));
    assert!(w.assign(not_in, "b").is_err());
    w.assign(not_in, "none").unwrap();
    let ssd = w.submit(0, constraint("ssd", Op::Exists, &[]));
    assert!(w.assign(ssd, "a").is_err());
    w.assign(ssd, "b").unwrap();
    let no_ssd = w.submit(0, constraint("ssd", Op::NotExists, &[]));
    assert!(w.assign(no_ssd, "b").is_err());
    w.assign(no_ssd, "a").unwrap();
    let in_ab = w.submit(0, constraint("zone", Op::In, &["a", "b"]));
    assert!(w.assign(in_ab, "none").is_err());
    w.assign(in_ab, "a").unwrap();
}

fn tagged(tag: &str, rules: Vec<TagRule>) -> PlaceAsk {
    PlaceAsk {
        tags: vec![tag.into()],
        rules,
        ..PlaceAsk::default()
    }
}

fn rule(kind: RuleKind, tag: &str, scope: Scope) -> TagRule {
    TagRule {
        kind,
        tag: tag.into(),
        scope,
    }
}

#[test]
fn anti_affinity_and_max_per_count_held_tasks_in_their_scope() {
    let mut w = World::new();
    w.agent("a1", &[], &[("zone", "x")]);
    w.agent("a2", &[], &[("zone", "x")]);
    w.agent("a3", &[], &[("zone", "y")]);
    let anti = || {
        tagged(
            "web",
            vec![rule(
                RuleKind::AntiAffinity,
                "web",
                Scope::Label("zone".into()),
            )],
        )
    };
    let first = w.submit(0, anti());
    let t1 = w.assign(first, "a1").unwrap();
    let second = w.submit(0, anti());
    // a2 shares zone x with a1, which holds a web task.
    assert!(ineligible(w.assign(second, "a2")).contains("rule"));
    w.assign(second, "a3").unwrap();
    // Once the first ends, zone x is free of web tasks again.
    w.finish(first, t1);
    let third = w.submit(0, anti());
    w.assign(third, "a2").unwrap();
    // Max two batch tasks per agent, the task itself counted.
    let capped = || {
        tagged(
            "batch",
            vec![rule(RuleKind::MaxPer(2), "batch", Scope::Agent)],
        )
    };
    let (b1, b2, b3) = (
        w.submit(0, capped()),
        w.submit(0, capped()),
        w.submit(0, capped()),
    );
    w.assign(b1, "a1").unwrap();
    w.assign(b2, "a1").unwrap();
    assert!(ineligible(w.assign(b3, "a1")).contains("rule"));
    w.assign(b3, "a2").unwrap();
}

#[test]
fn affinity_needs_a_tagged_task_in_scope_unless_none_runs_anywhere() {
    let mut w = World::new();
    w.agent("a1", &[], &[]);
    w.agent("a2", &[], &[]);
    let db = w.submit(0, tagged("db", vec![]));
    w.assign(db, "a1").unwrap();
    let near_db = w.submit(
        0,
        PlaceAsk {
            rules: vec![rule(RuleKind::Affinity, "db", Scope::Agent)],
            ..PlaceAsk::default()
        },
    );
    assert!(ineligible(w.assign(near_db, "a2")).contains("rule"));
    w.assign(near_db, "a1").unwrap();
    // A task with the tag it wants to be near may start the group.
    let cache = || {
        tagged(
            "cache",
            vec![rule(RuleKind::Affinity, "cache", Scope::Agent)],
        )
    };
    let c1 = w.submit(0, cache());
    w.assign(c1, "a2").unwrap();
    let c2 = w.submit(0, cache());
    assert!(w.assign(c2, "a1").is_err());
    w.assign(c2, "a2").unwrap();
}

#[test]
fn a_relabelled_agent_moves_its_tasks_tag_counts() {
    let mut w = World::new();
    w.agent("a1", &[], &[("zone", "x")]);
    w.agent("a2", &[], &[("zone", "y")]);
    let anti = || {
        tagged(
            "web",
            vec![rule(
                RuleKind::AntiAffinity,
                "web",
                Scope::Label("zone".into()),
            )],
        )
    };
    let first = w.submit(0, anti());
    w.assign(first, "a1").unwrap();
    // a1 moves to zone y: now y has a web task and x has none.
    w.agent("a1", &[], &[("zone", "y")]);
    let second = w.submit(0, anti());
    assert!(w.assign(second, "a2").is_err());
    w.agent("a2", &[], &[("zone", "x")]);
    w.assign(second, "a2").unwrap();
}

#[test]
fn a_repeated_key_is_the_same_task_only_with_the_same_ask() {
    let mut w = World::new();
    w.agent("a1", &["A40", "A40"], &[]);
    let ask = PlaceAsk {
        shapes: vec![
            GpuShape {
                count: 1,
                model: Some("H100".into()),
                min_memory_mb: 0,
            },
            GpuShape {
                count: 2,
                model: Some("A40".into()),
                min_memory_mb: 0,
            },
        ],
        ..PlaceAsk::default()
    };
    let id = w.submit_key(0, Some("k"), ask.clone()).unwrap();
    w.assign(id, "a1").unwrap();
    // Placed with the second shape, the spec says 2 GPUs: still the same task.
    assert_eq!(w.submit_key(0, Some("k"), ask.clone()), Ok(id));
    let other = PlaceAsk {
        hash_key: Some("x".into()),
        ..ask
    };
    assert!(matches!(
        w.submit_key(0, Some("k"), other),
        Err(Rejection::KeyConflict { .. })
    ));
}

#[test]
fn an_agent_down_frees_its_devices_and_a_regrant_picks_them_again() {
    let mut w = World::new();
    w.agent("a1", &["A100", "A100"], &[]);
    let id = w.submit(1, PlaceAsk::default());
    let token = w.assign(id, "a1").unwrap();
    match w.apply(Command::Regrant {
        agent: "a1".into(),
        tasks: vec![(id, token)],
    }) {
        Response::Regranted { granted, .. } => assert_eq!(granted.len(), 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.devices(id), vec![0]);
    let r = w.apply(Command::AgentDown { agent: "a1".into() });
    assert!(matches!(r, Response::AgentDown { .. }), "{r:?}");
    assert_eq!(w.state.task(id).unwrap().state, TaskState::Pending);
    assert!(w.state.placement().busy("a1").is_none());
}

#[test]
fn below_version_5_placement_commands_are_refused_and_gpus_are_counted() {
    let mut state = State::new();
    state.restore_cluster_version(crate::lifecycle::types::LIFECYCLE_VERSION);
    let cmd = Command::SetGpuWeights(BTreeMap::new());
    let env = crate::command::Envelope::new(1_000, cmd);
    let r = state
        .apply_envelope(env, 1, crate::FORMAT_VERSION_MAX)
        .unwrap();
    assert!(
        matches!(
            r,
            Response::Rejected(Rejection::NeedsClusterVersion { needed: 5, .. })
        ),
        "{r:?}"
    );
    assert_eq!(
        *state.placement(),
        crate::placement::types::Placement::default()
    );
}

#[test]
fn a_plain_task_holding_devices_is_found_again_by_its_key() {
    // A task that asks nothing of placement but takes a GPU holds a device
    // (its placement entry has a plain ask): the same submit again, as a
    // client retries one whose answer it lost, is the same task.
    let mut w = World::new();
    w.agent("a1", &["A100"], &[]);
    let id = w.submit_key(1, Some("k"), PlaceAsk::default()).unwrap();
    w.assign(id, "a1").unwrap();
    assert_eq!(w.devices(id), vec![0]);
    assert_eq!(w.submit_key(1, Some("k"), PlaceAsk::default()), Ok(id));
    let spec = TaskSpec {
        task_type: "t".into(),
        gpus: 1,
        idempotency_key: Some("k".into()),
        ..TaskSpec::default()
    };
    match w.apply(Command::Submit(vec![spec])) {
        Response::Submitted(r) => assert_eq!(r[0].as_ref().map(|s| s.id), Ok(id)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_version_1_set_queue_replaces_a_version_5_strategy() {
    use crate::model::Strategy;
    use crate::placement::types::{PlaceStrategy, QueuePlacement};
    let mut w = World::new();
    let r = w.apply(Command::SetQueueWith {
        name: "q".into(),
        weight: 2,
        placement: QueuePlacement {
            strategy: PlaceStrategy::BinPack,
        },
    });
    assert_eq!(r, Response::Ok);
    assert_eq!(w.state.queue_strategy("q"), PlaceStrategy::BinPack);
    let r = w.apply(Command::SetQueue {
        name: "q".into(),
        weight: 2,
        strategy: Strategy::WeightedRoundRobin,
    });
    assert_eq!(r, Response::Ok);
    assert_eq!(
        w.state.queue_strategy("q"),
        PlaceStrategy::WeightedRoundRobin
    );
}

/// A plain task of tenant acme taking `gpus` GPUs.
fn acme(w: &mut World, gpus: u32) -> TaskId {
    let spec = TaskSpec {
        task_type: "t".into(),
        tenant: "acme".into(),
        gpus,
        ..TaskSpec::default()
    };
    match w.apply(Command::Submit(vec![spec])) {
        Response::Submitted(mut r) => r.remove(0).unwrap().id,
        other => panic!("{other:?}"),
    }
}

fn max_gpus(w: &mut World, max: u64) {
    let limits = crate::access::types::TenantLimits {
        max_gpus: Some(max),
        ..Default::default()
    };
    let r = w.apply(Command::SetTenant {
        name: "acme".into(),
        limits,
    });
    assert_eq!(r, Response::Ok);
}

fn gpu_milli(w: &World) -> u64 {
    w.state.access().usage("acme").running_gpu_milli
}

#[test]
fn max_gpus_counts_gpus_weighed_by_model() {
    let mut w = World::new();
    w.agent("a40s", &["A40", "A40", "A40", "A40"], &[]);
    w.agent("a100s", &["A100", "A100"], &[]);
    max_gpus(&mut w, 1);
    let (t1, t2, t3) = (acme(&mut w, 1), acme(&mut w, 1), acme(&mut w, 1));
    // An A40 weighs 0.5 by default: two of them are one weighted GPU.
    let token = w.assign(t1, "a40s").unwrap();
    w.assign(t2, "a40s").unwrap();
    assert_eq!(gpu_milli(&w), 1000);
    assert_eq!(w.state.access().usage("acme").running_gpus, 2);
    let over = Rejection::OverQuota {
        tenant: "acme".into(),
        limit: "max-gpus".into(),
        max: 1,
    };
    assert_eq!(w.assign(t3, "a40s"), Err(over.clone()));
    w.finish(t1, token);
    assert_eq!(gpu_milli(&w), 500);
    // Half a GPU is left: an A100 is too heavy, an A40 fits.
    assert_eq!(w.assign(t3, "a100s"), Err(over));
    w.assign(t3, "a40s").unwrap();
    assert_eq!(gpu_milli(&w), 1000);
    // Letting go gives back what was counted, whatever the weights now.
    let r = w.apply(Command::AgentDown {
        agent: "a40s".into(),
    });
    assert!(matches!(r, Response::AgentDown { .. }), "{r:?}");
    assert_eq!(gpu_milli(&w), 0);
}

#[test]
fn a_regranted_task_keeps_the_devices_its_worker_uses() {
    let mut w = World::new();
    w.agent("a1", &["A100", "A100", "A100", "A100"], &[]);
    let ids: Vec<TaskId> = (0..3).map(|_| w.submit(1, PlaceAsk::default())).collect();
    let tokens: Vec<u64> = ids.iter().map(|&id| w.assign(id, "a1").unwrap()).collect();
    assert_eq!(w.devices(ids[2]), vec![2]);
    w.finish(ids[0], tokens[0]);
    // Device 0 is free now; the regranted task still runs on device 2.
    match w.apply(Command::Regrant {
        agent: "a1".into(),
        tasks: vec![(ids[2], tokens[2])],
    }) {
        Response::Regranted { granted, .. } => assert_eq!(granted.len(), 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.devices(ids[2]), vec![2]);
    // The next task takes device 0, not the regranted task's.
    let next = w.submit(1, PlaceAsk::default());
    w.assign(next, "a1").unwrap();
    assert_eq!(w.devices(next), vec![0]);
}
