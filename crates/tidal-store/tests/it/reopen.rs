//! Reopen: vote, log, last purged id and the state machine (from its
//! snapshot) come back after the store is closed.

use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{RaftLogReader, Vote};

use crate::common;

#[tokio::test]
async fn reopen_restores_vote_log_purge_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let vote = Vote::new_committed(3, 2);
    let (applied_before, snapshot_meta) = {
        let (mut log, mut sm) = common::open(dir.path());
        log.save_vote(&vote).await.unwrap();
        common::append(&mut log, common::entries(1, 12)).await;
        common::apply(&mut sm, common::entries(1, 8)).await;
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        log.purge(common::log_id(1, 5)).await.unwrap();
        log.save_committed(Some(common::log_id(1, 8)))
            .await
            .unwrap();
        // Applied past the snapshot: only the snapshot is durable state.
        common::apply(&mut sm, common::entries(9, 10)).await;
        (replayed(8), snap.meta)
    };

    let (mut log, mut sm) = common::reopen(dir.path());
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(common::log_id(1, 5)));
    assert_eq!(state.last_log_id, Some(common::log_id(1, 12)));
    let entries = log.try_get_log_entries(0..100).await.unwrap();
    assert_eq!(entries, common::entries(6, 12));
    assert_eq!(
        log.try_get_log_entries(7..=8).await.unwrap(),
        common::entries(7, 8)
    );
    assert_eq!(
        log.read_committed().await.unwrap(),
        Some(common::log_id(1, 8))
    );

    // The state machine is back at the snapshot, not at what was applied later.
    let (last, membership) = sm.applied_state().await.unwrap();
    assert_eq!(last, Some(common::log_id(1, 8)));
    assert_eq!(membership.log_id(), &Some(common::log_id(1, 1)));
    assert_eq!(sm.handle().read().state, applied_before);
    assert_eq!(
        sm.get_current_snapshot()
            .await
            .unwrap()
            .expect("snapshot")
            .meta,
        snapshot_meta
    );

    // Re-applying the rest of the log continues where it left off.
    common::apply(&mut sm, common::entries(9, 12)).await;
    let replica = {
        let dir2 = tempfile::tempdir().unwrap();
        let (_l, mut sm2) = common::open(dir2.path());
        common::apply(&mut sm2, common::entries(1, 12)).await;
        let state = sm2.handle().read().state.clone();
        state
    };
    assert_eq!(sm.handle().read().state, replica);
}

/// The state a fresh replica reaches after applying entries 1..=upto.
fn replayed(upto: u64) -> tidal_core::State {
    let mut state = tidal_core::State::new();
    for entry in common::entries(1, upto) {
        if let openraft::EntryPayload::Normal(env) = entry.payload {
            state
                .apply_envelope(env, entry.log_id.index, tidal_core::FORMAT_VERSION_MAX)
                .expect("a known version");
        }
    }
    state
}

#[tokio::test]
async fn truncate_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = common::open(dir.path());
        common::append(&mut log, common::entries(1, 10)).await;
        log.truncate(common::log_id(1, 7)).await.unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(common::log_id(1, 6)));
    }
    let (mut log, _sm) = common::reopen(dir.path());
    assert_eq!(common::read_all(&mut log).await, common::entries(1, 6));
}
