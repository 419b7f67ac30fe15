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
