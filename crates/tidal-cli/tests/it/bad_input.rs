//! Bad input against a real server: each is refused with a clear message,
//! the right gRPC status code and a non-zero exit, and nothing accepted
//! before is lost or changed.

use std::time::Duration;

use tidal_client::v1::{self, agent_message::Msg as In, server_message::Msg as Out};
use tokio::sync::mpsc;
use tonic::Code;

use crate::harness::{Cluster, ClusterOpts};

/// Runs the CLI, expects exit code 1 and returns stderr.
fn refused(c: &Cluster, args: &[&str]) -> String {
    let o = c.tidal(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{args:?} should be refused: {err}"
    );
    assert!(o.stdout.is_empty(), "{args:?} printed on stdout");
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    err
}

fn spec(task_type: &str) -> v1::TaskSpec {
    v1::TaskSpec {
        task_type: task_type.into(),
        payload: b"x".to_vec(),
        ..Default::default()
    }
}

fn agent_spec(id: &str, slots: u32) -> v1::AgentSpec {
    v1::AgentSpec {
        id: id.into(),
        dc: "dc1".into(),
        task_types: vec!["t2i".into()],
        slots,
        ..Default::default()
    }
}

fn register(spec: v1::AgentSpec) -> v1::AgentMessage {
    v1::AgentMessage {
        msg: Some(In::Register(v1::Register {
            spec: Some(spec),
            running: vec![],
            instance: String::new(),
            fenced: vec![],
            warm_models: vec![],
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_nothing_accepted_is_lost() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts {
        server_args: vec![
            "--max-payload-bytes".into(),
            "1000".into(),
            "--max-batch".into(),
            "50".into(),
        ],
        ..ClusterOpts::default()
    })
    .await?;
    c.tidal_ok(&["queue", "set", "vip", "--weight", "8"])?;
    let kept = c.tidal_ok(&[
        "task",
        "submit",
        "--type",
        "t2i",
        "--queue",
        "vip",
        "--key",
        "kept",
        "--payload",
        "keep me",
    ])?;
    let kept = kept.trim().to_string();
    let before = c.client.get_task(&kept, false).await?;
    let status_before = c.client.status().await?;

    // Through the CLI: the message names the problem, the exit code is 1.
    let long = "q".repeat(200);
    let big = "p".repeat(2000);
    for (args, says) in [
        (
            vec!["task", "submit", "--type", "", "--payload", "x"],
            "task_type \"\" is empty",
        ),
        (
            vec![
                "task",
                "submit",
                "--type",
                "t2i",
                "--queue",
                &long,
                "--payload",
                "x",
            ],
            "over the limit of 128",
        ),
        (
            vec![
                "task",
                "submit",
                "--type",
                "t2i",
                "--queue",
                "nope",
                "--payload",
                "x",
            ],
            "queue \"nope\" does not exist",
        ),
        (
            vec!["task", "submit", "--type", "t 2 i", "--payload", "x"],
            "use only letters",
        ),
        (
            vec!["task", "submit", "--type", "t2i", "--payload", &big],
            "over the limit of 1000 bytes",
        ),
        (
            vec![
                "task",
                "submit",
                "--type",
                "t2i",
                "--count",
                "51",
                "--payload",
                "x",
            ],
            "over the batch limit of 50",
        ),
        (vec!["queue", "set", "vip", "--weight", "0"], "weight"),
        (
            vec!["queue", "set", "", "--weight", "1"],
            "queue \"\" is empty",
        ),
        (
            vec![
                "cluster",
                "add-learner",
                "--id",
                "2",
                "--addr",
                "127.0.0.1:1",
            ],
            "member id 2 is already in use",
        ),
        (
            vec![
                "cluster",
                "add-learner",
                "--id",
                "9",
                "--addr",
                &c.node(2).addr.clone(),
            ],
            "already",
        ),
        (
            vec![
                "cluster",
                "add-learner",
                "--id",
                "9",
                "--addr",
                "not-an-address",
            ],
            "not-an-address",
        ),
        (vec!["cluster", "promote", "9"], "9"),
        (vec!["task", "cancel", "t0000099999"], "not found"),
        (vec!["task", "get", "banana"], "banana"),
    ] {
        let err = refused(&c, &args);
        assert!(err.contains(says), "{args:?}: expected {says:?} in {err}");
    }

    // Through the API: the gRPC codes.
    let code =
        |r: Result<v1::SubmitResult, tidal_client::Error>| r.expect_err("must be refused").code;
    assert_eq!(
        code(c.client.submit_one(spec("")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            c.client
                .submit_one(v1::TaskSpec {
                    queue: "nope".into(),
                    ..spec("t2i")
                })
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            c.client
                .submit_one(v1::TaskSpec {
                    payload: vec![0; 1001],
                    ..spec("t2i")
                })
                .await
        ),
        Code::ResourceExhausted
    );
    let e = c
        .client
        .submit((0..51).map(|_| spec("t2i")).collect())
        .await
        .expect_err("batch over the limit");
    assert_eq!(e.code, Code::ResourceExhausted);
    // One bad item in a batch is refused alone; the good ones are accepted.
    let mixed = c
        .client
        .submit(vec![spec("t2i"), spec(""), spec("tts")])
        .await?;
    assert!(
        mixed[0].error.is_none() && mixed[2].error.is_none(),
        "{mixed:?}"
    );
    assert_eq!(
        mixed[1].error.as_ref().map(|e| e.code),
        Some(Code::InvalidArgument as i32)
    );
    assert_eq!(
        c.client
            .add_learner(2, "127.0.0.1:1")
            .await
            .unwrap_err()
            .code,
        Code::AlreadyExists
    );
    assert_eq!(
        c.client.add_learner(9, "nope").await.unwrap_err().code,
        Code::InvalidArgument
    );
    assert_eq!(
        c.client
            .get_task("t0000099999", false)
            .await
            .unwrap_err()
            .code,
        Code::NotFound
    );
    assert_eq!(
        c.client.cancel_task("t0000099999").await.unwrap_err().code,
        Code::NotFound
    );

    // Agents: zero slots and a foreign DC are refused at registration.
    let agent = c.agent_client("probe")?;
    let (_tx, rx) = mpsc::channel(1);
    let e = agent
        .open_session(register(agent_spec("zero", 0)), rx)
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument, "{e}");
    assert!(e.to_string().contains("slots"), "{e}");
    let (_tx, rx) = mpsc::channel(1);
    let e = agent
        .open_session(
            register(v1::AgentSpec {
                dc: "elsewhere".into(),
                ..agent_spec("far", 1)
            }),
            rx,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument, "{e}");

    // A completion for an unknown task is answered as refused, and the
    // session stays usable.
    let (tx, rx) = mpsc::channel(4);
    let mut session = agent
        .open_session(register(agent_spec("probe", 1)), rx)
        .await?;
    let first = session.inbound.message().await?.and_then(|m| m.msg);
    assert!(matches!(first, Some(Out::Registered(_))), "{first:?}");
    tx.send(v1::AgentMessage {
        msg: Some(In::Completed(v1::TaskCompleted {
            task_id: "t0000099999".into(),
            token: 7,
            success: true,
            ..Default::default()
        })),
    })
    .await?;
    tx.send(v1::AgentMessage {
        msg: Some(In::Heartbeat(v1::Heartbeat {
            seq: 1,
            free_slots: 1,
            warm_models: vec![],
        })),
    })
    .await?;
    let (mut ack, mut hb) = (None, None);
    while ack.is_none() || hb.is_none() {
        let m = tokio::time::timeout(Duration::from_secs(10), session.inbound.message()).await??;
        match m.and_then(|m| m.msg) {
            Some(Out::CompletionAck(a)) => ack = Some(a),
            Some(Out::HeartbeatAck(h)) => hb = Some(h),
            // The probe agent may be offered the pending tasks; not this test's concern.
            Some(_) => {}
            None => anyhow::bail!("the session ended"),
        }
    }
    let ack = ack.expect("loop ends with an ack");
    assert!(!ack.accepted);
    // The leader proposes a completion only from the session that holds
    // the assignment, so one for a task this session never held is refused
    // before it reaches the log.
    assert!(ack.reason.contains("never held"), "{ack:?}");
    assert_eq!(hb.map(|h| h.seq), Some(1));

    // Nothing accepted before is lost or changed, and no refused request
    // added a task: only the two good items of the mixed batch did.
    let after = c.client.get_task(&kept, false).await?;
    assert_eq!(
        (after.id, after.spec, after.created_ms),
        (before.id, before.spec, before.created_ms)
    );
    let members = c.client.members().await?;
    assert_eq!(members.members.len(), 3);
    assert!(members.members.iter().all(|m| m.voter && m.id <= 3));
    let status_after = c.client.status().await?;
    let total = |s: &v1::StatusResponse| s.tasks_by_state.values().sum::<u64>();
    assert_eq!(total(&status_after), total(&status_before) + 2);
    Ok(())
}
