//! Executor tests: real `sh -c` children.

use std::time::Duration;

use super::*;
use crate::lifetime::{Cgroups, Reaper};

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
            kill_grace: Duration::from_millis(300),
            warm_models_file: None,
            cuda_visible: None,
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
        ..Default::default()
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

fn gpus(index: &[u32]) -> Option<v1::GpuDevices> {
    Some(v1::GpuDevices {
        index: index.to_vec(),
    })
}

#[test]
fn gpu_variables_name_the_assignments_devices() {
    assert_eq!(
        gpu_env(gpus(&[0, 2, 3]).as_ref(), None),
        Some(("0,2,3".into(), "0,2,3".into()))
    );
    // Present and empty: the task took no GPU and sees none.
    assert_eq!(
        gpu_env(gpus(&[]).as_ref(), None),
        Some((String::new(), String::new()))
    );
    // Absent (an assignment from before version 5): neither is set.
    assert_eq!(gpu_env(None, None), None);
    // An agent run with its own CUDA_VISIBLE_DEVICES: index i is its i-th entry.
    let visible: Vec<String> = ["4", "5", "GPU-uuid-6"].map(String::from).to_vec();
    assert_eq!(
        gpu_env(gpus(&[0, 2]).as_ref(), Some(&visible)),
        Some(("4,GPU-uuid-6".into(), "0,2".into()))
    );
    assert_eq!(
        gpu_env(gpus(&[1, 7]).as_ref(), Some(&visible)),
        Some(("5,7".into(), "1,7".into()))
    );
}

#[test]
fn an_agent_may_not_list_more_gpus_than_its_own_cuda_visible_devices() {
    let visible: Vec<String> = ["4", "5"].map(String::from).to_vec();
    assert_eq!(check_visible(2, Some(&visible)), Ok(()));
    assert_eq!(check_visible(0, Some(&visible)), Ok(()));
    let err = check_visible(3, Some(&visible)).unwrap_err();
    assert!(err.contains("3 GPUs") && err.contains("4,5"), "{err}");
    // Without its own list, the indexes are the machine's.
    assert_eq!(check_visible(8, None), Ok(()));
}

const GPU_SCRIPT: &str = r#"printf '%s|%s|%s' "${CUDA_VISIBLE_DEVICES-unset}" "${TIDAL_GPU_IDS-unset}" "${TIDAL_WARM_MODELS_FILE-unset}""#;

#[tokio::test]
async fn workers_get_their_gpus_and_the_warm_models_file() {
    let (mut exec, mut rx) = Executor::new(
        ExecSettings {
            agent_id: "agent-7".into(),
            command: vec!["sh".into(), "-c".into(), GPU_SCRIPT.into()],
            max_result_bytes: 1024,
            kill_grace: Duration::from_millis(300),
            warm_models_file: Some("/run/tidal/warm".into()),
            cuda_visible: None,
        },
        2,
    );
    let mut a = assignment("t-gpu", 3, b"");
    a.gpu_devices = gpus(&[1, 3]);
    exec.start(&a);
    let c = completion_of(&mut exec, &mut rx).await;
    assert_eq!(
        String::from_utf8_lossy(&c.result),
        "1,3|1,3|/run/tidal/warm"
    );
    let mut a = assignment("t-none", 4, b"");
    a.gpu_devices = gpus(&[]);
    exec.start(&a);
    let c = completion_of(&mut exec, &mut rx).await;
    assert_eq!(String::from_utf8_lossy(&c.result), "||/run/tidal/warm");
}

#[tokio::test]
async fn an_assignment_without_devices_sets_no_gpu_variable() {
    let (mut exec, mut rx) = executor(GPU_SCRIPT, 1, 1024);
    exec.start(&assignment("t-old", 5, b""));
    let c = completion_of(&mut exec, &mut rx).await;
    // CUDA_VISIBLE_DEVICES is the agent's own, as before version 5.
    let inherited = std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_else(|_| "unset".into());
    assert_eq!(
        String::from_utf8_lossy(&c.result),
        format!("{inherited}|unset|unset")
    );
}

#[tokio::test]
async fn workers_do_not_inherit_the_agents_credentials() {
    // As an agent started with its token in TIDAL_TOKEN (other tests'
    // workers do not look at these variables).
    for var in AGENT_ONLY_ENV {
        std::env::set_var(var, "secret");
    }
    let script = r#"printf '%s|%s|%s' "${TIDAL_TOKEN-unset}" "${TIDAL_TLS_DIR-unset}" "${TIDAL_INSECURE-unset}""#;
    let (mut exec, mut rx) = executor(script, 1, 1024);
    exec.start(&assignment("t-creds", 7, b""));
    let c = completion_of(&mut exec, &mut rx).await;
    assert_eq!(String::from_utf8_lossy(&c.result), "unset|unset|unset");
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
            kill_grace: Duration::from_millis(300),
            warm_models_file: None,
            cuda_visible: None,
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
        // Handed back as stopped: requeued without spending an attempt.
        Start::NoRoom(c) => {
            assert!(c.stopped && !c.success, "{c:?}");
            assert!(c.error.contains("free slot"), "{}", c.error);
        }
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
            token: 5,
            preempted: false,
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

async fn read_pid(path: &std::path::Path) -> i32 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if let Ok(p) = s.trim().parse::<i32>() {
                return p;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pid in {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_gone(pid: i32, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while is_alive(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} {pid} is still running"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// PDEATHSIG fires when the *thread* that forked the worker exits. A worker
/// started from a thread that then exits must live on (it was forked by the
/// spawner thread); a control child forked by that thread itself, with the
/// same guard, dies: proof the test would see the difference.
#[tokio::test]
async fn workers_outlive_the_thread_that_started_them() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("worker.pid");
    let (exec, mut rx) = executor(
        &format!("echo $$ > {}; exec sleep 30", pidfile.display()),
        1,
        1024,
    );
    let handle = tokio::runtime::Handle::current();
    let (mut exec, mut control) = std::thread::spawn(move || {
        let _enter = handle.enter();
        let mut exec = exec;
        assert_eq!(exec.start(&assignment("t1", 1, b"")), Start::Started);
        let mut cmd = tokio::process::Command::new("sleep");
        cmd.arg("30").kill_on_drop(true);
        lifetime::guard(&mut cmd, None, None);
        let control = cmd.spawn().expect("spawn the control child");
        (exec, control)
    })
    .join()
    .expect("the starting thread");
    let status = tokio::time::timeout(Duration::from_secs(10), control.wait())
        .await
        .expect("the control child died with the thread that forked it")
        .unwrap();
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }
    // The kernel signals the exiting thread's children in the order they
    // were forked, so a worker forked by that thread would have been sent
    // its SIGKILL before the control; give it ample time to die of it.
    let pid = read_pid(&pidfile).await;
    let ev = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
    assert!(ev.is_err(), "the worker ended: {ev:?}");
    assert!(
        is_alive(pid),
        "the worker died with the thread that asked for it"
    );
    exec.kill_all();
    assert!(matches!(next(&mut rx).await, ExecEvent::Killed { .. }));
}

/// When the agent is gone (here: the reaper's pipe closes, as it does when
/// the agent process dies), the reaper kills every group still listed, so a
/// worker's children die too (PDEATHSIG reaches only the worker).
#[tokio::test]
async fn the_reaper_kills_listed_groups_when_the_agent_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    let reaper = Reaper::start(None).unwrap();
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!("sleep 30 & echo $! > {}; wait", pidfile.display()))
        .process_group(0)
        .kill_on_drop(true);
    // The worker lists its own group with the reaper before exec.
    lifetime::guard(&mut cmd, None, reaper.pipe());
    let mut child = cmd.spawn().unwrap();
    reaper.listed_by_worker();
    let grandchild = read_pid(&pidfile).await;
    drop(reaper);
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("the worker died")
        .unwrap();
    assert!(!status.success());
    wait_gone(grandchild, "the worker's child").await;
}

/// A process that left the worker's process group (setsid) still dies with
/// the task where cgroup v2 is delegated. Without delegation there is no
/// cgroup layer to test.
#[tokio::test]
async fn a_task_cgroup_takes_what_left_the_process_group() {
    if Cgroups::detect().is_none() {
        eprintln!("cgroup v2 is not delegated here: the cgroup layer is off");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("escaped.pid");
    let script = format!(
        "setsid sh -c 'echo $$ > {}; exec sleep 30' & wait; sleep 30",
        pidfile.display()
    );
    let (mut exec, mut rx) = executor(&script, 1, 1024);
    assert!(exec.guard.cgroups.is_some());
    exec.start(&assignment("t1", 1, b""));
    let escaped = read_pid(&pidfile).await;
    let parent = exec.guard.cgroups.as_ref().unwrap().parent().to_path_buf();
    exec.kill_all();
    assert!(matches!(next(&mut rx).await, ExecEvent::Killed { .. }));
    wait_gone(escaped, "the process that left the group").await;
    let leftover: Vec<_> = std::fs::read_dir(&parent)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.path())
        .collect();
    assert!(leftover.is_empty(), "worker cgroups left: {leftover:?}");
    drop(exec);
    assert!(!parent.exists(), "{} was not removed", parent.display());
}

fn with_max_run(mut a: v1::Assignment, ms: u64) -> v1::Assignment {
    a.max_run_ms = ms;
    a
}

#[tokio::test]
async fn an_attempt_past_its_max_run_is_ended_and_reported_timed_out() {
    let (mut exec, mut rx) = executor("echo working >&2; sleep 30", 1, 1024);
    let started = tokio::time::Instant::now();
    exec.start(&with_max_run(assignment("t1", 3, b""), 300));
    let c = completion_of(&mut exec, &mut rx).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "ended at its max-run: {took:?}"
    );
    assert!(c.timed_out && !c.success && !c.stopped, "{c:?}");
    assert_eq!(c.error, "ran longer than its max-run-ms of 300 ms");
    assert_eq!(c.exit_code, 128 + libc::SIGTERM, "ended by SIGTERM");
    assert!(exec.is_idle());
}

#[tokio::test]
async fn a_worker_that_ignores_sigterm_at_its_max_run_is_killed_after_the_grace() {
    // The executor's kill grace is 300 ms (see `executor`).
    let (mut exec, mut rx) = executor("trap '' TERM; sleep 30", 1, 1024);
    let started = tokio::time::Instant::now();
    exec.start(&with_max_run(assignment("t1", 3, b""), 200));
    let c = completion_of(&mut exec, &mut rx).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "SIGKILL a grace after the max-run: {took:?}"
    );
    assert!(c.timed_out && !c.success, "{c:?}");
    assert_eq!(c.exit_code, 128 + libc::SIGKILL);
}

#[tokio::test]
async fn an_attempt_within_its_max_run_is_not_timed_out() {
    let (mut exec, mut rx) = executor("echo done", 1, 1024);
    exec.start(&with_max_run(assignment("t1", 3, b""), 10_000));
    let c = completion_of(&mut exec, &mut rx).await;
    assert!(c.success && !c.timed_out, "{c:?}");
    assert_eq!(c.result, b"done\n");
}

/// Asserts that `ev` says the worker was preempted (reported stopped).
fn assert_preempted(ev: &ExecEvent) {
    assert!(
        matches!(
            ev,
            ExecEvent::Stopped {
                preempted: true,
                ..
            }
        ),
        "{ev:?}"
    );
}

/// The next event that is not a checkpoint; the checkpoints before it.
async fn next_after_checkpoints(
    rx: &mut mpsc::UnboundedReceiver<ExecEvent>,
) -> (Vec<Vec<u8>>, ExecEvent) {
    let mut checkpoints = Vec::new();
    loop {
        match next(rx).await {
            ExecEvent::Checkpoint(c) => {
                assert_eq!((c.task_id.as_str(), c.token), ("t1", 5));
                checkpoints.push(c.data);
            }
            ev => return (checkpoints, ev),
        }
    }
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn a_preemption_by_signal_terms_the_worker_which_checkpoints_and_is_reported_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let script = format!(
        "trap 'echo saved > \"$TIDAL_CHECKPOINT_FILE\"; exit 143' TERM; touch {}; while :; do sleep 0.05; done",
        ready.display()
    );
    let (mut exec, mut rx) = start_ready(&script, &ready).await;
    let started = tokio::time::Instant::now();
    assert!(!exec.preempt("t1", 4, Notice::Signal, Duration::from_secs(10)));
    assert!(exec.preempt("t1", 5, Notice::Signal, Duration::from_secs(10)));
    let (checkpoints, ev) = next_after_checkpoints(&mut rx).await;
    assert_eq!(
        checkpoints,
        vec![b"saved\n".to_vec()],
        "its last checkpoint, before the end"
    );
    assert_eq!(
        ev,
        ExecEvent::Stopped {
            task_id: "t1".into(),
            token: 5,
            preempted: true
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it ended on SIGTERM"
    );
    let report = exec.on_event(&ev).expect("a preemption is reported");
    assert!(
        report.stopped && !report.success && !report.timed_out,
        "{report:?}"
    );
    assert!(report.error.contains("preempted"), "{report:?}");
}

#[tokio::test]
async fn a_preemption_by_file_names_the_deadline_and_the_worker_checkpoints_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let termed = dir.path().join("termed");
    let script = format!(
        r#"trap 'touch {termed}' TERM; touch {ready}
while [ ! -e "$TIDAL_PREEMPT_FILE" ]; do sleep 0.02; done
printf 'until %s' "$(cat "$TIDAL_PREEMPT_FILE")" > "$TIDAL_CHECKPOINT_FILE.new"
mv "$TIDAL_CHECKPOINT_FILE.new" "$TIDAL_CHECKPOINT_FILE"
exit 1"#,
        termed = termed.display(),
        ready = ready.display()
    );
    let (mut exec, mut rx) = start_ready(&script, &ready).await;
    let before = epoch_ms();
    assert!(exec.preempt("t1", 5, Notice::File, Duration::from_secs(8)));
    let (checkpoints, ev) = next_after_checkpoints(&mut rx).await;
    let after = epoch_ms();
    assert_eq!(checkpoints.len(), 1, "{checkpoints:?}");
    let text = String::from_utf8(checkpoints[0].clone()).unwrap();
    let deadline: u64 = text.strip_prefix("until ").unwrap().parse().unwrap();
    assert!(
        (before + 8000..=after + 8000).contains(&deadline),
        "the deadline is now + the grace: {deadline} in {before}..{after} + 8000"
    );
    assert_preempted(&ev);
    assert!(!termed.exists(), "no SIGTERM before the grace");
    assert!(exec.on_event(&ev).is_some_and(|c| c.stopped));
}

#[tokio::test]
async fn a_preemption_by_file_terms_at_the_grace_and_any_exit_is_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let termed = dir.path().join("termed");
    // Ignores the file; exits 3 on SIGTERM.
    let script = format!(
        "trap 'touch {}; exit 3' TERM; touch {}; while :; do sleep 0.02; done",
        termed.display(),
        ready.display()
    );
    let (mut exec, mut rx) = start_ready(&script, &ready).await;
    let started = tokio::time::Instant::now();
    assert!(exec.preempt("t1", 5, Notice::File, Duration::from_millis(400)));
    assert!(
        exec.stop("t1", 5, Duration::from_millis(1)),
        "a stop during a preemption changes nothing"
    );
    let (_, ev) = next_after_checkpoints(&mut rx).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "SIGTERM at the grace: {took:?}"
    );
    assert!(termed.exists(), "the worker saw SIGTERM");
    assert_preempted(&ev);
    assert!(exec
        .on_event(&ev)
        .is_some_and(|c| c.stopped && c.exit_code == -1));
}

#[tokio::test]
async fn a_preempted_worker_that_ignores_its_notice_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let script = format!("trap '' TERM; touch {}; sleep 30", ready.display());
    let (mut exec, mut rx) = start_ready(&script, &ready).await;
    let started = tokio::time::Instant::now();
    // SIGTERM at 200 ms, SIGKILL after the kill grace (300 ms).
    assert!(exec.preempt("t1", 5, Notice::File, Duration::from_millis(200)));
    let (_, ev) = next_after_checkpoints(&mut rx).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_preempted(&ev);
}

/// The time stamps (ns) a worker printed, one a line.
fn stamps(out: &[u8]) -> Vec<u64> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| l.trim().parse().expect("a time stamp"))
        .collect()
}

#[tokio::test]
async fn a_suspended_worker_stops_counting_until_it_is_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    // Prints the time about every 20 ms, 40 times; ready after 4.
    let script = format!(
        "i=0; while [ $i -lt 40 ]; do date +%s%N; [ $i -eq 3 ] && touch {}; sleep 0.02; i=$((i+1)); done",
        ready.display()
    );
    let (mut exec, mut rx) = start_ready(&script, &ready).await;
    let used = exec.used_slots();
    assert!(used > 0);
    assert!(!exec.suspend("t1", 4), "another token");
    assert!(exec.suspend("t1", 5));
    // Its slots are free for other work while it is paused, as the leader
    // counts them.
    assert_eq!(exec.used_slots(), 0);
    let paused = Duration::from_millis(800);
    // The suspension itself: nothing to wait for but time.
    tokio::time::sleep(paused).await;
    assert!(!exec.resume("t1", 4), "another token");
    assert!(exec.resume("t1", 5));
    assert_eq!(exec.used_slots(), used);
    let c = completion_of(&mut exec, &mut rx).await;
    assert!(c.success, "{c:?}");
    let t = stamps(&c.result);
    assert_eq!(t.len(), 40, "it ran to its end after the resume");
    let gaps: Vec<u64> = t
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]) / 1_000_000)
        .collect();
    let long: Vec<&u64> = gaps.iter().filter(|g| **g >= 600).collect();
    assert_eq!(long.len(), 1, "one pause, of about {paused:?}: {gaps:?}");
}

#[tokio::test]
async fn time_suspended_does_not_count_toward_the_max_run() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let (mut exec, mut rx) = executor(
        &format!("touch {}; sleep 0.3; echo done", ready.display()),
        1,
        1024,
    );
    let started = tokio::time::Instant::now();
    exec.start(&with_max_run(assignment("t1", 5, b""), 700));
    while !ready.exists() {
        assert!(started.elapsed() < Duration::from_secs(10), "never ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(exec.suspend("t1", 5));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(exec.resume("t1", 5));
    let c = completion_of(&mut exec, &mut rx).await;
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert!(c.success && !c.timed_out, "{c:?}");
}

#[tokio::test]
async fn a_suspended_worker_is_killed_and_nothing_of_it_lingers() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let pidfile = dir.path().join("child.pid");
    let script = format!(
        "sleep 30 & echo $! > {}; touch {}; wait",
        pidfile.display(),
        ready.display()
    );
    let (mut exec, mut rx) = start_ready(&script, &ready).await;
    let child = read_pid(&pidfile).await;
    assert!(exec.suspend("t1", 5));
    assert!(exec.kill("t1", 5), "as when the agent fences itself");
    let ev = next(&mut rx).await;
    assert!(matches!(ev, ExecEvent::Killed { .. }), "{ev:?}");
    wait_gone(child, "the suspended worker's child").await;
}

#[tokio::test]
async fn a_suspended_worker_that_is_stopped_gets_its_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let termed = dir.path().join("termed");
    let script = format!(
        "trap 'touch {}; exit 0' TERM; touch {}; while :; do sleep 0.02; done",
        termed.display(),
        ready.display()
    );
    let (mut exec, mut rx) = start_ready(&script, &ready).await;
    assert!(exec.suspend("t1", 5));
    assert!(exec.stop("t1", 5, Duration::from_secs(10)));
    assert!(!exec.suspend("t1", 5), "no suspend while stopping");
    let started = tokio::time::Instant::now();
    let (_, ev) = next_after_checkpoints(&mut rx).await;
    assert!(
        matches!(
            ev,
            ExecEvent::Stopped {
                preempted: false,
                ..
            }
        ),
        "{ev:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it ended on SIGTERM"
    );
    assert!(termed.exists(), "it was continued to take its SIGTERM");
}

#[tokio::test]
async fn checkpoints_are_reported_as_the_worker_writes_them() {
    // The large one is written aside and renamed in (a file rewritten in
    // place may be read half-written).
    let script = r#"printf one > "$TIDAL_CHECKPOINT_FILE"; sleep 0.5
head -c 70000 /dev/zero > "$TIDAL_CHECKPOINT_FILE.new"
mv "$TIDAL_CHECKPOINT_FILE.new" "$TIDAL_CHECKPOINT_FILE"; sleep 0.5
printf two > "$TIDAL_CHECKPOINT_FILE""#;
    let (mut exec, mut rx) = executor(script, 1, 1024);
    exec.start(&assignment("t1", 5, b""));
    let (checkpoints, ev) = next_after_checkpoints(&mut rx).await;
    assert_eq!(
        checkpoints,
        vec![b"one".to_vec(), b"two".to_vec()],
        "in order; the one over 64 KiB left out"
    );
    assert!(exec.on_event(&ev).is_some_and(|c| c.success));
}

#[tokio::test]
async fn the_checkpoint_is_in_place_before_the_start_and_the_directory_goes_after() {
    let script = r#"cat "$TIDAL_CHECKPOINT_FILE"; echo; dirname "$TIDAL_CHECKPOINT_FILE"
test -e "$TIDAL_PREEMPT_FILE" || echo no-notice
test "$(dirname "$TIDAL_PREEMPT_FILE")" = "$(dirname "$TIDAL_CHECKPOINT_FILE")" && echo same-dir"#;
    let (mut exec, mut rx) = executor(script, 1, 1024);
    let mut a = assignment("t1", 5, b"");
    a.checkpoint = b"step 41".to_vec();
    exec.start(&a);
    let ev = next(&mut rx).await;
    let c = exec
        .on_event(&ev)
        .unwrap_or_else(|| panic!("not a completion (the start's checkpoint is not news): {ev:?}"));
    let out = String::from_utf8(c.result).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[0], "step 41");
    assert_eq!(&lines[2..], ["no-notice", "same-dir"]);
    let task_dir = std::path::Path::new(lines[1]);
    assert!(!task_dir.exists(), "removed once the worker is gone");
}

#[tokio::test]
async fn workers_without_a_checkpoint_start_without_the_file() {
    let (mut exec, mut rx) = executor(
        r#"test -e "$TIDAL_CHECKPOINT_FILE" && echo there || echo absent"#,
        1,
        1024,
    );
    exec.start(&assignment("t1", 5, b""));
    let c = completion_of(&mut exec, &mut rx).await;
    assert_eq!(c.result, b"absent\n");
}

#[tokio::test]
async fn the_longest_max_run_and_grace_the_wire_allows_are_kept_without_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let script = format!(
        "trap 'exit 1' TERM; touch {}; while :; do sleep 0.02; done",
        ready.display()
    );
    let (mut exec, mut rx) = executor(&script, 1, 1024);
    exec.start(&with_max_run(assignment("t1", 5, b""), u64::MAX));
    let started = tokio::time::Instant::now();
    while !ready.exists() {
        assert!(started.elapsed() < Duration::from_secs(10), "never ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(exec.suspend("t1", 5) && exec.resume("t1", 5));
    assert!(exec.preempt("t1", 5, Notice::Signal, Duration::from_millis(u64::MAX)));
    let (_, ev) = next_after_checkpoints(&mut rx).await;
    assert_preempted(&ev);
}

#[tokio::test]
async fn a_worker_that_exits_0_after_its_notice_finished_its_work_and_succeeds() {
    // By signal: it traps SIGTERM, finishes and exits 0.
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let script = format!(
        "trap 'echo finished; exit 0' TERM; touch {}; while :; do sleep 0.02; done",
        ready.display()
    );
    let (mut exec, mut rx) = start_ready(&script, &ready).await;
    assert!(exec.preempt("t1", 5, Notice::Signal, Duration::from_secs(10)));
    let (_, ev) = next_after_checkpoints(&mut rx).await;
    assert!(matches!(ev, ExecEvent::Exited(_)), "{ev:?}");
    let c = exec.on_event(&ev).expect("reported");
    assert!(c.success && !c.stopped && !c.timed_out, "{c:?}");
    assert_eq!(
        (c.result.as_slice(), c.exit_code),
        (b"finished\n".as_slice(), 0)
    );
    assert_eq!(exec.used_slots(), 0);

    // By file: it reads its deadline, finishes and exits 0.
    let ready = dir.path().join("ready-file");
    let script = format!(
        r#"touch {}; while [ ! -e "$TIDAL_PREEMPT_FILE" ]; do sleep 0.02; done; echo finished early"#,
        ready.display()
    );
    let (mut exec, mut rx) = start_ready(&script, &ready).await;
    assert!(exec.preempt("t1", 5, Notice::File, Duration::from_secs(10)));
    let c = completion_of(&mut exec, &mut rx).await;
    assert!(c.success && !c.stopped, "{c:?}");
    assert_eq!(c.result, b"finished early\n");

    // By file, ignoring it: SIGTERM at the grace, and an exit 0 then is a
    // success too (a non-zero exit or a kill is a stop: tests above).
    let ready = dir.path().join("ready-late");
    let script = format!(
        "trap 'echo finished late; exit 0' TERM; touch {}; while :; do sleep 0.02; done",
        ready.display()
    );
    let (mut exec, mut rx) = start_ready(&script, &ready).await;
    assert!(exec.preempt("t1", 5, Notice::File, Duration::from_millis(100)));
    let c = completion_of(&mut exec, &mut rx).await;
    assert!(c.success && !c.stopped, "{c:?}");
    assert_eq!(c.result, b"finished late\n");
}

/// A worker that holds its work while `$TIDAL_PREEMPT_FILE` says `suspend`
/// (touching `held` meanwhile: it is not stopped) and prints each line of
/// the file it acts on; `ready` once started.
fn hooked_worker(ready: &std::path::Path, held: &std::path::Path) -> String {
    format!(
        r#"touch {ready}; seen=; i=0
while [ $i -lt 50 ]; do
  s=$(cat "$TIDAL_PREEMPT_FILE" 2>/dev/null)
  if [ "$s" != "$seen" ]; then echo "$s"; seen=$s; fi
  case "$s" in
    suspend) touch {held}; sleep 0.02; continue ;;
    [0-9]*) echo step-$i > "$TIDAL_CHECKPOINT_FILE"; exit 1 ;;
  esac
  sleep 0.02; i=$((i+1))
done
echo done"#,
        ready = ready.display(),
        held = held.display()
    )
}

fn with_file_notice(mut a: v1::Assignment) -> v1::Assignment {
    a.preempt_notice = v1::PreemptNotice::File.into();
    a
}

async fn wait_file(path: &std::path::Path, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_worker_with_notice_by_file_is_suspended_and_resumed_by_its_hook() {
    let dir = tempfile::tempdir().unwrap();
    let (ready, held) = (dir.path().join("ready"), dir.path().join("held"));
    let (mut exec, mut rx) = executor(&hooked_worker(&ready, &held), 2, 1024);
    assert_eq!(
        exec.start(&with_file_notice(assignment("t1", 5, b""))),
        Start::Started
    );
    wait_file(&ready, "the worker never got ready").await;
    let used = exec.used_slots();
    assert!(used > 0);
    assert!(exec.suspend("t1", 5));
    assert_eq!(exec.used_slots(), 0, "its slots are free, as with SIGSTOP");
    // It runs while suspended (a stopped process touches nothing).
    wait_file(&held, "the worker never saw `suspend`").await;
    assert!(exec.suspend("t1", 5), "a second suspend changes nothing");
    assert!(exec.resume("t1", 5));
    assert_eq!(exec.used_slots(), used);
    let c = completion_of(&mut exec, &mut rx).await;
    assert!(c.success, "{c:?}");
    assert_eq!(
        String::from_utf8_lossy(&c.result),
        "suspend\nresume\ndone\n"
    );
}

#[tokio::test]
async fn time_suspended_by_the_hook_does_not_count_toward_the_max_run() {
    let dir = tempfile::tempdir().unwrap();
    let (ready, held) = (dir.path().join("ready"), dir.path().join("held"));
    let (mut exec, mut rx) = executor(
        &format!(
            r#"touch {}; until grep -q suspend "$TIDAL_PREEMPT_FILE" 2>/dev/null; do sleep 0.01; done
touch {}; until grep -q resume "$TIDAL_PREEMPT_FILE"; do sleep 0.01; done
sleep 0.2; echo done"#,
            ready.display(),
            held.display()
        ),
        1,
        1024,
    );
    let started = tokio::time::Instant::now();
    exec.start(&with_max_run(
        with_file_notice(assignment("t1", 5, b"")),
        700,
    ));
    wait_file(&ready, "never ready").await;
    assert!(exec.suspend("t1", 5));
    wait_file(&held, "never saw `suspend`").await;
    // The suspension itself: nothing to wait for but time.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(exec.resume("t1", 5));
    let c = completion_of(&mut exec, &mut rx).await;
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert!(c.success && !c.timed_out, "{c:?}");
}

#[tokio::test]
async fn a_worker_suspended_by_its_hook_reads_its_preemption_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (ready, held) = (dir.path().join("ready"), dir.path().join("held"));
    let (mut exec, mut rx) = executor(&hooked_worker(&ready, &held), 2, 1024);
    exec.start(&with_file_notice(assignment("t1", 5, b"")));
    wait_file(&ready, "the worker never got ready").await;
    assert!(exec.suspend("t1", 5));
    wait_file(&held, "the worker never saw `suspend`").await;
    assert!(exec.preempt("t1", 5, Notice::File, Duration::from_secs(10)));
    let (checkpoints, ev) = next_after_checkpoints(&mut rx).await;
    assert_eq!(checkpoints.len(), 1, "{checkpoints:?}");
    assert_preempted(&ev);
}

#[tokio::test]
async fn a_worker_with_notice_by_signal_is_still_suspended_by_sigstop() {
    let dir = tempfile::tempdir().unwrap();
    let (ready, held) = (dir.path().join("ready"), dir.path().join("held"));
    let (pidfile, go) = (dir.path().join("pid"), dir.path().join("go"));
    // It works until the test says go (not for a fixed time, which a loaded
    // machine could let pass before the suspension arrives); a `suspend`
    // in its preemption file would leave `held`.
    let script = format!(
        r#"echo $$ > {pid}; touch {ready}; i=0
while [ ! -e {go} ] && [ $i -lt 3000 ]; do
  case "$(cat "$TIDAL_PREEMPT_FILE" 2>/dev/null)" in suspend) touch {held} ;; esac
  sleep 0.02; i=$((i+1))
done
echo done"#,
        pid = pidfile.display(),
        ready = ready.display(),
        go = go.display(),
        held = held.display()
    );
    let (mut exec, mut rx) = executor(&script, 2, 1024);
    exec.start(&assignment("t1", 5, b""));
    wait_file(&ready, "the worker never got ready").await;
    let pid = read_pid(&pidfile).await;
    assert!(exec.suspend("t1", 5));
    assert_eq!(exec.used_slots(), 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while proc_state(pid) != Some('T') {
        assert!(tokio::time::Instant::now() < deadline, "never stopped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(exec.resume("t1", 5));
    std::fs::write(&go, b"").unwrap();
    let c = completion_of(&mut exec, &mut rx).await;
    assert!(c.success, "{c:?}");
    assert_eq!(c.result, b"done\n");
    assert!(!held.exists(), "suspended through its file, not by SIGSTOP");
}

/// The state letter of a process (`/proc/PID/stat`): `T` when stopped.
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}
