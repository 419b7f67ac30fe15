//! [`LogStore`]: the Raft log, the vote, the last purged and the committed log
//! id in sled; [`LogReader`]: the cheap clone replication tasks read through.
//!
//! Layout: tree `log` maps a big-endian u64 index (so sled's byte order is
//! index order) to a [`codec`]-encoded entry; tree `meta` holds the vote, the
//! last purged log id and the committed log id under fixed keys.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use serde::de::DeserializeOwned;

use crate::durability::{Durability, Flusher};
use crate::error::blocking;
use crate::{codec, crash};
use crate::{Entry, LogId, StorageError, StoreError, TypeConfig, Vote};

const LOG_TREE: &str = "log";
pub(crate) const META_TREE: &str = "meta";
pub(crate) const VOTE_KEY: &[u8] = b"vote";
pub(crate) const LAST_PURGED_KEY: &[u8] = b"last_purged";
const COMMITTED_KEY: &[u8] = b"committed";

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| {
        StoreError::corrupt(
            "log",
            format!("a key of {} bytes, not an 8-byte index", key.len()),
        )
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// Decodes a stored entry and checks it sits under its own index.
fn decode_entry(index: u64, bytes: &[u8]) -> Result<Entry, StoreError> {
    let what = format!("log entry {index}");
    let entry: Entry = codec::decode(&what, bytes)?;
    if entry.log_id.index != index {
        return Err(StoreError::corrupt(
            what,
            format!("holds the entry of index {}", entry.log_id.index),
        ));
    }
    Ok(entry)
}

/// Checks an entry's version, checksum and index and returns its log id
/// without decoding its payload (which may hold thousands of tasks).
fn entry_log_id(index: u64, bytes: &[u8]) -> Result<LogId, StoreError> {
    let what = || format!("log entry {index}");
    let body = codec::verify(&what(), bytes)?;
    // An entry encodes its log id first, so decoding only that reads a prefix.
    #[derive(serde::Deserialize)]
    struct Head {
        log_id: LogId,
    }
    let (head, _): (Head, usize) =
        bincode::serde::decode_from_slice(body, bincode::config::standard())
            .map_err(|e| StoreError::corrupt(what(), format!("cannot decode: {e}")))?;
    if head.log_id.index != index {
        return Err(StoreError::corrupt(
            what(),
            format!("holds the entry of index {}", head.log_id.index),
        ));
    }
    Ok(head.log_id)
}

fn read_meta<T: DeserializeOwned>(
    meta: &sled::Tree,
    key: &[u8],
    what: &str,
) -> Result<Option<T>, StoreError> {
    match meta.get(key)? {
        Some(bytes) => Ok(Some(codec::decode(what, &bytes)?)),
        None => Ok(None),
    }
}

/// Reads log entries; cloned for each replication task.
#[derive(Clone)]
pub struct LogReader {
    log: sled::Tree,
}

impl LogReader {
    /// The entries with indexes in `range`, in order.
    pub fn entries<R: RangeBounds<u64>>(&self, range: R) -> Result<Vec<Entry>, StoreError> {
        self.entries_up_to(range, usize::MAX)
    }

    /// The entries with indexes in `range`, in order, stopping after the
    /// first whose stored bytes reach `max_bytes` in total (so at least one
    /// when the range holds any).
    pub fn entries_up_to<R: RangeBounds<u64>>(
        &self,
        range: R,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        // Half-open [lo, hi) in u128, so `..=u64::MAX` and empty ranges need
        // no special cases (sled rejects a start past the end).
        let lo: u128 = match range.start_bound() {
            Bound::Included(&s) => s.into(),
            Bound::Excluded(&s) => u128::from(s) + 1,
            Bound::Unbounded => 0,
        };
        let hi: u128 = match range.end_bound() {
            Bound::Included(&e) => u128::from(e) + 1,
            Bound::Excluded(&e) => e.into(),
            Bound::Unbounded => u128::from(u64::MAX) + 1,
        };
        if lo >= hi {
            return Ok(Vec::new());
        }
        // lo < hi <= 2^64, so lo fits in a u64.
        let start = Bound::Included(index_key(lo as u64));
        let end = match u64::try_from(hi) {
            Ok(hi) => Bound::Excluded(index_key(hi)),
            Err(_) => Bound::Unbounded,
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        for item in self.log.range::<[u8; 8], _>((start, end)) {
            let (key, value) = item?;
            out.push(decode_entry(key_index(&key)?, &value)?);
            bytes += value.len();
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// The id of the last entry present, if any.
    fn last_log_id(&self) -> Result<Option<LogId>, StoreError> {
        match self.log.last()? {
            Some((key, value)) => Ok(Some(entry_log_id(key_index(&key)?, &value)?)),
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.entries(range)
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }

    /// Replication reads about [`REPLICATION_READ_BYTES`] at a time: openraft
    /// asks for up to `max_payload_entries`, which for large entries would
    /// decode hundreds of megabytes to send one message's worth.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.entries_up_to(start..end, REPLICATION_READ_BYTES)
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }
}

/// How many stored bytes of entries one replication read decodes at most
/// (plus one entry): about what one AppendEntries message carries.
pub const REPLICATION_READ_BYTES: usize = 1 << 20;

/// The Raft log storage: entries, vote, purge and truncation, made durable
/// before openraft is told so.
pub struct LogStore {
    log: sled::Tree,
    meta: sled::Tree,
    durability: Arc<Durability>,
    flusher: Flusher,
    reader: LogReader,
}

impl LogStore {
    /// Opens the trees and verifies every stored value: format version,
    /// checksum, index keys, and no hole in the log. Entries' payloads are
    /// decoded when read, not here: a restart should not decode the log.
    pub(crate) fn open(db: &sled::Db, durability: Arc<Durability>) -> Result<Self, StoreError> {
        let log = db.open_tree(LOG_TREE)?;
        let meta = db.open_tree(META_TREE)?;

        for item in meta.iter() {
            let (key, value) = item?;
            match &*key {
                VOTE_KEY => {
                    codec::decode::<Vote>("vote", &value)?;
                }
                LAST_PURGED_KEY => {
                    codec::decode::<LogId>("last purged log id", &value)?;
                }
                COMMITTED_KEY => {
                    codec::decode::<LogId>("committed log id", &value)?;
                }
                other => {
                    return Err(StoreError::corrupt(
                        "log metadata",
                        format!("unknown key {:?}", String::from_utf8_lossy(other)),
                    ))
                }
            }
        }
        let last_purged: Option<LogId> = read_meta(&meta, LAST_PURGED_KEY, "last purged log id")?;
        let purged_index = last_purged.map(|id| id.index);

        // Entries at or below the last purged id are what a purge interrupted
        // by a crash left behind (the id is written before the deletes):
        // finish that purge. Above it, the log must be contiguous.
        let mut leftovers = sled::Batch::default();
        let mut has_leftovers = false;
        let mut prev: Option<u64> = None;
        for item in log.iter() {
            let (key, value) = item?;
            let index = key_index(&key)?;
            entry_log_id(index, &value)?;
            if purged_index.is_some_and(|p| index <= p) {
                leftovers.remove(key);
                has_leftovers = true;
                continue;
            }
            let expected = prev.map(|p| p + 1).or(purged_index.map(|p| p + 1));
            if let Some(expected) = expected {
                if index != expected {
                    return Err(StoreError::corrupt(
                        "log",
                        format!("a hole: entry {index} follows {}", expected - 1),
                    ));
                }
            }
            prev = Some(index);
        }
        if has_leftovers {
            tracing::warn!(
                last_purged = ?last_purged,
                "finishing a purge interrupted by a crash"
            );
            log.apply_batch(leftovers)?;
            durability.sync()?;
        }

        let flusher = Flusher::spawn(durability.clone())?;
        Ok(LogStore {
            reader: LogReader { log: log.clone() },
            log,
            meta,
            durability,
            flusher,
        })
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
        what: &str,
    ) -> Result<Option<T>, StoreError> {
        read_meta(&self.meta, key, what)
    }

    /// Flush + fsync on a blocking thread; returns once durable.
    async fn sync(&self) -> Result<(), StoreError> {
        let durability = self.durability.clone();
        blocking(move || durability.sync()).await
    }

    fn write_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        what: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        self.meta.insert(key, codec::encode(what, value)?)?;
        Ok(())
    }

    /// Removes the entries with index >= `from`, in one atomic batch.
    fn remove_from(&self, from: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for key in self.log.range(index_key(from)..).keys() {
            batch.remove(key?);
        }
        self.log.apply_batch(batch)?;
        Ok(())
    }

    /// Removes the entries with index <= `upto`, in one atomic batch.
    fn remove_upto(&self, upto: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for key in self.log.range(..=index_key(upto)).keys() {
            batch.remove(key?);
        }
        self.log.apply_batch(batch)?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.reader.try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let read = || -> Result<_, StoreError> {
            let last_purged_log_id: Option<LogId> =
                self.read_meta(LAST_PURGED_KEY, "last purged log id")?;
            let last = self.reader.last_log_id()?;
            // With every entry purged, the last log id is the last purged one.
            Ok(LogState {
                last_purged_log_id,
                last_log_id: last.max(last_purged_log_id),
            })
        };
        read().map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader.clone()
    }

    /// Durable before returning: openraft must never vote twice in a term.
    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let to_storage = |e: StoreError| e.into_storage(ErrorSubject::Vote, ErrorVerb::Write);
        self.write_meta(VOTE_KEY, "vote", vote)
            .map_err(to_storage)?;
        crash::point("store::vote::before_sync");
        self.sync().await.map_err(to_storage)?;
        crash::point("store::vote::after_sync");
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(VOTE_KEY, "vote")
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Read))
    }

    /// Not synced on its own: losing the latest committed id in a crash only
    /// means re-applying less at start-up; openraft learns it again from the
    /// leader. It becomes durable with the next append or vote.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let to_storage = |e: StoreError| e.into_storage(ErrorSubject::Store, ErrorVerb::Write);
        match committed {
            Some(id) => self
                .write_meta(COMMITTED_KEY, "committed log id", &id)
                .map_err(to_storage),
            None => self
                .meta
                .remove(COMMITTED_KEY)
                .map(|_| ())
                .map_err(|e| to_storage(e.into())),
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.read_meta(COMMITTED_KEY, "committed log id")
            .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Read))
    }

    /// Writes the batch atomically (readable at once), then hands the
    /// callback to the flusher thread, which fires it only after the flush
    /// and fsync that cover this batch.
    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        crash::point("store::append::before_write");
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = codec::encode("log entry", &entry)
                .map_err(|e| e.into_storage(ErrorSubject::Log(entry.log_id), ErrorVerb::Write))?;
            batch.insert(&index_key(entry.log_id.index)[..], bytes);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StoreError::from(e).into_storage(ErrorSubject::Logs, ErrorVerb::Write))?;
        crash::point("store::append::after_write");
        self.flusher.submit(callback).map_err(|callback| {
            let msg = "the store's flusher thread is gone";
            callback.log_io_completed(Err(std::io::Error::other(msg)));
            StorageError::from(StorageIOError::write_logs(AnyError::error(msg)))
        })
    }

    /// Removes entries from `log_id.index` on, inclusive; durable before
    /// returning, so a restart never resurrects a conflicting suffix.
    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let to_storage =
            |e: StoreError| e.into_storage(ErrorSubject::Log(log_id), ErrorVerb::Delete);
        self.remove_from(log_id.index).map_err(to_storage)?;
        self.sync().await.map_err(to_storage)
    }

    /// Records `log_id` as the last purged id first, then deletes the entries
    /// up to it, then syncs: a crash in between leaves only entries at or
    /// below the purged id, which `open` removes. Never a hole.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let to_storage =
            |e: StoreError| e.into_storage(ErrorSubject::Log(log_id), ErrorVerb::Delete);
        let current: Option<LogId> = self
            .read_meta(LAST_PURGED_KEY, "last purged log id")
            .map_err(to_storage)?;
        if current >= Some(log_id) {
            return Ok(());
        }
        self.write_meta(LAST_PURGED_KEY, "last purged log id", &log_id)
            .map_err(to_storage)?;
        self.remove_upto(log_id.index).map_err(to_storage)?;
        self.sync().await.map_err(to_storage)
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;

    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn reader_with(indexes: &[u64]) -> (tempfile::TempDir, LogReader) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let log = db.open_tree(LOG_TREE).unwrap();
        for &i in indexes {
            let entry = Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
                payload: EntryPayload::Blank,
            };
            log.insert(index_key(i), codec::encode("e", &entry).unwrap())
                .unwrap();
        }
        (dir, LogReader { log })
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
        // 256 and 255 differ in the first key byte: big-endian keys sort by index.
        let (_dir, r) = reader_with(&[254, 255, 256, 257, u64::MAX]);
        assert_eq!(indexes(&r, ..), vec![254, 255, 256, 257, u64::MAX]);
        assert_eq!(indexes(&r, 255..257), vec![255, 256]);
        assert_eq!(indexes(&r, 255..=257), vec![255, 256, 257]);
        assert_eq!(
            indexes(&r, (Bound::Excluded(255), Bound::Unbounded)),
            vec![256, 257, u64::MAX]
        );
        assert_eq!(indexes(&r, ..=u64::MAX), vec![254, 255, 256, 257, u64::MAX]);
        assert_eq!(
            indexes(&r, (Bound::Included(300), Bound::Excluded(200))),
            Vec::<u64>::new()
        );
        assert_eq!(indexes(&r, 256..256), Vec::<u64>::new());
        assert_eq!(r.last_log_id().unwrap().map(|id| id.index), Some(u64::MAX));
    }

    #[test]
    fn an_entry_under_the_wrong_key_is_corruption() {
        let (_dir, r) = reader_with(&[5]);
        let bytes = r.log.get(index_key(5)).unwrap().unwrap();
        r.log.insert(index_key(6), bytes).unwrap();
        let err = r.entries(..).unwrap_err();
        assert!(err.to_string().contains("log entry 6"), "{err}");
    }

    #[test]
    fn the_last_log_id_comes_from_the_head_and_is_checked() {
        let (_dir, r) = reader_with(&[5]);
        let bytes = r.log.get(index_key(5)).unwrap().unwrap();
        assert_eq!(entry_log_id(5, &bytes).unwrap().index, 5);
        let err = entry_log_id(6, &bytes).unwrap_err();
        assert!(err.to_string().contains("index 5"), "{err}");
        let mut flipped = bytes.to_vec();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(entry_log_id(5, &flipped).is_err(), "a checksum mismatch");
    }

    #[test]
    fn replication_reads_stop_after_a_byte_budget_but_return_one_entry() {
        let (_dir, r) = reader_with(&[1, 2, 3, 4]);
        let one = r.log.get(index_key(1)).unwrap().unwrap().len();
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
}
