//! Snapshot build and install: the installed state equals the built one.

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::RaftLogReader;
use tidal_store::{decode_snapshot, encode_snapshot};

use crate::common;

#[tokio::test]
async fn build_then_install_restores_an_equal_state() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_log_a, mut sm_a) = common::open(dir_a.path());
    let (_log_b, mut sm_b) = common::open(dir_b.path());

    common::apply(&mut sm_a, common::entries(1, 40)).await;
    let before = sm_a.handle().read().clone();
    assert!(
        before.state.tasks_after(None).count() > 0,
        "the state has tasks"
    );
    assert_eq!(before.last_applied, Some(common::log_id(1, 40)));

    let built = sm_a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(built.meta.last_log_id, before.last_applied);
    assert_eq!(built.meta.last_membership, before.membership);
    let current = sm_a
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("a current snapshot");
    assert_eq!(current.meta, built.meta);

    let mut receiving = sm_b.begin_receiving_snapshot().await.unwrap();
    *receiving = *current.snapshot;
    sm_b.install_snapshot(&current.meta, receiving)
        .await
        .unwrap();

    let after = sm_b.handle().read().clone();
    assert_eq!(after, before);
    assert_eq!(after.state.digest(), before.state.digest());
    let (last, membership) = sm_b.applied_state().await.unwrap();
    assert_eq!(
        (last, membership),
        (before.last_applied, before.membership.clone())
    );
    let installed = sm_b
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("installed snapshot");
    assert_eq!(installed.meta, built.meta);

    // Both replicas keep applying identically after the snapshot.
    common::apply(&mut sm_a, common::entries(41, 50)).await;
    common::apply(&mut sm_b, common::entries(41, 50)).await;
    assert_eq!(sm_a.handle().read().state, sm_b.handle().read().state);
}

#[tokio::test]
async fn snapshot_builds_do_not_block_apply_and_keep_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut sm) = common::open(dir.path());
    common::apply(&mut sm, common::entries(1, 10)).await;
    let mut builder = sm.get_snapshot_builder().await;
    // Apply goes on after the builder was taken; the builder encodes the
    // state as it was when it was taken.
    common::apply(&mut sm, common::entries(11, 20)).await;
    let mut newer = sm.get_snapshot_builder().await;
    let snap = newer.build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id, Some(common::log_id(1, 20)));
    let older = builder.build_snapshot().await.unwrap();
    assert_eq!(older.meta.last_log_id, Some(common::log_id(1, 10)));
    let decoded = decode_snapshot(&older.snapshot.into_inner()).unwrap();
    assert_eq!(decoded.last_applied, Some(common::log_id(1, 10)));
    // The store keeps the newer one.
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.last_log_id, Some(common::log_id(1, 20)));
    assert_eq!(sm.handle().read().last_applied, Some(common::log_id(1, 20)));
    // The log is untouched by snapshots.
    assert!(log.try_get_log_entries(..).await.unwrap().is_empty());
}

#[tokio::test]
async fn install_rejects_data_that_does_not_match_its_meta() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = common::open(dir.path());
    common::apply(&mut sm, common::entries(1, 10)).await;
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut meta = snap.meta.clone();
    meta.last_log_id = Some(common::log_id(1, 11));
    let dir2 = tempfile::tempdir().unwrap();
    let (_log2, mut sm2) = common::open(dir2.path());
    let err = sm2
        .install_snapshot(&meta, snap.snapshot)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert_eq!(
        sm2.handle().read().last_applied,
        None,
        "state left untouched"
    );
}

#[tokio::test]
async fn encode_decode_helpers_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = common::open(dir.path());
    common::apply(&mut sm, common::entries(1, 12)).await;
    let applied = sm.handle().read().clone();
    let bytes = encode_snapshot(&applied).unwrap();
    assert_eq!(decode_snapshot(&bytes).unwrap(), applied);
    let mut bad = bytes.clone();
    bad[bytes.len() / 2] ^= 1;
    assert!(decode_snapshot(&bad).unwrap_err().is_corruption());
}
