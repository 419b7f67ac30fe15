//! Unit tests of `limits.rs`.

use super::*;

fn msg(r: Result<(), Rejection>) -> String {
    match r {
        Err(Rejection::Invalid(m)) => m,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn over(r: Result<(), Rejection>) -> String {
    match r {
        Err(Rejection::OverLimit(m)) => m,
        other => panic!("expected OverLimit, got {other:?}"),
    }
}

fn spec() -> TaskSpec {
    TaskSpec {
        task_type: "t2i".into(),
        ..TaskSpec::default()
    }
}

#[test]
fn accepts_a_minimal_spec() {
    assert_eq!(validate_task_spec(&spec(), &Limits::default()), Ok(()));
}

#[test]
fn empty_task_type_is_named() {
    let s = TaskSpec::default();
    assert_eq!(
        msg(validate_task_spec(&s, &Limits::default())),
        "task_type \"\" is empty"
    );
}

#[test]
fn payload_over_limit_says_sizes() {
    let s = TaskSpec {
        payload: vec![0; 2_000_000],
        ..spec()
    };
    assert_eq!(
        over(validate_task_spec(&s, &Limits::default())),
        "payload is 2000000 bytes, over the limit of 1048576 bytes"
    );
}

#[test]
fn bad_characters_are_refused() {
    let s = TaskSpec {
        queue: "my queue".into(),
        ..spec()
    };
    let m = msg(validate_task_spec(&s, &Limits::default()));
    assert!(m.contains("queue \"my queue\" contains ' '"), "{m}");
    let s = TaskSpec {
        models: vec!["sd-xl/1.0:fp16".into()],
        ..spec()
    };
    assert_eq!(validate_task_spec(&s, &Limits::default()), Ok(()));
}

#[test]
fn long_names_are_refused() {
    let s = TaskSpec {
        pipeline: "p".repeat(129),
        ..spec()
    };
    let m = msg(validate_task_spec(&s, &Limits::default()));
    assert!(
        m.contains("is 129 bytes long, over the limit of 128"),
        "{m}"
    );
}

#[test]
fn counts_and_caps() {
    let l = Limits::default();
    let s = TaskSpec {
        models: vec!["m".into(); 33],
        ..spec()
    };
    assert!(over(validate_task_spec(&s, &l)).contains("33 models"));
    let s = TaskSpec {
        max_attempts: 101,
        ..spec()
    };
    assert!(msg(validate_task_spec(&s, &l)).contains("max_attempts 101"));
    let s = TaskSpec {
        slots: 1025,
        ..spec()
    };
    assert!(msg(validate_task_spec(&s, &l)).contains("1025 slots"));
    let s = TaskSpec {
        idempotency_key: Some(String::new()),
        ..spec()
    };
    assert!(msg(validate_task_spec(&s, &l)).contains("idempotency_key"));
}

#[test]
fn agent_spec_checks() {
    let l = Limits::default();
    let mut a = AgentSpec {
        id: "gpu-01".into(),
        dc: "dc1".into(),
        task_types: ["t2i".to_string()].into(),
        slots: 4,
        ..AgentSpec::default()
    };
    assert_eq!(validate_agent_spec(&a, &l), Ok(()));
    a.slots = 0;
    assert!(msg(validate_agent_spec(&a, &l)).contains("offers 0 slots"));
    a.slots = 4;
    a.task_types.clear();
    assert!(msg(validate_agent_spec(&a, &l)).contains("no task types"));
    a.task_types.insert("t2i".into());
    a.dc = String::new();
    assert_eq!(msg(validate_agent_spec(&a, &l)), "dc \"\" is empty");
}

#[test]
fn validate_name_for_config() {
    let l = Limits::default();
    assert_eq!(validate_name("dc", "eu-west-1", &l), Ok(()));
    assert!(validate_name("dc", "", &l).is_err());
    assert!(validate_name("dc", "é", &l).is_err());
}
