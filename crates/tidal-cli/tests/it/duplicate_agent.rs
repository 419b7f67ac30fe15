//! One live session per agent id: a second agent process started under the
//! id of a live one takes the id over; the first stops its workers and exits
//! 6 saying so; no task runs twice at once, each completes once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::harness::{read_runs, timed_worker, AgentOpts, Cluster, ClusterOpts};

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_under_one_id_takes_over_and_the_first_exits() {
    let mut c = Cluster::start(ClusterOpts {
        nodes: 1,
        server_args: vec!["--agent-ttl-ms".into(), "3000".into()],
        ..ClusterOpts::default()
    })
    .await
    .expect("cluster");
    let runs = c.dir.path().join("runs.log");
    let worker = timed_worker(&runs, 4.0);
    let worker: Vec<&str> = worker.iter().map(String::as_str).collect();
    let agent = || {
        AgentOpts::new("agent-1", &["t2i"])
            .slots(2)
            .command(&worker)
    };
    c.start_agent(agent()).unwrap();
    c.wait_agents(1, Duration::from_secs(30)).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..4 {
        let id = c
            .tidal_ok(&[
                "task",
                "submit",
                "--type",
                "t2i",
                "--payload",
                &format!("p{i}"),
            ])
            .unwrap();
        ids.push(id.trim().to_string());
    }
    // The first process runs two tasks when the second one starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_runs(&runs).iter().filter(|r| r.start).count() < 2 {
        assert!(
            Instant::now() < deadline,
            "no task started\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_pid = c.agents[0].pid().unwrap();
    c.start_agent(agent()).unwrap();

    // The first process is told, stops its workers and exits 6.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, exited_by) = loop {
        if let Some(st) = c.agents[0].try_exit() {
            break (st, now_nanos());
        }
        assert!(
            Instant::now() < deadline,
            "the displaced agent did not exit\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(6), "{}", c.agents[0].log_tail(20));
    let first_log = std::fs::read_to_string(&c.agents[0].log).unwrap();
    assert!(
        first_log.contains("another agent process took this agent id over")
            && first_log
                .contains("error: agent \"agent-1\" was taken over by another agent process"),
        "{first_log}"
    );
    let second_log_has = |s: &str| {
        std::fs::read_to_string(&c.agents[1].log)
            .unwrap_or_default()
            .contains(s)
    };
    assert!(
        second_log_has("this process took it over"),
        "{}",
        c.agents[1].log_tail(20)
    );

    // Every task succeeds, each exactly once.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = c.tidal_ok(&["task", "list", "-o", "json"]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&list).unwrap();
        let done = v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "succeeded")
            .count();
        if done == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tasks not done: {v}\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = read_runs(&runs);
    let mut by_task: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for r in &all {
        by_task.entry(r.task.as_str()).or_default().push(r);
    }
    for id in &ids {
        let rs = by_task.get(id.as_str()).cloned().unwrap_or_default();
        let ends = rs.iter().filter(|r| !r.start).count();
        assert_eq!(ends, 1, "task {id} completed {ends} times: {rs:?}");
        let starts: Vec<_> = rs.iter().filter(|r| r.start).collect();
        let tokens: std::collections::BTreeSet<u64> = starts.iter().map(|r| r.token).collect();
        assert_eq!(tokens.len(), starts.len(), "a token ran twice: {rs:?}");
        // An execution in the first process was killed when it exited;
        // the task ran again only after that.
        for s in starts.iter().filter(|r| r.agent_pid != first_pid) {
            for k in starts.iter().filter(|r| r.agent_pid == first_pid) {
                let ended = rs
                    .iter()
                    .any(|e| !e.start && e.token == k.token && e.agent_pid == first_pid);
                if !ended {
                    assert!(
                        s.at_nanos > exited_by,
                        "task {id} started in the second process before the first one stopped: {rs:?}"
                    );
                }
            }
        }
    }
    assert!(
        all.iter().any(|r| r.start && r.agent_pid == first_pid),
        "the first process ran tasks: {all:?}"
    );
    let agents = c.tidal_ok(&["agent", "list", "-o", "json"]).unwrap();
    assert!(agents.contains("\"agent-1\""), "{agents}");
}
