//! Unit tests of `log_store.rs`.

use std::ops::Bound;

use openraft::{CommittedLeaderId, EntryPayload};

use super::*;

fn entry(index: u64) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Blank,
    }
}

/// A reader over a log holding `indexes` (contiguous), in small segments.
fn reader_with(indexes: std::ops::RangeInclusive<u64>) -> (tempfile::TempDir, LogReader) {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open_with(dir.path(), None, None, 64).unwrap();
    wal.append(encode_entries(indexes.map(entry)).unwrap())
        .unwrap();
    (dir, LogReader { wal: Arc::new(wal) })
}

fn indexes<R: RangeBounds<u64>>(reader: &LogReader, range: R) -> Vec<u64> {
    reader
        .entries(range)
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect()
}

#[test]
fn ranges_follow_index_order_and_bounds() {
    let (_dir, r) = reader_with(254..=258);
    assert_eq!(indexes(&r, ..), vec![254, 255, 256, 257, 258]);
    assert_eq!(indexes(&r, 255..257), vec![255, 256]);
    assert_eq!(indexes(&r, 255..=257), vec![255, 256, 257]);
    assert_eq!(
        indexes(&r, (Bound::Excluded(255), Bound::Unbounded)),
        vec![256, 257, 258]
    );
    assert_eq!(indexes(&r, ..=u64::MAX), vec![254, 255, 256, 257, 258]);
    assert_eq!(
        indexes(&r, (Bound::Excluded(u64::MAX), Bound::Unbounded)),
        Vec::<u64>::new()
    );
    assert_eq!(
        indexes(&r, (Bound::Included(300), Bound::Excluded(200))),
        Vec::<u64>::new()
    );
    assert_eq!(indexes(&r, 256..256), Vec::<u64>::new());
    assert_eq!(indexes(&r, 100..200), Vec::<u64>::new());
    assert_eq!(r.last_log_id().map(|id| id.index), Some(258));
}

#[test]
fn an_entry_under_the_wrong_index_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), None, None).unwrap();
    let (_, bytes) = encode_entries([entry(6)]).unwrap().remove(0);
    wal.append(vec![(entry(5).log_id, bytes)]).unwrap();
    let r = LogReader { wal: Arc::new(wal) };
    let err = r.entries(..).unwrap_err();
    assert!(err.to_string().contains("log entry 5"), "{err}");
    drop(r);
    let err = Wal::open(dir.path(), None, None)
        .err()
        .expect("checked at open");
    assert!(err.to_string().contains("index 6"), "{err}");
}

#[test]
fn the_last_log_id_comes_from_the_head_and_is_checked() {
    let bytes = codec::encode("e", &entry(5)).unwrap();
    assert_eq!(entry_log_id(5, &bytes).unwrap().index, 5);
    let err = entry_log_id(6, &bytes).unwrap_err();
    assert!(err.to_string().contains("index 5"), "{err}");
    let mut flipped = bytes.to_vec();
    *flipped.last_mut().unwrap() ^= 1;
    assert!(entry_log_id(5, &flipped).is_err(), "a checksum mismatch");
}

#[test]
fn replication_reads_stop_after_a_byte_budget_but_return_one_entry() {
    let (_dir, r) = reader_with(1..=4);
    // A record: a 4-byte length, then the codec value.
    let one = 4 + codec::encode("e", &entry(1)).unwrap().len();
    let read = |budget: usize| -> Vec<u64> {
        r.entries_up_to(1..5, budget)
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect()
    };
    assert_eq!(read(1), vec![1], "at least one entry");
    assert_eq!(read(one * 2), vec![1, 2]);
    assert_eq!(read(one * 2 + 1), vec![1, 2, 3]);
    assert_eq!(read(usize::MAX), vec![1, 2, 3, 4]);
}

#[test]
fn a_log_kept_in_sled_moves_into_the_log_files() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        let old = db.open_tree(LOG_TREE).unwrap();
        for i in 3..=9 {
            old.insert(index_key(i), codec::encode("e", &entry(i)).unwrap())
                .unwrap();
        }
        let meta = db.open_tree(META_TREE).unwrap();
        let purged = entry(4).log_id;
        meta.insert(LAST_PURGED_KEY, codec::encode("p", &purged).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    // sled lets go of its lock some time after the last `Db` is dropped.
    let db = crate::open_sled(sled::Config::new().path(dir.path())).unwrap();
    let durability = Arc::new(Durability::open(db.clone(), dir.path(), None).unwrap());
    let failures = Failures::new(dir.path());
    let disk = crate::DiskWait::default();
    let store = LogStore::open(
        &db,
        dir.path(),
        durability,
        None,
        failures,
        disk,
        crate::EventsSlot::default(),
    )
    .unwrap();
    assert_eq!(
        indexes(&store.reader, ..),
        vec![5, 6, 7, 8, 9],
        "purged ones dropped"
    );
    assert!(!db
        .tree_names()
        .iter()
        .any(|n| &n[..] == LOG_TREE.as_bytes()));
    drop(store);
    let wal = Wal::open(dir.path(), Some(entry(4).log_id), None).unwrap();
    assert_eq!(wal.last_log_id(), Some(entry(9).log_id));
}
