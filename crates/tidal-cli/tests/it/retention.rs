//! Retention with real servers: a finished task and its idempotency key are
//! removed `--retain-finished-ms` after it finished, on every replica alike;
//! `task get` then says it expired, and the key can be used again.

use std::time::Duration;

use tidal_client::v1;
use tokio::time::Instant;
use tonic::Code;

use crate::harness::{Cluster, ClusterOpts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_task_expires_its_key_is_free_and_get_says_expired() -> anyhow::Result<()> {
    let c = Cluster::start(ClusterOpts {
        server_args: vec!["--retain-finished-ms".into(), "1500".into()],
        ..ClusterOpts::default()
    })
    .await?;
    let spec = v1::TaskSpec {
        task_type: "t2i".into(),
        idempotency_key: "retained".into(),
        payload: b"x".to_vec(),
        ..Default::default()
    };
    let first = c.client.submit_one(spec.clone()).await?;
    let kept = c
        .client
        .submit_one(v1::TaskSpec {
            idempotency_key: "still-pending".into(),
            ..spec.clone()
        })
        .await?;
    // Cancelled is finished: no agent needed.
    let cancelled_at = Instant::now();
    c.client.cancel_task(&first.id).await?;
    // Within the retention it is still there, and the key still answers.
    let again = c.client.submit_one(spec.clone()).await?;
    assert_eq!(
        (again.id.as_str(), again.existed),
        (first.id.as_str(), true)
    );

    // The leader expires it about 1.5 s after it finished (polled: the
    // expiry is the leader's own timer, nothing a client can wait on).
    let deadline = Instant::now() + Duration::from_secs(20);
    let e = loop {
        match c.client.get_task(&first.id, false).await {
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Ok(t) => anyhow::bail!("task {} never expired: {t:?}", first.id),
            Err(e) => break e,
        }
    };
    assert!(
        cancelled_at.elapsed() >= Duration::from_millis(1_400),
        "expired too early: {:?}",
        cancelled_at.elapsed()
    );
    assert_eq!(e.code, Code::NotFound, "{e}");
    assert!(e.message.contains("expired"), "{e}");
    let e = c.client.cancel_task(&first.id).await.unwrap_err();
    assert!(
        e.code == Code::NotFound && e.message.contains("expired"),
        "{e}"
    );
    // A task that never existed is just not found.
    let e = c.client.get_task("t0000099999", false).await.unwrap_err();
    assert_eq!(e.code, Code::NotFound);
    assert!(!e.message.contains("expired"), "{e}");
    // An unfinished task is kept however old.
    assert_eq!(
        c.client.get_task(&kept.id, false).await?.state,
        v1::TaskState::Pending as i32
    );
    // The key is free again: a new task.
    let reused = c.client.submit_one(spec.clone()).await?;
    assert!(!reused.existed && reused.id != first.id, "{reused:?}");
    // Every replica removed the same tasks: equal state digests.
    for id in 2..=3 {
        c.wait_caught_up(id, Duration::from_secs(20)).await?;
    }
    let status = c.client.status().await?;
    assert_eq!(
        status.tasks_by_state.get("cancelled"),
        Some(&0),
        "{status:?}"
    );
    Ok(())
}
