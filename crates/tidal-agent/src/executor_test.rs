//! Executor tests: real `sh -c` children.

use std::time::Duration;

use super::*;

fn executor(
    script: &str,
    slots: u32,
    max: usize,
) -> (Executor, mpsc::UnboundedReceiver<ExecEvent>) {
    Executor::new(
        ExecSettings {
            agent_id: "agent-7".into(),
            command: vec!["sh".into(), "-c".into(), script.into()],
            max_result_bytes: max,
        },
        slots,
    )
}

fn assignment(id: &str, token: u64, payload: &[u8]) -> v1::Assignment {
    v1::Assignment {
        task_id: id.into(),
        token,
        attempt: 2,
        spec: Some(v1::TaskSpec {
            task_type: "t2i".into(),
            pipeline: "sdxl".into(),
            models: vec!["m1".into(), "m2".into()],
            payload: payload.to_vec(),
            ..Default::default()
        }),
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<ExecEvent>) -> ExecEvent {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("no event within 20s")
        .expect("channel open")
}

async fn completion_of(
    exec: &mut Executor,
    rx: &mut mpsc::UnboundedReceiver<ExecEvent>,
) -> v1::TaskCompleted {
    let ev = next(rx).await;
    exec.on_event(&ev)
        .unwrap_or_else(|| panic!("no completion to report for {ev:?}"))
}

#[tokio::test]
async fn payload_on_stdin_comes_back_as_result() {
    let (mut exec, mut rx) = executor("cat", 1, 1024);
    assert_eq!(
        exec.start(&assignment("t1", 11, b"hello payload")),
        Start::Started
    );
    let c = completion_of(&mut exec, &mut rx).await;
    assert!(c.success, "{c:?}");
    assert_eq!(c.result, b"hello payload");
    assert_eq!((c.task_id.as_str(), c.token, c.exit_code), ("t1", 11, 0));
    assert!(c.error.is_empty());
    assert_eq!(exec.free_slots(), 1);
}

#[tokio::test]
async fn environment_names_the_task() {
    let script = r#"printf '%s|%s|%s|%s|%s|%s|%s' "$TIDAL_TASK_ID" "$TIDAL_FENCING_TOKEN" "$TIDAL_ATTEMPT" "$TIDAL_TASK_TYPE" "$TIDAL_PIPELINE" "$TIDAL_MODELS" "$TIDAL_AGENT_ID""#;
    let (mut exec, mut rx) = executor(script, 1, 1024);
    exec.start(&assignment("t-env", 42, b""));
    let c = completion_of(&mut exec, &mut rx).await;
    assert_eq!(
        String::from_utf8_lossy(&c.result),
        "t-env|42|2|t2i|sdxl|m1,m2|agent-7"
    );
}

#[tokio::test]
async fn nonzero_exit_is_a_failure_with_the_stderr_tail() {
    let (mut exec, mut rx) = executor("echo partial; echo 'model not loaded' >&2; exit 3", 1, 1024);
    exec.start(&assignment("t1", 1, b""));
    let c = completion_of(&mut exec, &mut rx).await;
    assert!(!c.success);
    assert_eq!(c.exit_code, 3);
    assert_eq!(c.error, "model not loaded");
    assert_eq!(c.result, b"partial\n");
}

#[tokio::test]
async fn failure_without_stderr_names_the_exit_code() {
    let (mut exec, mut rx) = executor("exit 7", 1, 1024);
    exec.start(&assignment("t1", 1, b""));
    let c = completion_of(&mut exec, &mut rx).await;
    assert_eq!((c.success, c.exit_code), (false, 7));
    assert_eq!(c.error, "exited with code 7");
}

#[tokio::test]
async fn stderr_keeps_only_the_tail() {
    let (mut exec, mut rx) = executor(
        "head -c 20000 /dev/zero | tr '\\0' 'x' >&2; echo END >&2; exit 1",
        1,
        1024,
    );
    exec.start(&assignment("t1", 1, b""));
    let c = completion_of(&mut exec, &mut rx).await;
    assert!(c.error.len() <= STDERR_TAIL_BYTES);
    assert!(
        c.error.ends_with("xEND"),
        "{}",
        &c.error[c.error.len() - 10..]
    );
}

#[tokio::test]
async fn stdout_is_truncated_at_the_limit_and_drained() {
    // 1 MiB of output against a 1000-byte cap: the child must not block on a
    // full pipe, and exits 0.
    let (mut exec, mut rx) = executor("head -c 1048576 /dev/zero | tr '\\0' 'y'", 1, 1000);
    exec.start(&assignment("t1", 1, b""));
    let c = completion_of(&mut exec, &mut rx).await;
    assert!(c.success, "{c:?}");
    assert_eq!(c.result.len(), 1000);
    assert!(c.result.iter().all(|b| *b == b'y'));
    assert!(c.error.contains("truncated to 1000 bytes"), "{}", c.error);
}

#[tokio::test]
async fn spawn_failure_is_a_failed_completion() {
    let (mut exec, _rx) = Executor::new(
        ExecSettings {
            agent_id: "a".into(),
            command: vec!["/nonexistent/tidal-task".into()],
            max_result_bytes: 10,
        },
        1,
    );
    match exec.start(&assignment("t1", 9, b"")) {
        Start::Failed(c) => {
            assert!(!c.success);
            assert_eq!((c.task_id.as_str(), c.token), ("t1", 9));
            assert!(c.error.contains("cannot start"), "{}", c.error);
        }
        other => panic!("expected a failed start, got {other:?}"),
    }
    assert_eq!(exec.free_slots(), 1);
}

#[tokio::test]
async fn kill_on_cancel_reports_no_completion() {
    let (mut exec, mut rx) = executor("sleep 30", 2, 1024);
    exec.start(&assignment("t1", 5, b""));
    assert_eq!(
        exec.running(),
        vec![v1::RunningTask {
            task_id: "t1".into(),
            token: 5
        }]
    );
    assert!(
        !exec.kill("t1", 4),
        "a cancel with another token is ignored"
    );
    let started = tokio::time::Instant::now();
    assert!(exec.kill("t1", 5));
    assert!(
        exec.running().is_empty(),
        "a killed task's token is dropped at once"
    );
    assert_eq!(
        exec.free_slots(),
        1,
        "slots stay held until the child is reaped"
    );
    let ev = next(&mut rx).await;
    assert_eq!(
        ev,
        ExecEvent::Killed {
            task_id: "t1".into(),
            token: 5
        }
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(exec.on_event(&ev), None);
    assert_eq!(exec.free_slots(), 2);
}

#[tokio::test]
async fn kill_reaches_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    // The shell stays (two commands) and its background child must die too.
    let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
    let (mut exec, mut rx) = executor(&script, 1, 1024);
    exec.start(&assignment("t1", 1, b""));
    let pid = loop {
        if let Ok(s) = std::fs::read_to_string(&pidfile) {
            if let Ok(p) = s.trim().parse::<i32>() {
                break p;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    exec.kill_all();
    assert!(matches!(next(&mut rx).await, ExecEvent::Killed { .. }));
    // The grandchild is not ours to reap (init does); wait until it is gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while is_alive(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "grandchild {pid} survived the kill"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// True unless the process is gone or a zombie.
fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn never_runs_more_than_its_slots() {
    let (mut exec, mut rx) = executor("sleep 30", 3, 1024);
    let mut big = assignment("big", 1, b"");
    big.spec.as_mut().unwrap().slots = 2;
    assert_eq!(exec.start(&big), Start::Started);
    assert_eq!(exec.free_slots(), 1);
    let mut also_big = assignment("big2", 2, b"");
    also_big.spec.as_mut().unwrap().slots = 2;
    match exec.start(&also_big) {
        Start::Failed(c) => assert!(c.error.contains("free slot"), "{}", c.error),
        other => panic!("expected no room, got {other:?}"),
    }
    assert_eq!(exec.start(&assignment("small", 3, b"")), Start::Started);
    assert_eq!(exec.free_slots(), 0);
    assert_eq!(exec.kill_all(), 2);
    for _ in 0..2 {
        let ev = next(&mut rx).await;
        exec.on_event(&ev);
    }
    assert!(exec.is_idle());
}

#[tokio::test]
async fn duplicate_push_is_ignored_and_newer_token_replaces() {
    let (mut exec, mut rx) = executor("sleep 30", 2, 1024);
    assert_eq!(exec.start(&assignment("t1", 5, b"")), Start::Started);
    assert_eq!(exec.start(&assignment("t1", 5, b"")), Start::Duplicate);
    assert_eq!(exec.live(), 1);
    // Reassigned under a newer token: the old child is killed, unreported.
    assert_eq!(exec.start(&assignment("t1", 9, b"")), Start::Started);
    assert_eq!(
        exec.running(),
        vec![v1::RunningTask {
            task_id: "t1".into(),
            token: 9
        }]
    );
    let ev = next(&mut rx).await;
    assert_eq!(
        ev,
        ExecEvent::Killed {
            task_id: "t1".into(),
            token: 5
        }
    );
    assert_eq!(exec.on_event(&ev), None);
    exec.kill_all();
}

/// Starts `script` as task t1 token 5 and waits until it wrote `ready`.
async fn start_ready(
    script: &str,
    ready: &std::path::Path,
) -> (Executor, mpsc::UnboundedReceiver<ExecEvent>) {
    let (mut exec, rx) = executor(script, 2, 1024);
    assert_eq!(exec.start(&assignment("t1", 5, b"")), Start::Started);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never got ready"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (exec, rx)
}

#[tokio::test]
async fn stop_sends_sigterm_and_reports_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let termed = dir.path().join("termed");
    let script = format!(
        "trap 'echo yes > {}; exit 0' TERM; touch {}; while :; do sleep 0.05; done",
        termed.display(),
        ready.display()
    );
    let (mut exec, mut rx) = start_ready(&script, &ready).await;
    assert!(
        !exec.stop("t1", 4, Duration::from_secs(10)),
        "another token"
    );
    let started = tokio::time::Instant::now();
    assert!(exec.stop("t1", 5, Duration::from_secs(10)));
    assert!(
        exec.stop("t1", 5, Duration::from_secs(10)),
        "a repeated order"
    );
    assert_eq!(exec.running().len(), 1, "held until it is gone");
    let ev = next(&mut rx).await;
    assert_eq!(
        ev,
        ExecEvent::Stopped {
            task_id: "t1".into(),
            token: 5
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it ended on SIGTERM"
    );
    assert!(termed.exists(), "the worker saw SIGTERM");
    let report = exec.on_event(&ev).expect("a stop is reported");
    assert!(report.stopped && !report.success, "{report:?}");
    assert_eq!((report.task_id.as_str(), report.token), ("t1", 5));
    assert!(exec.is_idle());
}

#[tokio::test]
async fn stop_kills_a_worker_that_ignores_sigterm_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let script = format!("trap '' TERM; touch {}; sleep 30", ready.display());
    let (mut exec, mut rx) = start_ready(&script, &ready).await;
    let started = tokio::time::Instant::now();
    assert!(exec.stop("t1", 5, Duration::from_millis(300)));
    let ev = next(&mut rx).await;
    assert!(matches!(ev, ExecEvent::Stopped { .. }), "{ev:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "SIGKILL after the grace, not before: {took:?}"
    );
    assert!(exec.on_event(&ev).is_some_and(|c| c.stopped));
}

#[tokio::test]
async fn a_kill_during_a_stop_wins_and_is_not_reported() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let script = format!("trap '' TERM; touch {}; sleep 30", ready.display());
    let (mut exec, mut rx) = start_ready(&script, &ready).await;
    assert!(exec.stop("t1", 5, Duration::from_secs(20)));
    assert!(exec.kill("t1", 5));
    let ev = next(&mut rx).await;
    assert!(matches!(ev, ExecEvent::Killed { .. }), "{ev:?}");
    assert_eq!(exec.on_event(&ev), None);
}
