//! Two DCs with `--peer-listen` on both, on real processes (dc-a at 127.0.0.21-23, dc-b at 127.0.0.31-33, each node dialing from its own IP): exchanges flow between the peer listeners and a task forwarded from A runs in B, while an exchange from a non-peer, on a public port, or from a member of B posing as dc-a is PERMISSION_DENIED.

use std::time::Duration;

use prost::Message;
use tidal_client::v1;
use tidal_testkit::ports::Port;

use crate::harness::AgentOpts;
use crate::peer_plane::{ip_in, launch, plan, raw_call, WAIT};

const EXCHANGE: &str = "/tidal.v1.Dcs/Exchange";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dcs_exchange_between_peer_listeners_and_refuse_everyone_else() -> anyhow::Result<()> {
    let (mut a, a_peers) = plan("dc-a", |id| ip_in(20, id))?;
    let (mut b, b_peers) = plan("dc-b", |id| ip_in(30, id))?;
    // Each DC names the other's peer listeners as its endpoints.
    let list = |p: &[Port]| {
        p.iter()
            .map(|p| p.addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    a.spec.server_args = vec!["--peer".into(), format!("dc-b={}", list(&b_peers))];
    b.spec.server_args = vec!["--peer".into(), format!("dc-a={}", list(&a_peers))];
    let peer = |p: &[Port], id: u64| p[(id - 1) as usize].addr().to_string();
    launch(
        &mut a,
        &a_peers,
        |id| ip_in(20, id).to_string(),
        |id| peer(&a_peers, id),
    )
    .await?;
    launch(
        &mut b,
        &b_peers,
        |id| ip_in(30, id).to_string(),
        |id| peer(&b_peers, id),
    )
    .await?;
    b.start_agent(AgentOpts::new("b-1", &["tts"]))?;
    b.wait_agents(1, WAIT).await?;

    // B's summary reaches A over the exchange.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = a.client.dc_status().await?;
        let p = s.peers.first().cloned().unwrap_or_default();
        if p.summary.as_ref().is_some_and(|s| !s.groups.is_empty()) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no summary from dc-b: {s:?}\n{}{}",
            a.logs_tail(15),
            b.logs_tail(15)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A tts task submitted in A runs in B and its result comes back.
    let id = a.tidal_ok(&["task", "submit", "--type", "tts", "--payload", "across"])?;
    let id = id.trim();
    let deadline = tokio::time::Instant::now() + WAIT;
    let task = loop {
        let t = a.client.get_task(id, false).await?;
        if t.state == v1::TaskState::Succeeded as i32 {
            break t;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{id} not done in A: {t:?}\n{}{}",
            a.logs_tail(15),
            b.logs_tail(15)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(task.forwarded_to, "dc-b");
    assert_eq!(task.agent, "b-1");

    // Forged exchanges into B.
    let forged = |origin: &str| {
        v1::ExchangeRequest {
            origin_dc: origin.into(),
            target_dc: "dc-b".into(),
            body: vec![0; 8],
        }
        .encode_to_vec()
    };
    let local = "127.0.0.1".parse()?;
    let b_peer = peer(&b_peers, 1);
    let b_public = b.node(1).addr.clone();
    let cases = [
        // A non-peer, on the peer port.
        (
            local,
            &b_peer,
            "dc-a",
            "127.0.0.1 is neither a member of this DC nor an endpoint of a peer DC",
        ),
        // A non-peer, on the public port.
        (local, &b_public, "dc-a", "served on the peer listener only"),
        // A member of B posing as dc-a (not passing an exchange on).
        (
            ip_in(30, 2),
            &b_peer,
            "dc-a",
            "127.0.0.32 is not an endpoint of peer DC \"dc-a\"",
        ),
        // A's node, on B's public port.
        (
            ip_in(20, 1),
            &b_public,
            "dc-a",
            "served on the peer listener only",
        ),
    ];
    for (from, addr, origin, why) in cases {
        let (code, message) = raw_call(from, addr, EXCHANGE, &forged(origin)).await?;
        assert_eq!(code, 7, "from {from} to {addr}: {message}");
        assert!(message.contains(why), "from {from} to {addr}: {message}");
    }
    let log = std::fs::read_to_string(b.dir.path().join("node1.log"))?;
    assert!(
        log.contains("refused a call") && log.contains("remote=127.0.0.1:"),
        "{log}"
    );

    // The exchange goes on: a second task crosses after the refusals.
    let id = a.tidal_ok(&["task", "submit", "--type", "tts", "--payload", "again"])?;
    let id = id.trim();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let t = a.client.get_task(id, false).await?;
        if t.state == v1::TaskState::Succeeded as i32 {
            assert_eq!(t.forwarded_to, "dc-b");
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{id} not done in A: {t:?}\n{}{}",
            a.logs_tail(15),
            b.logs_tail(15)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
