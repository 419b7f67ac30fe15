//! The Raft log's own files: segments of length-prefixed [`codec`] values,
//! appended with `pwrite` and made durable with one `fdatasync` per group
//! commit.
//!
//! Why not a sled tree: every sled flush hands the write of its buffer to
//! sled 0.34.7's I/O thread pool, which wakes all seven of its idle threads
//! for each job (`threadpool.rs`: `notify_all`), and ends in
//! `sync_file_range`, which would still need an `fdatasync`; that costs every
//! node context switches and CPU (figures in benches/README.md) for entries
//! that are written once, read back in order and dropped from the front. Here
//! an append is one `pwrite` per segment touched, and the flusher thread's
//! sync is one `fdatasync` of the segments written since the last.
//! sled keeps the vote, the last purged and committed ids and the snapshots.
//!
//! Layout: `<store>/log/<first index, 20 digits>.wal`. A record is
//! `[length: u32 little-endian][codec value of the entry]`; the codec value
//! carries the format version and a crc32, and the entry its own index, so
//! each record is checked when the log is opened. A segment is closed once it
//! holds [`SEGMENT_BYTES`] and the next starts at the following index.
//!
//! Crash safety: appends go at the end of the last segment; a crash can leave
//! a torn record there, which opening cuts off (it was never acknowledged:
//! the callback fires after the `fdatasync`). A truncation cuts one segment
//! and deletes the later ones, and is durable before it returns; if a crash
//! interrupts it, the segments after the first gap in the index sequence are
//! what it was deleting, and opening deletes them. A purge records the last
//! purged id in sled first (durably), then deletes whole segments below it;
//! opening deletes the segments a crash left below it.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use crate::codec::{decode_entry, entry_log_id};
use crate::synced_lens::SyncedLens;
use crate::{codec, Entry, LogId, StoreError};

/// The log's directory under the store's.
pub(crate) const LOG_DIR: &str = "log";
/// A segment is closed once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 64 << 20;
const SUFFIX: &str = ".wal";
const LEN_BYTES: usize = 4;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// fsyncs a directory, so the names created or removed in it survive a crash.
pub(crate) fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", path))
}

fn segment_name(first: u64) -> String {
    format!("{first:020}{SUFFIX}")
}

/// One segment file: the entries `first..first + offsets.len()`.
struct Segment {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Where each entry's record starts.
    offsets: Vec<u64>,
    /// The end of the last record.
    len: u64,
}

impl Segment {
    /// The index after this segment's last entry.
    fn next(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }

    /// Byte range of the records of entries `from..to` (both in this segment).
    fn span(&self, from: u64, to: u64) -> (u64, u64) {
        let at = |i: u64| -> u64 {
            let k = (i - self.first) as usize;
            self.offsets.get(k).copied().unwrap_or(self.len)
        };
        (at(from), at(to))
    }

    fn remove(self) -> Result<(), StoreError> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("delete log segment", &self.path)(e)),
        }
    }
}

struct Inner {
    /// In index order, contiguous: each starts where the previous ends.
    segments: Vec<Segment>,
    /// The first index readers see: the last purged index + 1 (0 if none).
    start: u64,
    /// The id of the last entry written (it may be below `start`).
    last: Option<LogId>,
}

impl Inner {
    /// The index the next append must carry, if the log holds anything.
    fn next(&self) -> Option<u64> {
        self.segments.last().map(Segment::next)
    }
}

/// An entry's id and its codec value, as appended.
pub(crate) type Record = (LogId, Vec<u8>);

/// What the next sync must make durable.
#[derive(Default)]
struct Unsynced {
    files: Vec<Arc<File>>,
    dir: bool,
}

/// The Raft log's segment files. Shared by the log store (writes), its
/// readers and the flusher thread (syncs).
pub(crate) struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    inner: RwLock<Inner>,
    unsynced: Mutex<Unsynced>,
    /// Serializes syncs, and holds the benchmark-only delay.
    sync_lock: Mutex<Option<Duration>>,
    /// The last entry the last sync made durable.
    durable: Mutex<Option<LogId>>,
    /// Set by a failed sync. Linux may drop dirty pages after a failed
    /// fsync and report success the next time, so once one fails no later
    /// sync may claim anything is durable: every one fails with this.
    failed: Mutex<Option<String>>,
    /// What is durable of each segment, for simulated power losses
    /// (`failpoints` builds; keeps nothing otherwise).
    lens: SyncedLens,
}

impl Wal {
    /// Opens (or creates) the log under `store_dir` and checks every record.
    /// `purged` is the last purged log id; segments wholly at or below it
    /// are what an interrupted purge left, and are deleted.
    pub(crate) fn open(
        store_dir: &Path,
        purged: Option<LogId>,
        flush_delay: Option<Duration>,
    ) -> Result<Self, StoreError> {
        Self::open_with(store_dir, purged, flush_delay, SEGMENT_BYTES)
    }

    pub(crate) fn open_with(
        store_dir: &Path,
        purged: Option<LogId>,
        flush_delay: Option<Duration>,
        segment_bytes: u64,
    ) -> Result<Self, StoreError> {
        let dir = store_dir.join(LOG_DIR);
        let created = !dir.exists();
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        if created {
            sync_dir(store_dir)?;
        }
        let mut firsts = Vec::new();
        for item in fs::read_dir(&dir).map_err(io_err("list log directory", &dir))? {
            let item = item.map_err(io_err("list log directory", &dir))?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            let first = name
                .strip_suffix(SUFFIX)
                .filter(|n| n.len() == 20)
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| {
                    StoreError::corrupt("log directory", format!("an unknown file {name:?}"))
                })?;
            firsts.push(first);
        }
        firsts.sort_unstable();

        let start = purged.map_or(0, |p| p.index + 1);
        let mut segments: Vec<Segment> = Vec::new();
        let mut last = None;
        let mut changed_dir = false;
        let count = firsts.len();
        for (k, first) in firsts.into_iter().enumerate() {
            let is_last = k + 1 == count;
            let path = dir.join(segment_name(first));
            if let Some(prev) = segments.last() {
                if first > prev.next() {
                    // What an interrupted truncation was deleting.
                    tracing::warn!(
                        segment = %path.display(),
                        after = prev.next(),
                        "deleting a log segment left behind a gap by an interrupted truncation"
                    );
                    fs::remove_file(&path).map_err(io_err("delete log segment", &path))?;
                    changed_dir = true;
                    continue;
                }
                if first < prev.next() {
                    return Err(StoreError::corrupt(
                        format!("log segment {}", path.display()),
                        format!(
                            "starts at {first}, inside the previous one (up to {})",
                            prev.next() - 1
                        ),
                    ));
                }
            }
            let (segment, seg_last) = read_segment(&path, first, is_last)?;
            if segment.offsets.is_empty() {
                // Created by an append that a crash cut before any record.
                segment.remove()?;
                changed_dir = true;
                continue;
            }
            if seg_last.is_some() {
                last = seg_last;
            }
            segments.push(segment);
        }
        // Finish a purge a crash interrupted: drop segments wholly below start.
        while segments.first().is_some_and(|s| s.next() <= start) {
            segments.remove(0).remove()?;
            changed_dir = true;
        }
        if let (Some(first), Some(_)) = (segments.first(), purged) {
            if first.first > start {
                return Err(StoreError::corrupt(
                    "log",
                    format!(
                        "a hole: the first entry is {} but the last purged is {}",
                        first.first,
                        start - 1
                    ),
                ));
            }
        }
        if changed_dir {
            sync_dir(&dir)?;
        }
        // What a crashed process wrote is in the page cache, not necessarily
        // on disk: make it durable before counting on it.
        let lens = SyncedLens::new();
        for segment in &segments {
            segment
                .file
                .sync_data()
                .map_err(io_err("fdatasync log segment", &segment.path))?;
            lens.opened(segment.first, segment.len);
        }
        Ok(Wal {
            dir,
            segment_bytes,
            inner: RwLock::new(Inner {
                segments,
                start,
                last,
            }),
            unsynced: Mutex::new(Unsynced::default()),
            sync_lock: Mutex::new(flush_delay),
            durable: Mutex::new(last),
            failed: Mutex::new(None),
            lens,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn mark_unsynced(&self, file: Option<Arc<File>>, dir: bool) {
        let mut u = self.unsynced.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = file {
            if !u.files.iter().any(|f| Arc::ptr_eq(f, &file)) {
                u.files.push(file);
            }
        }
        u.dir |= dir;
    }

    /// True if no segment has been written (not even a purged entry).
    pub(crate) fn is_empty(&self) -> bool {
        self.read().segments.is_empty()
    }

    /// The id of the last entry present, if any.
    pub(crate) fn last_log_id(&self) -> Option<LogId> {
        let inner = self.read();
        inner.last.filter(|l| l.index >= inner.start)
    }

    /// Writes already-encoded entries (`(log id, codec value)`, contiguous,
    /// continuing the log) at the end of the log: readable at once, durable
    /// after the next [`Wal::sync`].
    pub(crate) fn append(&self, records: Vec<Record>) -> Result<(), StoreError> {
        let mut inner = self.write();
        // Entries at or below the last purged one are covered by a snapshot
        // already; openraft's storage suite appends some, real use does not.
        let start = inner.start;
        let records: Vec<_> = records
            .into_iter()
            .filter(|(id, _)| id.index >= start)
            .collect();
        if records.is_empty() {
            return Ok(());
        }
        let mut k = 0;
        while k < records.len() {
            let index = records[k].0.index;
            // An empty log takes any first index (the filter above kept
            // only those above the purged ones).
            let expected = inner.next().unwrap_or(index);
            if index != expected {
                return Err(StoreError::corrupt(
                    "log append",
                    format!("entry {index} where entry {expected} comes next"),
                ));
            }
            let roll = inner
                .segments
                .last()
                .is_none_or(|s| s.len >= self.segment_bytes && !s.offsets.is_empty());
            if roll {
                let path = self.dir.join(segment_name(index));
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
                    .map_err(io_err("create log segment", &path))?;
                inner.segments.push(Segment {
                    first: index,
                    path,
                    file: Arc::new(file),
                    offsets: Vec::new(),
                    len: 0,
                });
                self.lens.created(index);
                self.mark_unsynced(None, true);
            }
            let segment = inner
                .segments
                .last_mut()
                .expect("a segment was just ensured");
            // Fill this segment up to its size, then roll for the rest.
            let mut buf = Vec::new();
            let mut offsets = Vec::new();
            let mut at = segment.len;
            while k < records.len() && (offsets.is_empty() || at < self.segment_bytes) {
                let (id, bytes) = &records[k];
                let len = u32::try_from(bytes.len()).map_err(|_| StoreError::Encode {
                    what: format!("log entry {}", id.index),
                    reason: format!("{} bytes do not fit a log record", bytes.len()),
                })?;
                offsets.push(at);
                buf.extend_from_slice(&len.to_le_bytes());
                buf.extend_from_slice(bytes);
                at += (LEN_BYTES + bytes.len()) as u64;
                k += 1;
            }
            segment
                .file
                .write_all_at(&buf, segment.len)
                .map_err(io_err("write log segment", &segment.path))?;
            segment.offsets.extend(offsets);
            segment.len = at;
            let file = segment.file.clone();
            inner.last = Some(records[k - 1].0);
            self.mark_unsynced(Some(file), false);
        }
        Ok(())
    }

    /// Makes every append made before this call durable. Blocking.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        let delay = self
            .sync_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(delay) = *delay {
            std::thread::sleep(delay);
        }
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(reason) = failed.as_ref() {
            return Err(StoreError::Background(format!(
                "an earlier sync of the log failed ({reason}); nothing written since is durable"
            )));
        }
        // Every append up to `last` marked its file before `last` moved
        // (both under the write lock), so the files taken next hold it.
        let (last, capture) = {
            let inner = self.read();
            let capture = self
                .lens
                .capture(inner.segments.iter().map(|s| (s.first, s.len)));
            (inner.last, capture)
        };
        let Unsynced { files, dir } =
            std::mem::take(&mut *self.unsynced.lock().unwrap_or_else(PoisonError::into_inner));
        let synced = files
            .iter()
            .try_for_each(|file| {
                file.sync_data()
                    .map_err(io_err("fdatasync log segment", &self.dir))
            })
            .and_then(|()| if dir { sync_dir(&self.dir) } else { Ok(()) });
        if let Err(e) = &synced {
            *failed = Some(e.to_string());
            return synced;
        }
        // In failpoints builds, never returns if a simulated power loss
        // came first: nothing this sync covered is acknowledged.
        self.lens.synced(capture);
        *self.durable.lock().unwrap_or_else(PoisonError::into_inner) = last;
        Ok(())
    }

    /// The last entry known durable: written before the last sync began.
    /// (A truncation may since have removed it; callers compare indexes
    /// with entries that are never truncated.)
    pub(crate) fn durable_log_id(&self) -> Option<LogId> {
        *self.durable.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entries with indexes in `lo..hi`, in order, stopping after the
    /// first whose records reach `max_bytes` in total (so at least one when
    /// the range holds any).
    pub(crate) fn entries(
        &self,
        lo: u64,
        hi: u128,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let inner = self.read();
        let lo = lo.max(inner.start);
        let Some(next) = inner.next() else {
            return Ok(Vec::new());
        };
        let hi = u64::try_from(hi.min(u128::from(next))).expect("at most next, a u64");
        let mut out = Vec::new();
        if lo >= hi {
            return Ok(out);
        }
        let mut bytes = 0usize;
        let first_seg = inner.segments.partition_point(|s| s.next() <= lo);
        for segment in &inner.segments[first_seg..] {
            if segment.first >= hi || bytes >= max_bytes {
                break;
            }
            let from = lo.max(segment.first);
            let mut to = hi.min(segment.next());
            // Stop at the byte budget: find the last entry needed.
            let budget = (max_bytes - bytes) as u64;
            let (begin, _) = segment.span(from, from);
            let k = segment.offsets[(from - segment.first) as usize..(to - segment.first) as usize]
                .partition_point(|&o| o - begin < budget);
            // Entries whose record starts before the budget runs out; the
            // one that reaches it is included.
            to = to.min(from + k.max(1) as u64);
            let (begin, end) = segment.span(from, to);
            let mut buf = vec![0u8; (end - begin) as usize];
            segment
                .file
                .read_exact_at(&mut buf, begin)
                .map_err(io_err("read log segment", &segment.path))?;
            let mut pos = 0usize;
            for index in from..to {
                let bytes_of = record_at(&buf, pos).ok_or_else(|| {
                    StoreError::corrupt(format!("log entry {index}"), "its record is cut short")
                })?;
                out.push(decode_entry(index, bytes_of)?);
                pos += LEN_BYTES + bytes_of.len();
            }
            bytes += buf.len();
        }
        Ok(out)
    }

    /// Removes the entries from `from` on, durably.
    pub(crate) fn truncate(&self, from: u64) -> Result<(), StoreError> {
        let mut inner = self.write();
        if inner.next().is_none_or(|next| from >= next) {
            return Ok(());
        }
        let mut removed = false;
        while inner.segments.last().is_some_and(|s| s.first >= from) {
            let segment = inner.segments.pop().expect("checked");
            self.lens.removed(segment.first);
            segment.remove()?;
            removed = true;
        }
        if let Some(segment) = inner.segments.last_mut() {
            let (cut, _) = segment.span(from, from);
            segment
                .file
                .set_len(cut)
                .and_then(|()| segment.file.sync_data())
                .map_err(io_err("truncate log segment", &segment.path))?;
            self.lens.truncated(segment.first, cut);
            segment.offsets.truncate((from - segment.first) as usize);
            segment.len = cut;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        // The new last entry's id: read from its record's head.
        inner.last = match from.checked_sub(1) {
            Some(prev) if inner.segments.last().is_some_and(|s| prev >= s.first) => {
                let segment = inner.segments.last().expect("checked");
                let (begin, end) = segment.span(prev, prev + 1);
                let mut buf = vec![0u8; (end - begin) as usize];
                segment
                    .file
                    .read_exact_at(&mut buf, begin)
                    .map_err(io_err("read log segment", &segment.path))?;
                let bytes = record_at(&buf, 0).ok_or_else(|| {
                    StoreError::corrupt(format!("log entry {prev}"), "its record is cut short")
                })?;
                Some(entry_log_id(prev, bytes)?)
            }
            _ => None,
        };
        Ok(())
    }

    /// Hides the entries up to `upto` and deletes the segments that hold
    /// nothing else. The caller has made the purge durable first.
    pub(crate) fn purge(&self, upto: u64) -> Result<(), StoreError> {
        let mut inner = self.write();
        inner.start = inner.start.max(upto + 1);
        let start = inner.start;
        let whole = inner.segments.partition_point(|s| s.next() <= start);
        for segment in inner.segments.drain(..whole).collect::<Vec<_>>() {
            self.lens.removed(segment.first);
            segment.remove()?;
        }
        Ok(())
    }

    /// Deletes every segment (before a migration writes the log afresh).
    pub(crate) fn clear(&self) -> Result<(), StoreError> {
        let mut inner = self.write();
        for segment in inner.segments.drain(..).collect::<Vec<_>>() {
            self.lens.removed(segment.first);
            segment.remove()?;
        }
        inner.last = None;
        sync_dir(&self.dir)
    }
}

/// The log's locks, held by a simulated power loss until the process aborts.
#[cfg(feature = "failpoints")]
pub(crate) struct Frozen<'a> {
    wal: &'a Wal,
    inner: std::sync::RwLockWriteGuard<'a, Inner>,
}

#[cfg(feature = "failpoints")]
impl Wal {
    /// Takes the write lock, so nothing is appended or truncated from here
    /// on. (Syncs are stopped by [`Frozen::discard_unsynced`], which freezes
    /// the record of what is durable.)
    pub(crate) fn freeze(&self) -> Frozen<'_> {
        Frozen {
            wal: self,
            inner: self.write(),
        }
    }
}

#[cfg(feature = "failpoints")]
impl Frozen<'_> {
    /// Cuts each segment back to its durable length and deletes the
    /// segments never made durable. Returns a summary.
    pub(crate) fn discard_unsynced(&mut self) -> Result<String, StoreError> {
        let plan = self.wal.lens.freeze();
        let (mut cut, mut deleted, mut bytes) = (0, 0, 0u64);
        let mut durable_next = None;
        for segment in &self.inner.segments {
            match plan.get(&segment.first).copied().flatten() {
                Some(len) => {
                    if len < segment.len {
                        segment
                            .file
                            .set_len(len)
                            .map_err(io_err("cut log segment", &segment.path))?;
                        cut += 1;
                        bytes += segment.len - len;
                    }
                    let kept = segment.offsets.partition_point(|&o| o < len);
                    durable_next = Some(segment.first + kept as u64);
                }
                None => {
                    fs::remove_file(&segment.path)
                        .map_err(io_err("delete log segment", &segment.path))?;
                    deleted += 1;
                    bytes += segment.len;
                }
            }
        }
        let written_next = self.inner.next();
        Ok(format!(
            "the log: {bytes} unsynced bytes dropped ({cut} segments cut, {deleted} never-synced \
             segments deleted); entries up to {} written, up to {} kept",
            written_next.map_or("none".to_string(), |n| n.saturating_sub(1).to_string()),
            durable_next.map_or("none".to_string(), |n| n.saturating_sub(1).to_string()),
        ))
    }
}

/// The codec value of the record at `pos` in `buf`, if whole.
fn record_at(buf: &[u8], pos: usize) -> Option<&[u8]> {
    let start = pos.checked_add(LEN_BYTES)?;
    let head = buf.get(pos..start)?;
    let len = u32::from_le_bytes(head.try_into().ok()?) as usize;
    buf.get(start..start.checked_add(len)?)
}

/// Reads and checks one segment ([`parse_segment`]), cutting off a torn
/// write at the end of the last one.
fn read_segment(
    path: &Path,
    first: u64,
    is_last: bool,
) -> Result<(Segment, Option<LogId>), StoreError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err("open log segment", path))?;
    let buf = fs::read(path).map_err(io_err("read log segment", path))?;
    let parsed = parse_segment(&buf, first, is_last)?;
    if let Some(e) = &parsed.torn {
        tracing::warn!(
            segment = %path.display(),
            at_byte = parsed.len,
            error = %e,
            "the log ends in a torn write (a crash during an append that was never acknowledged); cutting it off"
        );
        file.set_len(parsed.len as u64)
            .and_then(|()| file.sync_data())
            .map_err(io_err("cut a torn write off log segment", path))?;
    }
    let segment = Segment {
        first,
        path: path.to_path_buf(),
        file: Arc::new(file),
        offsets: parsed.offsets,
        len: parsed.len as u64,
    };
    Ok((segment, parsed.last))
}

/// What [`parse_segment`] found in a segment's bytes.
#[derive(Debug)]
pub(crate) struct ParsedSegment {
    /// Where each whole, checked record starts.
    pub(crate) offsets: Vec<u64>,
    /// The log id of the last of them.
    pub(crate) last: Option<LogId>,
    /// The end of the last of them: where the log ends.
    pub(crate) len: usize,
    /// Why the bytes from `len` on are a torn write (only in the last segment).
    pub(crate) torn: Option<StoreError>,
}

/// Checks the records of a segment whose first entry is `first`. A record
/// at the very end of the last segment that is cut short or fails its
/// checksum is a torn write: the log ends there. Anything else that fails
/// is corruption.
pub(crate) fn parse_segment(
    buf: &[u8],
    first: u64,
    is_last: bool,
) -> Result<ParsedSegment, StoreError> {
    let mut offsets = Vec::new();
    let mut pos = 0usize;
    let mut last = None;
    while pos < buf.len() {
        let index = first.saturating_add(offsets.len() as u64);
        let what = || format!("log entry {index}");
        let (torn, checked) = match record_at(buf, pos) {
            None => (
                true,
                Err(StoreError::corrupt(what(), "its record is cut short")),
            ),
            Some(bytes) => {
                let checked = entry_log_id(index, bytes).map(|id| (id, bytes.len()));
                let at_end = pos + LEN_BYTES + bytes.len() == buf.len();
                let torn = at_end && matches!(checked, Err(StoreError::Checksum { .. }));
                (torn, checked)
            }
        };
        match checked {
            Ok((id, len)) => {
                offsets.push(pos as u64);
                pos += LEN_BYTES + len;
                last = Some(id);
            }
            Err(e) if torn && is_last => {
                return Ok(ParsedSegment {
                    offsets,
                    last,
                    len: pos,
                    torn: Some(e),
                })
            }
            Err(e) => return Err(e),
        }
    }
    Ok(ParsedSegment {
        offsets,
        last,
        len: pos,
        torn: None,
    })
}

/// Encodes entries as the log stores them.
pub(crate) fn encode_entries<I: IntoIterator<Item = Entry>>(
    entries: I,
) -> Result<Vec<Record>, (LogId, StoreError)> {
    entries
        .into_iter()
        .map(|entry| {
            codec::encode("log entry", &entry)
                .map(|bytes| (entry.log_id, bytes))
                .map_err(|e| (entry.log_id, e))
        })
        .collect()
}

#[cfg(test)]
#[path = "wal_test.rs"]
mod tests;
