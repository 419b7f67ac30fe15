//! [`LogStore`]: the Raft log in its own segment files ([`crate::wal`]), the
//! vote, the last purged and the committed log id in sled; [`LogReader`]: the
//! cheap clone replication tasks read through.
//!
//! sled's tree `meta` holds the vote, the last purged log id and the
//! committed log id under fixed keys. Earlier versions kept the entries in
//! sled's tree `log` (big-endian index keys); opening such a store moves them
//! into the segment files once.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use serde::de::DeserializeOwned;

use crate::codec::entry_log_id;
use crate::disk_wait::DiskWait;
use crate::durability::{Durability, Flusher};
use crate::error::blocking;
use crate::events::EventsSlot;
use crate::failure::Failures;
use crate::wal::{encode_entries, Wal};
use crate::{codec, crash};
use crate::{Entry, LogId, StorageError, StoreError, TypeConfig, Vote};

const LOG_TREE: &str = "log";
pub(crate) const META_TREE: &str = "meta";
pub(crate) const VOTE_KEY: &[u8] = b"vote";
pub(crate) const LAST_PURGED_KEY: &[u8] = b"last_purged";
const COMMITTED_KEY: &[u8] = b"committed";

#[cfg(test)]
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
    wal: Arc<Wal>,
}

impl LogReader {
    /// The entries with indexes in `range`, in order.
    pub fn entries<R: RangeBounds<u64>>(&self, range: R) -> Result<Vec<Entry>, StoreError> {
        self.entries_up_to(range, usize::MAX)
    }

    /// The entries with indexes in `range`, in order, stopping after the
    /// first whose stored records reach `max_bytes` in total (so at least one
    /// when the range holds any).
    pub fn entries_up_to<R: RangeBounds<u64>>(
        &self,
        range: R,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        // Half-open [lo, hi) in u128, so `..=u64::MAX` and empty ranges need
        // no special cases.
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
        match u64::try_from(lo) {
            Ok(lo) if u128::from(lo) < hi => self.wal.entries(lo, hi, max_bytes),
            _ => Ok(Vec::new()),
        }
    }

    /// The id of the last entry present, if any.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.wal.last_log_id()
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

/// A store call on the Raft core's path that takes this long is logged: the
/// core handles nothing else meanwhile (no heartbeat, no vote), so a call
/// that outlasts the election timeout costs the leadership.
const SLOW_CORE_CALL: Duration = Duration::from_millis(50);

/// Times a store call made on the Raft core's path; when dropped, logs it
/// if it took [`SLOW_CORE_CALL`] or more.
struct CoreCall {
    op: &'static str,
    started: std::time::Instant,
    disk: DiskWait,
}

impl CoreCall {
    fn start(op: &'static str, disk: &DiskWait) -> CoreCall {
        let started = std::time::Instant::now();
        disk.call_began(started);
        CoreCall {
            op,
            started,
            disk: disk.clone(),
        }
    }
}

impl Drop for CoreCall {
    fn drop(&mut self) {
        self.disk.call_ended();
        let took = self.started.elapsed();
        if took >= SLOW_CORE_CALL {
            tracing::warn!(
                op = self.op,
                took_ms = took.as_millis() as u64,
                "a Raft log store call held the Raft core (no heartbeats meanwhile); the disk may be stalled"
            );
        }
    }
}

/// How many stored bytes of entries one replication read decodes at most
/// (plus one entry): about what one AppendEntries message carries.
pub const REPLICATION_READ_BYTES: usize = 1 << 20;

/// The Raft log storage: entries, vote, purge and truncation, made durable
/// before openraft is told so.
pub struct LogStore {
    meta: sled::Tree,
    durability: Arc<Durability>,
    wal: Arc<Wal>,
    flusher: Flusher,
    reader: LogReader,
    failures: Failures,
    disk: DiskWait,
    /// Told of each committed index saved.
    events: EventsSlot,
}

impl LogStore {
    /// Checks the metadata, opens the log files (checking every record: format
    /// version, checksum, index, no hole) and moves a log an earlier version
    /// kept in sled into them. Entries' payloads are decoded when read, not
    /// here: a restart should not decode the log.
    pub(crate) fn open(
        db: &sled::Db,
        dir: &Path,
        durability: Arc<Durability>,
        flush_delay: Option<Duration>,
        failures: Failures,
        disk: DiskWait,
        events: EventsSlot,
    ) -> Result<Self, StoreError> {
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
        let wal = Arc::new(Wal::open(dir, last_purged, flush_delay)?);
        migrate_sled_log(db, &wal, &durability, last_purged)?;

        #[cfg(feature = "failpoints")]
        crate::power_loss::register(&wal, &durability);
        let sync_wal = wal.clone();
        let sync_failures = failures.clone();
        let flusher = Flusher::spawn(disk.clone(), events.clone(), move || {
            sync_wal
                .sync()
                .inspect_err(|e| sync_failures.log("sync the Raft log", e))
        })?;
        Ok(LogStore {
            reader: LogReader { wal: wal.clone() },
            meta,
            durability,
            wal,
            flusher,
            failures,
            disk,
            events,
        })
    }

    /// The record of the Raft core's waits for the disk in this store's calls.
    pub fn disk_wait(&self) -> DiskWait {
        self.disk.clone()
    }

    /// The store's first write failure, shared with the state machine store.
    pub fn failures(&self) -> Failures {
        self.failures.clone()
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
        what: &str,
    ) -> Result<Option<T>, StoreError> {
        read_meta(&self.meta, key, what)
    }

    /// sled's flush + fsync on a blocking thread; returns once durable.
    async fn sync_meta(&self) -> Result<(), StoreError> {
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
}

/// Moves the entries an earlier version kept in sled's tree `log` into the
/// log files: written and synced there first, then removed from sled. A crash
/// in between leaves them in sled, and the next open starts the move again
/// from empty files.
fn migrate_sled_log(
    db: &sled::Db,
    wal: &Wal,
    durability: &Durability,
    last_purged: Option<LogId>,
) -> Result<(), StoreError> {
    // Opening a tree creates it: look first.
    if !db
        .tree_names()
        .iter()
        .any(|name| &name[..] == LOG_TREE.as_bytes())
    {
        return Ok(());
    }
    let old = db.open_tree(LOG_TREE)?;
    if old.is_empty() {
        db.drop_tree(LOG_TREE)?;
        return Ok(());
    }
    if !wal.is_empty() {
        wal.clear()?;
    }
    let purged = last_purged.map(|id| id.index);
    let mut moved = 0u64;
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0;
    for item in old.iter() {
        let (key, value) = item?;
        let index = key_index(&key)?;
        if purged.is_some_and(|p| index <= p) {
            continue;
        }
        let id = entry_log_id(index, &value)?;
        chunk_bytes += value.len();
        chunk.push((id, value.to_vec()));
        if chunk_bytes >= 16 << 20 {
            moved += chunk.len() as u64;
            wal.append(std::mem::take(&mut chunk))?;
            chunk_bytes = 0;
        }
    }
    moved += chunk.len() as u64;
    wal.append(chunk)?;
    wal.sync()?;
    drop(old);
    db.drop_tree(LOG_TREE)?;
    durability.sync()?;
    tracing::info!(
        entries = moved,
        "moved the Raft log from sled into its own files"
    );
    Ok(())
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
        let last_purged_log_id: Option<LogId> = self
            .read_meta(LAST_PURGED_KEY, "last purged log id")
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))?;
        let last = self.reader.last_log_id();
        // With every entry purged, the last log id is the last purged one.
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.max(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader.clone()
    }

    /// Durable before returning: openraft must never vote twice in a term.
    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let _call = CoreCall::start("save the vote", &self.disk);
        let to_storage = |e: StoreError| {
            self.failures.db("save the vote", &e);
            e.into_storage(ErrorSubject::Vote, ErrorVerb::Write)
        };
        self.write_meta(VOTE_KEY, "vote", vote)
            .map_err(to_storage)?;
        crash::point("store::vote::before_sync");
        self.sync_meta().await.map_err(to_storage)?;
        crash::point("store::vote::after_sync");
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(VOTE_KEY, "vote")
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Read))
    }

    /// Not synced on its own: losing the latest committed id in a crash only
    /// means re-applying less at start-up; openraft learns it again from the
    /// leader. sled writes it out with its next flush, which may come before
    /// the log files' next sync, so what is stored is never past the last
    /// entry known durable: a restart never finds a committed id its log
    /// does not reach.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let to_storage = |e: StoreError| {
            self.failures.db("save the committed log id", &e);
            e.into_storage(ErrorSubject::Store, ErrorVerb::Write)
        };
        let _call = CoreCall::start("save the committed log id", &self.disk);
        if let (Some(c), Some(events)) = (committed, self.events.get()) {
            events.committed(c.index);
        }
        let stored =
            committed
                .zip(self.wal.durable_log_id())
                .map(|(c, d)| if d.index < c.index { d } else { c });
        match stored {
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

    /// Writes the entries at the end of the log files (readable at once),
    /// then hands the callback to the flusher thread, which fires it only
    /// after the fdatasync that covers them.
    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let began = std::time::Instant::now();
        crash::point("store::append::before_write");
        let _call = CoreCall::start("append", &self.disk);
        let records = encode_entries(entries)
            .map_err(|(id, e)| e.into_storage(ErrorSubject::Log(id), ErrorVerb::Write))?;
        self.wal.append(records).map_err(|e| {
            self.failures.log("write the Raft log", &e);
            e.into_storage(ErrorSubject::Logs, ErrorVerb::Write)
        })?;
        crash::point("store::append::after_write");
        self.flusher.submit(callback, began).map_err(|callback| {
            let msg = "the store's flusher thread is gone";
            callback.log_io_completed(Err(std::io::Error::other(msg)));
            StorageError::from(StorageIOError::write_logs(AnyError::error(msg)))
        })
    }

    /// Removes entries from `log_id.index` on, inclusive; durable before
    /// returning, so a restart never resurrects a conflicting suffix.
    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let _call = CoreCall::start("truncate", &self.disk);
        let wal = self.wal.clone();
        blocking(move || wal.truncate(log_id.index))
            .await
            .map_err(|e| {
                self.failures.log("truncate the Raft log", &e);
                e.into_storage(ErrorSubject::Log(log_id), ErrorVerb::Delete)
            })
    }

    /// Records `log_id` as the last purged id durably first, then deletes the
    /// log files wholly at or below it: a crash in between leaves only such
    /// files, which `open` deletes. Never a hole.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let _call = CoreCall::start("purge", &self.disk);
        let to_storage =
            |e: StoreError| e.into_storage(ErrorSubject::Log(log_id), ErrorVerb::Delete);
        let current: Option<LogId> = self
            .read_meta(LAST_PURGED_KEY, "last purged log id")
            .map_err(to_storage)?;
        if current >= Some(log_id) {
            return Ok(());
        }
        let record_failure = |e: StoreError| {
            self.failures.db("record a purge of the Raft log", &e);
            to_storage(e)
        };
        self.write_meta(LAST_PURGED_KEY, "last purged log id", &log_id)
            .map_err(record_failure)?;
        self.sync_meta().await.map_err(record_failure)?;
        let wal = self.wal.clone();
        blocking(move || wal.purge(log_id.index))
            .await
            .map_err(|e| {
                self.failures.log("delete purged Raft log segments", &e);
                to_storage(e)
            })
    }
}

#[cfg(test)]
#[path = "log_store_test.rs"]
mod tests;
