//! Unit tests of `output.rs`.

use super::*;

fn task() -> v1::Task {
    v1::Task {
        id: "t-0000000000000042".into(),
        spec: Some(v1::TaskSpec {
            task_type: "t2i".into(),
            queue: "vip".into(),
            models: vec!["sdxl".into()],
            max_attempts: 3,
            slots: 1,
            priority: v1::Priority::Online as i32,
            payload: b"a red fox".to_vec(),
            ..Default::default()
        }),
        state: v1::TaskState::Succeeded as i32,
        agent: "agent-1".into(),
        token: 17,
        attempt: 1,
        result: b"{\"ok\":true}\n".to_vec(),
        exit_code: 0,
        created_ms: 1_700_000_000_123,
        updated_ms: 1_700_000_001_000,
        payload_bytes: 9,
        ..Default::default()
    }
}

#[test]
fn members_table_marks_only_the_answering_leader_as_self() {
    let member = |id: u64, last_contact_ms: i64| v1::Member {
        id,
        addr: format!("127.0.0.1:700{id}"),
        voter: true,
        leader: id == 1,
        matched_index: 9,
        lag: 0,
        last_contact_ms,
        min_format_version: 1,
        max_format_version: if id == 3 { 1 } else { 2 },
    };
    let t = members_table(&v1::MembersResponse {
        members: vec![member(1, 0), member(2, 0), member(3, 4)],
        leader_id: 1,
        term: 2,
        last_log_index: 9,
        cluster_format_version: 1,
    });
    let rows: Vec<&str> = t.lines().collect();
    assert!(rows[1].ends_with("self"), "{t}");
    assert!(rows[2].ends_with("0 ms ago"), "{t}");
    assert!(rows[3].ends_with("4 ms ago"), "{t}");
    assert_eq!(t.matches("self").count(), 1, "{t}");
    assert!(rows[1].contains(" 1-2 "), "{t}");
    assert!(rows[3].contains(" 1-1 "), "{t}");
    assert!(t.contains("cluster format version 1"), "{t}");
}

#[test]
fn task_json_shape() {
    let v = task_json(&task());
    for key in [
        "id",
        "state",
        "agent",
        "token",
        "attempt",
        "result",
        "result_encoding",
        "error",
        "exit_code",
        "queue",
        "type",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["id"], "t-0000000000000042");
    assert_eq!(v["state"], "succeeded");
    assert_eq!(v["type"], "t2i");
    assert_eq!(v["queue"], "vip");
    assert_eq!(v["agent"], "agent-1");
    assert_eq!(v["token"], 17);
    assert_eq!(v["attempt"], 1);
    assert_eq!(v["priority"], "online");
    assert_eq!(v["result"], "{\"ok\":true}\n");
    assert_eq!(v["result_encoding"], "utf8");
    assert_eq!(v["payload"], "a red fox");
    assert_eq!(v["error"], "");
    assert_eq!(v["exit_code"], 0);
}

#[test]
fn binary_result_is_base64() {
    let mut t = task();
    t.result = vec![0xff, 0x00, 0x10];
    let v = task_json(&t);
    assert_eq!(v["result_encoding"], "base64");
    assert_eq!(v["result"], "/wAQ");
}

#[test]
fn states_are_lowercase() {
    let names: Vec<&str> = (1..=6).map(task_state_name).collect();
    assert_eq!(
        names,
        [
            "pending",
            "assigned",
            "running",
            "succeeded",
            "failed",
            "cancelled"
        ]
    );
    assert_eq!(task_state_name(99), "unspecified");
    assert!(is_terminal(v1::TaskState::Cancelled as i32));
    assert!(!is_terminal(v1::TaskState::Running as i32));
}

#[test]
fn table_aligns_columns() {
    let mut t = Table::new(&["ID", "STATE"]);
    t.row(vec!["t-1".into(), "pending".into()]);
    t.row(vec!["t-1000".into(), "running".into()]);
    assert_eq!(
        t.render(),
        "ID      STATE\nt-1     pending\nt-1000  running\n"
    );
}

#[test]
fn task_text_lists_fields_and_result() {
    let s = task_text(&task());
    assert!(s.starts_with("id "), "{s}");
    assert!(s.contains("state      succeeded"), "{s}");
    assert!(s.contains("attempt    1 of 3"), "{s}");
    assert!(
        s.contains("result (utf8, 12 bytes):\n{\"ok\":true}\n"),
        "{s}"
    );
}

#[test]
fn submitted_by_and_tenant_show_when_set() {
    let v = task_json(&task());
    assert_eq!(v["submitted_by"], Value::Null);
    let s = task_text(&task());
    assert!(!s.contains("submitted_by"), "{s}");
    assert!(!s.contains("tenant"), "{s}");

    let mut t = task();
    t.submitted_by = Some(v1::UserInfo {
        id: "token:alice".into(),
        role: "user".into(),
    });
    if let Some(spec) = t.spec.as_mut() {
        spec.tenant = "acme".into();
    }
    let v = task_json(&t);
    assert_eq!(v["submitted_by"]["id"], "token:alice");
    assert_eq!(v["submitted_by"]["role"], "user");
    assert_eq!(v["tenant"], "acme");
    let s = task_text(&t);
    assert!(s.contains("submitted_by  token:alice (user)\n"), "{s}");
    assert!(s.contains("tenant        acme\n"), "{s}");
}

#[test]
fn utc_dates() {
    assert_eq!(ms_to_utc(0), "-");
    assert_eq!(ms_to_utc(1_700_000_000_123), "2023-11-14 22:13:20.123 UTC");
    assert_eq!(ms_to_utc(951_782_400_000), "2000-02-29 00:00:00.000 UTC");
}

#[test]
fn one_line_truncates() {
    assert_eq!(one_line("a\nb", 10), "a b");
    assert_eq!(one_line("abcdefghijkl", 8), "abcde...");
}

fn placed_task() -> v1::Task {
    let mut t = task();
    let spec = t.spec.as_mut().unwrap();
    spec.constraints = vec!["zone=a".into(), "gpu in (A100,H100)".into()];
    spec.tags = vec!["web".into()];
    spec.tag_rules = vec![v1::TagRule {
        kind: v1::TagRuleKind::MaxPer as i32,
        tag: "web".into(),
        max: 2,
        scope: "zone".into(),
    }];
    spec.gpu_shapes = vec![
        v1::GpuShape {
            count: 2,
            model: "H100".into(),
            memory_mb: 0,
        },
        v1::GpuShape {
            count: 1,
            model: "A100".into(),
            memory_mb: 40960,
        },
    ];
    spec.hash_key = "user-42".into();
    t.gpu_devices = vec![3];
    t.gpu_shape = Some(spec.gpu_shapes[1].clone());
    t
}

#[test]
fn placement_fields_in_json_and_text() {
    let t = placed_task();
    let v = task_json(&t);
    assert_eq!(v["constraints"], json!(["zone=a", "gpu in (A100,H100)"]));
    assert_eq!(v["tags"], json!(["web"]));
    assert_eq!(
        v["tag_rules"],
        json!([{"kind": "max-per", "tag": "web", "max": 2, "scope": "zone",
                "text": "max-per tag=web:2@zone"}])
    );
    assert_eq!(v["gpu_shapes"][0]["text"], "2xH100");
    assert_eq!(
        v["gpu_shape"],
        json!({"count": 1, "model": "A100", "memory_mb": 40960, "text": "1xA100:40960"})
    );
    assert_eq!(v["gpu_devices"], json!([3]));
    assert_eq!(v["hash_key"], "user-42");
    assert_eq!(v["waiting"], Value::Null);
    let text = task_text(&t);
    for want in [
        "2xH100|1xA100:40960",
        "gpu_shape",
        "gpu_devices",
        "zone=a; gpu in (A100,H100)",
        "max-per tag=web:2@zone",
        "user-42",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    // A pending task says why it waits; one without placement fields shows none.
    let mut p = task();
    p.state = v1::TaskState::Pending as i32;
    p.waiting = "full: GPUs (no 1 free A100) on 3 agents".into();
    let v = task_json(&p);
    assert_eq!(v["waiting"], "full: GPUs (no 1 free A100) on 3 agents");
    assert_eq!(
        (v["gpu_devices"].clone(), v["gpu_shape"].clone()),
        (json!([]), Value::Null)
    );
    assert!(task_text(&p).contains("waiting"));
    assert!(!task_text(&task()).contains("gpu_devices"));
}

#[test]
fn an_explanation_for_people_and_as_json() {
    let e = v1::TaskExplanation {
        id: "t1".into(),
        state: v1::TaskState::Pending as i32,
        summary: "full: GPUs on 1 agent".into(),
        agents_total: 3,
        agents_eligible_now: 0,
        reasons: vec![
            v1::ReasonCount {
                reason: "constraint zone=a unmet".into(),
                agents: 2,
            },
            v1::ReasonCount {
                reason: "full: GPUs (no 1 free A100)".into(),
                agents: 1,
            },
        ],
        queue_position: 4,
        position_capped: false,
        queue_throughput_per_s: 2.0,
        estimated_start_ms: 1_700_000_002_000,
        ..Default::default()
    };
    let text = explanation_text(&e, 1_700_000_000_000);
    for want in [
        "task t1 is pending: full: GPUs on 1 agent",
        "0 of 3",
        "constraint zone=a unmet",
        "queue position: 4",
        "2.00 tasks/s",
        "in about 2 s",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    let v = explanation_json(&e);
    assert_eq!(v["state"], "pending");
    assert_eq!(
        v["reasons"][1],
        json!({"reason": "full: GPUs (no 1 free A100)", "agents": 1})
    );
    assert_eq!(v["queue_share"], Value::Null);
    // Not pending: its state only.
    let done = v1::TaskExplanation {
        id: "t2".into(),
        state: v1::TaskState::Running as i32,
        ..Default::default()
    };
    assert!(explanation_text(&done, 0).contains("t2 is running"));
}

#[test]
fn an_agent_with_warm_models_and_busy_gpus() {
    let gpu = |model: &str| v1::Gpu {
        model: model.into(),
        memory_mb: 81920,
    };
    let a = v1::AgentInfo {
        spec: Some(v1::AgentSpec {
            id: "gpu-7".into(),
            slots: 4,
            gpus: vec![gpu("A100"), gpu("A100"), gpu("A40")],
            ..Default::default()
        }),
        state: v1::AgentState::Ready as i32,
        gpus_in_use: 2,
        warm_models: vec!["sdxl".into()],
        gpus_busy: vec![0, 2],
        ..Default::default()
    };
    let v = agent_json(&a);
    assert_eq!(
        (v["warm_models"].clone(), v["gpus_busy"].clone()),
        (json!(["sdxl"]), json!([0, 2]))
    );
    let text = agent_text(&a);
    assert!(
        text.contains("warm_models") && text.contains("sdxl"),
        "{text}"
    );
    assert!(text.contains("2 of 3 in use"), "{text}");
    let busy: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_end().ends_with("yes"))
        .collect();
    assert_eq!(busy.len(), 2, "{text}");
    assert_eq!(devices_text(&a.gpus_busy), "0,2");
    assert_eq!(devices_text(&[]), "-");
}

#[test]
fn gpu_weights_in_status() {
    let w: std::collections::HashMap<String, u32> = [
        ("A40".to_string(), 500),
        ("A100".to_string(), 1000),
        ("L4".to_string(), 1250),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        gpu_weights_text(&w).as_deref(),
        Some("A100 1.0, A40 0.5, L4 1.25")
    );
    assert_eq!(gpu_weights_text(&Default::default()), None);
    let s = v1::StatusResponse {
        gpu_weight_milli: w,
        ..Default::default()
    };
    assert_eq!(status_json(&s)["gpu_weight_milli"]["A40"], 500);
}
