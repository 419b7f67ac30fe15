//! Checkpoints through a real agent session (cluster format version 4): a
//! worker writes $TIDAL_CHECKPOINT_FILE and exits non-zero; the agent sends
//! the checkpoint, the leader commits it before the failed completion, the
//! retry's assignment carries it and the agent writes it to the retry's
//! checkpoint file before the worker starts. And an attempt reported
//! timed out (TaskCompleted.timed_out) is acknowledged and retried.

use std::time::{Duration, Instant};

use crate::harness::{AgentOpts, Cluster, ClusterOpts};

const WAIT: Duration = Duration::from_secs(30);

/// Waits until the cluster is at the lifecycle's format version (a new
/// cluster raises itself to the build's newest at once).
async fn wait_lifecycle(c: &Cluster) {
    let deadline = Instant::now() + WAIT;
    loop {
        let at = c
            .client
            .status()
            .await
            .map(|s| s.cluster_format_version)
            .unwrap_or(0);
        if at >= u32::from(tidal_core::lifecycle::LIFECYCLE_VERSION) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster stays at format version {at}\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The task's JSON once it has ended.
async fn wait_done(c: &Cluster, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let t: serde_json::Value =
            serde_json::from_str(&c.tidal_ok(&["task", "get", id, "-o", "json"]).unwrap()).unwrap();
        if ["succeeded", "failed", "cancelled"].contains(&t["state"].as_str().unwrap_or("")) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "task not done: {t}\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_starts_from_the_checkpoint_of_the_failed_attempt() {
    let mut c = Cluster::start(ClusterOpts {
        nodes: 1,
        ..ClusterOpts::default()
    })
    .await
    .expect("cluster");
    wait_lifecycle(&c).await;
    // First attempt: no checkpoint yet; it writes one naming its token
    // (renamed into place, as a worker should) and fails. A retry finds
    // it and says so in its result.
    let script = r#"
        if [ -s "$TIDAL_CHECKPOINT_FILE" ]; then
            printf 'resumed from '; cat "$TIDAL_CHECKPOINT_FILE"; exit 0
        fi
        printf 'step-%s' "$TIDAL_FENCING_TOKEN" > "$TIDAL_CHECKPOINT_FILE.new"
        mv "$TIDAL_CHECKPOINT_FILE.new" "$TIDAL_CHECKPOINT_FILE"
        exit 3
    "#;
    c.start_agent(AgentOpts::new("agent-1", &["t2i"]).command(&["sh", "-c", script]))
        .unwrap();
    c.wait_agents(1, WAIT).await.unwrap();
    let id = c
        .tidal_ok(&[
            "task",
            "submit",
            "--type",
            "t2i",
            "--payload",
            "x",
            "--max-attempts",
            "3",
        ])
        .unwrap()
        .trim()
        .to_string();
    let t = wait_done(&c, &id).await;
    assert_eq!(t["state"], "succeeded", "{t}\n{}", c.logs_tail(40));
    assert_eq!(t["attempt"], 2, "{t}");
    let result = t["result"].as_str().unwrap_or_default();
    let first: u64 = result
        .strip_prefix("resumed from step-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the retry did not get the checkpoint: {t}"));
    assert!(
        first < t["token"].as_u64().unwrap(),
        "the checkpoint is the first attempt's: {t}"
    );
}

/// The next message of the session that is not a heartbeat ack.
async fn next_msg(
    session: &mut tidal_client::Session,
    c: &Cluster,
) -> tidal_client::v1::server_message::Msg {
    loop {
        let Ok(next) = tokio::time::timeout(WAIT, session.inbound.message()).await else {
            panic!("nothing on the session\n{}", c.logs_tail(30))
        };
        let m = next
            .expect("session")
            .and_then(|m| m.msg)
            .expect("a message");
        if !matches!(m, tidal_client::v1::server_message::Msg::HeartbeatAck(_)) {
            return m;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_answered_and_a_timed_out_attempt_is_acknowledged_and_retried() {
    use tidal_client::v1::{self, agent_message::Msg as In, server_message::Msg as Out};
    let mut c = Cluster::start(ClusterOpts {
        nodes: 1,
        ..ClusterOpts::default()
    })
    .await
    .expect("cluster");
    wait_lifecycle(&c).await;
    // An agent session of this test's own, to report the attempt as an
    // agent does when it ends one for running past its max-run time.
    let agent = c.agent_client("probe").unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let register = v1::AgentMessage {
        msg: Some(In::Register(v1::Register {
            spec: Some(v1::AgentSpec {
                id: "probe".into(),
                dc: "dc1".into(),
                task_types: vec!["t2i".into()],
                slots: 1,
                ..Default::default()
            }),
            ..Default::default()
        })),
    };
    let mut session = agent.open_session(register, rx).await.expect("session");
    assert!(matches!(
        next_msg(&mut session, &c).await,
        Out::Registered(_)
    ));
    let id = c
        .tidal_ok(&[
            "task",
            "submit",
            "--type",
            "t2i",
            "--payload",
            "x",
            "--max-attempts",
            "2",
        ])
        .unwrap()
        .trim()
        .to_string();
    let Out::Assignment(first) = next_msg(&mut session, &c).await else {
        panic!("no assignment")
    };
    assert_eq!((first.task_id.as_str(), first.attempt), (id.as_str(), 1));
    // Each checkpoint is answered with its seq: committed under the
    // attempt's token, refused under another.
    for (token, seq, accepted) in [(first.token, 7, true), (first.token + 1, 8, false)] {
        let m = In::Checkpoint(v1::TaskCheckpoint {
            task_id: id.clone(),
            token,
            data: b"step 1".to_vec(),
            seq,
        });
        tx.send(v1::AgentMessage { msg: Some(m) }).await.unwrap();
        let Out::CheckpointAck(ack) = next_msg(&mut session, &c).await else {
            panic!("no checkpoint ack")
        };
        assert_eq!(
            (ack.task_id.as_str(), ack.token, ack.seq, ack.accepted),
            (id.as_str(), token, seq, accepted),
            "{ack:?}"
        );
        assert_eq!(ack.reason.is_empty(), accepted, "{ack:?}");
    }
    for m in [
        In::Started(v1::TaskStarted {
            task_id: id.clone(),
            token: first.token,
        }),
        In::Completed(v1::TaskCompleted {
            task_id: id.clone(),
            token: first.token,
            success: false,
            error: "ran longer than its max-run time".into(),
            exit_code: -1,
            timed_out: true,
            ..Default::default()
        }),
    ] {
        tx.send(v1::AgentMessage { msg: Some(m) }).await.unwrap();
    }
    let Out::CompletionAck(ack) = next_msg(&mut session, &c).await else {
        panic!("no completion ack")
    };
    assert!(ack.accepted, "{ack:?}");
    // Retried after its backoff, on the only agent there is.
    let Out::Assignment(retry) = next_msg(&mut session, &c).await else {
        panic!("no retry")
    };
    assert_eq!((retry.task_id.as_str(), retry.attempt), (id.as_str(), 2));
    assert!(retry.token > first.token);
}
