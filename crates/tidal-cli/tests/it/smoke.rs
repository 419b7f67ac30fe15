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
}
