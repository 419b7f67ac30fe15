//! Task lifecycle end to end through the CLI, as a user runs it (README:
//! Task lifecycle): a worker that fails twice is retried after its backoff
//! and succeeds at attempt 3, with its history; a task with one attempt
//! becomes a dead letter that `task replay` runs again; a deadline with
//! `--on-deadline fail` fails a task no agent can run and `status` counts
//! it; bad flags are usage errors, bad values the server's INVALID_ARGUMENT.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{AgentOpts, Cluster, ClusterOpts};

/// A worker that fails (exit 3) its first N runs of each task, N being its
/// payload, counting runs in `dir/<task id>`; then prints `ok after <n>`.
fn flaky_worker(dir: &std::path::Path) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "p=$(cat); f='{}'/\"$TIDAL_TASK_ID\"; n=$(( $(cat \"$f\" 2>/dev/null || echo 0) + 1 )); \
             echo $n > \"$f\"; if [ \"$n\" -le \"$p\" ]; then echo \"run $n fails\" >&2; exit 3; fi; \
             echo \"ok after $n\"",
            dir.display()
        ),
    ]
}

fn get(c: &Cluster, id: &str) -> Value {
    serde_json::from_str(&c.tidal_ok(&["task", "get", id, "-o", "json"]).unwrap()).unwrap()
}

/// Polls `task get` until the task is in `state`.
async fn wait_state(c: &Cluster, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = get(c, id);
        if t["state"] == state {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} not {state}: {t}\n{}",
            c.logs_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ends(t: &Value) -> Vec<String> {
    t["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["end"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_dead_letters_replay_and_deadlines() -> anyhow::Result<()> {
    let runs = tempfile::tempdir()?;
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    let worker = flaky_worker(runs.path());
    let worker: Vec<&str> = worker.iter().map(String::as_str).collect();
    c.start_agent(
        AgentOpts::new("agent-1", &["job"])
            .slots(2)
            .command(&worker),
    )?;
    c.wait_agents(1, Duration::from_secs(30)).await?;

    // Fails twice, then succeeds at attempt 3 after two backoffs.
    let id = c
        .tidal_ok(&[
            "task",
            "submit",
            "--type",
            "job",
            "--payload",
            "2",
            "--max-attempts",
            "3",
            "--retry-backoff-ms",
            "200",
        ])?
        .trim()
        .to_string();
    let t = wait_state(&c, &id, "succeeded").await;
    assert_eq!(t["attempt"], 3, "{t}");
    assert_eq!(ends(&t), ["failed", "failed", "succeeded"], "{t}");
    let a = t["attempts"].as_array().unwrap();
    for (i, pair) in a.windows(2).enumerate() {
        let (ended, next) = (
            pair[0]["ended_ms"].as_u64().unwrap(),
            pair[1]["assigned_ms"].as_u64().unwrap(),
        );
        // Retry n waits at least d/2, d = 200 * 2^(n-1).
        let lower = 100u64 << i;
        assert!(
            next >= ended + lower,
            "retry {} came {} ms after the failure, under {lower}: {t}",
            i + 1,
            next.saturating_sub(ended)
        );
        assert_eq!(pair[0]["exit_code"], 3, "{t}");
    }
    assert!(t["result"].as_str().unwrap().contains("ok after 3"), "{t}");
    assert_eq!(
        (t["dead"].as_bool(), t["attempts_left"].as_u64()),
        (Some(false), Some(0))
    );
    let text = c.tidal_ok(&["task", "get", &id])?;
    assert!(
        text.contains("attempts:") && text.contains("exit 3") && text.contains("succeeded"),
        "{text}"
    );

    // One attempt: no retry, a dead letter; replayed, it runs again.
    let once = c
        .tidal_ok(&[
            "task",
            "submit",
            "--type",
            "job",
            "--payload",
            "1",
            "--max-attempts",
            "1",
        ])?
        .trim()
        .to_string();
    let t = wait_state(&c, &once, "failed").await;
    assert_eq!(t["dead"], true, "{t}");
    assert_eq!(ends(&t), ["failed"], "{t}");
    let dead: Value =
        serde_json::from_str(&c.tidal_ok(&["task", "list", "--dead", "-o", "json"])?)?;
    let dead_ids: Vec<&str> = dead["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(dead_ids, [once.as_str()], "{dead}");
    let out = c.tidal_ok(&["task", "replay", &once])?;
    assert_eq!(out.trim(), format!("{once} replayed"));
    let t = wait_state(&c, &once, "succeeded").await;
    assert_eq!(ends(&t), ["failed", "succeeded"], "{t}");
    assert_eq!(t["attempt"], 2, "{t}");
    assert_eq!(t["dead"], false, "{t}");
    // A task that is not a dead letter is refused, exit 1.
    let o = c.tidal(&["task", "replay", &once]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a dead letter"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let listed: Value =
        serde_json::from_str(&c.tidal_ok(&["task", "list", "--dead", "-o", "json"])?)?;
    assert_eq!(listed["tasks"].as_array().unwrap().len(), 0, "{listed}");

    // No agent runs "nobody": its deadline passes, and it fails.
    let late = c
        .tidal_ok(&[
            "task",
            "submit",
            "--type",
            "nobody",
            "--deadline-ms",
            "300",
            "--on-deadline",
            "fail",
        ])?
        .trim()
        .to_string();
    let t = wait_state(&c, &late, "failed").await;
    assert!(t["error"].as_str().unwrap().contains("deadline"), "{t}");
    assert_eq!(
        (t["deadline_missed"].as_bool(), t["dead"].as_bool()),
        (Some(true), Some(false))
    );
    let status: Value = serde_json::from_str(&c.tidal_ok(&["status", "-o", "json"])?)?;
    assert_eq!(status["leader"]["deadlines_missed"], 1, "{status}");
    assert!(c.tidal_ok(&["status"])?.contains("deadlines missed: 1"));

    // Headroom for online work, shown by queue list.
    c.tidal_ok(&["queue", "headroom", "online", "--slots", "1"])?;
    let queues: Value = serde_json::from_str(&c.tidal_ok(&["queue", "list", "-o", "json"])?)?;
    assert_eq!(
        queues["headroom"],
        serde_json::json!([{ "class": "online", "slots": 1, "gpus": 0 }]),
        "{queues}"
    );

    // Bad flags: usage errors before anything is sent; a value only the
    // server checks: INVALID_ARGUMENT, exit 1.
    for bad in [
        &["--on-deadline", "never", "--deadline-ms", "5"][..],
        &["--retry-backoff-ms", "500,100"],
        &["--max-run-ms", "0"],
        &["--preemptible", "maybe"],
    ] {
        let mut args = vec!["task", "submit", "--type", "job"];
        args.extend_from_slice(bad);
        let o = c.tidal(&args);
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
    }
    let o = c.tidal(&[
        "task",
        "submit",
        "--type",
        "job",
        "--retry-backoff-ms",
        "100000000",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("retry backoff over"), "{err}");
    Ok(())
}

/// A worker that, for the payload `long`, runs until told to stop (and
/// then writes a checkpoint and exits 143, to be requeued); for `finish`,
/// runs until told to stop and then finishes its work (exit 0); for any
/// other payload answers at once.
const PREEMPTABLE_WORKER: &str = "p=$(cat); if [ \"$p\" = long ]; then \
     trap 'echo step-7 > \"$TIDAL_CHECKPOINT_FILE\"; exit 143' TERM; \
     while :; do sleep 0.05; done; fi; \
     if [ \"$p\" = finish ]; then trap 'echo finished; exit 0' TERM; \
     while :; do sleep 0.05; done; fi; echo \"done $p\"";

/// Polls `task get` until `check` holds.
async fn wait_until(c: &Cluster, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = get(c, id);
        if check(&t) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "task {id}: not {what}: {t}\n{}",
            c.logs_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An online task on a full agent preempts the offline one there: a plain
/// victim is told to stop (SIGTERM), checkpoints, goes back to pending
/// with `preempted` 1 and runs again from its checkpoint; a suspendable
/// victim is paused in place under the same token while the online task
/// runs beside it, and resumed when it is done; a victim that finishes its
/// work after the notice (exit 0) succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_work_preempts_offline_work_with_notice_or_suspends_it() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    c.start_agent(AgentOpts::new("agent-1", &["job"]).slots(1).command(&[
        "sh",
        "-c",
        PREEMPTABLE_WORKER,
    ]))?;
    c.wait_agents(1, Duration::from_secs(30)).await?;
    let submit = |args: &[&str]| -> anyhow::Result<String> {
        let mut all = vec!["task", "submit", "--type", "job"];
        all.extend_from_slice(args);
        Ok(c.tidal_ok(&all)?.trim().to_string())
    };

    // Stopped with notice.
    let victim = submit(&["--priority", "offline", "--payload", "long"])?;
    wait_state(&c, &victim, "running").await;
    let online = submit(&["--priority", "online", "--payload", "now"])?;
    let t = wait_state(&c, &online, "succeeded").await;
    assert_eq!(t["result"].as_str().unwrap().trim(), "done now", "{t}");
    let v = wait_until(&c, &victim, "preempted and running again", |t| {
        t["preempted"] == 1
            && t["state"] == "running"
            && t["attempts"].as_array().unwrap().len() == 2
    })
    .await;
    assert_eq!(ends(&v)[0], "preempted", "{v}");
    // The attempt it lost was given back: it runs as attempt 1 again.
    assert_eq!(v["attempt"], 1, "{v}");
    assert!(v["checkpoint_bytes"].as_u64().unwrap_or(0) > 0, "{v}");
    c.tidal_ok(&["task", "cancel", &victim])?;
    wait_state(&c, &victim, "cancelled").await;

    // Suspended in place, then resumed under the same token.
    let paused = submit(&[
        "--priority",
        "offline",
        "--suspendable",
        "--payload",
        "long",
    ])?;
    let before = wait_state(&c, &paused, "running").await;
    let online = submit(&["--priority", "online", "--payload", "beside"])?;
    let t = wait_state(&c, &online, "succeeded").await;
    assert_eq!(t["agent"], "agent-1", "{t}");
    let v = wait_until(&c, &paused, "resumed", |t| {
        t["preempted"] == 1 && t["suspended"] != true
    })
    .await;
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(v["token"], before["token"], "the same attempt goes on: {v}");
    assert_eq!(v["attempts"].as_array().unwrap().len(), 1, "{v}");
    c.tidal_ok(&["task", "cancel", &paused])?;
    wait_state(&c, &paused, "cancelled").await;

    // Finished within the grace: it exits 0 on its notice, so the attempt
    // is a success with its result, not a preemption.
    let done = submit(&["--priority", "offline", "--payload", "finish"])?;
    wait_state(&c, &done, "running").await;
    let online = submit(&["--priority", "online", "--payload", "after"])?;
    let t = wait_state(&c, &done, "succeeded").await;
    assert_eq!(t["result"].as_str().unwrap().trim(), "finished", "{t}");
    assert_eq!(t["preempted"], 0, "{t}");
    assert_eq!(ends(&t), ["succeeded"], "{t}");
    let t = wait_state(&c, &online, "succeeded").await;
    assert_eq!(t["result"].as_str().unwrap().trim(), "done after", "{t}");
    Ok(())
}
