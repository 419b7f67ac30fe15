//! A rolling upgrade with real processes (README: Rolling upgrade). Node 1
//! claims only cluster format version 1 (the hidden `--max-format-version
//! 1`, an older build as far as the cluster can tell): the cluster works on
//! version 1, a command of version 2 is refused and never proposed. Node 1
//! restarted as a full build, the cluster raises itself to the build's
//! newest version at once. A node then started as an older build stops at
//! the entry it cannot apply, exits 7 naming the version it needs, and
//! catches up once started as a full build; a new server of the older build
//! is refused by `add-learner`.

use std::time::Duration;

use anyhow::{bail, Context};
use tidal_client::v1;
use tokio::time::{sleep, Instant};

use crate::harness::{AgentOpts, Cluster, ClusterOpts};

const WAIT: Duration = Duration::from_secs(30);

/// The newest cluster format version of this build: what the cluster
/// raises itself to once every member supports it.
const NEWEST: u32 = tidal_core::FORMAT_VERSION_MAX as u32;

fn older() -> Vec<String> {
    vec!["--max-format-version".into(), "1".into()]
}

/// Waits until every running node reports cluster format version `want`.
async fn wait_version(c: &Cluster, want: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut at = Vec::new();
        for n in c.nodes.iter().filter(|n| n.proc.is_some()) {
            at.push(
                c.client
                    .status_of(&n.addr)
                    .await
                    .map(|s| s.cluster_format_version)
                    .unwrap_or(0),
            );
        }
        if at.iter().all(|v| *v == want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the nodes are at format versions {at:?}, not {want}\n{}",
                c.logs_tail(20)
            );
        }
        sleep(Duration::from_millis(100)).await;
    }
}

async fn run_one_task(c: &Cluster, key: &str) -> anyhow::Result<()> {
    let id = c
        .client
        .submit_one(v1::TaskSpec {
            task_type: "t2i".into(),
            payload: b"x".to_vec(),
            idempotency_key: key.into(),
            ..Default::default()
        })
        .await?
        .id;
    let deadline = Instant::now() + WAIT;
    loop {
        let t = c.client.get_task(&id, false).await?;
        if t.state == v1::TaskState::Succeeded as i32 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("task {id} is {:?}\n{}", t.state, c.logs_tail(20));
        }
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_waits_for_its_oldest_node_then_moves_to_the_new_version() -> anyhow::Result<()> {
    // `--auth none`: below format version 3 only the bootstrap token is
    // taken, and agents need agent tokens (version 3).
    let mut c = Cluster::new_spec(ClusterOpts::default(), |s| s.tokens = false)?;
    c.start_node_with(1, true, &older())?;
    c.wait_leader(WAIT).await?;
    c.start_node(2, false)?;
    c.start_node(3, false)?;
    c.join_all().await?;
    c.start_agent(AgentOpts::new("a1", &["t2i"]))?;
    c.wait_agents(1, WAIT).await?;

    // Version 1: the cluster works; each node says what it supports.
    run_one_task(&c, "before").await?;
    wait_version(&c, 1).await?;
    let s1 = c.client.status_of(&c.node(1).addr).await?;
    assert_eq!((s1.min_format_version, s1.max_format_version), (1, 1));
    let s2 = c.client.status_of(&c.node(2).addr).await?;
    assert_eq!((s2.min_format_version, s2.max_format_version), (1, NEWEST));
    let out = c.tidal_ok(&["status"])?;
    assert!(out.contains("cluster format version: 1"), "{out}");
    assert!(out.contains("SUPPORTS") && out.contains("1-1"), "{out}");

    // A command of version 2 is refused, naming the version, and never
    // proposed: node 1 would have stopped at such an entry.
    let o = c.tidal(&["agent", "drain", "a1"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("needs cluster format version 2; the cluster is at version 1"),
        "{stderr}"
    );
    let err = c.client.drain_agent("a1", None).await.unwrap_err();
    assert_eq!(err.code, tonic::Code::FailedPrecondition, "{err:?}");
    run_one_task(&c, "between").await?;
    assert!(
        c.node_mut(1).proc.as_mut().unwrap().is_running(),
        "node 1 stopped\n{}",
        c.logs_tail(20)
    );
    let members = c.client.members().await?;
    assert_eq!(members.cluster_format_version, 1);
    let node1 = members.members.iter().find(|m| m.id == 1).unwrap();
    assert_eq!(node1.max_format_version, 1, "{members:?}");

    // Led by a full build, the cluster still waits for node 1: the leader
    // hears from its Raft replies that it supports version 1 only.
    let members = c.client.transfer_leader(2).await?;
    assert_eq!(members.leader_id, 2, "{members:?}");
    let node1 = members.members.iter().find(|m| m.id == 1).unwrap();
    assert_eq!(
        (node1.min_format_version, node1.max_format_version),
        (1, 1),
        "{members:?}"
    );
    let err = c.client.drain_agent("a1", None).await.unwrap_err();
    assert_eq!(err.code, tonic::Code::FailedPrecondition, "{err:?}");
    run_one_task(&c, "led-by-node-2").await?;
    wait_version(&c, 1).await?;

    // Node 1 upgraded (restarted as a full build): the cluster moves to
    // the newest version by itself, and the command is taken.
    c.kill_node(1);
    c.start_node(1, false)?;
    wait_version(&c, NEWEST).await?;
    let out = c.tidal_ok(&["cluster", "members"])?;
    assert!(
        out.contains(&format!("cluster format version {NEWEST}")),
        "{out}"
    );
    assert!(!out.contains("1-1"), "{out}");
    c.client
        .drain_agent("a1", None)
        .await
        .context("drain at the newest version")?;
    c.client.undrain_agent("a1").await?;
    run_one_task(&c, "after").await?;

    // An older build started on a node of this cluster stops at the first
    // entry it cannot apply, saying which version it needs (exit 7), and
    // applies nothing of it: started as a full build it catches up.
    c.kill_node(2);
    c.start_node_with(2, false, &older())?;
    let status = c
        .node_mut(2)
        .proc
        .as_mut()
        .unwrap()
        .wait_exit(WAIT)
        .await
        .context("node 2 of version 1 did not stop")?;
    let log = std::fs::read_to_string(&c.node(2).proc.as_ref().unwrap().log)?;
    assert_eq!(status.code(), Some(7), "{log}");
    assert!(
        log.contains(&format!("needs cluster format version {NEWEST}")),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "run a tidal that supports cluster format version {NEWEST}"
        )),
        "{log}"
    );
    c.start_node(2, false)?;
    c.wait_caught_up(2, WAIT).await?;
    wait_version(&c, NEWEST).await?;

    // Joining: a server that says it lacks the cluster's version is not
    // added; the same server of the new build is.
    let leader = c.client.status().await?.leader_id;
    let joiner = if leader == 3 { 2 } else { 3 };
    c.client.remove(joiner, true).await?;
    c.kill_node(joiner);
    std::fs::remove_dir_all(&c.node(joiner).data)?;
    c.start_node_with(joiner, false, &older())?;
    let addr = c.node(joiner).addr.clone();
    let deadline = Instant::now() + WAIT;
    while c.client.status_of(&addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("node {joiner} does not answer\n{}", c.logs_tail(20));
        }
        sleep(Duration::from_millis(50)).await;
    }
    let err = c.client.add_learner(joiner, &addr).await.unwrap_err();
    assert_eq!(err.code, tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message.contains(&format!(
            "supports cluster format versions 1 to 1; the cluster is at version {NEWEST}"
        )),
        "{err:?}"
    );
    let members = c.client.members().await?;
    assert!(
        members.members.iter().all(|m| m.id != joiner),
        "{members:?}"
    );
    c.kill_node(joiner);
    std::fs::remove_dir_all(&c.node(joiner).data)?;
    c.start_node(joiner, false)?;
    c.client.add_learner(joiner, &addr).await?;
    c.client.promote(joiner).await?;
    c.wait_caught_up(joiner, WAIT).await?;
    wait_version(&c, NEWEST).await?;
    Ok(())
}
