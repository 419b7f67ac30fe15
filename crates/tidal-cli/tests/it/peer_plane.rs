//! The peer plane with `--peer-listen`, on real processes at 127.0.0.11-13 (each dialing from its own IP, `--source-ip`): the cluster elects, replicates and runs a task through the peer listeners, while Raft calls on a client port, or from 127.0.0.1 (no member) on a peer port, are PERMISSION_DENIED and change nothing.

use std::net::IpAddr;
use std::time::Duration;

use prost::Message;
use tidal_testkit::ports::Port;

use crate::harness::{AgentOpts, Cluster, ClusterOpts};

pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// Node `id`'s IP.
pub(crate) fn ip(id: u64) -> IpAddr {
    ip_in(10, id)
}

/// Node `id`'s IP in a cluster at 127.0.0.(base+1)-(base+3).
pub(crate) fn ip_in(base: u8, id: u64) -> IpAddr {
    format!("127.0.0.{}", u64::from(base) + id).parse().unwrap()
}

/// A 3-node cluster at 127.0.0.11-13, each node with a peer listener on
/// its own IP; returns it with the peer addresses (held ports).
pub(crate) async fn start() -> anyhow::Result<(Cluster, Vec<Port>)> {
    let (mut c, peers) = plan("dc1", ip)?;
    launch(
        &mut c,
        &peers,
        |id| ip(id).to_string(),
        |id| peers[(id - 1) as usize].addr().to_string(),
    )
    .await?;
    Ok((c, peers))
}

/// A 3-node plaintext cluster of `dc` under `--auth none`, nothing started: node `id`'s client port and
/// peer port (returned) held on `ip(id)`.
pub(crate) fn plan(dc: &str, ip: impl Fn(u64) -> IpAddr) -> anyhow::Result<(Cluster, Vec<Port>)> {
    // The plaintext peer plane: no TLS, and `--auth none`.
    let mut c = Cluster::new_plaintext(ClusterOpts {
        nodes: 3,
        dc: dc.into(),
        join: false,
        ..ClusterOpts::default()
    })?;
    let mut peers = Vec::new();
    for id in 1..=3 {
        let port = Port::on(ip(id))?;
        let n = c.node_mut(id);
        n.addr = port.addr().to_string();
        n.port = port;
        peers.push(Port::on(ip(id))?);
    }
    c.client = tidal_client::Client::with_options(c.endpoints(), c.spec.client.clone())?;
    Ok((c, peers))
}

/// Starts node 1 with `--init`, then adds nodes 2 and 3 as learners with
/// `peer_addr(id)` and promotes them; node `id` gets `--peer-listen` on its
/// peer port, `--peer-advertise peer_addr(id)` and `--source-ip source(id)`.
pub(crate) async fn launch(
    c: &mut Cluster,
    peers: &[Port],
    source: impl Fn(u64) -> String,
    peer_addr: impl Fn(u64) -> String,
) -> anyhow::Result<()> {
    let own = |id: u64| -> Vec<String> {
        vec![
            "--peer-listen".into(),
            peers[(id - 1) as usize].addr().to_string(),
            "--peer-advertise".into(),
            peer_addr(id),
            "--source-ip".into(),
            source(id),
        ]
    };
    c.start_node_with(1, true, &own(1))?;
    c.wait_leader(WAIT).await?;
    for id in 2..=3 {
        c.start_node_with(id, false, &own(id))?;
        let addr = c.node(id).addr.clone();
        c.client
            .add_learner_with_peer(id, &addr, Some(&peer_addr(id)))
            .await?;
        c.wait_caught_up(id, WAIT).await?;
        c.client.promote(id).await?;
    }
    Ok(())
}

/// POSTs one encoded gRPC message to `path` at `addr` on a fresh HTTP/2 connection
/// opened from `from`, and returns the call's grpc-status and grpc-message.
pub(crate) async fn raw_call(
    from: IpAddr,
    addr: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(i32, String)> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((from, 0).into())?;
    let tcp = socket.connect(addr.parse()?).await?;
    let mut framed = vec![0];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(body);
    crate::strict_input::raw_call_on(tcp, addr, path, framed).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_raft_calls_are_refused_and_the_cluster_runs_through_its_peer_listeners(
) -> anyhow::Result<()> {
    let (mut c, peers) = start().await?;
    let (leader, _) = c.wait_leader(WAIT).await?;
    let before = c.client.members().await?;
    assert_eq!(before.members.iter().filter(|m| m.voter).count(), 3);

    // Forged calls to node 1: a removal notice from the leader, a long
    // hold of elections, a campaign.
    let removed = tidal_proto::raft::RemovedNotice {
        node_id: 1,
        leader_id: leader,
        membership_index: 1,
    };
    let hold = tidal_proto::raft::HoldElectionsRequest { millis: 40_000 };
    let campaign = tidal_proto::raft::CampaignRequest { node_id: 1 };
    let calls = [
        ("/tidal.raft.v1.Raft/Removed", removed.encode_to_vec()),
        ("/tidal.raft.v1.Raft/HoldElections", hold.encode_to_vec()),
        ("/tidal.raft.v1.Raft/Campaign", campaign.encode_to_vec()),
    ];
    let client_port = c.node(1).addr.clone();
    let peer_port = peers[0].addr().to_string();
    let localhost: IpAddr = "127.0.0.1".parse()?;
    for (path, msg) in calls {
        // On the client port, even from a member's IP.
        for from in [localhost, ip(2)] {
            let (code, message) = raw_call(from, &client_port, path, &msg).await?;
            assert_eq!(code, 7, "{path} on the client port from {from}: {message}");
            assert!(message.contains("peer listener only"), "{message}");
        }
        // On the peer port, from an IP no member has.
        let (code, message) = raw_call(localhost, &peer_port, path, &msg).await?;
        assert_eq!(code, 7, "{path} on the peer port from 127.0.0.1: {message}");
        assert!(
            message.contains("127.0.0.1 is not the peer address of a member"),
            "{message}"
        );
    }
    // A member cannot speak for another: node 2's IP, naming node 3.
    let as_3 = tidal_proto::raft::RemovedNotice {
        node_id: 1,
        leader_id: 3,
        membership_index: 1,
    };
    let (code, message) = raw_call(
        ip(2),
        &peer_port,
        "/tidal.raft.v1.Raft/Removed",
        &as_3.encode_to_vec(),
    )
    .await?;
    assert_eq!(code, 7, "{message}");
    assert!(
        message.contains("names node 3, but 127.0.0.12 is node 2"),
        "{message}"
    );

    // Node 1 runs on, and the refusals are in its log with the address.
    assert!(
        c.node_mut(1).proc.as_mut().unwrap().running(),
        "{}",
        c.logs_tail(20)
    );
    let log = std::fs::read_to_string(c.dir.path().join("node1.log"))?;
    assert!(
        log.contains("refused a call") && log.contains("127.0.0.1:"),
        "{log}"
    );
    assert!(!log.contains("was removed from the cluster"), "{log}");

    // The cluster replicates and runs a task as before.
    c.start_agent(AgentOpts::new("agent-1", &["t2i"]))?;
    c.wait_agents(1, WAIT).await?;
    run_task(&c, "before").await?;
    for id in 1..=3 {
        c.wait_caught_up(id, WAIT).await?;
    }
    // A new leader is elected through the peer listeners.
    c.kill_node(leader);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(l) = c.leader().await.filter(|l| *l != leader) {
            let s = c.client.status_of(&c.node(l).addr.clone()).await?;
            assert_eq!(s.role, "leader");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new leader\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run_task(&c, "after a new election").await?;
    Ok(())
}

/// Submits a task and waits until it succeeded.
pub(crate) async fn run_task(c: &Cluster, payload: &str) -> anyhow::Result<()> {
    let id = c.tidal_ok(&["task", "submit", "--type", "t2i", "--payload", payload])?;
    let id = id.trim();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let t: serde_json::Value =
            serde_json::from_str(&c.tidal_ok(&["task", "get", id, "-o", "json"])?)?;
        if t["state"] == "succeeded" {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "task {id} not done: {t}\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
