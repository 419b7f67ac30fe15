//! Workers never outlive their agent: an agent SIGKILLed while its worker
//! sleeps 30 s in a child process leaves no process of the worker's group
//! running one second later, with and without the cgroup layer.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{AgentOpts, Cluster, ClusterOpts};

/// Pids of the processes in process group `pgid` (zombies excluded).
fn group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.first() != Some(&"Z") && f.get(2).and_then(|g| g.parse().ok()) == Some(pgid) {
            out.push(pid);
        }
    }
    out
}

/// The workers' parent cgroup of agent `pid`, if it made one.
fn agent_cgroup(pid: u32) -> Option<std::path::PathBuf> {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = cg.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(|m| {
            Path::new(m)
                .join(rel.trim_start_matches('/'))
                .join(format!("tidal-agent-{pid}"))
        })
        .find(|d| d.is_dir())
}

async fn wait_for_pid(path: &Path, c: &Cluster) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(p) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not start\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn sigkilled_agent_leaves_no_worker(cgroups: bool) {
    let mut c = Cluster::start(ClusterOpts {
        nodes: 1,
        ..ClusterOpts::default()
    })
    .await
    .expect("cluster");
    let pidfile = c.dir.path().join("worker.pid");
    // The shell stays (two commands) and sleeps in a child of its own:
    // PDEATHSIG reaches the shell, not the sleep.
    let script = format!("echo $$ > '{}'; sleep 30; true", pidfile.display());
    let mut agent = AgentOpts::new("agent-1", &["t2i"]).command(&["sh", "-c", &script]);
    if !cgroups {
        agent = agent.env("TIDAL_AGENT_CGROUPS", "0");
    }
    c.start_agent(agent).unwrap();
    c.wait_agents(1, Duration::from_secs(30)).await.unwrap();
    c.tidal_ok(&["task", "submit", "--type", "t2i", "--payload", "x"])
        .unwrap();
    let pgid = wait_for_pid(&pidfile, &c).await;
    // The sleep is in the group too before the agent dies.
    let deadline = Instant::now() + Duration::from_secs(10);
    while group_members(pgid).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the worker's sleep never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let agent_pid = c.agents[0].pid().expect("agent pid");
    let cgroup = agent_cgroup(agent_pid);
    c.agents[0].kill();
    let killed = Instant::now();
    loop {
        let left = group_members(pgid);
        if left.is_empty() {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "worker processes {left:?} (group {pgid}) still run 1 s after the agent was SIGKILLed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The reaper removes the killed agent's cgroups once they are empty.
    if let Some(dir) = &cgroup {
        let deadline = Instant::now() + Duration::from_secs(5);
        while dir.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let left = cgroup.as_ref().filter(|d| d.exists()).cloned();
    if let Some(dir) = &left {
        if let Ok(children) = std::fs::read_dir(dir) {
            for ch in children.flatten().filter(|e| e.path().is_dir()) {
                let _ = std::fs::remove_dir(ch.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    assert!(
        left.is_none(),
        "the killed agent's cgroup {left:?} was not removed"
    );
    println!(
        "cgroups {cgroups}: the worker's group was gone {:?} after the agent's SIGKILL",
        killed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_agent_leaves_no_worker_running() {
    sigkilled_agent_leaves_no_worker(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_agent_leaves_no_worker_running_without_cgroups() {
    sigkilled_agent_leaves_no_worker(false).await;
}
