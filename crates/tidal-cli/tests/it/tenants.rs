//! Tenants' quotas with real processes: `tidal tenant set` limits, a submit
//! past max-pending refused (RESOURCE_EXHAUSTED naming the limit, the CLI
//! exits 1), items past the submit rate refused, max-running-slots held
//! with idle agents to spare while another tenant uses them, `tidal tenant
//! list` showing usage against limits, a queue shared between tenants,
//! and `tenant set` refused below cluster format version 3.

use std::time::Duration;

use anyhow::bail;
use tidal_client::v1;
use tokio::time::{sleep, Instant};
use tonic::Code;

use crate::harness::{read_runs, timed_worker, AgentOpts, Cluster, ClusterOpts};

const WAIT: Duration = Duration::from_secs(60);

async fn one_node() -> Cluster {
    let c = Cluster::start(ClusterOpts {
        nodes: 1,
        join: false,
        ..ClusterOpts::default()
    })
    .await
    .expect("cluster");
    wait_version_3(&c).await.expect("format version 3");
    c
}

/// Tenants need cluster format version 3, which a new cluster reaches by
/// itself once its leader has heard every member.
async fn wait_version_3(c: &Cluster) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = c
            .client
            .status()
            .await
            .map(|s| s.cluster_format_version)
            .unwrap_or(0);
        if v >= 3 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("cluster format version {v}, not 3\n{}", c.logs_tail(20));
        }
        sleep(Duration::from_millis(50)).await;
    }
}

fn spec(tenant: &str) -> v1::TaskSpec {
    v1::TaskSpec {
        task_type: "t2i".into(),
        tenant: tenant.into(),
        payload: b"x".to_vec(),
        ..Default::default()
    }
}

/// The table's row of `tenant`, split on whitespace.
fn row(table: &str, tenant: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cells| cells.first().is_some_and(|c| c == tenant))
        .unwrap_or_else(|| panic!("no row for {tenant} in\n{table}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_past_max_pending_is_resource_exhausted_naming_the_limit() {
    let c = one_node().await;
    let out = c
        .tidal_ok(&[
            "tenant",
            "set",
            "acme",
            "--max-pending",
            "2",
            "--weight",
            "3",
        ])
        .unwrap();
    assert_eq!(
        row(&out, "acme"),
        ["acme", "0/2", "0/-", "0/-", "-", "3"],
        "{out}"
    );
    // No agent: the tasks wait.
    for _ in 0..2 {
        c.tidal_ok(&["task", "submit", "--type", "t2i", "--tenant", "acme"])
            .unwrap();
    }
    let third = c.tidal(&["task", "submit", "--type", "t2i", "--tenant", "acme"]);
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert_eq!(third.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "tenant acme is at its max-pending of 2 (tidal tenant set acme --max-pending)"
        ),
        "{stderr}"
    );
    let err = c.client.submit_one(spec("acme")).await.unwrap_err();
    assert_eq!(err.code, Code::ResourceExhausted, "{err}");
    // Another tenant, and tasks without one ("default"), are not limited.
    c.client.submit_one(spec("beta")).await.unwrap();
    c.client.submit_one(spec("")).await.unwrap();

    let list = c.tidal_ok(&["tenant", "list"]).unwrap();
    assert_eq!(row(&list, "acme"), ["acme", "2/2", "0/-", "0/-", "-", "3"]);
    assert_eq!(row(&list, "beta"), ["beta", "1/-", "0/-", "0/-", "-", "1"]);
    assert_eq!(row(&list, "default")[1], "1/-");
    let json: serde_json::Value =
        serde_json::from_str(&c.tidal_ok(&["tenant", "list", "-o", "json"]).unwrap()).unwrap();
    let acme = &json["tenants"][0];
    assert_eq!(acme["name"], "acme", "{json}");
    assert_eq!(
        (acme["pending"].as_u64(), acme["max_pending"].as_u64()),
        (Some(2), Some(2))
    );

    // Raising the limit admits more at once; a bad rate is refused by the CLI.
    c.tidal_ok(&[
        "tenant",
        "set",
        "acme",
        "--max-pending",
        "3",
        "--submit-rate",
        "50/s:100",
    ])
    .unwrap();
    c.client.submit_one(spec("acme")).await.unwrap();
    let list = c.tidal_ok(&["tenant", "list"]).unwrap();
    assert_eq!(
        row(&list, "acme"),
        ["acme", "3/3", "0/-", "0/-", "50/s:100", "1"]
    );
    let bad = c.tidal(&["tenant", "set", "acme", "--submit-rate", "0"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_past_the_submit_rate_are_refused_saying_when_to_retry() {
    let c = one_node().await;
    c.tidal_ok(&["tenant", "set", "acme", "--submit-rate", "1/s:2"])
        .unwrap();
    let results = c
        .client
        .submit(vec![
            spec("acme"),
            spec("beta"),
            spec("acme"),
            spec("acme"),
            spec("acme"),
        ])
        .await
        .unwrap();
    let refused: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.error.as_ref().is_some_and(|e| e.code != 0))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(refused, [3, 4], "{results:?}");
    let e = results[3].error.as_ref().unwrap();
    assert_eq!(e.code, Code::ResourceExhausted as i32);
    assert!(
        e.message
            .starts_with("tenant acme is over its submit rate of 1/s (burst 2); retry in "),
        "{}",
        e.message
    );
    let list = c.tidal_ok(&["tenant", "list"]).unwrap();
    assert_eq!(
        row(&list, "acme"),
        ["acme", "2/-", "0/-", "0/-", "1/s:2", "1"]
    );
    // Another tenant has no rate.
    for _ in 0..5 {
        c.client.submit_one(spec("beta")).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_running_slots_holds_with_idle_agents_and_others_use_them() {
    let mut c = one_node().await;
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    for i in 1..=4 {
        let mut a = AgentOpts::new(&format!("a{i}"), &["t2i"]);
        a.slots = 2;
        a.command = timed_worker(&runs, 0.4);
        c.start_agent(a).unwrap();
    }
    c.wait_agents(4, WAIT).await.unwrap();
    c.tidal_ok(&["tenant", "set", "acme", "--max-running-slots", "2"])
        .unwrap();

    let mut acme = Vec::new();
    for _ in 0..8 {
        acme.push(c.client.submit_one(spec("acme")).await.unwrap().id);
    }
    let mut beta = Vec::new();
    for _ in 0..4 {
        beta.push(c.client.submit_one(spec("beta")).await.unwrap().id);
    }

    // Until every task succeeded: acme never holds more than 2 slots.
    let deadline = Instant::now() + WAIT;
    let mut most = 0;
    loop {
        let tenants = c.client.list_tenants().await.unwrap();
        let used = tenants
            .iter()
            .find(|t| t.name == "acme")
            .map_or(0, |t| t.running_slots);
        assert!(used <= 2, "acme holds {used} slots: {tenants:?}");
        most = most.max(used);
        let tasks = c
            .client
            .list_tasks(v1::ListTasksRequest::default())
            .await
            .unwrap()
            .tasks;
        let done = tasks
            .iter()
            .filter(|t| t.state == v1::TaskState::Succeeded as i32)
            .count();
        if done == acme.len() + beta.len() {
            break;
        }
        if Instant::now() > deadline {
            panic!("{done} tasks succeeded: {tasks:?}\n{}", c.logs_tail(30));
        }
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(most, 2, "acme never used its 2 slots");

    // The workers' own record: at most 2 of acme's runs overlap, and
    // beta's ran beside them.
    let mut events: Vec<(u128, i32)> = read_runs(&runs)
        .into_iter()
        .filter(|r| acme.contains(&r.task))
        .map(|r| (r.at_nanos, if r.start { 1 } else { -1 }))
        .collect();
    assert_eq!(events.len(), 2 * acme.len(), "{events:?}");
    // An end before a start at the same instant.
    events.sort();
    let (mut now, mut peak) = (0, 0);
    for (_, d) in events {
        now += d;
        peak = peak.max(now);
    }
    assert!(peak <= 2, "{peak} of acme's runs overlapped");
    let list = c.tidal_ok(&["tenant", "list"]).unwrap();
    assert_eq!(row(&list, "acme"), ["acme", "0/-", "0/2", "0/-", "-", "1"]);
}

/// A queue is shared between its tenants: light's two tasks, submitted
/// after heavy's twelve, run in the agent's first four slots beside
/// heavy's two oldest, not after heavy's backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_light_tenant_runs_beside_a_heavy_tenants_backlog() {
    let mut c = one_node().await;
    let mut heavy = Vec::new();
    for _ in 0..12 {
        heavy.push(c.client.submit_one(spec("heavy")).await.unwrap().id);
    }
    let mut light = Vec::new();
    for _ in 0..2 {
        light.push(c.client.submit_one(spec("light")).await.unwrap().id);
    }
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let mut a = AgentOpts::new("a1", &["t2i"]);
    a.slots = 4;
    a.command = timed_worker(&runs, 1.0);
    c.start_agent(a).unwrap();
    c.wait_agents(1, WAIT).await.unwrap();

    // Until light's tasks started and four runs did.
    let deadline = Instant::now() + WAIT;
    let first = loop {
        let mut starts: Vec<(u128, String)> = read_runs(&runs)
            .into_iter()
            .filter(|r| r.start)
            .map(|r| (r.at_nanos, r.task))
            .collect();
        starts.sort();
        if starts.len() >= 4 && light.iter().all(|l| starts.iter().any(|(_, t)| t == l)) {
            break starts;
        }
        if Instant::now() > deadline {
            panic!("runs so far: {starts:?}\n{}", c.logs_tail(30));
        }
        sleep(Duration::from_millis(20)).await;
    };
    let mut four: Vec<&String> = first[..4].iter().map(|(_, t)| t).collect();
    four.sort();
    let mut want = vec![&heavy[0], &heavy[1], &light[0], &light[1]];
    want.sort();
    assert_eq!(four, want, "first runs: {first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_set_needs_cluster_format_version_3() {
    let c = Cluster::start(ClusterOpts {
        nodes: 1,
        join: false,
        server_args: vec!["--max-format-version".into(), "2".into()],
        ..ClusterOpts::default()
    })
    .await
    .expect("cluster");
    let out = c.tidal(&["tenant", "set", "acme", "--max-pending", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cluster format version 3"), "{stderr}");
    let err = c
        .client
        .set_tenant("acme", v1::TenantLimits::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::FailedPrecondition, "{err}");
    // Submits go on, without limits; the list shows usage.
    c.client.submit_one(spec("acme")).await.unwrap();
    c.client.submit_one(spec("acme")).await.unwrap();
    let list = c.tidal_ok(&["tenant", "list"]).unwrap();
    assert_eq!(row(&list, "acme"), ["acme", "2/-", "0/-", "0/-", "-", "1"]);
}
