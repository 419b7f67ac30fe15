//! Members with a peer address (`tidal server --peer-listen`, `--init`,
//! `tidal cluster add-learner --peer-addr`), on real processes: the other
//! servers replicate to it, transfer leadership to it and are led by it
//! through that address, while Members, Status and redirects name its
//! client address.

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
    wait_all_led_by(&c, &[1, 2, 3, 4], 4).await?;
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

/// Waits until every node of `ids` names `leader` (at its client address).
async fn wait_all_led_by(c: &Cluster, ids: &[u64], leader: u64) -> anyhow::Result<()> {
    let want = (leader, c.node(leader).addr.clone());
    let deadline = Instant::now() + WAIT;
    loop {
        let mut seen = Vec::new();
        for id in ids {
            let s = c.client.status_of(&c.node(*id).addr.clone()).await?;
            seen.push((s.leader_id, s.leader_addr));
        }
        if seen.iter().all(|s| *s == want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the nodes name {seen:?} as the leader\n{}", c.logs_tail(20));
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// Three nodes with peer listeners, the first made with `--init`, and a
/// fourth added with `--peer-addr`: node 1's and node 4's peer addresses
/// are relays, so cutting one shows the servers use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_with_peer_listeners_replicate_through_them() -> anyhow::Result<()> {
    let mut c = Cluster::new_with(
        ClusterOpts {
            nodes: 4,
            join: false,
            ..Default::default()
        },
        true,
    )?;
    let peer = |c: &Cluster, id: u64| c.node(id).peer_addr.clone().expect("a peer port");
    let relay1 = Relay::start(&peer(&c, 1)).await?;
    let relay4 = Relay::start(&peer(&c, 4)).await?;
    let advertise = |r: &Relay| vec!["--peer-advertise".to_string(), r.addr.clone()];
    c.start_node_with(1, true, &advertise(&relay1))?;
    c.wait_leader(WAIT).await?;
    c.start_node(2, false)?;
    c.start_node(3, false)?;
    c.start_node_with(4, false, &advertise(&relay4))?;
    for id in [2, 3] {
        let (addr, peer) = (c.node(id).addr.clone(), peer(&c, id));
        c.client
            .add_learner_with_peer(id, &addr, Some(&peer))
            .await?;
        c.client.promote(id).await?;
    }
    let client4 = c.node(4).addr.clone();
    c.tidal_ok(&[
        "cluster",
        "add-learner",
        "--id",
        "4",
        "--addr",
        &client4,
        "--peer-addr",
        &relay4.addr,
        "--wait",
    ])?;
    c.client.promote(4).await?;
    c.wait_caught_up(4, WAIT).await?;
    let addrs: Vec<(u64, String)> = c
        .client
        .members()
        .await?
        .members
        .into_iter()
        .map(|m| (m.id, m.addr))
        .collect();
    let want: Vec<(u64, String)> = (1..=4).map(|id| (id, c.node(id).addr.clone())).collect();
    assert_eq!(addrs, want, "Members shows the client addresses");

    // Node 2 leads; node 1 (the --init node) is reached at the peer
    // address its first membership named.
    c.client.transfer_leader(2).await?;
    wait_all_led_by(&c, &[1, 2, 3, 4], 2).await?;
    for (relay, id) in [(&relay1, 1), (&relay4, 4)] {
        relay.cut();
        for i in 0..3 {
            c.client
                .submit_one(v1::TaskSpec {
                    task_type: "t2i".into(),
                    payload: format!("{i}: while node {id}'s peer address is cut").into_bytes(),
                    ..Default::default()
                })
                .await?;
        }
        let last = c.client.status().await?.last_log_index;
        let cut_at = c
            .client
            .status_of(&c.node(id).addr.clone())
            .await?
            .applied_index;
        assert!(
            cut_at < last,
            "node {id} at {cut_at} got entry {last} past the cut relay"
        );
        relay.heal();
        c.wait_caught_up(id, WAIT).await?;
    }
    Ok(())
}

/// The kit's own join (`--peer-addr` for every node) on peer listeners: a
/// leader killed is replaced by an election over the peer addresses, and
/// writes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_cluster_on_peer_listeners_elects_a_new_leader() -> anyhow::Result<()> {
    let mut c = Cluster::new_with(ClusterOpts::default(), true)?;
    c.launch().await?;
    let (old, _) = c.wait_leader(WAIT).await?;
    c.kill_node(old);
    let deadline = Instant::now() + WAIT;
    let new = loop {
        if let Some(l) = c.leader().await.filter(|l| *l != old) {
            break l;
        }
        if Instant::now() > deadline {
            bail!(
                "no new leader after node {old} was killed\n{}",
                c.logs_tail(20)
            );
        }
        sleep(Duration::from_millis(50)).await;
    };
    c.client
        .submit_one(v1::TaskSpec {
            task_type: "t2i".into(),
            payload: b"after the election".to_vec(),
            ..Default::default()
        })
        .await?;
    let s = c.client.status().await?;
    assert_eq!(
        (s.leader_id, s.leader_addr),
        (new, c.node(new).addr.clone())
    );
    Ok(())
}
