//! Large entries: a follower that was down while megabytes of tasks were
//! submitted catches up. openraft gives every AppendEntries the Raft
//! heartbeat interval (100 ms) to complete, so the server keeps entries and
//! each AppendEntries to about a megabyte; without that, a follower behind
//! by large entries could never catch up.

use std::time::Duration;

use tidal_client::v1;

use crate::harness::{Cluster, ClusterOpts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_catches_up_on_megabytes_of_entries() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    c.kill_node(3);
    // 24 requests of 500 tasks of 4 KiB: 48 MiB, some requests concurrent.
    let mut handles = Vec::new();
    for r in 0..24 {
        let client = c.client.clone();
        handles.push(tokio::spawn(async move {
            let specs: Vec<v1::TaskSpec> = (0..500)
                .map(|i| v1::TaskSpec {
                    task_type: "t2i".into(),
                    payload: vec![b'p'; 4096],
                    idempotency_key: format!("big-{r}-{i}"),
                    ..Default::default()
                })
                .collect();
            client.submit(specs).await
        }));
        if r % 4 == 3 {
            for h in handles.drain(..) {
                let results = h.await??;
                assert!(results.iter().all(|r| r.error.is_none()));
            }
        }
    }
    c.start_node(3, false)?;
    let s = c.wait_caught_up(3, Duration::from_secs(60)).await?;
    assert_eq!(s.tasks_by_state.get("pending"), Some(&12_000));
    Ok(())
}

/// After a restart of the whole group, the leader does not know what its
/// followers hold, and openraft would send them everything from the middle
/// of the log on: here megabytes each. The transport first asks whether a
/// follower holds the last entry of a batch and sends nothing it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_group_does_not_send_its_followers_the_log_again() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    for r in 0..6 {
        let specs: Vec<v1::TaskSpec> = (0..250)
            .map(|i| v1::TaskSpec {
                task_type: "t2i".into(),
                payload: vec![b'p'; 4096],
                idempotency_key: format!("restart-{r}-{i}"),
                ..Default::default()
            })
            .collect();
        let results = c.client.submit(specs).await?;
        assert!(results.iter().all(|r| r.error.is_none()));
    }
    for id in 1..=3 {
        c.wait_caught_up(id, Duration::from_secs(30)).await?;
    }
    for id in 1..=3 {
        c.kill_node(id);
    }
    for id in 1..=3 {
        c.start_node(id, false)?;
    }
    let (leader, _) = c.wait_leader(Duration::from_secs(30)).await?;
    // A new entry after the held log ends the leader's probing.
    c.client
        .submit(vec![v1::TaskSpec {
            task_type: "t2i".into(),
            idempotency_key: "after-restart".into(),
            ..Default::default()
        }])
        .await?;
    for id in 1..=3 {
        let s = c.wait_caught_up(id, Duration::from_secs(30)).await?;
        assert_eq!(s.tasks_by_state.get("pending"), Some(&1_501));
    }
    let log = std::fs::read_to_string(c.dir.path().join(format!("node{leader}.log")))?;
    let skipped = log
        .lines()
        .filter(|l| l.contains("already held the log up to here"))
        .count();
    assert!(
        skipped >= 1,
        "the new leader {leader} found its followers holding the log:\n{}",
        c.logs_tail(30)
    );
    Ok(())
}
