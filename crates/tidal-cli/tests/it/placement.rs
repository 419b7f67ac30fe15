//! Placement with real processes, through the CLI: an agent of four GPUs
//! gives each of four one-GPU tasks its own device (the worker's
//! CUDA_VISIBLE_DEVICES and TIDAL_GPU_IDS), a fifth waits and `task
//! explain` says its GPUs are busy, then it gets the device freed first; a
//! label constraint only a second agent meets sends the task there, and one
//! no agent meets keeps it pending with the constraint named; an agent's
//! warm models file is reported as it changes; a GPU shape
//! that no agent has falls back to the next alternative, which `task get`
//! records with the devices.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::time::{sleep, Instant};

use crate::harness::{AgentOpts, Cluster, ClusterOpts};

const WAIT: Duration = Duration::from_secs(40);

/// A worker that appends "task-id CUDA_VISIBLE_DEVICES TIDAL_GPU_IDS" to
/// `dir/starts` (`-` for an empty value), waits until `dir/release-all` or
/// `dir/release-TASK` exists, then prints "CUDA|IDS" as its result.
fn worker(dir: &Path) -> Vec<String> {
    let d = dir.display();
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "echo \"$TIDAL_TASK_ID ${{CUDA_VISIBLE_DEVICES:--}} ${{TIDAL_GPU_IDS:--}}\" >> '{d}/starts'; \
             while [ ! -e '{d}/release-all' ] && [ ! -e \"{d}/release-$TIDAL_TASK_ID\" ]; do sleep 0.05; done; \
             printf '%s|%s' \"${{CUDA_VISIBLE_DEVICES-unset}}\" \"${{TIDAL_GPU_IDS-unset}}\""
        ),
    ]
}

fn agent(id: &str, dir: &Path, slots: u32, gpus: &str, labels: &str) -> AgentOpts {
    let mut a = AgentOpts::new(id, &["gpu"]).slots(slots);
    a.command = worker(dir);
    if !gpus.is_empty() {
        a.extra_args.extend(["--gpus".into(), gpus.into()]);
    }
    a.extra_args.extend(["--labels".into(), labels.into()]);
    // Device i is CUDA device i: the agent itself is not limited to some.
    a.env("CUDA_VISIBLE_DEVICES", "")
}

/// One line of the worker's `starts`.
#[derive(Debug, Clone)]
struct Start {
    task: String,
    cuda: String,
    ids: String,
}

fn starts(dir: &Path) -> Vec<Start> {
    std::fs::read_to_string(dir.join("starts"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3).then(|| Start {
                task: f[0].into(),
                cuda: f[1].into(),
                ids: f[2].into(),
            })
        })
        .collect()
}

fn submit(c: &Cluster, extra: &[&str]) -> String {
    let mut args = vec!["task", "submit", "--type", "gpu", "--payload", "x"];
    args.extend_from_slice(extra);
    c.tidal_ok(&args).expect("submit").trim().to_string()
}

fn json_of(c: &Cluster, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let out = c.tidal_ok(&a).unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

fn task(c: &Cluster, id: &str) -> Value {
    json_of(c, &["task", "get", id])
}

/// Polls `probe` until it gives Some.
async fn wait_for<T>(c: &Cluster, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("{what}: not after {WAIT:?}\n{}", c.logs_tail(40));
        }
        sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_state(c: &Cluster, id: &str, state: &str) -> Value {
    wait_for(c, &format!("{id} {state}"), || {
        let t = task(c, id);
        (t["state"] == state).then_some(t)
    })
    .await
}

fn devices(t: &Value) -> Vec<u64> {
    t["gpu_devices"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

fn release(dir: &Path, what: &str) {
    std::fs::write(dir.join(format!("release-{what}")), b"").unwrap();
}

async fn one_node() -> (Cluster, tempfile::TempDir, PathBuf) {
    let c = Cluster::start(ClusterOpts {
        nodes: 1,
        join: false,
        ..ClusterOpts::default()
    })
    .await
    .expect("cluster");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    (c, tmp, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_sees_its_own_gpus_and_a_waiting_task_says_why() -> anyhow::Result<()> {
    let (mut c, _tmp, dir) = one_node().await;
    let four = ["A100:81920"; 4].join(",");
    c.start_agent(agent("gpu-a", &dir, 6, &four, "zone=a"))?;
    c.wait_agents(1, WAIT).await?;

    let ids: Vec<String> = (0..4).map(|_| submit(&c, &["--gpus", "1"])).collect();
    let seen = wait_for(&c, "four workers started", || {
        let s = starts(&dir);
        (s.len() >= 4).then_some(s)
    })
    .await;
    assert_eq!(seen.len(), 4, "{seen:?}");
    let mut all = BTreeSet::new();
    for s in &seen {
        assert!(ids.contains(&s.task), "{s:?}");
        assert_eq!(s.cuda, s.ids, "{s:?}");
        let d: u64 = s
            .ids
            .parse()
            .unwrap_or_else(|_| panic!("one device: {s:?}"));
        assert!(all.insert(d), "device {d} given twice: {seen:?}");
    }
    assert_eq!(all, BTreeSet::from([0, 1, 2, 3]), "{seen:?}");
    for s in &seen {
        let t = wait_state(&c, &s.task, "running").await;
        assert_eq!(devices(&t), [s.ids.parse::<u64>()?], "{t}");
    }
    let a = json_of(&c, &["agent", "get", "gpu-a"]);
    assert_eq!(a["gpus_busy"], serde_json::json!([0, 1, 2, 3]), "{a}");

    // The fifth waits, for GPUs: a slot is free.
    let fifth = submit(&c, &["--gpus", "1"]);
    let why = wait_for(&c, "explain names busy GPUs", || {
        let e = json_of(&c, &["task", "explain", &fifth]);
        let reasons = e["reasons"].to_string();
        (reasons.contains("GPU")).then_some(e)
    })
    .await;
    assert_eq!(why["state"], "pending", "{why}");
    assert_eq!(why["agents_eligible_now"], 0, "{why}");
    let text = c.tidal_ok(&["task", "explain", &fifth])?;
    assert!(text.contains("pending") && text.contains("GPU"), "{text}");
    let t = task(&c, &fifth);
    assert_eq!(t["state"], "pending", "{t}");
    assert!(t["waiting"].as_str().is_some_and(|w| !w.is_empty()), "{t}");
    assert!(starts(&dir).iter().all(|s| s.task != fifth));

    // One finishes: the fifth gets its device.
    let first = seen[0].clone();
    release(&dir, &first.task);
    let done = wait_state(&c, &first.task, "succeeded").await;
    assert_eq!(
        done["result"].as_str(),
        Some(format!("{}|{}", first.cuda, first.ids).as_str()),
        "{done}"
    );
    let s = wait_for(&c, "the fifth started", || {
        starts(&dir).into_iter().find(|s| s.task == fifth)
    })
    .await;
    assert_eq!(
        (s.cuda.as_str(), s.ids.as_str()),
        (first.ids.as_str(), first.ids.as_str())
    );
    let t = wait_state(&c, &fifth, "running").await;
    assert_eq!(devices(&t), [first.ids.parse::<u64>()?], "{t}");
    release(&dir, "all");
    for id in ids.iter().chain([&fifth]) {
        wait_state(&c, id, "succeeded").await;
    }
    let a = json_of(&c, &["agent", "get", "gpu-a"]);
    assert_eq!(a["gpus_busy"], serde_json::json!([]), "{a}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraints_choose_the_agent_and_a_gpu_shape_falls_back() -> anyhow::Result<()> {
    let (mut c, _tmp, dir) = one_node().await;
    release(&dir, "all");
    c.start_agent(agent("gpu-a", &dir, 4, "A100:81920,A100:81920", "zone=a"))?;
    let warm = dir.join("warm-b");
    std::fs::write(&warm, "sdxl\n")?;
    let mut b = agent("cpu-b", &dir, 4, "", "zone=b,ssd=yes");
    b.extra_args
        .extend(["--warm-models-file".into(), warm.display().to_string()]);
    c.start_agent(b)?;
    c.wait_agents(2, WAIT).await?;

    // The agent reports its warm models, and again when the file changes.
    for want in [
        serde_json::json!(["sdxl"]),
        serde_json::json!(["sdxl", "vits"]),
    ] {
        wait_for(&c, &format!("cpu-b warm {want}"), || {
            let a = json_of(&c, &["agent", "get", "cpu-b"]);
            (a["warm_models"] == want).then_some(())
        })
        .await;
        std::fs::write(dir.join("warm-new"), "sdxl\nvits\n")?;
        std::fs::rename(dir.join("warm-new"), &warm)?;
    }

    // Only cpu-b meets these, every time.
    for extra in [
        &["--constraint", "zone=b"][..],
        &["--constraint", "ssd"],
        &["--constraint", "zone notin (a,c)"],
    ] {
        for _ in 0..3 {
            let id = submit(&c, extra);
            let t = wait_state(&c, &id, "succeeded").await;
            assert_eq!(t["agent"], "cpu-b", "{extra:?}: {t}");
            assert_eq!(t["result"], "|", "no GPU: CUDA_VISIBLE_DEVICES empty: {t}");
        }
    }
    // None meets this one: it waits, and says which constraint.
    let stuck = submit(&c, &["--constraint", "zone=c"]);
    let e = wait_for(&c, "explain names the constraint", || {
        let e = json_of(&c, &["task", "explain", &stuck]);
        e["reasons"].to_string().contains("zone=c").then_some(e)
    })
    .await;
    assert_eq!(
        (e["state"].as_str(), e["agents_total"].as_u64()),
        (Some("pending"), Some(2)),
        "{e}"
    );

    // No agent has an H100: one A100 instead, recorded on the task.
    let id = submit(&c, &["--gpu-shape", "2xH100|1xA100"]);
    let t = wait_state(&c, &id, "succeeded").await;
    assert_eq!(t["agent"], "gpu-a", "{t}");
    assert_eq!(t["gpu_shape"]["count"], 1, "{t}");
    assert_eq!(t["gpu_shape"]["model"], "A100", "{t}");
    let d = devices(&t);
    assert_eq!(d.len(), 1, "{t}");
    assert!(d[0] < 2, "{t}");
    assert_eq!(t["result"], format!("{0}|{0}", d[0]), "{t}");
    let text = c.tidal_ok(&["task", "get", &id])?;
    assert!(
        text.contains("gpu_shape") && text.contains("1xA100"),
        "{text}"
    );

    Ok(())
}
