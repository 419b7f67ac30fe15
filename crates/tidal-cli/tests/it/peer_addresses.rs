//! Members with a peer address (`tidal cluster add-learner --peer-addr`), on
//! real processes: the other servers replicate to it, transfer leadership
//! to it and are led by it through that address, while Members, Status and
//! redirects name its client address.

use std::time::Duration;

use anyhow::{bail, Context};
use tidal_client::v1;
use tokio::time::{sleep, Instant};

use crate::harness::{Cluster, ClusterOpts, Relay};

const WAIT: Duration = Duration::from_secs(20);

/// The leader's view of member `id`: its address and matched index.
async fn member(c: &Cluster, id: u64) -> anyhow::Result<v1::Member> {
    c.client
        .members()
        .await?
        .members
        .into_iter()
        .find(|m| m.id == id)
        .with_context(|| format!("node {id} is not a member"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_a_peer_address_is_replicated_to_and_led_through_it() -> anyhow::Result<()> {
    let mut c = Cluster::new(ClusterOpts {
        nodes: 4,
        join: false,
        ..Default::default()
    })?;
    c.launch().await?;
    for id in [2, 3] {
        c.client.add_learner(id, &c.node(id).addr.clone()).await?;
        c.client.promote(id).await?;
    }
    // Node 4's peer address is a relay to it: what goes through the relay
    // is what the other servers send it.
    let client_addr = c.node(4).addr.clone();
    let relay = Relay::start(&client_addr).await?;

    // A peer address must be one HOST:PORT.
    for bad in ["127.0.0.1:1|127.0.0.1:2", "not-an-address"] {
        let err = c
            .client
            .add_learner_with_peer(4, &client_addr, Some(bad))
            .await
            .unwrap_err();
        assert_eq!(err.code, tonic::Code::InvalidArgument, "{bad}: {err:?}");
        assert!(err.message.contains("peer address"), "{err:?}");
    }
    let out = c.tidal_ok(&[
        "cluster",
        "add-learner",
        "--id",
        "4",
        "--addr",
        &client_addr,
        "--peer-addr",
        &relay.addr,
        "--wait",
    ])?;
    assert!(out.contains(&client_addr), "{out}");
    assert!(!out.contains(&relay.addr), "{out}");
    c.client.promote(4).await?;
    c.wait_caught_up(4, WAIT).await?;
    let m = member(&c, 4).await?;
    assert_eq!(m.addr, client_addr, "Members shows the client address");

    // Cut the peer address: node 4 falls behind, though clients reach it.
    // (A few writes: one sent while the relay was closing may get through.)
    relay.cut();
    for i in 0..3 {
        c.client
            .submit_one(v1::TaskSpec {
                task_type: "t2i".into(),
                payload: format!("{i}: while node 4's peer address is cut").into_bytes(),
                ..Default::default()
            })
            .await?;
    }
    let last = c.client.status().await?.last_log_index;
    let cut_at = c.client.status_of(&client_addr).await?.applied_index;
    assert!(
        cut_at < last,
        "node 4 at {cut_at} got entry {last} past the cut relay"
    );
    relay.heal();
    c.wait_caught_up(4, WAIT).await?;

    // Leadership moves to node 4 through its peer address (hold, campaign);
    // then every node names node 4's client address as the leader's.
    c.client.transfer_leader(4).await?;
    let deadline = Instant::now() + WAIT;
    loop {
        let mut seen = Vec::new();
        for id in 1..=4 {
            let s = c.client.status_of(&c.node(id).addr.clone()).await?;
            seen.push((s.leader_id, s.leader_addr));
        }
        if seen.iter().all(|s| *s == (4, client_addr.clone())) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the nodes name {seen:?} as the leader\n{}", c.logs_tail(20));
        }
        sleep(Duration::from_millis(50)).await;
    }
    // Node 4 leads: it replicates to the others, and writes go on.
    let before = c.client.status_of(&client_addr).await?.last_log_index;
    c.client
        .submit_one(v1::TaskSpec {
            task_type: "t2i".into(),
            payload: b"with node 4 leading".to_vec(),
            ..Default::default()
        })
        .await?;
    for id in 1..=3 {
        let s = c.wait_caught_up(id, WAIT).await?;
        assert!(s.applied_index > before, "node {id}: {s:?}");
    }
    let members = c.client.members().await?;
    let addrs: Vec<(u64, String)> = members
        .members
        .into_iter()
        .map(|m| (m.id, m.addr))
        .collect();
    let want: Vec<(u64, String)> = (1..=4).map(|id| (id, c.node(id).addr.clone())).collect();
    assert_eq!(addrs, want);
    Ok(())
}
