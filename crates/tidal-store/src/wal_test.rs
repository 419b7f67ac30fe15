//! Unit tests of `wal.rs`.

use openraft::{CommittedLeaderId, EntryPayload};

use super::*;

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Blank,
    }
}

fn append(wal: &Wal, term: u64, range: std::ops::RangeInclusive<u64>) {
    wal.append(encode_entries(range.map(|i| entry(term, i))).unwrap())
        .unwrap();
}

fn ids(wal: &Wal) -> Vec<(u64, u64)> {
    wal.entries(0, u128::from(u64::MAX) + 1, usize::MAX)
        .unwrap()
        .iter()
        .map(|e| (e.log_id.leader_id.term, e.log_id.index))
        .collect()
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.join(LOG_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Small segments: a few blank entries each.
const SMALL: u64 = 64;

#[test]
fn entries_survive_a_reopen_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open_with(dir.path(), None, None, SMALL).unwrap();
    append(&wal, 1, 0..=3);
    append(&wal, 1, 4..=20);
    wal.sync().unwrap();
    assert_eq!(wal.durable_log_id(), Some(entry(1, 20).log_id));
    assert!(
        segment_files(dir.path()).len() > 3,
        "{:?}",
        segment_files(dir.path())
    );
    drop(wal);
    let wal = Wal::open_with(dir.path(), None, None, SMALL).unwrap();
    assert_eq!(ids(&wal), (0..=20).map(|i| (1, i)).collect::<Vec<_>>());
    assert_eq!(wal.last_log_id(), Some(entry(1, 20).log_id));
    append(&wal, 1, 21..=21);
    let err = wal
        .append(encode_entries([entry(1, 23)]).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("entry 22 comes next"), "{err}");
}

#[test]
fn a_truncation_cuts_across_segments_and_lasts() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open_with(dir.path(), None, None, SMALL).unwrap();
    append(&wal, 1, 0..=20);
    wal.truncate(7).unwrap();
    assert_eq!(wal.last_log_id(), Some(entry(1, 6).log_id));
    append(&wal, 2, 7..=9);
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open_with(dir.path(), None, None, SMALL).unwrap();
    let mut expected: Vec<_> = (0..=6).map(|i| (1, i)).collect();
    expected.extend((7..=9).map(|i| (2, i)));
    assert_eq!(ids(&wal), expected);
    wal.truncate(0).unwrap();
    assert_eq!(wal.last_log_id(), None);
    assert!(segment_files(dir.path()).is_empty());
}

#[test]
fn a_purge_deletes_whole_segments_and_hides_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open_with(dir.path(), None, None, SMALL).unwrap();
    append(&wal, 1, 0..=20);
    let before = segment_files(dir.path()).len();
    wal.purge(10).unwrap();
    assert!(segment_files(dir.path()).len() < before);
    assert_eq!(ids(&wal), (11..=20).map(|i| (1, i)).collect::<Vec<_>>());
    wal.purge(20).unwrap();
    assert_eq!(ids(&wal), vec![]);
    assert_eq!(wal.last_log_id(), None, "nothing left to read");
    append(&wal, 1, 21..=22);
    assert_eq!(ids(&wal), vec![(1, 21), (1, 22)]);
}

#[test]
fn opening_finishes_an_interrupted_purge() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open_with(dir.path(), None, None, SMALL).unwrap();
    append(&wal, 1, 0..=20);
    drop(wal);
    let before = segment_files(dir.path()).len();
    let wal = Wal::open_with(dir.path(), Some(entry(1, 10).log_id), None, SMALL).unwrap();
    assert!(segment_files(dir.path()).len() < before);
    assert_eq!(ids(&wal), (11..=20).map(|i| (1, i)).collect::<Vec<_>>());
}

#[test]
fn a_torn_write_at_the_end_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open_with(dir.path(), None, None, SMALL).unwrap();
    append(&wal, 1, 0..=5);
    drop(wal);
    let last = segment_files(dir.path()).pop().unwrap();
    let path = dir.path().join(LOG_DIR).join(last);
    let whole = fs::read(&path).unwrap();
    // Half of a record: its length says more than follows.
    let mut torn = whole.clone();
    torn.extend_from_slice(&100u32.to_le_bytes());
    torn.extend_from_slice(&[1, 2, 3]);
    fs::write(&path, &torn).unwrap();
    let wal = Wal::open_with(dir.path(), None, None, SMALL).unwrap();
    assert_eq!(ids(&wal), (0..=5).map(|i| (1, i)).collect::<Vec<_>>());
    assert_eq!(
        fs::read(&path).unwrap(),
        whole,
        "cut back to the last whole record"
    );
    append(&wal, 1, 6..=6);
    assert_eq!(ids(&wal).last(), Some(&(1, 6)));
}

#[test]
fn a_damaged_record_before_the_last_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open_with(dir.path(), None, None, SMALL).unwrap();
    append(&wal, 1, 0..=20);
    drop(wal);
    let first = segment_files(dir.path()).remove(0);
    let path = dir.path().join(LOG_DIR).join(first);
    let mut bytes = fs::read(&path).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    fs::write(&path, &bytes).unwrap();
    let err = Wal::open_with(dir.path(), None, None, SMALL)
        .err()
        .expect("refused");
    assert!(err.is_corruption(), "{err}");
}

#[test]
fn segments_after_a_gap_are_what_a_truncation_was_deleting() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open_with(dir.path(), None, None, SMALL).unwrap();
    append(&wal, 1, 0..=20);
    drop(wal);
    // A truncation at 5 whose deletes did not all reach the disk: the
    // segment holding 5 was cut, a later one is still there.
    let names = segment_files(dir.path());
    let log = dir.path().join(LOG_DIR);
    let keep_late = names.last().unwrap().clone();
    let late = fs::read(log.join(&keep_late)).unwrap();
    let wal = Wal::open_with(dir.path(), None, None, SMALL).unwrap();
    wal.truncate(5).unwrap();
    drop(wal);
    fs::write(log.join(&keep_late), late).unwrap();
    let wal = Wal::open_with(dir.path(), None, None, SMALL).unwrap();
    assert_eq!(ids(&wal), (0..=4).map(|i| (1, i)).collect::<Vec<_>>());
    assert!(!segment_files(dir.path()).contains(&keep_late));
}

#[test]
fn after_a_failed_sync_no_sync_claims_durability() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open_with(dir.path(), None, None, SMALL).unwrap();
    append(&wal, 1, 0..=2);
    wal.sync().unwrap();
    // fdatasync of a pipe fails (EINVAL), as a failing disk's would.
    let (reader, _writer) = std::io::pipe().unwrap();
    let broken = File::from(std::os::fd::OwnedFd::from(reader));
    wal.mark_unsynced(Some(Arc::new(broken)), false);
    append(&wal, 1, 3..=3);
    assert!(wal.sync().is_err());
    assert_eq!(wal.durable_log_id(), Some(entry(1, 2).log_id));
    append(&wal, 1, 4..=4);
    let err = wal.sync().unwrap_err();
    assert!(err.to_string().contains("earlier sync"), "{err}");
    assert_eq!(wal.durable_log_id(), Some(entry(1, 2).log_id));
}

#[test]
fn a_hole_after_the_purged_entries_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open_with(dir.path(), None, None, SMALL).unwrap();
    append(&wal, 1, 0..=20);
    drop(wal);
    let first = segment_files(dir.path()).remove(0);
    fs::remove_file(dir.path().join(LOG_DIR).join(first)).unwrap();
    let err = Wal::open_with(dir.path(), Some(entry(1, 0).log_id), None, SMALL)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("a hole"), "{err}");
}

/// A simulated power loss keeps what the syncs and truncations made
/// durable and nothing else: unsynced tails are cut, segments created
/// since the last sync are deleted, and the log reopens cleanly.
#[cfg(feature = "failpoints")]
#[test]
fn a_power_loss_keeps_only_what_was_synced() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open_with(dir.path(), None, None, SMALL).unwrap();
    append(&wal, 1, 0..=6);
    wal.sync().unwrap();
    let synced_files = segment_files(dir.path());
    // Unsynced: more entries in the last segment and new segments.
    append(&wal, 1, 7..=20);
    // A truncation is durable at once: the cut stays cut.
    wal.truncate(15).unwrap();
    append(&wal, 2, 15..=17);
    assert!(segment_files(dir.path()).len() > synced_files.len());
    let mut frozen = wal.freeze();
    let summary = frozen.discard_unsynced().unwrap();
    assert!(
        summary.contains("up to 17 written, up to 6 kept"),
        "{summary}"
    );
    drop(frozen);
    drop(wal);
    assert_eq!(segment_files(dir.path()), synced_files, "{summary}");
    let wal = Wal::open_with(dir.path(), None, None, SMALL).unwrap();
    assert_eq!(ids(&wal), (0..=6).map(|i| (1, i)).collect::<Vec<_>>());
    append(&wal, 3, 7..=9);
    wal.sync().unwrap();
    // Synced after the reopen, then cut by a truncation, then more
    // unsynced appends: the power loss keeps the cut, not the rest.
    wal.truncate(8).unwrap();
    append(&wal, 4, 8..=12);
    wal.freeze().discard_unsynced().unwrap();
    drop(wal);
    let wal = Wal::open_with(dir.path(), None, None, SMALL).unwrap();
    let mut expected: Vec<_> = (0..=6).map(|i| (1, i)).collect();
    expected.push((3, 7));
    assert_eq!(ids(&wal), expected);
}
