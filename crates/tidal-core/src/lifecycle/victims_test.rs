//! The preemption planner's choices.

use std::collections::BTreeSet;

use super::plan_preemption;
use crate::command::{Command, Response};
use crate::lifecycle::test_world::World;
use crate::lifecycle::TaskOptions;
use crate::model::{AgentId, Priority, TaskId, TaskSpec};
use crate::state::State;

impl World {
    /// A task of `prio` started on `agent` at `start_ms`.
    fn run(
        &mut self,
        agent: &str,
        prio: Priority,
        (slots, gpus): (u32, u32),
        opts: TaskOptions,
        start_ms: u64,
    ) -> TaskId {
        let id = self.submit(prio, slots, gpus, opts);
        self.start_at(start_ms, id, agent);
        id
    }

    fn plan(&self, agents: &[&str], now_ms: u64) -> Vec<(TaskId, AgentId, Vec<TaskId>)> {
        let connected: BTreeSet<AgentId> = agents.iter().map(|a| a.to_string()).collect();
        plan_preemption(&self.state, &connected, now_ms, 16)
            .into_iter()
            .map(|c| match c {
                Command::Preempt {
                    task,
                    agent,
                    victims,
                } => {
                    // What the planner proposes, apply takes.
                    self.state.check_preempt(task, &agent, &victims).unwrap();
                    (task, agent, victims.into_iter().map(|(v, _)| v).collect())
                }
                other => panic!("{other:?}"),
            })
            .collect()
    }
}

fn opts() -> TaskOptions {
    TaskOptions::default()
}

fn suspendable() -> TaskOptions {
    TaskOptions {
        suspendable: true,
        ..TaskOptions::default()
    }
}

#[test]
fn victims_lowest_class_first_then_least_work_lost_then_youngest() {
    let mut w = World::new();
    w.agent("a1", 5, 0);
    let near = w.run("a1", Priority::Nearline, (1, 0), opts(), 9_000);
    let old = w.run("a1", Priority::Offline, (1, 0), opts(), 1_000);
    let young = w.run("a1", Priority::Offline, (1, 0), opts(), 5_000);
    let checkpointed = w.run("a1", Priority::Offline, (1, 0), opts(), 2_000);
    let token = w
        .state
        .task(checkpointed)
        .unwrap()
        .state
        .holder()
        .unwrap()
        .1;
    w.at(
        8_000,
        Command::Checkpoint(vec![(checkpointed, token, vec![1])]),
    );
    let young2 = w.run("a1", Priority::Offline, (1, 0), opts(), 5_000);
    let online = w.submit(Priority::Online, 1, 0, opts());
    // At 10 s: lost 2 s (checkpointed at 8), 5 s (young, young2), 9 s (old).
    // Young and young2 tie on both: the smaller id goes first.
    assert_eq!(
        w.plan(&["a1"], 10_000),
        vec![(online, "a1".into(), vec![checkpointed])]
    );
    let online2 = w.submit(Priority::Online, 4, 0, opts());
    // The first online task (older) is planned first; one preemption per
    // agent per plan, so the second waits for the next plan.
    assert_eq!(w.plan(&["a1"], 10_000).len(), 1);
    w.at(10_000, Command::Cancel { task: online });
    let plan = w.plan(&["a1"], 10_000);
    assert_eq!(plan.len(), 1);
    let (task, _, victims) = &plan[0];
    assert_eq!(*task, online2);
    // Four of the offline ones (all of them), nearline untouched.
    let got: BTreeSet<TaskId> = victims.iter().copied().collect();
    assert_eq!(got, [old, young, young2, checkpointed].into());
    assert!(!victims.contains(&near));
    // In order of choice: checkpointed (2 s lost), young, young2 (5 s, the
    // smaller id first), old (9 s).
    assert_eq!(victims, &vec![checkpointed, young, young2, old]);
}

#[test]
fn nearline_is_taken_only_when_offline_is_not_enough() {
    let mut w = World::new();
    w.agent("a1", 3, 0);
    let near = w.run("a1", Priority::Nearline, (2, 0), opts(), 9_000);
    let off = w.run("a1", Priority::Offline, (1, 0), opts(), 1_000);
    let online = w.submit(Priority::Online, 1, 0, opts());
    assert_eq!(
        w.plan(&["a1"], 10_000),
        vec![(online, "a1".into(), vec![off])]
    );
    let online2 = w.submit(Priority::Online, 2, 0, opts());
    w.at(10_000, Command::Cancel { task: online });
    // Offline alone frees 1 slot: the nearline task is needed, and then
    // the offline one is not (pruned).
    assert_eq!(
        w.plan(&["a1"], 10_000),
        vec![(online2, "a1".into(), vec![near])]
    );
}

#[test]
fn never_online_and_an_opt_out_is_respected() {
    let mut w = World::new();
    w.agent("a1", 2, 0);
    w.run("a1", Priority::Online, (1, 0), opts(), 1_000);
    w.run(
        "a1",
        Priority::Offline,
        (1, 0),
        TaskOptions {
            preemptible: false,
            ..opts()
        },
        1_000,
    );
    w.submit(Priority::Online, 1, 0, opts());
    assert!(w.plan(&["a1"], 10_000).is_empty());
    // Nor for a nearline task, whatever is below it.
    let mut w = World::new();
    w.agent("a1", 1, 0);
    w.run("a1", Priority::Offline, (1, 0), opts(), 1_000);
    w.submit(Priority::Nearline, 1, 0, opts());
    assert!(w.plan(&["a1"], 10_000).is_empty());
}

#[test]
fn a_task_that_needs_gpus_is_not_served_by_suspension() {
    let mut w = World::new();
    w.agent("a1", 4, 1);
    let paused = w.run("a1", Priority::Offline, (1, 1), suspendable(), 1_000);
    let online = w.submit(Priority::Online, 1, 1, opts());
    // Slots are free (3), the GPU is not, and suspending keeps it taken.
    assert!(w.plan(&["a1"], 10_000).is_empty());
    // A stoppable one on another agent serves.
    w.agent("a2", 4, 1);
    let stoppable = w.run("a2", Priority::Offline, (1, 1), opts(), 1_000);
    assert_eq!(
        w.plan(&["a1", "a2"], 10_000),
        vec![(online, "a2".into(), vec![stoppable])]
    );
    // Only connected agents count.
    assert!(w.plan(&["a1"], 10_000).is_empty());
    let _ = paused;
}

#[test]
fn agents_compare_by_victims_then_work_lost() {
    let mut w = World::new();
    w.agent("a1", 2, 0);
    w.agent("a2", 2, 0);
    w.agent("a3", 2, 0);
    // a1: two tasks of one slot; a2: one task of two slots, lost 9 s;
    // a3: one task of two slots, lost 4 s.
    w.run("a1", Priority::Offline, (1, 0), opts(), 9_500);
    w.run("a1", Priority::Offline, (1, 0), opts(), 9_500);
    w.run("a2", Priority::Offline, (2, 0), opts(), 1_000);
    let cheap = w.run("a3", Priority::Offline, (2, 0), opts(), 6_000);
    let online = w.submit(Priority::Online, 2, 0, opts());
    assert_eq!(
        w.plan(&["a1", "a2", "a3"], 10_000),
        vec![(online, "a3".into(), vec![cheap])]
    );
}

#[test]
fn one_preemption_per_online_task_and_none_when_it_fits_somewhere() {
    let mut w = World::new();
    w.agent("a1", 1, 0);
    let victim = w.run("a1", Priority::Offline, (1, 0), opts(), 1_000);
    let online = w.submit(Priority::Online, 1, 0, opts());
    let plan = w.plan(&["a1"], 10_000);
    assert_eq!(plan, vec![(online, "a1".into(), vec![victim])]);
    let token = w.state.task(victim).unwrap().state.holder().unwrap().1;
    let r = w.at(
        10_000,
        Command::Preempt {
            task: online,
            agent: "a1".into(),
            victims: vec![(victim, token)],
        },
    );
    assert!(
        matches!(r, Response::Preempted { granted: None, .. }),
        "{r:?}"
    );
    // Under way (the victim is stopping): nothing more for it.
    assert!(w.plan(&["a1"], 10_000).is_empty());
    // An online task that fits on a connected agent is the dispatcher's.
    w.agent("a2", 1, 0);
    assert!(w.plan(&["a1", "a2"], 10_000).is_empty());
    // Below version 4, nothing.
    let mut old = State::new();
    old.restore_cluster_version(3);
    assert!(plan_preemption(&old, &BTreeSet::new(), 0, 4).is_empty());
}

#[test]
fn online_work_in_any_queue_preempts_while_another_queue_has_lower_work_waiting() {
    let mut w = World::new();
    w.agent("a1", 1, 0);
    for q in ["a", "z"] {
        w.at(
            0,
            Command::SetQueue {
                name: q.into(),
                weight: 1,
                strategy: Default::default(),
            },
        );
    }
    let victim = w.run("a1", Priority::Offline, (1, 0), opts(), 1_000);
    // Queue "a" (first by name) holds offline work that waits; the online
    // task is in queue "z".
    let waiting = TaskSpec {
        task_type: "t".into(),
        queue: "a".into(),
        priority: Priority::Offline,
        ..TaskSpec::default()
    };
    let online = TaskSpec {
        task_type: "t".into(),
        queue: "z".into(),
        priority: Priority::Online,
        ..TaskSpec::default()
    };
    w.at(0, Command::Submit(vec![waiting]));
    let id = match w.at(0, Command::Submit(vec![online])) {
        Response::Submitted(v) => v[0].as_ref().unwrap().id,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        w.plan(&["a1"], 2_000),
        vec![(id, "a1".to_string(), vec![victim])]
    );
}

#[test]
fn no_preemption_for_a_task_its_tenants_running_quota_holds_back() {
    use crate::access::TenantLimits;
    let mut w = World::new();
    w.agent("a1", 1, 0);
    w.run("a1", Priority::Offline, (1, 0), opts(), 1_000);
    w.at(
        0,
        Command::SetTenant {
            name: "acme".into(),
            limits: TenantLimits {
                max_running_slots: Some(0),
                ..TenantLimits::default()
            },
        },
    );
    let spec = TaskSpec {
        task_type: "t".into(),
        priority: Priority::Online,
        tenant: "acme".into(),
        ..TaskSpec::default()
    };
    let id = match w.at(0, Command::Submit(vec![spec])) {
        Response::Submitted(v) => v[0].as_ref().unwrap().id,
        other => panic!("{other:?}"),
    };
    assert!(w.plan(&["a1"], 2_000).is_empty());
    // And apply refuses one all the same.
    let victims: Vec<_> = w
        .state
        .agent("a1")
        .unwrap()
        .tasks
        .iter()
        .map(|(t, k)| (*t, *k))
        .collect();
    assert!(w.state.check_preempt(id, "a1", &victims).is_err());
}

/// Submits one online task of 1 slot in `queue`, with `deadline_ms`.
fn online_in(w: &mut World, queue: &str, deadline_ms: Option<u64>) -> TaskId {
    let spec = TaskSpec {
        task_type: "t".into(),
        queue: queue.into(),
        priority: Priority::Online,
        ..TaskSpec::default()
    };
    let opts = TaskOptions {
        deadline_ms,
        ..TaskOptions::default()
    };
    w.submit_at(0, spec, opts)
}

#[test]
fn online_tasks_are_looked_at_by_queue_weight_then_deadline_then_age() {
    let mut w = World::new();
    w.agent("a1", 1, 0);
    for (q, weight) in [("normal", 1), ("vip", 8)] {
        w.at(
            0,
            Command::SetQueue {
                name: q.into(),
                weight,
                strategy: Default::default(),
            },
        );
    }
    let victim = w.run("a1", Priority::Offline, (1, 0), opts(), 1_000);
    // The older online task is in the lighter queue: the heavier queue's
    // goes first, as the dispatcher would pick it first.
    let _normal = online_in(&mut w, "normal", None);
    let vip_late = online_in(&mut w, "vip", None);
    assert_eq!(
        w.plan(&["a1"], 2_000),
        vec![(vip_late, "a1".to_string(), vec![victim])]
    );
    // Within the queue: an earlier deadline before age.
    let vip_due = online_in(&mut w, "vip", Some(5_000));
    assert_eq!(
        w.plan(&["a1"], 2_000),
        vec![(vip_due, "a1".to_string(), vec![victim])]
    );
}

#[test]
fn a_plan_examines_at_most_preempt_scan_online_tasks() {
    let mut w = World::new();
    w.agent("a1", 1, 0);
    let victim = w.run("a1", Priority::Offline, (1, 0), opts(), 1_000);
    // PREEMPT_SCAN online tasks no victim set can make room for (two slots
    // on a one-slot agent), then one that a preemption would serve.
    let blockers: Vec<TaskId> = (0..super::PREEMPT_SCAN)
        .map(|_| w.submit(Priority::Online, 2, 0, opts()))
        .collect();
    let served = w.submit(Priority::Online, 1, 0, opts());
    assert!(w.plan(&["a1"], 2_000).is_empty());
    // One blocker fewer: it is within the bound.
    w.at(2_000, Command::Cancel { task: blockers[0] });
    assert_eq!(
        w.plan(&["a1"], 2_000),
        vec![(served, "a1".to_string(), vec![victim])]
    );
}

#[test]
fn online_tasks_no_agent_could_run_do_not_hold_back_those_behind_them() {
    let mut w = World::new();
    w.agent("a1", 1, 0);
    let victim = w.run("a1", Priority::Offline, (1, 0), opts(), 1_000);
    // More than PREEMPT_SCAN online tasks of a type no agent runs, at the
    // front of the queue (the oldest), then one a preemption would serve.
    for _ in 0..super::PREEMPT_SCAN + 4 {
        let spec = TaskSpec {
            task_type: "elsewhere".into(),
            priority: Priority::Online,
            ..TaskSpec::default()
        };
        w.submit_at(0, spec, opts());
    }
    let served = w.submit(Priority::Online, 1, 0, opts());
    assert_eq!(
        w.plan(&["a1"], 2_000),
        vec![(served, "a1".to_string(), vec![victim])],
        "passed over without a victim search, within PREEMPT_PASS"
    );
}

#[test]
fn a_victim_told_to_stop_for_a_task_that_no_longer_waits_is_planned_again() {
    let mut w = World::new();
    w.agent("a1", 1, 0);
    let victim = w.run("a1", Priority::Offline, (1, 0), opts(), 1_000);
    let token = w.state.task(victim).unwrap().state.holder().unwrap().1;
    let first = w.submit(Priority::Online, 1, 0, opts());
    assert_eq!(
        w.plan(&["a1"], 2_000),
        vec![(first, "a1".to_string(), vec![victim])]
    );
    w.at(
        2_000,
        Command::Preempt {
            task: first,
            agent: "a1".into(),
            victims: vec![(victim, token)],
        },
    );
    let second = w.submit(Priority::Online, 1, 0, opts());
    assert!(
        w.plan(&["a1"], 2_100).is_empty(),
        "the victim is being stopped for the first"
    );
    w.at(2_200, Command::Cancel { task: first });
    assert_eq!(
        w.plan(&["a1"], 2_300),
        vec![(second, "a1".to_string(), vec![victim])]
    );
}

mod placed {
    //! From cluster format version 5 on: GPUs are devices and tasks have
    //! constraints, so victims must free devices the task can take, on an
    //! agent whose labels it accepts.

    use super::*;
    use crate::model::{AgentSpec, Gpu};
    use crate::placement::types::{Constraint, GpuShape, Op, PlaceAsk, PLACEMENT_VERSION};

    fn world() -> World {
        let mut w = World::new();
        w.state.restore_cluster_version(PLACEMENT_VERSION);
        w
    }

    fn agent(w: &mut World, id: &str, models: &[&str], labels: &[(&str, &str)]) {
        let spec = AgentSpec {
            id: id.into(),
            dc: "dc1".into(),
            task_types: ["t".to_string()].into(),
            slots: 8,
            weight: 1,
            gpus: models
                .iter()
                .map(|m| Gpu {
                    model: m.to_string(),
                    memory_mb: 1,
                })
                .collect(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..AgentSpec::default()
        };
        assert_eq!(w.at(0, Command::RegisterAgent(spec)), Response::Ok);
    }

    fn online_asking(w: &mut World, gpus: u32, ask: PlaceAsk) -> TaskId {
        let spec = TaskSpec {
            task_type: "t".into(),
            priority: Priority::Online,
            slots: 1,
            gpus,
            ..TaskSpec::default()
        };
        match w.apply(Command::SubmitWithPlacement {
            specs: vec![spec],
            place: vec![],
            by: vec![],
            opts: vec![opts()],
            asks: vec![ask],
        }) {
            Response::SubmittedPlaced { submitted, .. } => submitted[0].as_ref().unwrap().id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn victims_free_a_device_of_the_model_the_task_asks_for() {
        let mut w = world();
        agent(&mut w, "a1", &["A40", "A100"], &[]);
        // Device 0 (A40) goes to the first, device 1 (A100) to the second.
        let on_a40 = w.run("a1", Priority::Offline, (1, 1), opts(), 9_000);
        let on_a100 = w.run("a1", Priority::Offline, (1, 1), opts(), 1_000);
        let held = |w: &World, id| {
            let p = w.state.placement().task(id).and_then(|t| t.held.clone());
            p.map(|h| h.devices).unwrap_or_default()
        };
        assert_eq!((held(&w, on_a40), held(&w, on_a100)), (vec![0], vec![1]));
        let a100 = PlaceAsk {
            shapes: vec![GpuShape {
                count: 1,
                model: Some("A100".into()),
                min_memory_mb: 0,
            }],
            ..PlaceAsk::default()
        };
        let online = online_asking(&mut w, 1, a100);
        // The A40 task lost less work (started later) and comes first in
        // the victims' order, but stopping it frees no A100.
        assert_eq!(
            w.plan(&["a1"], 10_000),
            vec![(online, "a1".into(), vec![on_a100])]
        );
    }

    #[test]
    fn no_victim_is_stopped_for_gpus_that_would_pass_the_tenants_max_gpus() {
        use crate::access::TenantLimits;
        let mut w = world();
        agent(&mut w, "a1", &["A100", "A40"], &[]);
        agent(&mut w, "a2", &["A40"], &[]);
        let limits = TenantLimits {
            max_gpus: Some(1),
            ..TenantLimits::default()
        };
        let r = w.at(
            0,
            Command::SetTenant {
                name: "acme".into(),
                limits,
            },
        );
        assert_eq!(r, Response::Ok);
        let acme = |w: &mut World| {
            let spec = TaskSpec {
                task_type: "t".into(),
                priority: Priority::Online,
                tenant: "acme".into(),
                slots: 1,
                gpus: 1,
                ..TaskSpec::default()
            };
            match w.at(0, Command::Submit(vec![spec])) {
                Response::Submitted(v) => v[0].as_ref().unwrap().id,
                other => panic!("{other:?}"),
            }
        };
        // acme holds half a weighted GPU (an A40 on a2).
        let holder = acme(&mut w);
        w.start_at(500, holder, "a2");
        // The A100 task (device 0) started later, so it lost less work:
        // first in the victims' order.
        let on_a100 = w.submit(Priority::Offline, 1, 1, opts());
        let token = w.assign_at(1_000, on_a100, "a1");
        w.run("a1", Priority::Offline, (1, 1), opts(), 2_000);
        let started = Command::Started {
            task: on_a100,
            token,
        };
        assert_eq!(w.at(9_000, started), Response::Ok);
        let online = acme(&mut w);
        // Assign would take the lowest free device, the A100 (1.5 weighted
        // GPUs, over acme's 1): no victim is worth stopping.
        let plan = w.plan(&["a1", "a2"], 10_000);
        assert!(plan.is_empty(), "{plan:?} {online:?}");
        assert!(w.state.check_preempt(online, "a1", &[]).is_err());
    }

    #[test]
    fn a_task_with_gpu_shapes_needs_the_gpus_of_a_shape_the_agent_has() {
        let mut w = world();
        agent(&mut w, "a1", &["A100"; 4], &[]);
        let batch: Vec<TaskId> = (0..4)
            .map(|k| w.run("a1", Priority::Offline, (1, 1), opts(), 1_000 * (k + 1)))
            .collect();
        let shaped = PlaceAsk {
            shapes: vec![
                GpuShape {
                    count: 8,
                    model: Some("H100".into()),
                    min_memory_mb: 0,
                },
                GpuShape {
                    count: 1,
                    model: Some("A100".into()),
                    min_memory_mb: 0,
                },
            ],
            ..PlaceAsk::default()
        };
        let online = online_asking(&mut w, 0, shaped);
        // One A100 is enough: the youngest batch task (least work lost).
        assert_eq!(
            w.plan(&["a1"], 10_000),
            vec![(online, "a1".into(), vec![batch[3]])]
        );
    }

    #[test]
    fn no_victim_is_taken_where_a_tag_rule_keeps_the_task_out() {
        let mut w = world();
        agent(&mut w, "a1", &[], &[]);
        // A web task that cannot be preempted, and batch work filling the agent.
        let web = PlaceAsk {
            tags: vec!["web".into()],
            ..PlaceAsk::default()
        };
        let keep = TaskOptions {
            preemptible: false,
            ..opts()
        };
        let spec = TaskSpec {
            task_type: "t".into(),
            priority: Priority::Offline,
            slots: 1,
            ..TaskSpec::default()
        };
        let held = match w.apply(Command::SubmitWithPlacement {
            specs: vec![spec],
            place: vec![],
            by: vec![],
            opts: vec![keep],
            asks: vec![web],
        }) {
            Response::SubmittedPlaced { submitted, .. } => submitted[0].as_ref().unwrap().id,
            other => panic!("{other:?}"),
        };
        w.start_at(1_000, held, "a1");
        let batch = w.run("a1", Priority::Offline, (7, 0), opts(), 1_000);
        let anti_web = PlaceAsk {
            rules: vec![crate::placement::rules::parse_rule_text("anti-affinity tag=web").unwrap()],
            ..PlaceAsk::default()
        };
        let online = online_asking(&mut w, 0, anti_web);
        // Stopping the batch work would free slots, but the web task stays:
        // the online task could not go there anyway.
        assert_eq!(w.plan(&["a1"], 10_000), vec![]);
        let victims = vec![(
            batch,
            w.state.task(batch).unwrap().state.holder().unwrap().1,
        )];
        assert!(matches!(
            w.state.check_preempt(online, "a1", &victims),
            Err(crate::command::Rejection::Ineligible { .. })
        ));
    }

    #[test]
    fn no_victim_is_taken_on_an_agent_whose_labels_the_task_refuses() {
        let mut w = world();
        agent(&mut w, "a1", &[], &[("zone", "b")]);
        let b = w.run("a1", Priority::Offline, (8, 0), opts(), 1_000);
        let zone_a = PlaceAsk {
            constraints: vec![Constraint {
                key: "zone".into(),
                op: Op::Eq,
                values: vec!["a".into()],
            }],
            ..PlaceAsk::default()
        };
        let online = online_asking(&mut w, 0, zone_a);
        assert_eq!(w.plan(&["a1"], 10_000), vec![]);
        let victims = vec![(b, w.state.task(b).unwrap().state.holder().unwrap().1)];
        assert!(matches!(
            w.state.check_preempt(online, "a1", &victims),
            Err(crate::command::Rejection::Ineligible { .. })
        ));
        agent(&mut w, "a2", &[], &[("zone", "a")]);
        let a = w.run("a2", Priority::Offline, (8, 0), opts(), 1_000);
        assert_eq!(
            w.plan(&["a1", "a2"], 10_000),
            vec![(online, "a2".into(), vec![a])]
        );
    }
}
