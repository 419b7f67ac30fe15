//! Corruption: a damaged stored value makes `open` fail, naming the value and
//! the problem, instead of loading it.

use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use tidal_store::{StoreError, StoreOptions};

use crate::common;

/// A store with a log, a vote and a snapshot, closed again.
async fn populated(dir: &Path) {
    let (mut log, mut sm) = common::open(dir);
    log.save_vote(&openraft::Vote::new(1, 1))
        .await
        .expect("vote");
    common::append(&mut log, common::entries(1, 8)).await;
    common::apply(&mut sm, common::entries(1, 5)).await;
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("snapshot");
}

/// Rewrites one stored value through sled directly, bypassing the codec.
fn damage(dir: &Path, tree: &str, key: &[u8], f: impl FnOnce(&mut [u8])) {
    let db = sled::open(dir).expect("open sled");
    let tree = db.open_tree(tree).expect("tree");
    let mut value = tree
        .get(key)
        .expect("get")
        .expect("the value exists")
        .to_vec();
    f(&mut value);
    tree.insert(key, value).expect("insert");
    db.flush().expect("flush");
}

fn open_err(dir: &Path) -> StoreError {
    // The damaging sled handle may still hold the lock for a moment.
    for _ in 0..50 {
        match tidal_store::open(dir, StoreOptions::default()) {
            Ok(_) => panic!("a corrupt store opened"),
            Err(e) if e.to_string().contains("lock") => {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            Err(e) => return e,
        }
    }
    panic!("the store stayed locked")
}

fn flip_last(v: &mut [u8]) {
    let last = v.len() - 1;
    v[last] ^= 0x40;
}

#[tokio::test]
async fn flipped_log_entry_byte_is_a_checksum_error() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path()).await;
    damage(dir.path(), "log", &6u64.to_be_bytes(), flip_last);
    let err = open_err(dir.path());
    assert!(err.is_corruption(), "{err}");
    assert!(matches!(err, StoreError::Checksum { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("log entry 6") && msg.contains("checksum"),
        "{msg}"
    );
}

#[tokio::test]
async fn unknown_format_version_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path()).await;
    damage(dir.path(), "log", &3u64.to_be_bytes(), |v| v[0] = 2);
    let err = open_err(dir.path());
    assert!(
        matches!(err, StoreError::UnsupportedVersion { found: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("log entry 3"), "{err}");
}

#[tokio::test]
async fn damaged_vote_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path()).await;
    damage(dir.path(), "meta", b"vote", flip_last);
    let err = open_err(dir.path());
    assert!(err.to_string().contains("vote"), "{err}");
    assert!(err.is_corruption());
}

#[tokio::test]
async fn damaged_snapshot_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path()).await;
    damage(dir.path(), "snapshot", b"data", |v| v[10] ^= 0xff);
    let err = open_err(dir.path());
    assert!(err.to_string().contains("snapshot data"), "{err}");
    assert!(err.is_corruption());
}

#[tokio::test]
async fn a_hole_in_the_log_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path()).await;
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("log")
            .unwrap()
            .remove(4u64.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let err = open_err(dir.path());
    assert!(err.to_string().contains("hole"), "{err}");
}

#[tokio::test]
async fn an_undamaged_store_reopens() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path()).await;
    let (mut log, _sm) = common::reopen(dir.path());
    assert_eq!(common::read_all(&mut log).await.len(), 8);
    let _ = log.get_log_state().await.unwrap();
}
