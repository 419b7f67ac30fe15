//! Peer addresses that are names: a 3-node cluster with `--peer-advertise localhost:PORT` (resolved by the peer plane's rules) elects, replicates, runs tasks and elects again through its peer listeners, and still refuses a Raft call from an IP `localhost` does not resolve to.

use prost::Message;

use crate::harness::AgentOpts;
use crate::peer_plane::{launch, plan, raw_call, run_task, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_named_localhost_are_recognised_by_their_resolved_ip() -> anyhow::Result<()> {
    // Every node at 127.0.0.1, its peer address named localhost.
    let local: std::net::IpAddr = "127.0.0.1".parse()?;
    let (mut c, peers) = plan("dc1", |_| local)?;
    let named = |id: u64| format!("localhost:{}", peers[(id - 1) as usize].port());
    launch(&mut c, &peers, |_| "127.0.0.1".into(), named).await?;
    let members = c.client.members().await?;
    assert_eq!(members.members.iter().filter(|m| m.voter).count(), 3);

    c.start_agent(AgentOpts::new("agent-1", &["t2i"]))?;
    c.wait_agents(1, WAIT).await?;
    run_task(&c, "named peers").await?;
    for id in 1..=3 {
        c.wait_caught_up(id, WAIT).await?;
    }

    // 127.0.0.2 is not what localhost resolves to.
    let hold = tidal_proto::raft::HoldElectionsRequest { millis: 40_000 }.encode_to_vec();
    let (code, message) = raw_call(
        "127.0.0.2".parse()?,
        &peers[1].addr().to_string(),
        "/tidal.raft.v1.Raft/HoldElections",
        &hold,
    )
    .await?;
    assert_eq!(code, 7, "{message}");
    assert!(
        message.contains("127.0.0.2 is not the peer address of a member"),
        "{message}"
    );

    // A new leader is elected over the named peer addresses.
    let (leader, _) = c.wait_leader(WAIT).await?;
    c.kill_node(leader);
    let deadline = tokio::time::Instant::now() + WAIT;
    while c.leader().await.filter(|l| *l != leader).is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new leader\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    run_task(&c, "named peers, new leader").await?;
    Ok(())
}
