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
    let db = tidal_store::open_sled(sled::Config::new().path(dir)).expect("open sled");
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

/// The log's segment file (one here: the log is small) and where each of its
/// records (`[length: u32 LE][value]`) starts, with its index.
fn log_records(dir: &Path) -> (std::path::PathBuf, Vec<(u64, std::ops::Range<usize>)>) {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("log"))
        .expect("the log directory")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let path = files.remove(0);
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    let mut index: u64 = name.parse().expect("a segment is named by its first index");
    let bytes = std::fs::read(&path).unwrap();
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        records.push((index, pos..pos + 4 + len));
        pos += 4 + len;
        index += 1;
    }
    (path, records)
}

/// Rewrites the stored value of log entry `index` in its segment file.
fn damage_log(dir: &Path, index: u64, f: impl FnOnce(&mut [u8])) {
    let (path, records) = log_records(dir);
    let (_, range) = records
        .into_iter()
        .find(|(i, _)| *i == index)
        .expect("entry");
    let mut bytes = std::fs::read(&path).unwrap();
    f(&mut bytes[range.start + 4..range.end]);
    std::fs::write(&path, bytes).unwrap();
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
    damage_log(dir.path(), 6, flip_last);
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
    damage_log(dir.path(), 3, |v| v[0] = 9);
    let err = open_err(dir.path());
    assert!(
        matches!(err, StoreError::UnsupportedVersion { found: 9, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("log entry 3"), "{err}");
    assert!(err.to_string().contains("newer tidal"), "{err}");
}

#[tokio::test]
async fn a_format_1_store_is_refused_with_the_way_to_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path()).await;
    damage(dir.path(), "meta", b"vote", |v| v[0] = 1);
    let err = open_err(dir.path());
    assert!(
        matches!(err, StoreError::UnsupportedVersion { found: 1, .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("vote"), "{text}");
    assert!(text.contains("Upgrading from store format 1"), "{text}");
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
async fn a_missing_log_entry_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path()).await;
    let (path, records) = log_records(dir.path());
    let (_, range) = records.into_iter().find(|(i, _)| *i == 4).expect("entry 4");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.drain(range);
    std::fs::write(&path, bytes).unwrap();
    let err = open_err(dir.path());
    assert!(err.is_corruption(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("log entry 4") && msg.contains("index 5"),
        "{msg}"
    );
}

/// A crash in the middle of an append leaves a torn record at the end of the
/// log; it was never acknowledged, so the store opens without it.
#[tokio::test]
async fn a_torn_append_at_the_end_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path()).await;
    let (path, records) = log_records(dir.path());
    let (_, last) = records.last().cloned().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(last.end - 3);
    std::fs::write(&path, bytes).unwrap();
    let (mut log, _sm) = common::reopen(dir.path());
    assert_eq!(common::read_all(&mut log).await.len(), 7);
}

#[tokio::test]
async fn an_undamaged_store_reopens() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path()).await;
    let (mut log, _sm) = common::reopen(dir.path());
    assert_eq!(common::read_all(&mut log).await.len(), 8);
    let _ = log.get_log_state().await.unwrap();
}
