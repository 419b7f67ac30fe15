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
