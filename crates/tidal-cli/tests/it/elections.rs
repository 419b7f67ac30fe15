//! Elections with a pre-vote, on real processes: a follower that stops
//! hearing the leader while the rest of the group does cannot raise the
//! term, so when it hears the leader again it rejoins without an election.

use std::time::Duration;

use anyhow::Context;
use tidal_client::v1;
use tokio::time::sleep;

use crate::harness::{Cluster, ClusterOpts, Relay};

/// How long the follower hears nothing: many election timeouts (150-300 ms
/// by default), each of which would have been a campaign at a higher term.
const CUT_OFF_FOR: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_from_the_leader_rejoins_without_an_election() -> anyhow::Result<()> {
    let mut c = Cluster::new(ClusterOpts {
        join: false,
        ..Default::default()
    })?;
    // Node 3 is reached through a relay (its advertised address): cutting the
    // relay silences the leader's AppendEntries to it, while node 3 can still
    // reach the others and ask them for (pre-)votes.
    let relay = Relay::start(&c.node(3).addr).await?;
    c.start_node(1, true)?;
    c.wait_leader(Duration::from_secs(20)).await?;
    c.start_node(2, false)?;
    c.start_node_with(3, false, &["--advertise".into(), relay.addr.clone()])?;
    for (id, addr) in [(2, c.node(2).addr.clone()), (3, relay.addr.clone())] {
        c.client
            .add_learner(id, &addr)
            .await
            .context("add-learner")?;
        c.client.promote(id).await.context("promote")?;
    }
    let before = c.client.status().await?;
    assert_eq!(before.leader_id, 1);

    relay.cut();
    // Writes go on without node 3 (a majority of two), so its log falls behind.
    let submitted = c
        .client
        .submit(vec![v1::TaskSpec {
            task_type: "t2i".into(),
            payload: b"while node 3 is cut off".to_vec(),
            ..Default::default()
        }])
        .await?;
    assert!(submitted[0].error.as_ref().is_none_or(|e| e.code == 0));
    sleep(CUT_OFF_FOR).await; // the fault's duration, not a wait for an event
    let during = c.client.status().await?;
    relay.heal();
    c.wait_caught_up(3, Duration::from_secs(20)).await?;

    let after = c.client.status().await?;
    let third = c.client.status_of(&c.node(3).addr).await?;
    assert_eq!(
        (during.leader_id, during.term),
        (before.leader_id, before.term),
        "the cut-off follower deposed the leader\n{}",
        c.logs_tail(30)
    );
    assert_eq!(
        (after.leader_id, after.term, third.term),
        (before.leader_id, before.term, before.term),
        "the follower's return caused an election\n{}",
        c.logs_tail(30)
    );
    assert_eq!(third.leader_id, before.leader_id);
    Ok(())
}

/// How often a log sync of a server stalls in
/// [`a_leader_whose_disk_stalls_longer_than_the_election_timeout_stays_leader`],
/// and for how long: longer than the election timeout (150-300 ms), shorter
/// than the tolerance of a leader's wait for its disk (3 x 300 ms) even when
/// an append waits for a stalled sync before its own.
const STALLING_SYNCS: &str = "store::flush::before_sync=30%sleep(300)";

/// openraft 0.9's Raft core waits for each log append's sync before it does
/// anything else, so a leader whose disk stalls for longer than the election
/// timeout sends nothing meanwhile, and its voters would elect another. The
/// leader tells its voters it is alive meanwhile (raft::alive), and its
/// check-quorum excuses the silence its own disk caused: writes go on under
/// the same leader and term. (The `failpoints` build the tests run makes a
/// third of every server's log syncs stall for 300 ms.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_disk_stalls_longer_than_the_election_timeout_stays_leader(
) -> anyhow::Result<()> {
    let mut c = Cluster::new_spec(ClusterOpts::default(), |s| {
        s.server_env = vec![("FAILPOINTS".into(), STALLING_SYNCS.into())];
    })?;
    c.launch().await?;
    let before = c.client.status().await?;
    for i in 0..20 {
        let submitted = c
            .client
            .submit(vec![v1::TaskSpec {
                task_type: "t2i".into(),
                payload: format!("written through a stalling disk {i}").into_bytes(),
                ..Default::default()
            }])
            .await?;
        assert!(
            submitted[0].error.as_ref().is_none_or(|e| e.code == 0),
            "{submitted:?}"
        );
    }
    let after = c.client.status().await?;
    assert_eq!(
        (after.leader_id, after.term),
        (before.leader_id, before.term),
        "a stalling disk cost an election\n{}",
        c.logs_tail(40)
    );
    let leader = c
        .node(before.leader_id)
        .proc
        .as_ref()
        .context("the leader runs")?;
    let log = std::fs::read_to_string(&leader.log)?;
    assert!(
        log.contains("telling the voters it is alive"),
        "the leader's core never waited long for its disk\n{}",
        c.logs_tail(40)
    );
    Ok(())
}
