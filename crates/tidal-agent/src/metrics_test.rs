use super::*;
use tidal_proto::v1;

/// The value of the sample `line_start` (name and labels) in `text`.
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

fn exited(task_id: &str, token: u64, exit_code: i32) -> ExecEvent {
    ExecEvent::Exited(v1::TaskCompleted {
        task_id: task_id.into(),
        token,
        exit_code,
        success: exit_code == 0,
        ..Default::default()
    })
}

#[test]
fn workers_are_counted_by_type_and_exit_code() {
    let m = Metrics::new(&["t2i".to_string()]);
    m.worker_started("t1", 1, "t2i");
    m.worker_started("t2", 1, "t2i");
    m.worker_started("t3", 1, "sr");
    let text = m.scrape();
    assert_eq!(
        sample(&text, r#"tidal_agent_workers_running{type="t2i"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, r#"tidal_agent_workers_running{type="other"}"#),
        Some(1.0)
    );
    assert_eq!(m.worker_gone(&exited("t1", 1, 0)).as_deref(), Some("t2i"));
    assert_eq!(m.worker_gone(&exited("t2", 1, 3)).as_deref(), Some("t2i"));
    m.worker_gone(&ExecEvent::Killed {
        task_id: "t3".into(),
        token: 1,
    });
    m.spawn_failed("t2i");
    let text = m.scrape();
    assert_eq!(
        sample(&text, r#"tidal_agent_workers_running{type="t2i"}"#),
        Some(0.0)
    );
    for (labels, n) in [
        (r#"type="t2i",code="0""#, 1.0),
        (r#"type="t2i",code="3""#, 1.0),
        (r#"type="other",code="killed""#, 1.0),
        (r#"type="t2i",code="spawn_failed""#, 1.0),
    ] {
        assert_eq!(
            sample(
                &text,
                &format!("tidal_agent_worker_exits_total{{{labels}}}")
            ),
            Some(n),
            "{labels}\n{text}"
        );
    }
    // A checkpoint is no exit.
    assert_eq!(
        m.worker_gone(&ExecEvent::Checkpoint(v1::TaskCheckpoint::default())),
        None
    );
}

#[test]
fn sessions_connection_and_lease_are_shown() {
    let m = Metrics::new(&[]);
    let text = m.scrape();
    assert_eq!(sample(&text, "tidal_agent_connected"), Some(0.0));
    assert_eq!(
        sample(&text, "tidal_agent_lease_remaining_seconds"),
        Some(0.0)
    );
    m.registered();
    m.set_lease_deadline(Some(Instant::now() + std::time::Duration::from_secs(60)));
    let text = m.scrape();
    assert_eq!(sample(&text, "tidal_agent_connected"), Some(1.0));
    assert_eq!(sample(&text, "tidal_agent_sessions_total"), Some(1.0));
    let left = sample(&text, "tidal_agent_lease_remaining_seconds").unwrap();
    assert!(left > 0.0 && left <= 60.0, "{left}");
    m.disconnected();
    m.registered();
    let text = m.scrape();
    assert_eq!(sample(&text, "tidal_agent_sessions_total"), Some(2.0));
}

#[test]
fn only_get_metrics_is_answered_with_the_families() {
    let m = Metrics::new(&[]);
    let ok = m.answer(Some(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n"));
    assert_eq!(ok.status, "200 OK");
    assert_eq!(ok.content_type, CONTENT_TYPE);
    assert!(ok.body.contains("tidal_agent_connected"), "{}", ok.body);
    let status = |h: &[u8]| m.answer(Some(h)).status;
    assert_eq!(
        status(b"POST /metrics HTTP/1.1\r\n\r\n"),
        "405 Method Not Allowed"
    );
    assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), "404 Not Found");
    assert_eq!(m.answer(None).status, "431 Request Header Fields Too Large");
}
