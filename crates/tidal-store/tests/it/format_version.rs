//! Cluster format versions at the state machine: an entry or a snapshot of a
//! version the node does not support stops apply before it (never skipped),
//! the reason is recorded for the server, and nothing after it is applied.

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use tidal_core::{Body, Command, Envelope, FORMAT_VERSION_MAX};
use tidal_store::{decode_snapshot, encode_snapshot, StoreError, StoreOptions};

use crate::common;

fn open_supporting(
    dir: &std::path::Path,
    max: u8,
) -> (tidal_store::LogStore, tidal_store::StateMachineStore) {
    tidal_store::open(
        dir,
        StoreOptions {
            max_format_version: Some(max),
            ..StoreOptions::default()
        },
    )
    .expect("open the store")
}

fn raise(index: u64) -> tidal_store::Entry {
    common::normal(1, index, Command::SetClusterVersion { version: 2 })
}

#[tokio::test]
async fn an_entry_of_an_unsupported_version_halts_apply_instead_of_skipping_it() {
    let (dir_new, dir_old) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_l1, mut new) = common::open(dir_new.path());
    let (_l2, mut old) = open_supporting(dir_old.path(), 1);
    assert_eq!(old.supported_format_version(), 1);

    let mut entries = common::entries(1, 10);
    entries.push(raise(11));
    entries.extend(common::entries(12, 15));
    let n = entries.len();
    let responses = new.apply(entries.clone()).await.expect("apply");
    assert_eq!(responses.len(), n);
    assert_eq!(new.handle().read().state.cluster_version(), 2);

    // The node of version 1 applies up to entry 10, then stops at 11.
    let err = old.apply(entries).await.unwrap_err();
    assert!(
        err.to_string().contains("cluster format version 2"),
        "{err}"
    );
    let applied = old.handle().read().clone();
    assert_eq!(applied.last_applied, Some(common::log_id(1, 10)));
    assert_eq!(applied.state.cluster_version(), 1);
    let halted = old.failures().halted().expect("the halt is recorded");
    assert_eq!((halted.needed, halted.supported), (2, 1));
    assert!(
        halted
            .to_string()
            .contains("entry 11 needs cluster format version 2"),
        "{halted}"
    );
    assert_eq!(old.failures().first(), None, "not a write failure");

    // A replica that supports version 2 goes on where it stopped and ends
    // in the same state as the others (nothing was skipped).
    let (_l3, mut again) = common::open(tempfile::tempdir().unwrap().path());
    common::apply(&mut again, common::entries(1, 10)).await;
    let mut rest = vec![raise(11)];
    rest.extend(common::entries(12, 15));
    common::apply(&mut again, rest).await;
    assert_eq!(
        again.handle().read().state.digest(),
        new.handle().read().state.digest()
    );
}

#[tokio::test]
async fn an_entry_of_a_version_this_build_does_not_know_halts_apply() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = common::open(dir.path());
    common::apply(&mut sm, common::entries(1, 5)).await;
    let future = tidal_store::Entry {
        log_id: common::log_id(1, 6),
        payload: openraft::EntryPayload::Normal(Envelope {
            version: FORMAT_VERSION_MAX + 1,
            time_ms: 6,
            body: Body::Undecoded {
                bytes: vec![250, 1, 2, 3],
                reason: "from a newer build".into(),
            },
        }),
    };
    let before = sm.handle().read().clone();
    let err = sm
        .apply(vec![future, common::normal(1, 7, Command::Noop)])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("needs cluster format version"),
        "{err}"
    );
    assert_eq!(*sm.handle().read(), before, "nothing applied");
    assert_eq!(
        sm.failures().halted().map(|h| h.needed),
        Some(FORMAT_VERSION_MAX + 1)
    );
}

#[tokio::test]
async fn snapshots_carry_the_cluster_version_and_an_unsupported_one_is_refused() {
    let (dir_a, dir_b, dir_c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (_la, mut a) = common::open(dir_a.path());
    common::apply(&mut a, common::entries(1, 8)).await;

    // At version 1 a snapshot is what builds before format versions wrote.
    let v1 = a.handle().read().clone();
    let bytes = encode_snapshot(&v1).unwrap();
    assert_eq!(
        bytes,
        tidal_store::codec::encode("snapshot data", &v1).unwrap()
    );
    assert_eq!(decode_snapshot(&bytes).unwrap().state.cluster_version(), 1);

    common::apply(&mut a, vec![raise(9)]).await;
    let built = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let v2 = a.handle().read().clone();
    assert_eq!(v2.state.cluster_version(), 2);
    let decoded = decode_snapshot(&built.snapshot.clone().into_inner()).unwrap();
    assert_eq!(decoded, v2);
    assert_eq!(decoded.state.digest(), v2.state.digest());

    // A node that supports version 2 installs it; one of version 1 stops.
    let (_lb, mut b) = common::open(dir_b.path());
    let mut receiving = b.begin_receiving_snapshot().await.unwrap();
    *receiving = *built.snapshot.clone();
    b.install_snapshot(&built.meta, receiving).await.unwrap();
    assert_eq!(b.handle().read().state.cluster_version(), 2);

    let (_lc, mut c) = open_supporting(dir_c.path(), 1);
    let mut receiving = c.begin_receiving_snapshot().await.unwrap();
    *receiving = *built.snapshot.clone();
    let err = c
        .install_snapshot(&built.meta, receiving)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("cluster format version 2"),
        "{err}"
    );
    assert_eq!(c.failures().halted().map(|h| h.needed), Some(2));
    assert_eq!(c.handle().read().last_applied, None);

    // Reopened as a node of version 1, b's stored snapshot is refused.
    drop((_lb, b));
    let err = loop {
        match tidal_store::open(
            dir_b.path(),
            StoreOptions {
                max_format_version: Some(1),
                ..StoreOptions::default()
            },
        ) {
            Err(e) if e.to_string().contains("lock") => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            Err(e) => break e,
            Ok(_) => panic!("a version-1 node opened a version-2 snapshot"),
        }
    };
    assert!(
        matches!(
            err,
            StoreError::NeedsFormatVersion {
                needed: 2,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );

    // A snapshot of a version above the build's is refused as such.
    let mut future = v2.clone();
    future.state.restore_cluster_version(FORMAT_VERSION_MAX + 1);
    let body = bincode::serde::encode_to_vec(
        (&future, FORMAT_VERSION_MAX + 1),
        bincode::config::standard(),
    )
    .unwrap();
    let mut bytes = vec![tidal_store::codec::FORMAT_VERSION];
    bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    assert!(matches!(
        decode_snapshot(&bytes),
        Err(StoreError::NeedsFormatVersion { .. })
    ));
}

/// A state with something in each of its maps and sets: tasks (pending,
/// assigned, finished, forwarded, cancelled, ingested), keys, queues,
/// agents, an outbox, an inbound origin and a refusal.
async fn every_kind_of_entry(sm: &mut tidal_store::StateMachineStore) {
    use tidal_core::forwarding::{Record, Verdict};
    use tidal_core::{AgentSpec, Completion, Outcome, Priority, Strategy, TaskId, TaskSpec};
    let spec = |i: u64, queue: &str, priority| TaskSpec {
        task_type: "t2i".to_string(),
        queue: queue.to_string(),
        idempotency_key: i.is_multiple_of(2).then(|| format!("key-{i}")),
        payload: i.to_be_bytes().to_vec(),
        priority,
        tenant: "alice".to_string(),
        ..Default::default()
    };
    let commands = vec![
        Command::SetQueue {
            name: "q1".to_string(),
            weight: 3,
            strategy: Strategy::LeastLoaded,
        },
        Command::RegisterAgent(AgentSpec {
            id: "agent-a".to_string(),
            dc: "dc1".to_string(),
            task_types: ["t2i".to_string()].into_iter().collect(),
            slots: 4,
            weight: 1,
            ..Default::default()
        }),
        // Tasks 1-6.
        Command::Submit(vec![
            spec(1, "default", Priority::Nearline),
            spec(2, "q1", Priority::Online),
            spec(3, "default", Priority::Offline),
            spec(4, "q1", Priority::Nearline),
            spec(5, "default", Priority::Online),
            spec(6, "q1", Priority::Offline),
        ]),
        // Entry 6: its index is the token of tasks 1 and 2.
        Command::Assign(vec![
            (TaskId(1), "agent-a".to_string()),
            (TaskId(2), "agent-a".to_string()),
        ]),
        Command::Complete(vec![Completion {
            task: TaskId(1),
            token: 6,
            outcome: Outcome {
                success: true,
                result: b"done".to_vec(),
                error: String::new(),
                exit_code: 0,
            },
        }]),
        Command::Forward(vec![
            (TaskId(3), "dc2".to_string()),
            (TaskId(4), "dc2".to_string()),
        ]),
        Command::Forward(vec![(TaskId(5), "dc3".to_string())]),
        Command::ForwardAck {
            peer: "dc2".to_string(),
            verdicts: vec![
                (
                    1,
                    Verdict::Accepted {
                        remote_task: Some(TaskId(70)),
                    },
                ),
                (
                    2,
                    Verdict::Rejected {
                        reason: "no agent".to_string(),
                    },
                ),
            ],
        },
        Command::Cancel { task: TaskId(3) },
        Command::Ingest {
            origin: "dc9".to_string(),
            records: vec![(
                1,
                Record::Task {
                    origin_task: TaskId(40),
                    spec: spec(40, "default", Priority::Nearline),
                },
            )],
        },
    ];
    let mut entries = common::entries(1, 2);
    entries.extend(
        commands
            .into_iter()
            .enumerate()
            .map(|(i, c)| common::normal(1, 3 + i as u64, c)),
    );
    let responses = sm.apply(entries).await.expect("apply");
    for r in &responses {
        assert!(!format!("{r:?}").contains("Rejected"), "{responses:?}");
    }
}

/// The snapshot encoding of a fixed state is byte for byte the checked-in
/// one, and so is its digest: a change of the state's types must not change
/// what is on disk or what `status --digest` compares. Rewrite with
/// `TIDAL_REWRITE_GOLDEN=1` only when a new format version says so.
#[tokio::test]
async fn a_fixed_state_encodes_to_the_checked_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = common::open(dir.path());
    every_kind_of_entry(&mut sm).await;
    let applied = sm.handle().read().clone();
    let state = &applied.state;
    assert_eq!(state.outbox("dc3").map(|o| o.records.len()), Some(1));
    assert_eq!(state.inbound("dc9").map(|i| i.tasks.len()), Some(1));
    check_golden("state-v1", &applied);
}

/// Checks `applied`'s snapshot encoding and digest against
/// `testdata/<name>.snapshot` and `.digest`, and that the checked-in bytes
/// decode to it.
fn check_golden(name: &str, applied: &tidal_store::Applied) {
    let bytes = encode_snapshot(applied).unwrap();
    let digest = format!("{:016x}\n", applied.state.digest());
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/testdata");
    let (bytes_file, digest_file) = (
        golden.join(format!("{name}.snapshot")),
        golden.join(format!("{name}.digest")),
    );
    if std::env::var_os("TIDAL_REWRITE_GOLDEN").is_some() {
        std::fs::create_dir_all(&golden).unwrap();
        std::fs::write(&bytes_file, &bytes).unwrap();
        std::fs::write(&digest_file, &digest).unwrap();
    }
    let want = std::fs::read(&bytes_file).expect("the checked-in snapshot");
    assert!(bytes == want, "the encoding of the fixed state changed");
    assert_eq!(digest, std::fs::read_to_string(&digest_file).unwrap());
    let decoded = decode_snapshot(&want).unwrap();
    assert_eq!(&decoded, applied);
    assert_eq!(decoded.state.digest(), applied.state.digest());
}

/// [`every_kind_of_entry`], then the cluster raised to version 3 and one of
/// each access command: tokens (one revoked), a tenant, a `SubmitAs` with a
/// placed pair, and an agent registered under its token. Entries 13-21.
async fn every_kind_of_entry_v3(sm: &mut tidal_store::StateMachineStore) {
    use tidal_core::access::{Principal, Role, SubmitRate, TenantLimits, TokenRecord};
    use tidal_core::{AgentSpec, TaskSpec};
    every_kind_of_entry(sm).await;
    let token = |hash: u8, name: &str, role, tenant: Option<&str>| TokenRecord {
        hash: [hash; 32],
        name: name.to_string(),
        role,
        tenant: tenant.map(str::to_string),
        created_ms: 0,
        expires_ms: Some(9_000_000),
        created_by: "token:bootstrap".to_string(),
        revoked_ms: None,
    };
    let commands = vec![
        Command::SetClusterVersion { version: 3 },
        Command::CreateToken {
            id: "00000000000000a1".to_string(),
            record: token(1, "bootstrap", Role::Admin, None),
            first_only: true,
        },
        Command::CreateToken {
            id: "00000000000000b2".to_string(),
            record: token(2, "alice", Role::User, Some("alice")),
            first_only: false,
        },
        Command::CreateToken {
            id: "00000000000000c3".to_string(),
            record: token(3, "gpu-agents", Role::Agent, None),
            first_only: false,
        },
        Command::CreateToken {
            id: "00000000000000d4".to_string(),
            record: token(4, "old", Role::User, Some("bob")),
            first_only: false,
        },
        Command::RevokeToken {
            id: "00000000000000d4".to_string(),
        },
        Command::SetTenant {
            name: "alice".to_string(),
            limits: TenantLimits {
                max_pending: Some(100),
                max_running_slots: Some(8),
                max_gpus: Some(2),
                submit_rate: Some(SubmitRate {
                    per_s: 50,
                    burst: 100,
                }),
                weight: 2,
            },
        },
        Command::RegisterAgentAs {
            spec: AgentSpec {
                id: "agent-b".to_string(),
                dc: "dc1".to_string(),
                task_types: ["t2i".to_string()].into_iter().collect(),
                slots: 2,
                weight: 1,
                ..Default::default()
            },
            token: "00000000000000c3".to_string(),
        },
        Command::SubmitAs {
            specs: vec![
                TaskSpec {
                    task_type: "t2i".to_string(),
                    payload: b"as-alice".to_vec(),
                    tenant: "alice".to_string(),
                    ..Default::default()
                },
                TaskSpec {
                    task_type: "t2i".to_string(),
                    idempotency_key: Some("key-as".to_string()),
                    tenant: "alice".to_string(),
                    ..Default::default()
                },
            ],
            place: vec![(0, "agent-b".to_string())],
            by: vec![
                Principal {
                    id: "token:alice".to_string(),
                    role: Role::User,
                };
                2
            ],
        },
    ];
    let entries: Vec<_> = commands
        .into_iter()
        .enumerate()
        .map(|(i, c)| common::normal(1, 13 + i as u64, c))
        .collect();
    let responses = sm.apply(entries).await.expect("apply");
    for r in &responses {
        assert!(!format!("{r:?}").contains("Rejected"), "{responses:?}");
    }
}

/// The same for a state of cluster format version 3: the snapshot carries
/// the access section after the version byte, and the digest covers it.
#[tokio::test]
async fn a_fixed_state_of_version_3_encodes_to_the_checked_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = common::open(dir.path());
    every_kind_of_entry_v3(&mut sm).await;
    let applied = sm.handle().read().clone();
    let access = applied.state.access();
    assert_eq!(applied.state.cluster_version(), 3);
    assert_eq!((access.tokens().count(), access.tokens_created()), (4, 4));
    assert!(!access.token_active("00000000000000d4", 1_000));
    assert_eq!(
        access.agent_token("agent-b").map(String::as_str),
        Some("00000000000000c3")
    );
    let usage = access.usage("alice");
    // Pending: tasks 4 (refused by dc2), 6, 7 (ingested) and the second of
    // SubmitAs; held: task 2 and the first of SubmitAs.
    assert_eq!((usage.pending, usage.running_slots), (4, 2), "{usage:?}");
    check_golden("state-v3", &applied);
}

#[tokio::test]
async fn a_snapshot_of_version_3_needs_a_node_of_version_3_and_its_section_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = common::open(dir.path());
    every_kind_of_entry_v3(&mut sm).await;
    let built = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let data = built.snapshot.clone().into_inner();
    let v3 = sm.handle().read().clone();
    let decoded = decode_snapshot(&data).unwrap();
    assert_eq!(decoded, v3);
    assert_eq!(decoded.state.access(), v3.state.access());

    // A node of version 2 stops at it.
    let dir_old = tempfile::tempdir().unwrap();
    let (_lo, mut old) = open_supporting(dir_old.path(), 2);
    let mut receiving = old.begin_receiving_snapshot().await.unwrap();
    *receiving = *built.snapshot.clone();
    let err = old
        .install_snapshot(&built.meta, receiving)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("cluster format version 3"),
        "{err}"
    );
    assert_eq!(old.failures().halted().map(|h| h.needed), Some(3));

    // The section must be there and read to its end.
    let reframe = |body: &[u8]| {
        let mut bytes = vec![tidal_store::codec::FORMAT_VERSION];
        bytes.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        bytes.extend_from_slice(body);
        bytes
    };
    let body = &data[5..];
    let mut longer = body.to_vec();
    longer.push(0);
    let short = bincode::serde::encode_to_vec((&v3, 3u8), bincode::config::standard()).unwrap();
    for bad in [longer, short, body[..body.len() - 1].to_vec()] {
        assert!(
            matches!(
                decode_snapshot(&reframe(&bad)),
                Err(StoreError::Corrupt { .. })
            ),
            "{:?}",
            decode_snapshot(&reframe(&bad)).map(|_| ())
        );
    }
}

/// [`every_kind_of_entry_v3`], then the cluster raised to version 4 and the
/// lifecycle commands: tasks submitted with options (deadlines, backoff,
/// max-run time, preemption opt-outs, notices, graces) on two agents with
/// GPUs and labels, an attempt that failed into its retry backoff, one that
/// failed as a dead letter and was replayed, a checkpoint, a missed
/// deadline, a suspended victim with its preemptor placed, a victim told to
/// stop for a preemptor that waits, and headroom. Entries 22-35; tasks 10-16.
async fn every_kind_of_entry_v4(sm: &mut tidal_store::StateMachineStore) {
    use tidal_core::lifecycle::{Headroom, Notice, OnDeadline, TaskOptions};
    use tidal_core::{AgentSpec, Finished, Gpu, Outcome, Priority, TaskId, TaskSpec};
    every_kind_of_entry_v3(sm).await;
    let agent = |id: &str, slots, gpus: usize, zone: &str| AgentSpec {
        id: id.to_string(),
        dc: "dc1".to_string(),
        task_types: ["t2i".to_string()].into_iter().collect(),
        models: ["sdxl".to_string()].into_iter().collect(),
        slots,
        weight: 2,
        gpus: vec![
            Gpu {
                model: "A100".to_string(),
                memory_mb: 81_920,
            };
            gpus
        ],
        labels: [("zone".to_string(), zone.to_string())]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let spec = |n: u8, priority, slots, gpus| TaskSpec {
        task_type: "t2i".to_string(),
        models: vec!["sdxl".to_string()],
        payload: vec![n; 3],
        priority,
        slots,
        gpus,
        gpu_memory_mb: if gpus > 0 { 40_000 } else { 0 },
        max_attempts: 2,
        tenant: "bob".to_string(),
        ..Default::default()
    };
    let failed = |task: u64, token: u64| Finished {
        task: TaskId(task),
        token,
        outcome: Outcome {
            success: false,
            result: Vec::new(),
            error: "exit status 3".to_string(),
            exit_code: 3,
        },
        timed_out: false,
    };
    let (t10, t11, t12, t13, t14, t15, t16) = (
        TaskId(10),
        TaskId(11),
        TaskId(12),
        TaskId(13),
        TaskId(14),
        TaskId(15),
        TaskId(16),
    );
    let commands = vec![
        // 22-24
        Command::SetClusterVersion { version: 4 },
        Command::RegisterAgent(agent("agent-c", 5, 2, "a")),
        Command::RegisterAgent(agent("agent-d", 1, 0, "b")),
        // 25: tasks 10-16; 10 placed on agent-c, 15 on agent-d.
        Command::SubmitWith {
            specs: vec![
                // 10: an offline victim paused in place.
                TaskSpec {
                    idempotency_key: Some("key-v4".to_string()),
                    ..spec(10, Priority::Offline, 3, 1)
                },
                // 11: retried after a backoff.
                spec(11, Priority::Nearline, 1, 0),
                // 12: fails once, a dead letter, replayed.
                TaskSpec {
                    max_attempts: 1,
                    ..spec(12, Priority::Offline, 1, 0)
                },
                // 13: its deadline passes while it waits.
                TaskSpec {
                    pipeline: "none-has-it".to_string(),
                    ..spec(13, Priority::Nearline, 1, 0)
                },
                // 14: online, preempts 10 on agent-c.
                spec(14, Priority::Online, 3, 1),
                // 15: a nearline victim told to stop.
                spec(15, Priority::Nearline, 1, 0),
                // 16: online, waits for 15 to stop.
                spec(16, Priority::Online, 1, 0),
            ],
            place: vec![(0, "agent-c".to_string()), (5, "agent-d".to_string())],
            by: Vec::new(),
            opts: vec![
                TaskOptions {
                    max_run_ms: Some(3_600_000),
                    suspendable: true,
                    ..TaskOptions::default()
                },
                TaskOptions {
                    backoff_base_ms: 2_000,
                    backoff_max_ms: 8_000,
                    preemptible: false,
                    ..TaskOptions::default()
                },
                TaskOptions::default(),
                TaskOptions {
                    deadline_ms: Some(1_020),
                    on_deadline: OnDeadline::Report,
                    ..TaskOptions::default()
                },
                TaskOptions {
                    deadline_ms: Some(9_000_000),
                    on_deadline: OnDeadline::Fail,
                    ..TaskOptions::default()
                },
                TaskOptions {
                    notice: Notice::File,
                    preempt_grace_ms: 30_000,
                    ..TaskOptions::default()
                },
            ],
        },
        // 26: tokens 26.
        Command::Assign(vec![
            (t11, "agent-c".to_string()),
            (t12, "agent-c".to_string()),
        ]),
        // 27-28
        Command::StartedBatch(vec![(t10, 25), (t11, 26), (t12, 26), (t15, 25)]),
        Command::Finished(vec![failed(11, 26), failed(12, 26)]),
        // 29
        Command::Checkpoint(vec![(t10, 25, b"step-400".to_vec())]),
        // 30-31: 10 is suspended and 14 assigned by entry 30; 15 is told
        // to stop for 16.
        Command::Preempt {
            task: t14,
            agent: "agent-c".to_string(),
            victims: vec![(t10, 25)],
        },
        Command::Preempt {
            task: t16,
            agent: "agent-d".to_string(),
            victims: vec![(t15, 25)],
        },
        // 32-35
        Command::Replay(vec![t12]),
        Command::DeadlineMissed(vec![t13]),
        Command::SetHeadroom {
            class: Priority::Online,
            headroom: Headroom { slots: 1, gpus: 1 },
        },
        Command::SetHeadroom {
            class: Priority::Nearline,
            headroom: Headroom { slots: 0, gpus: 1 },
        },
    ];
    let entries: Vec<_> = commands
        .into_iter()
        .enumerate()
        .map(|(i, c)| common::normal(1, 22 + i as u64, c))
        .collect();
    let responses = sm.apply(entries).await.expect("apply");
    for r in &responses {
        let r = format!("{r:?}");
        assert!(
            !r.contains("Rejected") && !r.contains("Err("),
            "{responses:#?}"
        );
    }
}

/// The same for a state of cluster format version 4: the snapshot carries
/// the lifecycle section after the access section, and the digest covers
/// it.
#[tokio::test]
async fn a_fixed_state_of_version_4_encodes_to_the_checked_in_bytes() {
    use tidal_core::lifecycle::{AttemptEnd, Headroom};
    use tidal_core::{Priority, TaskId, TaskState};
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = common::open(dir.path());
    every_kind_of_entry_v4(&mut sm).await;
    let applied = sm.handle().read().clone();
    let state = &applied.state;
    let life = state.lifecycle();
    assert_eq!(state.cluster_version(), 4);
    let task = |id| state.task(TaskId(id)).expect("the task");
    let lived = |id| life.task(TaskId(id)).expect("its lifecycle");

    // 10: paused in place by 14, its checkpoint kept; 14 holds agent-c.
    assert!(lived(10)
        .suspended
        .as_ref()
        .is_some_and(|s| s.by == TaskId(14)));
    assert_eq!(lived(10).preempted, 1);
    assert_eq!(
        lived(10).checkpoint.as_ref().map(|c| c.data.as_slice()),
        Some(&b"step-400"[..])
    );
    assert_eq!(
        task(14).state,
        TaskState::Assigned {
            agent: "agent-c".to_string(),
            token: 30
        }
    );
    // 11: Pending in its backoff after a failed attempt.
    assert_eq!(task(11).state, TaskState::Pending);
    assert!(lived(11).not_before_ms.is_some());
    assert_eq!(
        lived(11)
            .attempts
            .iter()
            .map(|a| a.end.clone())
            .collect::<Vec<_>>(),
        vec![Some(AttemptEnd::Failed { exit_code: 3 })]
    );
    // 12: a dead letter replayed, its history kept.
    assert_eq!(task(12).state, TaskState::Pending);
    assert!(!lived(12).dead && lived(12).budget_base == task(12).attempt);
    assert_eq!(lived(12).attempts.len(), 1);
    // 13: its deadline missed (reported, still Pending).
    assert!(lived(13).deadline_missed && task(13).state == TaskState::Pending);
    assert_eq!(life.deadlines_missed(), 1);
    // 15: told to stop for 16, which waits.
    assert!(lived(15)
        .preempting
        .as_ref()
        .is_some_and(|p| p.by == TaskId(16) && p.grace_ms == 30_000));
    assert_eq!(task(16).state, TaskState::Pending);
    assert_eq!(
        life.headroom(Priority::Online),
        Headroom { slots: 1, gpus: 1 }
    );
    check_golden("state-v4", &applied);
}

#[tokio::test]
async fn a_snapshot_of_version_4_needs_a_node_of_version_4_and_its_lifecycle_section_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = common::open(dir.path());
    every_kind_of_entry_v4(&mut sm).await;
    let built = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let data = built.snapshot.clone().into_inner();
    let v4 = sm.handle().read().clone();
    let decoded = decode_snapshot(&data).unwrap();
    // The lifecycle's indexes (backoffs, deadlines, preempted) are rebuilt.
    assert_eq!(decoded, v4);
    assert_eq!(decoded.state.lifecycle(), v4.state.lifecycle());
    assert_eq!(
        decoded.state.lifecycle().next_wake(),
        v4.state.lifecycle().next_wake()
    );

    // A node of version 3 stops at it.
    let dir_old = tempfile::tempdir().unwrap();
    let (_lo, mut old) = open_supporting(dir_old.path(), 3);
    let mut receiving = old.begin_receiving_snapshot().await.unwrap();
    *receiving = *built.snapshot.clone();
    let err = old
        .install_snapshot(&built.meta, receiving)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("cluster format version 4"),
        "{err}"
    );
    assert_eq!(old.failures().halted().map(|h| h.needed), Some(4));

    // The section must be there and read to its end.
    let reframe = |body: &[u8]| {
        let mut bytes = vec![tidal_store::codec::FORMAT_VERSION];
        bytes.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        bytes.extend_from_slice(body);
        bytes
    };
    let body = &data[5..];
    let mut longer = body.to_vec();
    longer.push(0);
    let short =
        bincode::serde::encode_to_vec((&v4, 4u8, v4.state.access()), bincode::config::standard())
            .unwrap();
    for bad in [longer, short, body[..body.len() - 1].to_vec()] {
        assert!(
            matches!(
                decode_snapshot(&reframe(&bad)),
                Err(StoreError::Corrupt { .. })
            ),
            "{:?}",
            decode_snapshot(&reframe(&bad)).map(|_| ())
        );
    }
}

/// [`every_kind_of_entry_v4`], then the cluster raised to version 5 and one
/// of each placement command: an agent with A100s and A40s, a
/// `SubmitWithPlacement` of a task with constraints, tags, a tag rule and a
/// hash key (placed: it holds a device), a shaped task (placed on its second
/// shape, then finished: its last shape and devices are kept) and a task no
/// agent meets (Pending with its ask); queues with the spread and bin-pack
/// strategies; the GPU weights. Entries 36-43.
async fn every_kind_of_entry_v5(sm: &mut tidal_store::StateMachineStore) {
    use std::collections::BTreeMap;
    use tidal_core::placement::types::{
        Constraint, GpuShape, Op, PlaceAsk, PlaceStrategy, QueuePlacement, RuleKind, Scope, TagRule,
    };
    use tidal_core::{AgentSpec, Finished, Gpu, Outcome, TaskId, TaskSpec};
    every_kind_of_entry_v4(sm).await;
    let gpu = |model: &str, memory_mb| Gpu {
        model: model.to_string(),
        memory_mb,
    };
    let agent_e = AgentSpec {
        id: "agent-e".to_string(),
        dc: "dc1".to_string(),
        task_types: ["train".to_string()].into_iter().collect(),
        slots: 4,
        weight: 1,
        gpus: vec![gpu("A100", 81_920), gpu("A40", 49_152), gpu("A40", 49_152)],
        labels: [("zone".to_string(), "c".to_string())]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let spec = |n: u8, gpus| TaskSpec {
        task_type: "train".to_string(),
        payload: vec![n; 2],
        gpus,
        ..Default::default()
    };
    let zone = |op, values: &[&str]| Constraint {
        key: "zone".to_string(),
        op,
        values: values.iter().map(|v| v.to_string()).collect(),
    };
    let tagged = PlaceAsk {
        constraints: vec![zone(Op::Eq, &["c"])],
        tags: vec!["web".to_string()],
        rules: vec![TagRule {
            kind: RuleKind::AntiAffinity,
            tag: "web".to_string(),
            scope: Scope::Label("zone".to_string()),
        }],
        shapes: Vec::new(),
        hash_key: Some("user-42".to_string()),
    };
    let shaped = PlaceAsk {
        shapes: vec![
            GpuShape {
                count: 2,
                model: Some("A100".to_string()),
                min_memory_mb: 0,
            },
            GpuShape {
                count: 2,
                model: Some("A40".to_string()),
                min_memory_mb: 40_000,
            },
        ],
        ..PlaceAsk::default()
    };
    let nowhere = PlaceAsk {
        constraints: vec![zone(Op::In, &["x", "y"])],
        rules: vec![TagRule {
            kind: RuleKind::MaxPer(2),
            tag: "web".to_string(),
            scope: Scope::Agent,
        }],
        ..PlaceAsk::default()
    };
    let commands = vec![
        // 36-37
        Command::SetClusterVersion { version: 5 },
        Command::RegisterAgent(agent_e),
        // 38: tasks 17-19; 17 and 18 placed on agent-e (token 38).
        Command::SubmitWithPlacement {
            specs: vec![
                TaskSpec {
                    idempotency_key: Some("key-v5".to_string()),
                    ..spec(17, 1)
                },
                spec(18, 0),
                spec(19, 0),
            ],
            place: vec![(0, "agent-e".to_string()), (1, "agent-e".to_string())],
            by: Vec::new(),
            opts: Vec::new(),
            asks: vec![tagged, shaped, nowhere],
        },
        // 39-40: 18 runs and succeeds.
        Command::StartedBatch(vec![(TaskId(18), 38)]),
        Command::Finished(vec![Finished {
            task: TaskId(18),
            token: 38,
            outcome: Outcome {
                success: true,
                result: b"ok".to_vec(),
                error: String::new(),
                exit_code: 0,
            },
            timed_out: false,
        }]),
        // 41-43
        Command::SetQueueWith {
            name: "spread-q".to_string(),
            weight: 3,
            placement: QueuePlacement {
                strategy: PlaceStrategy::Spread {
                    key: "zone".to_string(),
                },
            },
        },
        Command::SetQueueWith {
            name: "pack-q".to_string(),
            weight: 1,
            placement: QueuePlacement {
                strategy: PlaceStrategy::BinPack,
            },
        },
        Command::SetGpuWeights(BTreeMap::from([
            ("A100".to_string(), 1000),
            ("A40".to_string(), 400),
            ("H100".to_string(), 2500),
        ])),
    ];
    let entries: Vec<_> = commands
        .into_iter()
        .enumerate()
        .map(|(i, c)| common::normal(1, 36 + i as u64, c))
        .collect();
    let responses = sm.apply(entries).await.expect("apply");
    for r in &responses {
        let r = format!("{r:?}");
        assert!(
            !r.contains("Rejected") && !r.contains("Err("),
            "{responses:#?}"
        );
    }
}

/// The same for a state of cluster format version 5: the snapshot carries
/// the placement section after the lifecycle section, and the digest
/// covers it.
#[tokio::test]
async fn a_fixed_state_of_version_5_encodes_to_the_checked_in_bytes() {
    use tidal_core::placement::types::PlaceStrategy;
    use tidal_core::{TaskId, TaskState};
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = common::open(dir.path());
    every_kind_of_entry_v5(&mut sm).await;
    let applied = sm.handle().read().clone();
    let state = &applied.state;
    let placement = state.placement();
    assert_eq!(state.cluster_version(), 5);
    let place = |id| placement.task(TaskId(id)).expect("a placement entry");
    // 17: holds the first device of its type's default shape (no shapes:
    // one GPU of any model; the lowest free index, the A100).
    let held = place(17).held.clone().expect("17 holds devices");
    assert_eq!((held.token, held.shape, held.devices), (38, 0, vec![0]));
    assert_eq!(place(17).ask.hash_key.as_deref(), Some("user-42"));
    // 18: took its second shape (two A40s), finished: kept as its last.
    assert!(place(18).held.is_none());
    assert_eq!(place(18).last_shape, Some(1));
    assert_eq!(place(18).last_devices, vec![1, 2]);
    assert!(matches!(
        state.task(TaskId(18)).unwrap().state,
        TaskState::Succeeded { .. }
    ));
    // 19: Pending with its ask.
    assert_eq!(state.task(TaskId(19)).unwrap().state, TaskState::Pending);
    assert_eq!(place(19).ask.constraints.len(), 1);
    assert_eq!(
        state.queue_strategy("spread-q"),
        PlaceStrategy::Spread {
            key: "zone".to_string()
        }
    );
    assert_eq!(state.queue_strategy("pack-q"), PlaceStrategy::BinPack);
    assert_eq!(placement.gpu_weight("A40"), 400);
    assert_eq!(placement.gpu_weight("H200"), 1000);
    check_golden("state-v5", &applied);
}

#[tokio::test]
async fn a_snapshot_of_version_5_needs_a_node_of_version_5() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = common::open(dir.path());
    every_kind_of_entry_v5(&mut sm).await;
    let built = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let data = built.snapshot.clone().into_inner();
    let v5 = sm.handle().read().clone();
    // The placement's derived indexes (devices, tags) are rebuilt.
    let decoded = decode_snapshot(&data).unwrap();
    assert_eq!(decoded, v5);
    assert_eq!(decoded.state.placement(), v5.state.placement());
    assert_eq!(decoded.state.digest(), v5.state.digest());

    let dir_old = tempfile::tempdir().unwrap();
    let (_lo, mut old) = open_supporting(dir_old.path(), 4);
    let mut receiving = old.begin_receiving_snapshot().await.unwrap();
    *receiving = *built.snapshot.clone();
    let err = old
        .install_snapshot(&built.meta, receiving)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("cluster format version 5"),
        "{err}"
    );
    assert_eq!(old.failures().halted().map(|h| h.needed), Some(5));
}
