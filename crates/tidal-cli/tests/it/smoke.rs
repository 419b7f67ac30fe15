//! One end-to-end run through the harness and the CLI: 3 servers joined,
//! one agent, a task submitted twice with one key, run to success.

use std::time::Duration;

use crate::harness::{AgentOpts, Cluster, ClusterOpts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_agent_run_a_task() {
    let mut c = Cluster::start(ClusterOpts::default())
        .await
        .expect("cluster");
    let members: serde_json::Value =
        serde_json::from_str(&c.tidal_ok(&["cluster", "members", "-o", "json"]).unwrap()).unwrap();
    let voters = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["voter"] == true)
        .count();
    assert_eq!(voters, 3, "{members}");

    c.start_agent(
        AgentOpts::new("agent-1", &["t2i"])
            .models(&["sdxl"])
            .slots(2),
    )
    .unwrap();
    c.wait_agents(1, Duration::from_secs(30)).await.unwrap();

    let submit = [
        "task",
        "submit",
        "--type",
        "t2i",
        "--models",
        "sdxl",
        "--payload",
        "a red fox",
        "--key",
        "smoke-1",
    ];
    let id = c.tidal_ok(&submit).unwrap().trim().to_string();
    assert!(!id.is_empty());
    let again = c.tidal_ok(&submit).unwrap();
    assert_eq!(again.trim(), id, "the same key must return the same id");

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let task = loop {
        let t: serde_json::Value =
            serde_json::from_str(&c.tidal_ok(&["task", "get", &id, "-o", "json"]).unwrap())
                .unwrap();
        if t["state"] == "succeeded" || t["state"] == "failed" || t["state"] == "cancelled" {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "task not done: {t}\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(task["state"], "succeeded", "{task}\n{}", c.logs_tail(30));
    assert_eq!(task["agent"], "agent-1");
    assert!(task["token"].as_u64().unwrap() > 0);
    assert_eq!(task["result_encoding"], "utf8");
    let result: serde_json::Value = serde_json::from_str(task["result"].as_str().unwrap()).unwrap();
    assert_eq!(result["prompt"], "a red fox");
    assert_eq!(result["task_id"], id.as_str());

    // A reader that stops early (`| head`) ends the listing quietly: SIGPIPE,
    // not a panic. 2,000 rows are well over a pipe's buffer.
    c.tidal_ok(&[
        "task",
        "submit",
        "--type",
        "tts",
        "--payload",
        "x",
        "--count",
        "2000",
    ])
    .unwrap();
    let piped = c
        .cli_env(std::process::Command::new("bash").args([
            "-c",
            &format!(
                "{} task list --limit 2000 | head -n 1 >/dev/null; echo ${{PIPESTATUS[0]}}",
                crate::harness::tidal_exe()
            ),
        ]))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&piped.stdout).trim(),
        "141",
        "tidal task list into a closed pipe: {}",
        String::from_utf8_lossy(&piped.stderr)
    );
}

/// An idle agent gets a new task from the entry that creates it (eager
/// placement: one commit from submit to assignment): the task's fencing
/// token is its submit's log index. While the agent is busy, new tasks wait
/// and a later dispatch round assigns them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_agent_is_assigned_a_task_by_its_submit_entry() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    c.start_agent(AgentOpts::new("agent-1", &["t2i"]).slots(1).command(&[
        crate::harness::tidal_exe(),
        "example-worker",
        "--sleep-ms",
        "300",
    ]))?;
    c.wait_agents(1, Duration::from_secs(30)).await?;
    let spec = |key: &str| tidal_client::v1::TaskSpec {
        task_type: "t2i".into(),
        idempotency_key: key.into(),
        ..Default::default()
    };
    let first = c.client.submit_one(spec("eager-1")).await?;
    // The agent's one slot is taken: this one waits for the dispatcher.
    let second = c.client.submit_one(spec("eager-2")).await?;
    let done = |id: String| {
        let client = c.client.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let t = client.get_task(&id, false).await?;
                if t.state == tidal_client::v1::TaskState::Succeeded as i32 {
                    return anyhow::Ok(t);
                }
                anyhow::ensure!(std::time::Instant::now() < deadline, "not done: {t:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let (t1, t2) = (
        done(first.id.clone()).await?,
        done(second.id.clone()).await?,
    );
    assert_eq!(t1.token, first.log_index, "assigned by its submit entry");
    assert!(
        t2.token > second.log_index,
        "assigned by a later round: {t2:?}"
    );
    Ok(())
}

/// `--listen 127.0.0.1:0`: the server binds a port of the kernel's choice,
/// prints it, writes it to `<data>/listen.addr` and advertises it; restarted
/// on the same data, it binds that address again, the one the membership
/// knows it by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_port_zero_reports_the_address_it_bound() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node1");
    let args: Vec<String> = [
        "server",
        "--id",
        "1",
        "--dc",
        "dc1",
        "--listen",
        "127.0.0.1:0",
        "--data",
        &data.display().to_string(),
        "--init",
        "--auth",
        "none",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (node, printed) = start_on_port_zero(&args, &dir.path().join("node1.log")).await;
    assert!(!printed.ends_with(":0"), "{printed}");
    let client = tidal_client::Client::new(vec![printed.clone()]).unwrap();
    await_leader(&client, &printed, &node).await;
    let written = std::fs::read_to_string(data.join("listen.addr")).unwrap();
    assert_eq!(written.trim(), printed);
    let members = client.members().await.unwrap();
    assert_eq!(members.members[0].addr, printed);

    let mut node = node;
    node.terminate();
    assert!(
        node.wait_exit(Duration::from_secs(30)).await.is_some(),
        "the server did not stop on SIGTERM\n{}",
        node.log_tail(20)
    );
    let restart_args: Vec<String> = args.iter().filter(|a| *a != "--init").cloned().collect();
    let (node, again) =
        start_on_port_zero(&restart_args, &dir.path().join("node1-restart.log")).await;
    assert_eq!(again, printed, "a restart keeps the node's address");
    await_leader(&client, &printed, &node).await;
    assert_eq!(client.members().await.unwrap().members[0].addr, printed);
}

/// Starts a server with `args` and returns it with the address it printed.
async fn start_on_port_zero(
    args: &[String],
    log: &std::path::Path,
) -> (crate::harness::Proc, String) {
    let node = crate::harness::spawn("node1", args, log).unwrap();
    node.wait_log("listening on ", Duration::from_secs(20))
        .await
        .unwrap();
    let text = std::fs::read_to_string(log).unwrap();
    let printed = text
        .lines()
        .find_map(|l| l.strip_prefix("listening on "))
        .unwrap()
        .to_string();
    (node, printed)
}

/// Waits until the server at `addr` says it leads.
async fn await_leader(client: &tidal_client::Client, addr: &str, node: &crate::harness::Proc) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !client
        .status_of(addr)
        .await
        .is_ok_and(|s| s.role == "leader")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} does not lead\n{}",
            node.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
