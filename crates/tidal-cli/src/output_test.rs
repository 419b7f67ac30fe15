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
