//! A DC from the kit over mutual TLS and tokens (the kit's defaults): an agent runs a task and the kit's CLI works; a member removed, wiped and given a new certificate for its node id joins again at the same address, replicates and votes.

use std::time::Duration;

use tidal_client::v1;
use tokio::time::{sleep, Instant};

use crate::harness::{AgentOpts, Cluster, ClusterOpts};

const WAIT: Duration = Duration::from_secs(30);

fn task(payload: &str) -> v1::TaskSpec {
    v1::TaskSpec {
        task_type: "t2i".into(),
        payload: payload.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// Waits until task `id` succeeded.
async fn succeeded(c: &Cluster, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let t = c.client.get_task(id, false).await?;
        if tidal_client::task_state_name(t.state) == "succeeded" {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "task {id} did not succeed: {t:?}\n{}",
            c.logs_tail(30)
        );
        sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_readded_with_a_new_certificate_joins_replicates_and_votes() -> anyhow::Result<()>
{
    let mut c = Cluster::new(ClusterOpts::default())?;
    c.launch().await?;
    assert!(c.endpoints_arg().starts_with("https://"));
    c.start_agent(AgentOpts::new("gpu-1", &["t2i"]))?;
    c.wait_agents(1, WAIT).await?;
    // The kit's CLI (TIDAL_TLS_DIR, https:// endpoints) and its client.
    let id = c.tidal_ok(&["task", "submit", "--type", "t2i", "--payload", "before"])?;
    succeeded(&c, id.trim()).await?;

    // Remove a follower (--force: two voters are left meanwhile); it says
    // so and stops.
    let (leader, _) = c.wait_leader(WAIT).await?;
    let victim = if leader == 3 { 2 } else { 3 };
    let other = 6 - leader - victim;
    c.tidal_ok(&["cluster", "remove", &victim.to_string(), "--force"])?;
    let mut removed = c.node_mut(victim).proc.take().expect("running");
    anyhow::ensure!(
        removed.wait_exit(WAIT).await.is_some(),
        "the removed node still runs\n{}",
        removed.log_tail(20)
    );
    assert!(
        removed
            .log_tail(50)
            .contains("was removed from the cluster"),
        "{}",
        removed.log_tail(20)
    );

    // Wiped, with a new key and certificate for the same node id, at the
    // same address: it joins again.
    std::fs::remove_dir_all(&c.node(victim).data)?;
    let old = c.node(victim).tls_dir.clone().expect("a TLS directory");
    let new = c.reissue_node_cert(victim)?;
    assert_ne!(
        std::fs::read(old.join("cert.pem"))?,
        std::fs::read(new.join("cert.pem"))?
    );
    c.start_node(victim, false)?;
    let addr = c.node(victim).addr.clone();
    let victim_arg = victim.to_string();
    c.tidal_ok(&[
        "cluster",
        "add-learner",
        "--id",
        &victim_arg,
        "--addr",
        &addr,
        "--wait",
    ])?;
    c.tidal_ok(&["cluster", "promote", &victim_arg])?;

    // It replicates: with the third node down, a write commits only with
    // its acknowledgement.
    c.kill_node(other);
    let r = c
        .client
        .submit_one(task("with the new certificate"))
        .await?;
    succeeded(&c, &r.id).await?;
    c.wait_caught_up(victim, WAIT).await?;

    // It votes: with the third node back and the leader killed, a new leader
    // needs its vote or is itself.
    c.restart_node(other)?;
    c.wait_caught_up(other, WAIT).await?;
    c.kill_node(leader);
    let deadline = Instant::now() + WAIT;
    let new_leader = loop {
        if let Some(l) = c.leader().await.filter(|l| *l != leader) {
            break l;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no new leader\n{}",
            c.logs_tail(30)
        );
        sleep(Duration::from_millis(100)).await;
    };
    let r = c.client.submit_one(task("after the leader change")).await?;
    succeeded(&c, &r.id).await?;
    c.wait_caught_up(victim, WAIT).await?;
    c.wait_caught_up(other, WAIT).await?;
    let m = c.client.members().await?;
    assert_eq!(m.leader_id, new_leader);
    let mut voters: Vec<u64> = m.members.iter().filter(|m| m.voter).map(|m| m.id).collect();
    voters.sort();
    assert_eq!(voters, [1, 2, 3]);
    Ok(())
}
