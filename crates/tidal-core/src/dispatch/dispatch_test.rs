//! Unit tests of the planner: queue weights, strategies, filtering, capacity.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::command::{ApplyCtx, Command, Response};
use crate::lifecycle::Headroom;
use crate::model::{AgentSpec, Gpu, TaskSpec};

struct Fixture {
    state: State,
    index: u64,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            state: State::new(),
            index: 0,
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
        self.state.check_invariants().expect("invariants hold");
        r
    }
    fn queue(&mut self, name: &str, weight: u32, strategy: Strategy) {
        assert_eq!(
            self.apply(Command::SetQueue {
                name: name.into(),
                weight,
                strategy
            }),
            Response::Ok
        );
    }
    fn agent(&mut self, id: &str, slots: u32, weight: u32, f: impl FnOnce(&mut AgentSpec)) {
        let mut spec = AgentSpec {
            id: id.into(),
            dc: "dc1".into(),
            task_types: ["t2i".to_string()].into(),
            slots,
            weight,
            ..AgentSpec::default()
        };
        f(&mut spec);
        assert_eq!(self.apply(Command::RegisterAgent(spec)), Response::Ok);
    }
    fn submit(&mut self, n: usize, queue: &str, f: impl Fn(&mut TaskSpec)) {
        let specs = (0..n)
            .map(|_| {
                let mut s = TaskSpec {
                    task_type: "t2i".into(),
                    queue: queue.into(),
                    ..TaskSpec::default()
                };
                f(&mut s);
                s
            })
            .collect();
        self.apply(Command::Submit(specs));
    }
    fn all(&self) -> BTreeSet<AgentId> {
        self.state.agents().map(|a| a.spec.id.clone()).collect()
    }
    /// Plans a round over all agents and applies it, checking that apply
    /// grants every pair (plan and apply agree).
    fn round(&mut self, max: usize, cursor: &mut DispatchCursor) -> Vec<(TaskId, AgentId)> {
        let connected = self.all();
        let p = plan(&self.state, &connected, max, cursor);
        match self.apply(Command::Assign(p.clone())) {
            Response::Assigned { granted, rejected } => {
                assert!(rejected.is_empty(), "{rejected:?}");
                assert_eq!(granted.len(), p.len());
            }
            other => panic!("{other:?}"),
        }
        p
    }
    fn per_queue(&self, p: &[(TaskId, AgentId)]) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for (t, _) in p {
            *m.entry(self.state.task(*t).unwrap().spec.queue.clone())
                .or_default() += 1;
        }
        m
    }
}

fn per_agent(p: &[(TaskId, AgentId)]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (_, a) in p {
        *m.entry(a.clone()).or_default() += 1;
    }
    m
}

fn vip_normal() -> Fixture {
    let mut f = Fixture::new();
    f.queue("vip", 8, Strategy::LeastLoaded);
    f.queue("normal", 2, Strategy::LeastLoaded);
    f.agent("a1", 100, 1, |_| {});
    f
}

#[test]
fn weighted_queues_split_a_round_8_2() {
    let mut f = vip_normal();
    f.submit(50, "vip", |_| {});
    f.submit(50, "normal", |_| {});
    let mut cursor = DispatchCursor::default();
    let p = f.round(10, &mut cursor);
    assert_eq!(
        f.per_queue(&p),
        BTreeMap::from([("normal".into(), 2), ("vip".into(), 8)])
    );
    // And again: the proportion holds round after round.
    let p = f.round(10, &mut cursor);
    assert_eq!(
        f.per_queue(&p),
        BTreeMap::from([("normal".into(), 2), ("vip".into(), 8)])
    );
}

#[test]
fn weighted_queues_hold_over_one_task_rounds() {
    let mut f = vip_normal();
    f.submit(50, "vip", |_| {});
    f.submit(50, "normal", |_| {});
    let mut cursor = DispatchCursor::default();
    let mut all = Vec::new();
    for _ in 0..10 {
        all.extend(f.round(1, &mut cursor));
    }
    assert_eq!(
        f.per_queue(&all),
        BTreeMap::from([("normal".into(), 2), ("vip".into(), 8)])
    );
}

#[test]
fn an_empty_queue_leaves_its_share_to_the_others() {
    let mut f = vip_normal();
    f.submit(50, "normal", |_| {});
    let p = f.round(10, &mut DispatchCursor::default());
    assert_eq!(f.per_queue(&p), BTreeMap::from([("normal".into(), 10)]));
    // A short vip queue gives up the rest of its share.
    f.submit(3, "vip", |_| {});
    let p = f.round(10, &mut DispatchCursor::default());
    assert_eq!(
        f.per_queue(&p),
        BTreeMap::from([("normal".into(), 7), ("vip".into(), 3)])
    );
}

#[test]
fn an_unplaceable_queue_leaves_its_share_to_the_others() {
    let mut f = vip_normal();
    f.submit(50, "vip", |s| s.task_type = "train".into());
    f.submit(50, "normal", |_| {});
    let p = f.round(10, &mut DispatchCursor::default());
    assert_eq!(f.per_queue(&p), BTreeMap::from([("normal".into(), 10)]));
}

#[test]
fn within_a_queue_priority_then_age() {
    let mut f = Fixture::new();
    f.agent("a1", 2, 1, |_| {});
    f.submit(2, "", |s| s.priority = crate::model::Priority::Offline);
    f.submit(1, "", |_| {});
    f.submit(1, "", |s| s.priority = crate::model::Priority::Online);
    let p = f.round(10, &mut DispatchCursor::default());
    assert_eq!(p.iter().map(|(t, _)| t.0).collect::<Vec<_>>(), [4, 3]);
}

#[test]
fn least_loaded_follows_agent_weight() {
    let mut f = Fixture::new();
    f.agent("a", 100, 1, |_| {});
    f.agent("b", 100, 2, |_| {});
    f.submit(30, "", |_| {});
    let p = f.round(30, &mut DispatchCursor::default());
    assert_eq!(
        per_agent(&p),
        BTreeMap::from([("a".into(), 10), ("b".into(), 20)])
    );
}

#[test]
fn least_loaded_counts_tasks_already_held() {
    let mut f = Fixture::new();
    f.agent("a", 100, 1, |_| {});
    f.submit(4, "", |_| {});
    f.round(4, &mut DispatchCursor::default());
    f.agent("b", 100, 1, |_| {});
    f.submit(6, "", |_| {});
    let p = f.round(6, &mut DispatchCursor::default());
    assert_eq!(
        per_agent(&p),
        BTreeMap::from([("a".into(), 1), ("b".into(), 5)])
    );
}

#[test]
fn weighted_round_robin_interleaves_by_weight() {
    let mut f = Fixture::new();
    f.queue("default", 1, Strategy::WeightedRoundRobin);
    f.agent("a", 100, 1, |_| {});
    f.agent("b", 100, 3, |_| {});
    f.submit(40, "", |_| {});
    let mut cursor = DispatchCursor::default();
    let p = f.round(4, &mut cursor);
    assert_eq!(
        p.iter().map(|(_, a)| a.as_str()).collect::<Vec<_>>(),
        ["b", "a", "b", "b"]
    );
    // The cursor carries the phase over; small rounds still split 1:3.
    let mut all = Vec::new();
    for _ in 0..9 {
        all.extend(f.round(4, &mut cursor));
    }
    assert_eq!(
        per_agent(&all),
        BTreeMap::from([("a".into(), 9), ("b".into(), 27)])
    );
}

#[test]
fn filters_by_capability_model_pipeline_and_gpu() {
    let mut f = Fixture::new();
    f.agent("plain", 10, 1, |_| {});
    f.agent("sdxl", 10, 1, |s| {
        s.pipelines = ["sdxl".to_string()].into();
        s.models = ["m1".to_string()].into();
    });
    f.agent("gpu", 10, 1, |s| {
        s.task_types.insert("train".into());
        s.gpus = vec![
            Gpu {
                model: "A100".into(),
                memory_mb: 80_000
            };
            2
        ];
    });
    f.submit(1, "", |s| s.models = vec!["m1".into()]);
    f.submit(1, "", |s| s.pipeline = "flux".into());
    f.submit(1, "", |s| {
        s.task_type = "train".into();
        s.gpus = 2;
        s.gpu_memory_mb = 40_000;
    });
    f.submit(1, "", |s| s.task_type = "tts".into());
    let p = f.round(10, &mut DispatchCursor::default());
    let got: BTreeMap<u64, &str> = p.iter().map(|(t, a)| (t.0, a.as_str())).collect();
    // t2 (pipeline flux) may go to plain or gpu, not sdxl; least-loaded picks "gpu" (id order).
    assert_eq!(got, BTreeMap::from([(1, "sdxl"), (2, "gpu"), (3, "gpu")]));
    assert_eq!(f.state.pending_total(), 1, "nobody runs tts");
}

#[test]
fn only_connected_ready_agents() {
    let mut f = Fixture::new();
    f.agent("a", 10, 1, |_| {});
    f.agent("b", 10, 1, |_| {});
    f.agent("c", 10, 1, |_| {});
    f.apply(Command::AgentDown { agent: "c".into() });
    f.submit(6, "", |_| {});
    let connected: BTreeSet<AgentId> = ["b".to_string(), "c".to_string()].into();
    let p = plan(&f.state, &connected, 10, &mut DispatchCursor::default());
    assert_eq!(per_agent(&p), BTreeMap::from([("b".into(), 6)]));
    assert!(plan(
        &f.state,
        &BTreeSet::new(),
        10,
        &mut DispatchCursor::default()
    )
    .is_empty());
}

#[test]
fn never_over_commits_slots_or_gpus() {
    let mut f = Fixture::new();
    f.agent("a", 3, 1, |s| {
        s.gpus = vec![Gpu {
            model: "A40".into(),
            memory_mb: 48_000,
        }]
    });
    f.submit(5, "", |s| s.slots = 2);
    f.submit(5, "", |s| s.gpus = 1);
    let p = f.round(100, &mut DispatchCursor::default());
    // One 2-slot task, then one 1-slot GPU task fills the agent exactly.
    assert_eq!(p.iter().map(|(t, _)| t.0).collect::<Vec<_>>(), [1, 6]);
    let a = f.state.agent("a").unwrap();
    assert_eq!((a.slots_in_use, a.gpus_in_use), (3, 1));
    assert!(f.round(100, &mut DispatchCursor::default()).is_empty());
}

#[test]
fn skips_blocked_heads_within_the_scan_bound() {
    let mut f = Fixture::new();
    f.agent("a", 10, 1, |_| {});
    f.submit(5, "", |s| s.task_type = "train".into());
    f.submit(2, "", |_| {});
    // max 2: budget 8 candidates reaches past the 5 blocked heads.
    let p = plan(&f.state, &f.all(), 2, &mut DispatchCursor::default());
    assert_eq!(p.iter().map(|(t, _)| t.0).collect::<Vec<_>>(), [6, 7]);
    // max 1: budget 4 does not.
    assert!(plan(&f.state, &f.all(), 1, &mut DispatchCursor::default()).is_empty());
}

#[test]
fn max_zero_and_nothing_pending() {
    let mut f = Fixture::new();
    f.agent("a", 10, 1, |_| {});
    assert!(plan(&f.state, &f.all(), 10, &mut DispatchCursor::default()).is_empty());
    f.submit(3, "", |_| {});
    assert!(plan(&f.state, &f.all(), 0, &mut DispatchCursor::default()).is_empty());
}

#[test]
fn cursor_forgets_removed_queues_and_agents() {
    let mut f = Fixture::new();
    f.queue("default", 1, Strategy::WeightedRoundRobin);
    f.agent("a", 10, 1, |_| {});
    f.agent("b", 10, 2, |_| {});
    f.submit(3, "", |_| {});
    let mut cursor = DispatchCursor::default();
    f.round(1, &mut cursor);
    assert!(cursor.agents["default"].contains_key("a"));
    f.apply(Command::DeregisterAgent { agent: "a".into() });
    f.round(1, &mut cursor);
    assert!(!cursor.agents["default"].contains_key("a"));
}

#[test]
fn large_round_is_fully_granted() {
    // 10k pending tasks of a few shapes over 1k agents: the round completes,
    // respects capacity, and apply grants all of it.
    let mut f = Fixture::new();
    f.queue("vip", 8, Strategy::WeightedRoundRobin);
    for i in 0..1000 {
        f.agent(&format!("a{i:04}"), 4, 1 + (i % 3), |s| {
            if i % 2 == 0 {
                s.models = ["m1".to_string()].into();
            }
        });
    }
    f.submit(5000, "vip", |s| s.models = vec!["m1".into()]);
    f.submit(5000, "", |_| {});
    let p = f.round(4096, &mut DispatchCursor::default());
    assert_eq!(p.len(), 4000, "every slot of every agent is filled");
    let vip = f.per_queue(&p)["vip"];
    assert!(
        (1500..=2000).contains(&vip),
        "vip tasks fit only on the 500 agents with m1: {vip}"
    );
}

fn t2i(queue: &str) -> TaskSpec {
    let mut s = TaskSpec {
        task_type: "t2i".into(),
        queue: queue.into(),
        ..TaskSpec::default()
    };
    crate::state::normalize(&mut s);
    s
}

impl Fixture {
    /// Plans eager placements for `specs` and applies them as one entry;
    /// returns the plan and the granted tasks.
    fn submit_placed(&mut self, specs: Vec<TaskSpec>) -> (Vec<(u32, AgentId)>, Vec<TaskId>) {
        let connected = self.all();
        let place = place_new(
            &self.state,
            &connected,
            &specs,
            &InFlight::default(),
            &mut DispatchCursor::default(),
        );
        match self.apply(Command::SubmitPlaced {
            specs,
            place: place.clone(),
        }) {
            Response::SubmittedPlaced { granted, .. } => {
                (place, granted.iter().map(|g| g.task).collect())
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn new_tasks_are_assigned_by_the_entry_that_creates_them() {
    let mut f = Fixture::new();
    f.agent("a", 2, 1, |_| {});
    f.agent("b", 1, 1, |_| {});
    let (place, granted) = f.submit_placed(vec![t2i(""), t2i(""), t2i(""), t2i("")]);
    // Three slots, least loaded first; the fourth task finds no room.
    assert_eq!(place.len(), 3, "{place:?}");
    assert_eq!(granted.len(), 3);
    assert_eq!(f.state.pending_total(), 1);
    for id in &granted {
        assert!(matches!(
            f.state.task(*id).unwrap().state,
            crate::model::TaskState::Assigned { token, .. } if token == f.index
        ));
    }
}

#[test]
fn a_new_task_does_not_overtake_a_waiting_one() {
    let mut f = Fixture::new();
    f.agent("a", 4, 1, |_| {});
    // A nearline task no agent can run waits in "default"; another queue
    // is empty. A nearline (or offline) task waits too, in any queue; an
    // online one does not.
    f.submit(1, "", |s| s.task_type = "train".into());
    f.queue("online", 1, Strategy::LeastLoaded);
    let online = |queue: &str| {
        let mut s = t2i(queue);
        s.priority = Priority::Online;
        s
    };
    let offline = |queue: &str| {
        let mut s = t2i(queue);
        s.priority = Priority::Offline;
        s
    };
    let (place, granted) =
        f.submit_placed(vec![t2i(""), t2i("online"), offline("online"), online("")]);
    assert_eq!(place, vec![(3, "a".to_string())]);
    assert_eq!(granted.len(), 1);
    assert_eq!(f.state.pending_total(), 4);

    // Apply checks only what `Assign` checks: a plan that is stale by the
    // time it applies may place a task past one that started waiting in
    // between (entries in flight); the planner avoids it whenever it can see.
    let connected = f.all();
    let specs = vec![online("online")];
    let place = place_new(
        &f.state,
        &connected,
        &specs,
        &InFlight::default(),
        &mut DispatchCursor::default(),
    );
    assert_eq!(place.len(), 1);
    f.submit(1, "online", |s| {
        s.task_type = "train".into();
        s.priority = Priority::Online;
    });
    assert!(place_new(
        &f.state,
        &connected,
        &specs,
        &InFlight::default(),
        &mut DispatchCursor::default()
    )
    .is_empty());
    match f.apply(Command::SubmitPlaced { specs, place }) {
        Response::SubmittedPlaced { submitted, granted } => {
            assert!(submitted[0].is_ok());
            assert_eq!(granted.len(), 1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn placements_apply_refuses_leave_the_task_pending() {
    let mut f = Fixture::new();
    f.agent("a", 1, 1, |_| {});
    let specs = vec![t2i(""), t2i("")];
    // A stale plan: both on one slot, one to an agent that does not exist,
    // and a repeated key that names an existing task.
    let r = f.apply(Command::SubmitPlaced {
        specs: specs.clone(),
        place: vec![(0, "a".into()), (1, "a".into()), (7, "a".into())],
    });
    let Response::SubmittedPlaced { submitted, granted } = r else {
        panic!("{r:?}")
    };
    assert_eq!(submitted.len(), 2);
    assert_eq!(granted.len(), 1);
    assert_eq!(f.state.pending_total(), 1);
    let mut keyed = t2i("");
    keyed.idempotency_key = Some("k".into());
    f.submit_placed(vec![keyed.clone()]);
    let r = f.apply(Command::SubmitPlaced {
        specs: vec![keyed],
        place: vec![(0, "ghost".into())],
    });
    let Response::SubmittedPlaced { submitted, granted } = r else {
        panic!("{r:?}")
    };
    assert!(submitted[0].as_ref().unwrap().existed);
    assert!(granted.is_empty());
}

#[test]
fn the_round_in_flight_neither_waits_nor_leaves_its_capacity() {
    let mut f = Fixture::new();
    f.agent("a", 2, 1, |_| {});
    f.agent("b", 1, 1, |_| {});
    f.submit(2, "", |_| {});
    let connected = f.all();
    let round = plan(&f.state, &connected, 10, &mut DispatchCursor::default());
    assert_eq!(round.len(), 2);
    // While that round is in flight, one slot is left for new tasks.
    let specs = vec![t2i(""), t2i("")];
    let in_flight = InFlight::of(&f.state, &round);
    let place = place_new(
        &f.state,
        &connected,
        &specs,
        &in_flight,
        &mut DispatchCursor::default(),
    );
    assert_eq!(place.len(), 1, "{place:?}");
    // Without knowing the round, its tasks look like a queue that waits.
    let none = place_new(
        &f.state,
        &connected,
        &specs,
        &InFlight::default(),
        &mut DispatchCursor::default(),
    );
    assert!(none.is_empty());
    // The round commits first, then the batch: all three are granted.
    f.apply(Command::Assign(round));
    match f.apply(Command::SubmitPlaced { specs, place }) {
        Response::SubmittedPlaced { granted, .. } => assert_eq!(granted.len(), 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.state.pending_total(), 1);
}

#[test]
fn eager_placement_looks_at_a_turning_window_of_the_fleet() {
    let mut f = Fixture::new();
    for i in 0..100 {
        f.agent(&format!("a{i:03}"), 1, 1, |_| {});
    }
    // The first 50 agents are busy.
    f.submit(50, "", |_| {});
    f.round(50, &mut DispatchCursor::default());
    let connected = f.all();
    let mut cursor = DispatchCursor::default();
    let mut chosen = BTreeSet::new();
    for _ in 0..4 {
        let place = place_new(
            &f.state,
            &connected,
            &[t2i("")],
            &InFlight::default(),
            &mut cursor,
        );
        assert_eq!(place.len(), 1, "an agent with room past the busy ones");
        let agent = &place[0].1;
        assert!(agent.as_str() >= "a050", "{agent} is busy");
        chosen.insert(agent.clone());
    }
    // Each call starts where the previous stopped: the load spreads.
    assert!(chosen.len() > 1, "{chosen:?}");
}

// Sharing a queue between tenants.

impl Fixture {
    fn tenant(&mut self, name: &str, limits: crate::access::TenantLimits) {
        use crate::access::types::ACCESS_VERSION;
        if self.state.cluster_version() < ACCESS_VERSION {
            let r = self.apply(Command::SetClusterVersion {
                version: ACCESS_VERSION,
            });
            assert_eq!(r, Response::Ok);
        }
        let r = self.apply(Command::SetTenant {
            name: name.into(),
            limits,
        });
        assert_eq!(r, Response::Ok);
    }
    fn weight(&mut self, name: &str, weight: u32) {
        self.tenant(
            name,
            crate::access::TenantLimits {
                weight,
                ..Default::default()
            },
        );
    }
    fn per_tenant(&self, p: &[(TaskId, AgentId)]) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for (t, _) in p {
            let spec = &self.state.task(*t).unwrap().spec;
            *m.entry(crate::access::tenant_of(spec).to_string())
                .or_default() += 1;
        }
        m
    }
    /// Ends every task an agent holds, successfully.
    fn complete_all(&mut self) {
        let held: Vec<crate::command::Completion> = self
            .state
            .tasks_after(None)
            .filter_map(|t| {
                t.state
                    .holder()
                    .map(|(_, token)| crate::command::Completion {
                        task: t.id,
                        token,
                        outcome: crate::model::Outcome {
                            success: true,
                            result: Vec::new(),
                            error: String::new(),
                            exit_code: 0,
                        },
                    })
            })
            .collect();
        self.apply(Command::Complete(held));
    }
}

fn of(tenant: &'static str) -> impl Fn(&mut TaskSpec) {
    move |s| s.tenant = tenant.into()
}

#[test]
fn a_light_tenant_is_not_starved_behind_a_heavy_tenants_backlog() {
    let mut f = Fixture::new();
    f.agent("a1", 8, 1, |_| {});
    // 5,000 tasks no agent can take, then 5,000 it can, all older than
    // light's three.
    f.submit(5_000, "", |s| {
        s.tenant = "heavy".into();
        s.task_type = "train".into();
    });
    f.submit(5_000, "", of("heavy"));
    f.submit(3, "", of("light"));
    // The scan of one queue of one tenant would stop after 16 of heavy's
    // blocked tasks; each tenant has its own.
    let p = f.round(4, &mut DispatchCursor::default());
    assert_eq!(f.per_tenant(&p), BTreeMap::from([("light".into(), 3)]));
    // A placeable backlog: the picks alternate from the first tie on.
    let mut f = Fixture::new();
    f.agent("a1", 8, 1, |_| {});
    f.submit(10_000, "", of("heavy"));
    f.submit(3, "", of("light"));
    let p = f.round(8, &mut DispatchCursor::default());
    assert_eq!(
        f.per_tenant(&p),
        BTreeMap::from([("heavy".into(), 5), ("light".into(), 3)])
    );
}

#[test]
fn weights_2_1_get_2_1_of_the_capacity() {
    let mut f = Fixture::new();
    f.agent("a1", 6, 1, |_| {});
    f.agent("a2", 6, 1, |_| {});
    f.weight("big", 2);
    f.submit(200, "", of("small"));
    f.submit(200, "", of("big"));
    let mut cursor = DispatchCursor::default();
    // Filling the capacity in rounds of 3: what is held counts.
    let mut total = BTreeMap::new();
    for _ in 0..4 {
        let p = f.round(3, &mut cursor);
        for (t, n) in f.per_tenant(&p) {
            *total.entry(t).or_insert(0) += n;
        }
    }
    assert_eq!(
        total,
        BTreeMap::from([("big".into(), 8), ("small".into(), 4)])
    );
    // And again after everything ends, over ten full rounds.
    let mut total = BTreeMap::new();
    for _ in 0..10 {
        f.complete_all();
        let p = f.round(12, &mut cursor);
        for (t, n) in f.per_tenant(&p) {
            *total.entry(t).or_insert(0) += n;
        }
    }
    assert_eq!(
        total,
        BTreeMap::from([("big".into(), 80), ("small".into(), 40)])
    );
}

#[test]
fn a_tenant_at_its_quota_leaves_the_capacity_to_the_others() {
    let mut f = Fixture::new();
    f.agent("a1", 10, 1, |_| {});
    f.tenant(
        "capped",
        crate::access::TenantLimits {
            max_running_slots: Some(2),
            weight: 100,
            ..Default::default()
        },
    );
    f.submit(50, "", of("capped"));
    f.submit(50, "", of("other"));
    let mut cursor = DispatchCursor::default();
    let p = f.round(10, &mut cursor);
    assert_eq!(
        f.per_tenant(&p),
        BTreeMap::from([("capped".into(), 2), ("other".into(), 8)])
    );
    // At its quota, it gets nothing more until its tasks end; then its
    // share again up to the quota.
    assert!(plan(&f.state, &f.all(), 10, &mut cursor).is_empty());
    f.complete_all();
    let p = f.round(10, &mut cursor);
    assert_eq!(
        f.per_tenant(&p),
        BTreeMap::from([("capped".into(), 2), ("other".into(), 8)])
    );
}

#[test]
fn priority_class_comes_before_shares() {
    let mut f = Fixture::new();
    f.agent("a1", 4, 1, |_| {});
    f.weight("vip", 1000);
    f.submit(10, "", of("vip"));
    f.submit(2, "", |s| {
        s.tenant = "batch".into();
        s.priority = crate::model::Priority::Online;
    });
    let p = f.round(3, &mut DispatchCursor::default());
    assert_eq!(p.iter().map(|(t, _)| t.0).collect::<Vec<_>>(), [11, 12, 1]);
}

#[test]
fn one_tenant_plans_as_without_tenants() {
    // The same submits under no tenant and under "acme" (with a weight):
    // the same plans, round after round.
    let build = |tenant: &'static str| {
        let mut f = vip_normal();
        f.agent("a2", 3, 2, |s| s.models = ["m".to_string()].into());
        if !tenant.is_empty() {
            f.weight(tenant, 7);
        }
        for (i, q) in ["vip", "normal", "vip"].into_iter().enumerate() {
            f.submit(40, q, |s| {
                s.tenant = tenant.into();
                s.priority = [
                    crate::model::Priority::Offline,
                    crate::model::Priority::Online,
                    crate::model::Priority::Nearline,
                ][i];
            });
            f.submit(5, q, |s| {
                s.tenant = tenant.into();
                s.models = vec!["m".into()];
            });
        }
        f
    };
    let (mut plain, mut acme) = (build(""), build("acme"));
    let (mut c1, mut c2) = (DispatchCursor::default(), DispatchCursor::default());
    for max in [1, 7, 30, 3, 100] {
        assert_eq!(plain.round(max, &mut c1), acme.round(max, &mut c2));
        plain.complete_all();
        acme.complete_all();
    }
}

#[test]
fn eager_placement_puts_a_tenants_task_only_on_agents_that_serve_it() {
    use crate::access::{Role, TokenRecord};
    let mut f = Fixture::new();
    f.agent("a-acme", 4, 1, |_| {});
    f.agent("b-any", 1, 1, |_| {});
    let record = TokenRecord {
        hash: [0; 32],
        name: "acme agents".into(),
        role: Role::Agent,
        tenant: Some("acme".into()),
        created_ms: 0,
        expires_ms: None,
        created_by: "token:test".into(),
        revoked_ms: None,
    };
    assert_eq!(
        f.apply(Command::CreateToken {
            id: "tk".into(),
            record,
            first_only: false,
        }),
        Response::Ok
    );
    // a-acme registers again, with an agent token of tenant acme.
    let spec = f.state.agent("a-acme").unwrap().spec.clone();
    assert_eq!(
        f.apply(Command::RegisterAgentAs {
            spec,
            token: "tk".into(),
        }),
        Response::Ok
    );
    let of = |tenant: &str| TaskSpec {
        tenant: tenant.into(),
        ..t2i("")
    };
    let (place, granted) = f.submit_placed(vec![of("globex"), of("acme"), of("globex")]);
    // globex's first task can only go to b-any, and takes its one slot;
    // acme's goes to a-acme; globex's second finds no agent that serves it.
    assert_eq!(
        place,
        vec![(0, "b-any".to_string()), (1, "a-acme".to_string())]
    );
    assert_eq!(granted.len(), 2);
    assert_eq!(f.state.pending_total(), 1);
}

// Classes across queues, headroom, retries, eager placement by class.

fn class(p: Priority) -> impl Fn(&mut TaskSpec) {
    move |s| s.priority = p
}

fn at_v4() -> Fixture {
    let mut f = Fixture::new();
    assert_eq!(
        f.apply(Command::SetClusterVersion {
            version: crate::lifecycle::LIFECYCLE_VERSION
        }),
        Response::Ok
    );
    f
}

#[test]
fn a_higher_class_goes_first_whatever_its_queues_weight() {
    let mut f = vip_normal();
    f.submit(50, "vip", class(Priority::Offline));
    f.submit(5, "normal", class(Priority::Online));
    let p = f.round(10, &mut DispatchCursor::default());
    assert_eq!(
        p.iter().map(|(t, _)| t.0).collect::<Vec<_>>(),
        [51, 52, 53, 54, 55, 1, 2, 3, 4, 5]
    );
}

#[test]
fn queues_credits_are_kept_per_class() {
    let mut f = vip_normal();
    f.submit(50, "vip", |_| {});
    f.submit(50, "normal", |_| {});
    let mut cursor = DispatchCursor::default();
    f.round(1, &mut cursor);
    let nearline = cursor.queues[&Priority::Nearline].clone();
    // Online rounds in normal alone leave the nearline rotation's phase as
    // it was, and keep no credit of their own (one queue: no debt).
    f.submit(3, "normal", class(Priority::Online));
    let p = f.round(3, &mut cursor);
    assert_eq!(f.per_queue(&p), BTreeMap::from([("normal".into(), 3)]));
    assert_eq!(cursor.queues[&Priority::Nearline], nearline);
    assert!(!cursor.queues.contains_key(&Priority::Online));
    // Nine more one-task rounds make 8 vip and 2 normal.
    let mut all = Vec::new();
    for _ in 0..9 {
        all.extend(f.round(1, &mut cursor));
    }
    let mut per_queue = f.per_queue(&all);
    *per_queue.get_mut("vip").unwrap() += 1;
    assert_eq!(
        per_queue,
        BTreeMap::from([("normal".into(), 2), ("vip".into(), 8)])
    );
}

#[test]
fn a_class_nobody_can_run_does_not_hold_back_the_lower_ones() {
    let mut f = vip_normal();
    f.submit(5, "vip", |s| {
        s.priority = Priority::Online;
        s.task_type = "train".into();
    });
    f.submit(2, "vip", class(Priority::Offline));
    f.submit(2, "normal", |_| {});
    let p = f.round(10, &mut DispatchCursor::default());
    assert_eq!(p.iter().map(|(t, _)| t.0).collect::<Vec<_>>(), [8, 9, 6, 7]);
}

#[test]
fn headroom_stops_a_class_at_its_reserve() {
    let mut f = at_v4();
    f.agent("a", 4, 1, |_| {});
    f.apply(Command::SetHeadroom {
        class: Priority::Online,
        headroom: Headroom { slots: 1, gpus: 0 },
    });
    f.apply(Command::SetHeadroom {
        class: Priority::Nearline,
        headroom: Headroom { slots: 1, gpus: 0 },
    });
    f.submit(4, "", class(Priority::Offline));
    f.submit(4, "", |_| {});
    // Nearline leaves 1 slot (online's), offline 2: nearline takes 3 of 4.
    let p = f.round(10, &mut DispatchCursor::default());
    assert_eq!(p.iter().map(|(t, _)| t.0).collect::<Vec<_>>(), [5, 6, 7]);
    // A task that would take from the reserve is skipped, though an agent
    // has room for it; a smaller one of the same class behind it goes.
    f.apply(Command::Cancel { task: TaskId(8) });
    f.apply(Command::SetHeadroom {
        class: Priority::Nearline,
        headroom: Headroom::default(),
    });
    f.apply(Command::SetHeadroom {
        class: Priority::Online,
        headroom: Headroom { slots: 3, gpus: 0 },
    });
    f.agent("b", 4, 1, |_| {});
    f.agent("c", 4, 1, |_| {});
    f.submit(2, "", |s| s.slots = 4);
    f.submit(1, "", |_| {});
    // 9 free, 3 kept: t9 (4 slots, on b) leaves 5; t10 would fit c but
    // leave 1; t11 leaves 4, and offline t1 the last slot above the
    // reserve.
    let p = f.round(10, &mut DispatchCursor::default());
    assert_eq!(p.iter().map(|(t, _)| t.0).collect::<Vec<_>>(), [9, 11, 1]);
}

#[test]
fn a_retry_prefers_another_agent_under_either_strategy() {
    for strategy in [Strategy::LeastLoaded, Strategy::WeightedRoundRobin] {
        let mut f = at_v4();
        f.queue("default", 1, strategy);
        f.agent("a", 4, 1, |_| {});
        f.agent("b", 4, 1, |_| {});
        f.agent("c", 4, 1, |_| {});
        let mut cursor = DispatchCursor::default();
        f.submit(1, "", |s| s.max_attempts = 10);
        let mut last = f.round(1, &mut cursor)[0].1.clone();
        for _ in 0..6 {
            let (_, token) = f.state.task(TaskId(1)).unwrap().state.holder().unwrap();
            f.apply(Command::Finished(vec![crate::command::Finished {
                task: TaskId(1),
                token,
                outcome: crate::model::Outcome {
                    success: false,
                    result: Vec::new(),
                    error: "exit 1".into(),
                    exit_code: 1,
                },
                timed_out: false,
            }]));
            f.index += 1_000_000;
            f.apply(Command::Wake(vec![TaskId(1)]));
            let p = f.round(1, &mut cursor);
            assert_eq!(p.len(), 1, "{strategy:?}");
            assert_ne!(p[0].1, last, "{strategy:?}: a retry went back to {last}");
            last = p[0].1.clone();
        }
    }
}

#[test]
fn eager_placement_takes_a_batch_class_by_class() {
    let mut f = Fixture::new();
    f.agent("a", 1, 1, |_| {});
    let mut online = t2i("");
    online.priority = Priority::Online;
    let mut offline = t2i("");
    offline.priority = Priority::Offline;
    let (place, _) = f.submit_placed(vec![offline.clone(), online]);
    assert_eq!(place, vec![(1, "a".to_string())]);
    // The offline task waits now: a new offline one does not pass it; a
    // nearline one does.
    f.agent("b", 2, 1, |_| {});
    let (place, _) = f.submit_placed(vec![offline, t2i("")]);
    assert_eq!(place, vec![(1, "b".to_string())]);
}

#[test]
fn a_task_in_backoff_does_not_hold_back_eager_placement() {
    let mut f = at_v4();
    f.agent("a", 2, 1, |_| {});
    f.submit(1, "", |_| {});
    f.round(1, &mut DispatchCursor::default());
    let (_, token) = f.state.task(TaskId(1)).unwrap().state.holder().unwrap();
    f.apply(Command::Finished(vec![crate::command::Finished {
        task: TaskId(1),
        token,
        outcome: crate::model::Outcome {
            success: false,
            result: Vec::new(),
            error: "exit 1".into(),
            exit_code: 1,
        },
        timed_out: false,
    }]));
    assert_eq!(f.state.pending_total(), 1, "in backoff");
    let (place, _) = f.submit_placed(vec![t2i("")]);
    assert_eq!(place.len(), 1);
}

#[test]
fn eager_placement_keeps_the_headroom_in_its_window() {
    let mut f = at_v4();
    f.agent("a", 2, 1, |_| {});
    f.apply(Command::SetHeadroom {
        class: Priority::Online,
        headroom: Headroom { slots: 1, gpus: 0 },
    });
    let mut online = t2i("");
    online.priority = Priority::Online;
    let (place, _) = f.submit_placed(vec![t2i(""), t2i(""), online]);
    // Online first, then one nearline would leave nothing for online.
    assert_eq!(place, vec![(2, "a".to_string())]);
    assert_eq!(f.state.pending_total(), 2);
}
