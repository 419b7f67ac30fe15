//! Unit and property tests of the planner at cluster format version 5: the
//! plan agrees with apply's check (`placement::check::eligible`) for every
//! kind of ask, devices are never held twice, and the candidate cache is
//! never shared by tasks whose asks differ.

use std::collections::{BTreeMap, BTreeSet};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::Strategy as Gen;

use super::scenario_tests::{gpu, shapes};
use super::*;
use crate::access::TenantLimits;
use crate::command::{ApplyCtx, Command, Completion, Response};
use crate::model::{AgentSpec, Outcome, TaskSpec};
use crate::placement::constraint;
use crate::placement::rules::parse_rule_text;
use crate::placement::types::{PlaceAsk, PlaceStrategy, QueuePlacement, PLACEMENT_VERSION};

struct World {
    state: State,
    index: u64,
    cursor: DispatchCursor,
    warm: BTreeMap<AgentId, BTreeSet<String>>,
    warm_weight_milli: u32,
}

impl World {
    fn new() -> World {
        let mut state = State::new();
        state.restore_cluster_version(PLACEMENT_VERSION);
        World {
            state,
            index: 0,
            cursor: DispatchCursor::default(),
            warm: BTreeMap::new(),
            warm_weight_milli: 1000,
        }
    }

    fn apply(&mut self, cmd: Command) -> Response {
        self.index += 1;
        let r = self.state.apply(
            cmd,
            ApplyCtx {
                log_index: self.index,
                time_ms: self.index,
            },
        );
        if let Err(e) = self.state.check_invariants() {
            panic!("after {r:?}: {e}");
        }
        r
    }

    fn queue(&mut self, name: &str, strategy: PlaceStrategy) {
        let r = self.apply(Command::SetQueueWith {
            name: name.into(),
            weight: 1,
            placement: QueuePlacement { strategy },
        });
        assert_eq!(r, Response::Ok);
    }

    fn agent(&mut self, id: &str, slots: u32, gpus: &[&str], labels: &[(&str, &str)]) {
        let spec = AgentSpec {
            id: id.into(),
            dc: "dc1".into(),
            task_types: ["t".to_string()].into(),
            models: ["m".to_string()].into(),
            slots,
            weight: 1,
            gpus: gpus.iter().map(|g| gpu(g)).collect(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..AgentSpec::default()
        };
        assert_eq!(self.apply(Command::RegisterAgent(spec)), Response::Ok);
    }

    /// Submits tasks (without eager placement); their ids.
    fn submit(&mut self, specs: Vec<TaskSpec>, asks: Vec<PlaceAsk>) -> Vec<TaskId> {
        match self.apply(Command::SubmitWithPlacement {
            specs,
            place: Vec::new(),
            by: Vec::new(),
            opts: Vec::new(),
            asks,
        }) {
            Response::SubmittedPlaced { submitted, .. } => submitted
                .into_iter()
                .map(|s| s.expect("submitted").id)
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    fn submit_one(&mut self, queue: &str, gpus: u32, ask: PlaceAsk) -> TaskId {
        self.submit(vec![spec(queue, gpus)], vec![ask])[0]
    }

    /// Plans a round with `plan_with` and applies it; every pair must be
    /// granted.
    fn round(&mut self) -> Vec<(TaskId, AgentId)> {
        let connected: BTreeSet<AgentId> = self.state.agents().map(|a| a.spec.id.clone()).collect();
        let live = Live {
            connected: &connected,
            warm: &self.warm,
            warm_weight_milli: self.warm_weight_milli,
        };
        let mut cursor = std::mem::take(&mut self.cursor);
        let p = plan_with(&self.state, &live, 1000, &mut cursor);
        self.cursor = cursor;
        match self.apply(Command::Assign(p.clone())) {
            Response::Assigned { granted, rejected } => {
                assert!(
                    rejected.is_empty(),
                    "plan {p:?} rejected at apply: {rejected:?}"
                );
                assert_eq!(granted.len(), p.len());
            }
            other => panic!("{other:?}"),
        }
        p
    }

    fn agent_of(&self, id: TaskId) -> Option<String> {
        self.state
            .task(id)
            .and_then(|t| t.state.holder())
            .map(|(a, _)| a.to_string())
    }

    fn complete(&mut self, id: TaskId) {
        let (_, token) = self.state.task(id).unwrap().state.holder().unwrap();
        let r = self.apply(Command::Complete(vec![Completion {
            task: id,
            token,
            outcome: Outcome {
                success: true,
                result: Vec::new(),
                error: String::new(),
                exit_code: 0,
            },
        }]));
        assert_eq!(r, Response::Completed(vec![Ok(())]));
    }
}

fn spec(queue: &str, gpus: u32) -> TaskSpec {
    TaskSpec {
        task_type: "t".into(),
        queue: queue.into(),
        gpus,
        slots: 1,
        priority: crate::model::Priority::Nearline,
        max_attempts: 3,
        ..TaskSpec::default()
    }
}

fn ask(constraints: &[&str], tags: &[&str], rules: &[&str]) -> PlaceAsk {
    PlaceAsk {
        constraints: constraints
            .iter()
            .map(|c| constraint::parse(c).unwrap())
            .collect(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        rules: rules.iter().map(|r| parse_rule_text(r).unwrap()).collect(),
        ..PlaceAsk::default()
    }
}

#[test]
fn tasks_with_other_constraints_do_not_share_candidates() {
    let mut w = World::new();
    w.agent("a", 1, &[], &[("zone", "x")]);
    w.agent("b", 1, &[], &[("zone", "y")]);
    let x = w.submit_one("default", 0, ask(&["zone=x"], &[], &[]));
    let x2 = w.submit_one("default", 0, ask(&["zone=x"], &[], &[]));
    let y = w.submit_one("default", 0, ask(&["zone=y"], &[], &[]));
    w.round();
    assert_eq!(w.agent_of(x).as_deref(), Some("a"));
    // a is full: zone=x is exhausted for the round, zone=y is not.
    assert_eq!(w.agent_of(x2), None);
    assert_eq!(w.agent_of(y).as_deref(), Some("b"));
}

#[test]
fn affinity_met_later_in_the_round_is_not_exhausted() {
    let mut w = World::new();
    w.agent("a", 4, &[], &[]);
    w.agent("b", 4, &[], &[]);
    // Same spec, same constraints (none): one candidate list for all three.
    let early = w.submit_one("default", 0, ask(&[], &[], &["affinity tag=db"]));
    let db = w.submit_one("default", 0, ask(&[], &["db"], &[]));
    let late = w.submit_one("default", 0, ask(&[], &[], &["affinity tag=db"]));
    w.round();
    // No db task was held when `early` was examined; `late` follows `db`.
    assert_eq!(w.agent_of(early), None);
    let at = w.agent_of(db).expect("db placed");
    assert_eq!(w.agent_of(late), Some(at.clone()));
    w.round();
    assert_eq!(w.agent_of(early), Some(at));
}

#[test]
fn rules_count_the_rounds_own_bookings_in_their_scope() {
    let mut w = World::new();
    for (id, zone) in [("a1", "x"), ("a2", "x"), ("b1", "y"), ("b2", "y")] {
        w.agent(id, 4, &[], &[("zone", zone)]);
    }
    let one_per_zone = ask(&[], &["web"], &["anti-affinity tag=web@zone"]);
    let ids = w.submit(vec![spec("default", 0); 3], vec![one_per_zone; 3]);
    w.round();
    let zones: BTreeSet<String> = ids
        .iter()
        .filter_map(|&id| w.agent_of(id))
        .map(|a| a[..1].to_string())
        .collect();
    assert_eq!(zones.len(), 2, "one per zone");
    assert_eq!(
        ids.iter().filter(|&&id| w.agent_of(id).is_some()).count(),
        2
    );

    let two_per_agent = ask(&[], &["c"], &["max-per tag=c:2"]);
    let ids = w.submit(vec![spec("default", 0); 9], vec![two_per_agent; 9]);
    w.round();
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for &id in &ids {
        if let Some(a) = w.agent_of(id) {
            *per.entry(a).or_default() += 1;
        }
    }
    assert_eq!(per.values().sum::<usize>(), 8);
    assert!(per.values().all(|&n| n == 2), "{per:?}");
}

#[test]
fn devices_are_booked_within_a_round() {
    let mut w = World::new();
    w.agent("g", 8, &["A100", "A40", "A100", "A40"], &[]);
    let ids = w.submit(vec![spec("default", 1); 5], vec![PlaceAsk::default(); 5]);
    let p = w.round();
    assert_eq!(p.len(), 4);
    let mut seen = BTreeSet::new();
    for &id in &ids[..4] {
        let held = w.state.placement().task(id).unwrap().held.clone().unwrap();
        assert_eq!(held.devices.len(), 1);
        assert!(
            seen.insert(held.devices[0]),
            "device {:?} twice",
            held.devices
        );
    }
    assert_eq!(w.agent_of(ids[4]), None);
}

#[test]
fn a_shape_over_the_gpu_quota_falls_back_to_one_within_it() {
    let mut w = World::new();
    let r = w.apply(Command::SetTenant {
        name: "t".into(),
        limits: TenantLimits {
            max_gpus: Some(1),
            ..TenantLimits::default()
        },
    });
    assert_eq!(r, Response::Ok);
    w.agent("a", 4, &["A100", "A100"], &[]);
    w.agent("b", 4, &["A40"], &[]);
    let mut s = spec("default", 0);
    s.tenant = "t".into();
    let shaped = PlaceAsk {
        shapes: shapes("2xA100|1xA40").unwrap(),
        ..PlaceAsk::default()
    };
    let id = w.submit(vec![s], vec![shaped])[0];
    w.round();
    // On a it would take 2xA100 (its first fitting shape), over the quota.
    assert_eq!(w.agent_of(id).as_deref(), Some("b"));
    assert_eq!(w.state.task(id).unwrap().spec.gpus, 1);
}

#[test]
fn the_gpu_quota_is_weighed_by_model_in_planning() {
    let mut w = World::new();
    let r = w.apply(Command::SetTenant {
        name: "t".into(),
        limits: TenantLimits {
            max_gpus: Some(1),
            ..TenantLimits::default()
        },
    });
    assert_eq!(r, Response::Ok);
    w.agent("big", 8, &["A100", "A100"], &[]);
    w.agent("small", 4, &["A40", "A40", "A40"], &[]);
    let tenant = |mut s: TaskSpec| {
        s.tenant = "t".into();
        s
    };
    let first = w.submit(vec![tenant(spec("default", 1))], vec![PlaceAsk::default()])[0];
    let r = w.apply(Command::Assign(vec![(first, "small".into())]));
    assert!(
        matches!(&r, Response::Assigned { granted, .. } if granted.len() == 1),
        "{r:?}"
    );
    assert_eq!(w.state.access().usage("t").running_gpu_milli, 500);
    // The A100 agent is the emptier one (least-loaded would choose it), but
    // with half a weighted GPU in use only an A40 (0.5) keeps the tenant
    // within one.
    let ids = w.submit(
        (0..2).map(|_| tenant(spec("default", 1))).collect(),
        vec![PlaceAsk::default(); 2],
    );
    assert_eq!(w.round(), vec![(ids[0], "small".to_string())]);
    assert_eq!(w.state.access().usage("t").running_gpu_milli, 1000);
    // The last waits while one weighted GPU is in use.
    assert!(w.round().is_empty());
    w.complete(first);
    assert_eq!(w.round(), vec![(ids[1], "small".to_string())]);
}

#[test]
fn warm_models_count_against_load_by_their_weight() {
    for (weight, expect) in [(500, "b"), (1500, "a"), (0, "b")] {
        let mut w = World::new();
        w.agent("a", 4, &[], &[]);
        w.agent("b", 4, &[], &[]);
        w.warm_weight_milli = weight;
        w.warm.insert("a".into(), ["m".to_string()].into());
        // a holds one task, b none.
        let first = w.submit_one("default", 0, ask(&["kubernetes.io/hostname!=b"], &[], &[]));
        w.round();
        assert_eq!(w.agent_of(first).as_deref(), Some("a"));
        let mut s = spec("default", 0);
        s.models = vec!["m".into()];
        let id = w.submit(vec![s], vec![PlaceAsk::default()])[0];
        w.round();
        assert_eq!(w.agent_of(id).as_deref(), Some(expect), "weight {weight}");
    }
}

#[test]
fn consistent_hash_keeps_keys_and_moves_few_when_an_agent_leaves() {
    let mut w = World::new();
    w.queue("h", PlaceStrategy::ConsistentHash);
    for i in 0..8 {
        w.agent(&format!("a{i}"), 1000, &[], &[]);
    }
    let keyed = |k: usize| PlaceAsk {
        hash_key: Some(format!("key-{k}")),
        ..PlaceAsk::default()
    };
    let place = |w: &mut World| -> Vec<String> {
        let ids = w.submit(vec![spec("h", 0); 200], (0..200).map(keyed).collect());
        w.round();
        ids.iter()
            .map(|&id| w.agent_of(id).expect("placed"))
            .collect()
    };
    let before = place(&mut w);
    assert_eq!(place(&mut w), before, "the same key, the same agent");
    let r = w.apply(Command::AgentDown { agent: "a3".into() });
    assert!(matches!(r, Response::AgentDown { .. }));
    let after = place(&mut w);
    for (b, a) in before.iter().zip(&after) {
        if b != "a3" {
            assert_eq!(a, b, "only the keys of the agent that left move");
        }
    }
    assert!(before.iter().filter(|a| *a == "a3").count() < 60);
}

#[test]
fn spread_and_bin_pack_choose_as_documented() {
    let mut w = World::new();
    w.queue("s", PlaceStrategy::Spread { key: "zone".into() });
    w.queue("p", PlaceStrategy::BinPack);
    w.agent("a", 8, &[], &[("zone", "x")]);
    w.agent("b", 8, &[], &[("zone", "x")]);
    w.agent("c", 8, &[], &[("zone", "y")]);
    let ids = w.submit(vec![spec("s", 0); 4], vec![PlaceAsk::default(); 4]);
    w.round();
    let at: Vec<String> = ids.iter().map(|&id| w.agent_of(id).unwrap()).collect();
    // x, y, x, y: zone x's agents by load (a, then b), y is c.
    assert_eq!(at, ["a", "c", "b", "c"]);
    // Bin-pack: the fullest agent that fits, c (2 held), then c again.
    let ids = w.submit(vec![spec("p", 0); 2], vec![PlaceAsk::default(); 2]);
    w.round();
    for id in ids {
        assert_eq!(w.agent_of(id).as_deref(), Some("c"));
    }
}

#[test]
fn eager_placement_plans_asks_and_is_granted() {
    let mut w = World::new();
    w.agent("a", 4, &["A100", "A100"], &[("zone", "x")]);
    w.agent("b", 4, &["A40"], &[("zone", "y")]);
    let specs = vec![spec("default", 1); 3];
    let asks = vec![ask(&["zone=x"], &[], &[]); 3];
    let connected: BTreeSet<AgentId> = w.state.agents().map(|a| a.spec.id.clone()).collect();
    let live = Live {
        connected: &connected,
        warm: &w.warm,
        warm_weight_milli: 1000,
    };
    let place = place_new_with(
        &w.state,
        &live,
        &specs,
        &asks,
        &InFlight::default(),
        &mut DispatchCursor::default(),
    );
    assert_eq!(place, vec![(0, "a".to_string()), (1, "a".to_string())]);
    match w.apply(Command::SubmitWithPlacement {
        specs,
        place,
        by: Vec::new(),
        opts: Vec::new(),
        asks,
    }) {
        Response::SubmittedPlaced { granted, .. } => assert_eq!(granted.len(), 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn below_version_5_asks_are_not_planned_at_submit() {
    let state = State::new();
    let connected = BTreeSet::new();
    let warm = BTreeMap::new();
    let live = Live {
        connected: &connected,
        warm: &warm,
        warm_weight_milli: 1000,
    };
    let p = place_new_with(
        &state,
        &live,
        &[spec("default", 0)],
        &[ask(&["zone=x"], &[], &[])],
        &InFlight::default(),
        &mut DispatchCursor::default(),
    );
    assert!(p.is_empty());
}

// Property: random agents (labels, GPUs of mixed models) and random asks;
// every pair plan_with (and place_new_with) returns is granted at apply,
// and no device is held twice (the state's invariants, checked after every
// entry, include the device index).

const CONSTRAINTS: [&str; 6] = [
    "zone=x",
    "zone!=y",
    "rack in (r1,r2)",
    "rack notin (r1)",
    "ssd",
    "!ssd",
];
const RULES: [&str; 6] = [
    "affinity tag=db",
    "anti-affinity tag=web",
    "anti-affinity tag=web@zone",
    "max-per tag=web:2",
    "max-per tag=db:1@rack",
    "affinity tag=web@zone",
];
const SHAPES: [&str; 4] = ["1xA100", "2xA40|1xA100", "1xany", "2xany:50000|1xA40"];
const MODELS: [&str; 3] = ["A100", "A40", "A40:24576"];

#[derive(Clone, Debug)]
struct AgentGen {
    slots: u32,
    gpus: Vec<usize>,
    zone: Option<u8>,
    rack: Option<u8>,
    ssd: bool,
}

fn agent_gen() -> impl Gen<Value = AgentGen> {
    (
        1u32..5,
        vec(0usize..MODELS.len(), 0..5),
        proptest::option::of(0u8..2),
        proptest::option::of(0u8..3),
        any::<bool>(),
    )
        .prop_map(|(slots, gpus, zone, rack, ssd)| AgentGen {
            slots,
            gpus,
            zone,
            rack,
            ssd,
        })
}

#[derive(Clone, Debug)]
struct TaskGen {
    queue: usize,
    gpus: u32,
    constraints: Vec<usize>,
    tags: Vec<bool>,
    rules: Vec<usize>,
    shape: Option<usize>,
    key: Option<u8>,
    tenant: bool,
}

fn task_gen() -> impl Gen<Value = TaskGen> {
    (
        0usize..5,
        0u32..3,
        vec(0usize..CONSTRAINTS.len(), 0..3),
        vec(any::<bool>(), 2),
        vec(0usize..RULES.len(), 0..3),
        proptest::option::of(0usize..SHAPES.len()),
        proptest::option::of(0u8..6),
        any::<bool>(),
    )
        .prop_map(
            |(queue, gpus, constraints, tags, rules, shape, key, tenant)| TaskGen {
                queue,
                gpus,
                constraints,
                tags,
                rules,
                shape,
                key,
                tenant,
            },
        )
}

const QUEUES: [&str; 5] = ["ll", "wrr", "pack", "spread", "hash"];

fn build(t: &TaskGen) -> (TaskSpec, PlaceAsk) {
    let mut s = spec(QUEUES[t.queue], t.gpus);
    if t.tenant {
        s.tenant = "capped".into();
    }
    let tags = [("web", t.tags[0]), ("db", t.tags[1])];
    let a = PlaceAsk {
        constraints: t
            .constraints
            .iter()
            .map(|&c| constraint::parse(CONSTRAINTS[c]).unwrap())
            .collect(),
        tags: tags
            .iter()
            .filter(|t| t.1)
            .map(|t| t.0.to_string())
            .collect(),
        rules: t
            .rules
            .iter()
            .map(|&r| parse_rule_text(RULES[r]).unwrap())
            .collect(),
        shapes: t
            .shape
            .map(|i| shapes(SHAPES[i]).unwrap())
            .unwrap_or_default(),
        hash_key: t.key.map(|k| format!("k{k}")),
    };
    (s, crate::placement::validate::normalize(a))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn plan_and_apply_agree_on_placement_asks(
        agents in vec(agent_gen(), 1..7),
        rounds in vec((vec(task_gen(), 0..12), vec(task_gen(), 0..4), vec(any::<bool>(), 0..12)), 1..4),
        max_gpus in 1u64..4,
        warm in vec(any::<bool>(), 7),
    ) {
        let mut w = World::new();
        for (q, strategy) in QUEUES.iter().zip([
            PlaceStrategy::LeastLoaded,
            PlaceStrategy::WeightedRoundRobin,
            PlaceStrategy::BinPack,
            PlaceStrategy::Spread { key: "zone".into() },
            PlaceStrategy::ConsistentHash,
        ]) {
            w.queue(q, strategy);
        }
        let r = w.apply(Command::SetTenant {
            name: "capped".into(),
            limits: TenantLimits { max_gpus: Some(max_gpus), ..TenantLimits::default() },
        });
        prop_assert_eq!(r, Response::Ok);
        for (i, a) in agents.iter().enumerate() {
            let id = format!("a{i}");
            let gpus: Vec<&str> = a.gpus.iter().map(|&g| MODELS[g]).collect();
            let zone = a.zone.map(|z| ["x", "y"][z as usize]);
            let rack = a.rack.map(|r| ["r1", "r2", "r3"][r as usize]);
            let mut labels = Vec::new();
            if let Some(z) = zone { labels.push(("zone", z)); }
            if let Some(r) = rack { labels.push(("rack", r)); }
            if a.ssd { labels.push(("ssd", "yes")); }
            w.agent(&id, a.slots, &gpus, &labels);
            if warm[i] {
                w.warm.insert(id, ["m".to_string()].into());
            }
        }
        for (pending, eager, finish) in rounds {
            let (specs, asks): (Vec<_>, Vec<_>) = pending.iter().map(build).unzip();
            // Some random asks are invalid (refused at submit).
            w.apply(Command::SubmitWithPlacement {
                specs,
                place: Vec::new(),
                by: Vec::new(),
                opts: Vec::new(),
                asks,
            });
            // A batch placed at submit.
            let (specs, asks): (Vec<_>, Vec<_>) = eager.iter().map(build).unzip();
            let connected: BTreeSet<AgentId> = w.state.agents().map(|a| a.spec.id.clone()).collect();
            let live = Live { connected: &connected, warm: &w.warm, warm_weight_milli: 700 };
            let mut cursor = std::mem::take(&mut w.cursor);
            let place = place_new_with(&w.state, &live, &specs, &asks, &InFlight::default(), &mut cursor);
            w.cursor = cursor;
            let planned = place.clone();
            match w.apply(Command::SubmitWithPlacement { specs, place, by: Vec::new(), opts: Vec::new(), asks }) {
                Response::SubmittedPlaced { submitted, granted } => {
                    // Every planned spec that was valid is granted.
                    let valid = planned.iter().filter(|(i, _)| submitted[*i as usize].is_ok()).count();
                    prop_assert_eq!(granted.len(), valid, "planned {:?}", planned);
                }
                other => prop_assert!(false, "{:?}", other),
            }
            w.round();
            // Some held tasks end.
            let held: Vec<TaskId> = w.state.agents().flat_map(|a| a.tasks.keys().copied()).collect();
            for (id, end) in held.into_iter().zip(finish) {
                if end {
                    w.complete(id);
                }
            }
        }
    }
}

#[test]
fn eager_placement_counts_the_devices_and_tags_of_the_round_in_flight() {
    let mut w = World::new();
    w.agent("a", 4, &["A40", "A100"], &[]);
    w.agent("b", 4, &["A100"], &[]);
    let anti = ask(&[], &["web"], &["anti-affinity tag=web"]);
    let mut one_a100 = anti.clone();
    one_a100.shapes = shapes("1xA100").unwrap();
    // Pending: one A100 task on each agent would use both A100s.
    w.submit(vec![spec("default", 1); 2], vec![one_a100.clone(); 2]);
    let connected: BTreeSet<AgentId> = w.state.agents().map(|a| a.spec.id.clone()).collect();
    let live = Live {
        connected: &connected,
        warm: &w.warm,
        warm_weight_milli: 1000,
    };
    let round = plan_with(&w.state, &live, 10, &mut DispatchCursor::default());
    assert_eq!(round.len(), 2);
    let in_flight = InFlight::of(&w.state, &round);
    // The round in flight takes both A100s and tags both agents web.
    for batch in [one_a100, anti] {
        let place = place_new_with(
            &w.state,
            &live,
            &[spec("default", 1)],
            &[batch],
            &in_flight,
            &mut DispatchCursor::default(),
        );
        assert!(place.is_empty(), "{place:?}");
    }
}

#[test]
fn a_retry_with_an_ask_prefers_another_agent_under_every_strategy() {
    for strategy in [
        PlaceStrategy::LeastLoaded,
        PlaceStrategy::WeightedRoundRobin,
        PlaceStrategy::BinPack,
        PlaceStrategy::Spread { key: "zone".into() },
        PlaceStrategy::ConsistentHash,
    ] {
        let mut w = World::new();
        w.queue("q", strategy.clone());
        for (id, zone) in [("a", "x"), ("b", "y"), ("c", "x"), ("d", "z")] {
            w.agent(id, 4, &["A40"], &[("zone", zone)]);
        }
        let mut s = spec("q", 1);
        s.max_attempts = 10;
        let mut asked = ask(&["zone in (x,y)"], &[], &[]);
        asked.hash_key = Some("k".into());
        let id = w.submit(vec![s], vec![asked])[0];
        w.round();
        let mut last = w.agent_of(id).expect("placed");
        for _ in 0..4 {
            let (_, token) = w.state.task(id).unwrap().state.holder().unwrap();
            w.apply(Command::Finished(vec![crate::command::Finished {
                task: id,
                token,
                outcome: Outcome {
                    success: false,
                    result: Vec::new(),
                    error: "exit 1".into(),
                    exit_code: 1,
                },
                timed_out: false,
            }]));
            w.index += 1_000_000;
            w.apply(Command::Wake(vec![id]));
            w.round();
            let now = w.agent_of(id).expect("placed again");
            assert_ne!(now, last, "{strategy:?}: a retry went back to {last}");
            assert_ne!(now, "d", "{strategy:?}: constraint broken");
            last = now;
        }
    }
}

#[test]
fn eager_placement_is_applied_in_the_order_it_was_planned() {
    // The planner books the online task first (class order), on the one
    // A100; apply must assign in that order, or the offline task, first in
    // the batch, takes device 0 and the online one finds no A100.
    let mut w = World::new();
    w.agent("a", 4, &["A100", "A40"], &[]);
    let offline = TaskSpec {
        priority: crate::model::Priority::Offline,
        ..spec("default", 1)
    };
    let online = TaskSpec {
        priority: crate::model::Priority::Online,
        ..spec("default", 1)
    };
    let a100 = PlaceAsk {
        shapes: shapes("1xA100").unwrap(),
        ..PlaceAsk::default()
    };
    let specs = vec![offline, online];
    let asks = vec![PlaceAsk::default(), a100];
    let connected: BTreeSet<AgentId> = w.state.agents().map(|a| a.spec.id.clone()).collect();
    let live = Live {
        connected: &connected,
        warm: &w.warm,
        warm_weight_milli: 1000,
    };
    let place = place_new_with(
        &w.state,
        &live,
        &specs,
        &asks,
        &InFlight::default(),
        &mut DispatchCursor::default(),
    );
    assert_eq!(place, vec![(1, "a".to_string()), (0, "a".to_string())]);
    let ids = match w.apply(Command::SubmitWithPlacement {
        specs,
        place,
        by: Vec::new(),
        opts: Vec::new(),
        asks,
    }) {
        Response::SubmittedPlaced { submitted, granted } => {
            assert_eq!(granted.len(), 2, "{granted:?}");
            submitted
                .into_iter()
                .map(|s| s.unwrap().id)
                .collect::<Vec<_>>()
        }
        other => panic!("{other:?}"),
    };
    let held = |id| {
        let t = w.state.placement().task(id).and_then(|t| t.held.clone());
        t.map(|h| h.devices).unwrap_or_default()
    };
    assert_eq!((held(ids[0]), held(ids[1])), (vec![1], vec![0]));
}
