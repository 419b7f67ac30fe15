//! Operating a data center's Raft group from the CLI, against real
//! processes: grow and shrink under load, a learner that needs a snapshot,
//! a leader killed in the middle of a change, backup and restore, refusals.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tidal_client::{v1, Client, ClientOptions};
use tokio::time::{sleep, Instant};

use crate::harness::{spawn, AgentOpts, Cluster, ClusterOpts, Proc};

/// Members as node `addr` itself sees them: (id, voter) pairs.
async fn members_seen_by(c: &Cluster, addr: &str) -> anyhow::Result<Vec<(u64, bool)>> {
    let one = Client::with_options(
        vec![addr.to_string()],
        ClientOptions {
            retry_for: Duration::from_secs(2),
            ..c.client.options().clone()
        },
    )?;
    let r = one.members().await?;
    Ok(r.members.iter().map(|m| (m.id, m.voter)).collect())
}

/// Waits until every running node reports the same members, and returns them.
async fn agreed_members(c: &Cluster, timeout: Duration) -> anyhow::Result<Vec<(u64, bool)>> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut views = Vec::new();
        for n in c.nodes.iter().filter(|n| n.proc.is_some()) {
            views.push(members_seen_by(c, &n.addr).await.unwrap_or_default());
        }
        if views.windows(2).all(|w| w[0] == w[1]) && !views[0].is_empty() {
            return Ok(views.remove(0));
        }
        if Instant::now() > deadline {
            bail!("members disagree: {views:?}\n{}", c.logs_tail(20));
        }
        sleep(Duration::from_millis(100)).await;
    }
}

fn spec(key: String) -> v1::TaskSpec {
    v1::TaskSpec {
        task_type: "t2i".into(),
        payload: key.clone().into_bytes(),
        idempotency_key: key,
        ..Default::default()
    }
}

/// Waits until every task is finished; returns them all.
async fn wait_all_finished(c: &Cluster, timeout: Duration) -> anyhow::Result<Vec<v1::Task>> {
    let deadline = Instant::now() + timeout;
    loop {
        let tasks = c
            .client
            .list_all_tasks(v1::ListTasksRequest {
                limit: 1000,
                ..Default::default()
            })
            .await?;
        let open = tasks
            .iter()
            .filter(|t| {
                !matches!(
                    tidal_client::task_state_name(t.state),
                    "succeeded" | "failed" | "cancelled"
                )
            })
            .count();
        if open == 0 {
            return Ok(tasks);
        }
        if Instant::now() > deadline {
            bail!(
                "{open} tasks unfinished after {timeout:?}\n{}",
                c.logs_tail(20)
            );
        }
        sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_to_five_and_shrink_to_three_under_load() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts {
        nodes: 5,
        join: false,
        ..ClusterOpts::default()
    })
    .await?;
    for id in 2..=3 {
        c.tidal_ok(&[
            "cluster",
            "add-learner",
            "--id",
            &id.to_string(),
            "--addr",
            &c.node(id).addr.clone(),
            "--wait",
        ])?;
        c.tidal_ok(&["cluster", "promote", &id.to_string()])?;
    }
    let runs = c.dir.path().join("runs.log");
    let worker = format!("echo \"$TIDAL_TASK_ID\" >> '{}'; cat", runs.display());
    for a in ["agent-1", "agent-2"] {
        c.start_agent(
            AgentOpts::new(a, &["t2i"])
                .slots(4)
                .command(&["sh", "-c", &worker]),
        )?;
    }
    c.wait_agents(2, Duration::from_secs(30)).await?;

    // Four clients submit until told to stop; they keep what was acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for k in 0..4 {
        let (client, stop) = (c.client.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                if let Ok(r) = client.submit_one(spec(format!("m{k}-{n}"))).await {
                    acked.push(r.id);
                }
                sleep(Duration::from_millis(10)).await;
            }
            acked
        }));
    }

    // Grow 3 -> 5, one change at a time, then shrink back, removing node 1
    // (the first leader) and node 4.
    for id in 4..=5 {
        c.tidal_ok(&[
            "cluster",
            "add-learner",
            "--id",
            &id.to_string(),
            "--addr",
            &c.node(id).addr.clone(),
            "--wait",
        ])?;
        c.tidal_ok(&["cluster", "promote", &id.to_string()])?;
    }
    let five = agreed_members(&c, Duration::from_secs(20)).await?;
    assert_eq!(five.iter().filter(|m| m.1).count(), 5, "{five:?}");
    for id in [1u64, 4] {
        // One change at a time: removing the leader (node 1) is in flight
        // until the next leader commits it, and a change meanwhile is
        // refused; an operator retries, as here.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let o = c.tidal(&["cluster", "remove", &id.to_string()]);
            if o.status.success() {
                break;
            }
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            if !err.contains("another membership change is in progress")
                || Instant::now() > deadline
            {
                bail!("removing node {id}: {err}");
            }
            sleep(Duration::from_millis(200)).await;
        }
    }
    // A removed node says so and stops.
    for id in [1u64, 4] {
        let mut p: Proc = c.node_mut(id).proc.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(20);
        while p.is_running() {
            if Instant::now() > deadline {
                bail!("removed node {id} still runs\n{}", p.log_tail(20));
            }
            sleep(Duration::from_millis(100)).await;
        }
        assert!(
            p.log_tail(50).contains("was removed from the cluster"),
            "{}",
            p.log_tail(20)
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for h in clients {
        acked.extend(h.await?);
    }
    assert!(
        acked.len() > 50,
        "the clients made progress: {}",
        acked.len()
    );
    let three = agreed_members(&c, Duration::from_secs(20)).await?;
    assert_eq!(three, vec![(2, true), (3, true), (5, true)]);

    // Every acknowledged task completed, each exactly once.
    let tasks = wait_all_finished(&c, Duration::from_secs(120)).await?;
    let by_id: BTreeMap<&str, &v1::Task> = tasks.iter().map(|t| (t.id.as_str(), t)).collect();
    let log = std::fs::read_to_string(&runs)?;
    let mut runs_of: BTreeMap<&str, usize> = BTreeMap::new();
    for line in log.lines() {
        *runs_of.entry(line).or_default() += 1;
    }
    for id in &acked {
        let t = by_id
            .get(id.as_str())
            .with_context(|| format!("acknowledged task {id} is lost"))?;
        assert_eq!(tidal_client::task_state_name(t.state), "succeeded", "{t:?}");
        assert_eq!(
            runs_of.get(id.as_str()),
            Some(&1),
            "task {id} ran {:?} times",
            runs_of.get(id.as_str())
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_behind_the_purged_log_catches_up_by_snapshot() -> anyhow::Result<()> {
    let args = ["--snapshot-every", "50", "--keep-log-entries", "5"]
        .map(String::from)
        .to_vec();
    let mut c = Cluster::start(ClusterOpts {
        nodes: 4,
        join: false,
        server_args: args,
        ..ClusterOpts::default()
    })
    .await?;
    for id in 2..=3 {
        c.client.add_learner(id, &c.node(id).addr).await?;
        c.client.promote(id).await?;
    }
    c.kill_node(4);
    for batch in 0..4 {
        let specs = (0..50).map(|i| spec(format!("s{batch}-{i}"))).collect();
        c.client.submit(specs).await?;
    }
    let snap = c.client.snapshot().await?;
    assert!(snap.purged_index > 0, "the leader purged its log: {snap:?}");
    c.start_node(4, false)?;
    c.tidal_ok(&[
        "cluster",
        "add-learner",
        "--id",
        "4",
        "--addr",
        &c.node(4).addr.clone(),
        "--wait",
    ])?;
    c.wait_caught_up(4, Duration::from_secs(30)).await?;
    let log = std::fs::read_to_string(c.dir.path().join("node4.log"))?;
    assert!(
        log.contains("snapshot installed"),
        "node 4 caught up by snapshot:\n{}",
        c.logs_tail(20)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_change_leaves_one_agreed_configuration() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts {
        nodes: 4,
        join: false,
        ..ClusterOpts::default()
    })
    .await?;
    for id in 2..=3 {
        c.client.add_learner(id, &c.node(id).addr).await?;
        c.client.promote(id).await?;
    }
    c.client.add_learner(4, &c.node(4).addr).await?;
    // Caught up first, as `add-learner --wait` does: a node that started
    // empty votes only once it applied what its first leader had committed,
    // so a joint configuration that needs a lagging node 4's vote has no
    // leader until the killed one returns.
    c.wait_caught_up(4, Duration::from_secs(30)).await?;
    let (leader, _) = c.wait_leader(Duration::from_secs(5)).await?;
    // Promote node 4 and kill the leader while the change is in flight.
    let client = c.client.clone();
    let promote = tokio::spawn(async move { client.promote(4).await });
    sleep(Duration::from_millis(5)).await;
    c.kill_node(leader);
    let _ = promote.await?;
    c.wait_leader(Duration::from_secs(20)).await?;
    // Whatever the outcome, the survivors agree; a retried promote lands.
    agreed_members(&c, Duration::from_secs(20)).await?;
    c.client
        .promote(4)
        .await
        .context("promote after the failover")?;
    c.start_node(leader, false)?;
    let members = agreed_members(&c, Duration::from_secs(30)).await?;
    assert_eq!(members, vec![(1, true), (2, true), (3, true), (4, true)]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_every_task_and_agent_into_a_new_cluster() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    c.start_agent(AgentOpts::new("agent-1", &["t2i"]).slots(4))?;
    c.wait_agents(1, Duration::from_secs(30)).await?;
    c.tidal_ok(&["queue", "set", "vip", "--weight", "8"])?;
    c.client
        .submit((0..40).map(|i| spec(format!("b{i}"))).collect())
        .await?;
    wait_all_finished(&c, Duration::from_secs(60)).await?;
    c.client
        .submit(
            (0..5)
                .map(|i| v1::TaskSpec {
                    task_type: "nobody-runs-this".into(),
                    ..spec(format!("p{i}"))
                })
                .collect(),
        )
        .await?;
    let backup = c.dir.path().join("backup.tidal");
    let out = c.tidal_ok(&["cluster", "snapshot", "save", &backup.display().to_string()])?;
    assert!(out.contains("wrote a backup"), "{out}");
    let tasks = c
        .client
        .list_all_tasks(v1::ListTasksRequest {
            limit: 1000,
            ..Default::default()
        })
        .await?;
    let agents = c.client.list_agents(false).await?;
    let queues = c.client.list_queues().await?;

    // A new single-node cluster from the backup, on a port of the kernel's
    // choice (it writes the one it bound to <data>/listen.addr) and another directory.
    let data = c.dir.path().join("restored");
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
        "--restore",
        &backup.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // As its cluster ran: node 1's certificate, and the tokens of the
    // backup (the kit's admin token among them).
    let mut args = args;
    let tls = c
        .node(1)
        .tls_dir
        .clone()
        .context("node 1's TLS directory")?;
    args.extend([
        "--tls-dir".to_string(),
        tls.display().to_string(),
        "--auth".to_string(),
        "tokens".to_string(),
    ]);
    let _restored = spawn("restored", &args, &c.dir.path().join("restored.log"))?;
    let addr = tidal_testkit::ports::wait_listen_addr(&data, Duration::from_secs(30))
        .await?
        .to_string();
    let new = Client::with_options(vec![addr.clone()], c.client.options().clone())?;
    let mut waited = 0;
    let restored_tasks = loop {
        match new
            .list_all_tasks(v1::ListTasksRequest {
                limit: 1000,
                ..Default::default()
            })
            .await
        {
            Ok(t) => break t,
            Err(e) if waited < 100 => {
                waited += 1;
                let _ = e;
                sleep(Duration::from_millis(100)).await;
            }
            Err(e) => bail!("the restored node does not serve: {e}"),
        }
    };
    let key = |t: &v1::Task| {
        (
            t.id.clone(),
            t.state,
            t.agent.clone(),
            t.token,
            t.attempt,
            t.result.clone(),
            t.spec.clone(),
        )
    };
    assert_eq!(
        restored_tasks.iter().map(key).collect::<Vec<_>>(),
        tasks.iter().map(key).collect::<Vec<_>>()
    );
    let restored_agents = new.list_agents(false).await?;
    let akey = |a: &v1::AgentInfo| (a.spec.clone(), a.state, a.slots_in_use, a.registered_ms);
    assert_eq!(
        restored_agents.iter().map(akey).collect::<Vec<_>>(),
        agents.iter().map(akey).collect::<Vec<_>>()
    );
    assert_eq!(new.list_queues().await?, queues);
    // It is a working cluster of its own: it takes new work.
    let r = new.submit_one(spec("after-restore".into())).await?;
    assert!(r.log_index > 0);
    let members = new.members().await?;
    assert_eq!(
        members
            .members
            .iter()
            .map(|m| (m.id, m.voter))
            .collect::<Vec<_>>(),
        vec![(1, true)]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_mistakes_are_refused_and_change_nothing() -> anyhow::Result<()> {
    let c = Cluster::start(ClusterOpts::default()).await?;
    let before = c.client.members().await?;
    for (args, says) in [
        (vec!["cluster", "promote", "9"], "node 9 is not a member"),
        (vec!["cluster", "demote", "9"], "node 9 is not a member"),
        (vec!["cluster", "remove", "9"], "node 9 is not a member"),
        (vec!["cluster", "remove", "3"], "would leave 2 voter(s)"),
        (vec!["cluster", "demote", "2"], "would leave 2 voter(s)"),
        (
            vec![
                "cluster",
                "add-learner",
                "--id",
                "2",
                "--addr",
                "127.0.0.1:1",
            ],
            "member id 2 is already in use",
        ),
        (
            vec!["cluster", "add-learner", "--id", "7", "--addr", "localhost"],
            "not HOST:PORT",
        ),
        (
            vec!["cluster", "snapshot", "load", "x"],
            "snapshot save FILE",
        ),
    ] {
        let o = c.tidal(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_ne!(o.status.code(), Some(0), "{args:?} must be refused");
        assert!(err.contains(says), "{args:?}: expected {says:?} in {err}");
    }
    assert_eq!(
        c.client.remove(3, false).await.unwrap_err().code,
        tonic::Code::FailedPrecondition
    );
    assert_eq!(
        c.client.remove(9, false).await.unwrap_err().code,
        tonic::Code::NotFound
    );
    // The last voter cannot go, even with --force.
    let solo = Cluster::start(ClusterOpts {
        nodes: 1,
        ..ClusterOpts::default()
    })
    .await?;
    let o = solo.tidal(&["cluster", "remove", "1", "--force"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("last voter"),
        "{o:?}"
    );
    let after = c.client.members().await?;
    assert_eq!(
        after
            .members
            .iter()
            .map(|m| (m.id, m.voter, m.addr.clone()))
            .collect::<Vec<_>>(),
        before
            .members
            .iter()
            .map(|m| (m.id, m.voter, m.addr.clone()))
            .collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarted_on_a_wiped_directory_does_not_corrupt_the_cluster() -> anyhow::Result<()>
{
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    let first = c
        .client
        .submit((0..30).map(|i| spec(format!("w{i}"))).collect())
        .await?;
    let (leader, _) = c.wait_leader(Duration::from_secs(5)).await?;
    let victim = if leader == 3 { 2 } else { 3 };
    c.kill_node(victim);
    std::fs::remove_dir_all(&c.node(victim).data)?;
    c.start_node(victim, false)?;
    // The leader meets a follower whose log went back to nothing: it must
    // neither panic nor lose anything, and re-replicate to it.
    let more = c
        .client
        .submit((0..10).map(|i| spec(format!("x{i}"))).collect())
        .await?;
    let leader_now = c.client.status().await?.leader_id;
    c.wait_caught_up(victim, Duration::from_secs(30)).await?;
    assert_eq!(
        c.client.status().await?.leader_id,
        leader_now,
        "the leader stayed up"
    );
    assert_eq!(leader_now, leader);
    let tasks = c
        .client
        .list_all_tasks(v1::ListTasksRequest {
            limit: 1000,
            ..Default::default()
        })
        .await?;
    for r in first.iter().chain(&more) {
        assert!(tasks.iter().any(|t| t.id == r.id), "task {} is lost", r.id);
    }
    assert_eq!(tasks.len(), 40);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_to_the_named_voter_under_load() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    c.start_agent(AgentOpts::new("agent-1", &["t2i"]).slots(4))?;
    c.wait_agents(1, Duration::from_secs(30)).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let (client, flag) = (c.client.clone(), stop.clone());
    let load = tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut n = 0;
        while !flag.load(Ordering::Relaxed) {
            n += 1;
            if let Ok(r) = client.submit_one(spec(format!("l{n}"))).await {
                acked.push(r.id);
            }
        }
        acked
    });
    for round in 0..3 {
        let (leader, _) = c.wait_leader(Duration::from_secs(10)).await?;
        let target = if leader == 3 { 1 } else { leader + 1 };
        let out = c.tidal_ok(&[
            "cluster",
            "transfer-leader",
            &target.to_string(),
            "-o",
            "json",
        ])?;
        let m: serde_json::Value = serde_json::from_str(&out)?;
        assert_eq!(m["leader_id"], target, "round {round}: {m}");
        let s = c.client.status().await?;
        assert_eq!(s.leader_id, target);
    }
    // Not to a learner, and naming the leader itself changes nothing.
    let (leader, _) = c.wait_leader(Duration::from_secs(10)).await?;
    c.tidal_ok(&["cluster", "transfer-leader", &leader.to_string()])?;
    assert_eq!(c.client.status().await?.leader_id, leader);
    let o = c.tidal(&["cluster", "transfer-leader", "9"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a member"),
        "{o:?}"
    );
    stop.store(true, Ordering::Relaxed);
    let acked = load.await?;
    assert!(!acked.is_empty());
    let tasks = wait_all_finished(&c, Duration::from_secs(60)).await?;
    for id in &acked {
        let t = tasks
            .iter()
            .find(|t| &t.id == id)
            .with_context(|| format!("task {id} lost"))?;
        assert_eq!(tidal_client::task_state_name(t.state), "succeeded");
    }
    let agents = c.client.list_agents(false).await?;
    assert!(
        agents
            .iter()
            .all(|a| a.state == v1::AgentState::Ready as i32),
        "{agents:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_unreachable_voters_would_block_is_refused() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts {
        nodes: 5,
        ..ClusterOpts::default()
    })
    .await?;
    let (leader, _) = c.wait_leader(Duration::from_secs(10)).await?;
    let followers: Vec<u64> = (1..=5).filter(|&i| i != leader).collect();
    // Members show lag and last contact for every voter while all are up,
    // once the new leader has heard from each of them (right after the
    // election a voter it has not reached yet shows no contact).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m: serde_json::Value =
            serde_json::from_str(&c.tidal_ok(&["cluster", "members", "-o", "json"])?)?;
        let members = m["members"].as_array().expect("members");
        assert_eq!(members.len(), 5, "{m}");
        if members
            .iter()
            .all(|x| x["lag"].as_u64().is_some() && x["last_contact_ms"].as_i64().is_some())
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the leader never showed lag and contact for every voter: {m}");
        }
        sleep(Duration::from_millis(100)).await;
    }
    c.kill_node(followers[0]);
    c.kill_node(followers[1]);
    // Wait until the leader knows the two are gone (`cluster members` shows
    // their last contact past the bound the check uses, three election
    // timeouts), as an operator would look before changing anything: a
    // change proposed before that could not commit, and a leader without a
    // majority of its joint configuration steps down (check-quorum).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m: serde_json::Value =
            serde_json::from_str(&c.tidal_ok(&["cluster", "members", "-o", "json"])?)?;
        let gone = m["members"]
            .as_array()
            .expect("members")
            .iter()
            .filter(|x| {
                let id = x["id"].as_u64();
                (id == Some(followers[0]) || id == Some(followers[1]))
                    && x["last_contact_ms"].as_i64().is_some_and(|ms| ms > 900)
            })
            .count();
        if gone == 2 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the leader never saw the two voters gone: {m}");
        }
        sleep(Duration::from_millis(100)).await;
    }
    // Now removing a third voter is refused: only 2 of the 4 voters left
    // would answer.
    let victim = followers[2].to_string();
    let deadline = Instant::now() + Duration::from_secs(15);
    let err = loop {
        let o = c.tidal(&["cluster", "remove", &victim]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        if err.contains("answered recently") {
            break err;
        }
        assert_ne!(
            o.status.code(),
            Some(0),
            "the remove must not succeed: {err}"
        );
        if Instant::now() > deadline {
            bail!(
                "never refused for unreachable voters: {err}\n{}",
                c.logs_tail(3000)
            );
        }
        sleep(Duration::from_millis(300)).await;
    };
    assert!(err.contains("--force"), "{err}");
    let members = c.client.members().await?;
    assert_eq!(
        members.members.iter().filter(|m| m.voter).count(),
        5,
        "nothing changed"
    );

    // Forced, the change goes in but cannot commit while the two are down;
    // a second change meanwhile is refused.
    let o = c.tidal(&[
        "cluster",
        "remove",
        &victim,
        "--force",
        "--timeout-ms",
        "2000",
    ]);
    assert_ne!(o.status.code(), Some(0), "it cannot commit yet");
    let other = followers[3].to_string();
    let o = c.tidal(&["cluster", "remove", &other, "--force"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("another membership change is in progress"),
        "{err}"
    );
    // Back up, the first change completes and everyone agrees.
    c.start_node(followers[0], false)?;
    c.start_node(followers[1], false)?;
    // The removed node is told, and stops.
    let mut removed: Proc = c.node_mut(followers[2]).proc.take().expect("running");
    let deadline = Instant::now() + Duration::from_secs(30);
    while removed.is_running() {
        if Instant::now() > deadline {
            bail!("the removed node still runs\n{}", removed.log_tail(20));
        }
        sleep(Duration::from_millis(100)).await;
    }
    assert!(
        removed
            .log_tail(50)
            .contains("was removed from the cluster"),
        "{}",
        removed.log_tail(20)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = agreed_members(&c, Duration::from_secs(30)).await?;
        if v.len() == 4 && v.iter().all(|m| m.1 && m.0 != followers[2]) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the forced removal did not complete: {v:?}");
        }
        sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
