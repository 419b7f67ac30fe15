//! Unit tests of `placement.rs`.

use super::*;
use crate::model::Gpu;

fn agent() -> Agent {
    Agent {
        spec: AgentSpec {
            id: "a".into(),
            dc: "dc".into(),
            task_types: ["t2i".to_string(), "sr".to_string()].into(),
            pipelines: ["sdxl".to_string()].into(),
            models: ["m1".to_string(), "m2".to_string()].into(),
            slots: 4,
            weight: 1,
            gpus: vec![
                Gpu {
                    model: "A100".into(),
                    memory_mb: 80_000,
                },
                Gpu {
                    model: "A40".into(),
                    memory_mb: 48_000,
                },
            ],
            labels: BTreeMap::new(),
        },
        state: AgentState::Ready,
        tasks: BTreeMap::new(),
        slots_in_use: 0,
        gpus_in_use: 0,
        registered_ms: 0,
    }
}

fn task() -> TaskSpec {
    TaskSpec {
        task_type: "t2i".into(),
        slots: 1,
        max_attempts: 3,
        ..TaskSpec::default()
    }
}

#[test]
fn type_pipeline_models() {
    let a = agent();
    assert_eq!(eligible(&a, None, &task()), Ok(()));
    let t = TaskSpec {
        task_type: "tts".into(),
        ..task()
    };
    assert!(eligible(&a, None, &t)
        .unwrap_err()
        .contains("task type \"tts\""));
    let t = TaskSpec {
        pipeline: "sdxl".into(),
        ..task()
    };
    assert_eq!(eligible(&a, None, &t), Ok(()));
    let t = TaskSpec {
        pipeline: "flux".into(),
        ..task()
    };
    assert!(eligible(&a, None, &t)
        .unwrap_err()
        .contains("pipeline \"flux\""));
    let mut any = agent();
    any.spec.pipelines.clear();
    assert_eq!(
        eligible(&any, None, &t),
        Ok(()),
        "an agent without pipelines runs any"
    );
    let t = TaskSpec {
        models: vec!["m1".into(), "m2".into()],
        ..task()
    };
    assert_eq!(eligible(&a, None, &t), Ok(()));
    let t = TaskSpec {
        models: vec!["m1".into(), "m3".into()],
        ..task()
    };
    assert!(eligible(&a, None, &t).unwrap_err().contains("model \"m3\""));
}

#[test]
fn gpus_and_memory() {
    let mut a = agent();
    let t = TaskSpec { gpus: 2, ..task() };
    assert_eq!(eligible(&a, None, &t), Ok(()));
    let t = TaskSpec { gpus: 3, ..task() };
    assert!(eligible(&a, None, &t).is_err());
    let t = TaskSpec {
        gpus: 1,
        gpu_memory_mb: 60_000,
        ..task()
    };
    assert_eq!(eligible(&a, None, &t), Ok(()));
    let t = TaskSpec {
        gpus: 2,
        gpu_memory_mb: 60_000,
        ..task()
    };
    assert!(eligible(&a, None, &t)
        .unwrap_err()
        .contains("1 GPUs with at least 60000 MB"));
    let t = TaskSpec {
        gpu_memory_mb: 100_000,
        ..task()
    };
    assert!(
        eligible(&a, None, &t).is_err(),
        "memory without a count still needs one GPU"
    );
    a.gpus_in_use = 2;
    let t = TaskSpec { gpus: 1, ..task() };
    assert!(eligible(&a, None, &t).unwrap_err().contains("0 free GPUs"));
}

#[test]
fn slots_and_state() {
    let mut a = agent();
    a.slots_in_use = 3;
    assert_eq!(eligible(&a, None, &task()), Ok(()));
    let t = TaskSpec { slots: 2, ..task() };
    assert!(eligible(&a, None, &t).unwrap_err().contains("1 free slots"));
    a.slots_in_use = 9; // the spec shrank below what is in use
    assert_eq!(free_slots(&a), 0);
    a.slots_in_use = 0;
    a.state = AgentState::Down;
    assert_eq!(eligible(&a, None, &task()), Err("is down".into()));
}

#[test]
fn a_tenant_bound_agent_takes_only_its_tenants_tasks() {
    let a = agent();
    let of = |tenant: &str| TaskSpec {
        tenant: tenant.into(),
        ..task()
    };
    assert_eq!(eligible(&a, Some("acme"), &of("acme")), Ok(()));
    assert_eq!(
        eligible(&a, Some("acme"), &of("globex")),
        Err("serves only tenant \"acme\", the task is tenant \"globex\"'s".into())
    );
    // A task without a tenant is tenant "default"'s.
    assert!(eligible(&a, Some("acme"), &of("")).is_err());
    assert_eq!(eligible(&a, Some("default"), &of("")), Ok(()));
    // Unbound: every tenant's.
    assert_eq!(eligible(&a, None, &of("globex")), Ok(()));
    // Readiness and capability are judged first.
    let mut down = agent();
    down.state = AgentState::Down;
    assert_eq!(
        eligible(&down, Some("acme"), &of("globex")),
        Err("is down".into())
    );
}
