//! Simulated power loss for fault-injection runs (feature `failpoints`):
//! the store keeps apart what it wrote and what it made durable, and
//! [`crate::crash::power_loss`] throws away everything not made durable, then
//! aborts the process, as if the machine had lost power at that instant.
//!
//! What counts as durable is exactly what the store fsynced:
//!
//! - The log's segments ([`SyncedLens`]): each segment's length as of the
//!   last log sync that covered it (the group commit's fdatasync and the log
//!   directory's fsync), or of the truncation that cut it (`set_len` +
//!   fdatasync). A segment created since the last log sync is not durable
//!   at all (its name is not): a power loss deletes it. Segments removed
//!   (truncation, purge) stay removed.
//! - sled's files (vote, last purged id, committed id, snapshots) ([`SledImage`]): a
//!   copy of every file of sled's directory (not the log's) taken at the end
//!   of each successful durability sync, after the fdatasyncs. A power loss
//!   puts that copy back. Those syncs are rare (a vote, a purge, a snapshot)
//!   so copying sled's files each time is affordable in this test-only mode;
//!   the cost is counted and printed with each power loss.
//!
//! A power loss takes the log's write lock and the image's lock for good
//! and marks both frozen before it discards anything: no append or
//! truncation runs again, and a sync that was under way (its fdatasync may
//! be in flight, as at a real power cut) or starts later never records its
//! result and never returns, so nothing it covered is acknowledged. A sync
//! that recorded its result before the freeze made its writes durable, and
//! they are kept. sled's files are replaced by rename, so a write sled's own
//! threads still issue goes to the old, unlinked file.
//!
//! Without the feature, [`SyncedLens`] keeps nothing and [`SledImage`] does
//! not exist: a normal build has no trace of this.

#[cfg(feature = "failpoints")]
pub(crate) use enabled::*;

#[cfg(not(feature = "failpoints"))]
pub(crate) use disabled::*;

#[cfg(not(feature = "failpoints"))]
mod disabled {
    /// Keeps nothing in a normal build.
    pub(crate) struct SyncedLens;

    /// What a log sync captured: nothing in a normal build.
    pub(crate) struct Capture;

    impl SyncedLens {
        #[inline(always)]
        pub(crate) fn new() -> Self {
            SyncedLens
        }
        #[inline(always)]
        pub(crate) fn opened(&self, _first: u64, _len: u64) {}
        #[inline(always)]
        pub(crate) fn created(&self, _first: u64) {}
        #[inline(always)]
        pub(crate) fn removed(&self, _first: u64) {}
        #[inline(always)]
        pub(crate) fn truncated(&self, _first: u64, _cut: u64) {}
        #[inline(always)]
        pub(crate) fn capture(&self, _segments: impl Iterator<Item = (u64, u64)>) -> Capture {
            Capture
        }
        #[inline(always)]
        pub(crate) fn synced(&self, _capture: Capture) {}
    }
}

#[cfg(feature = "failpoints")]
mod enabled {
    use std::collections::BTreeMap;
    use std::fs;
    use std::io::ErrorKind;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex, PoisonError, Weak};
    use std::time::{Duration, Instant};

    use crate::durability::Durability;
    use crate::wal::{Wal, LOG_DIR};
    use crate::StoreError;

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    struct Seg {
        /// Tells apart a segment removed and created again under the same
        /// first index.
        serial: u64,
        /// The length known durable; `None`: the file itself is not.
        synced: Option<u64>,
        /// The shortest truncation since the last capture.
        cut_since_capture: Option<u64>,
    }

    #[derive(Default)]
    struct Lens {
        next_serial: u64,
        segs: BTreeMap<u64, Seg>,
        /// Set by a power loss: no sync may record anything from here on.
        frozen: bool,
    }

    /// Each log segment's durable length. Every call is made under the
    /// log's lock (`wal::Inner`), so the map follows the segments exactly.
    #[derive(Default)]
    pub(crate) struct SyncedLens {
        inner: Mutex<Lens>,
    }

    /// Each segment's (first index, serial, length) when a log sync began.
    pub(crate) struct Capture(Vec<(u64, u64, u64)>);

    impl SyncedLens {
        pub(crate) fn new() -> Self {
            SyncedLens::default()
        }

        fn insert(&self, first: u64, synced: Option<u64>) {
            let mut l = lock(&self.inner);
            let serial = l.next_serial;
            l.next_serial += 1;
            l.segs.insert(
                first,
                Seg {
                    serial,
                    synced,
                    cut_since_capture: None,
                },
            );
        }

        /// A segment found (and fdatasynced) when the log was opened.
        pub(crate) fn opened(&self, first: u64, len: u64) {
            self.insert(first, Some(len));
        }

        /// A segment created by an append: nothing of it is durable yet.
        pub(crate) fn created(&self, first: u64) {
            self.insert(first, None);
        }

        pub(crate) fn removed(&self, first: u64) {
            lock(&self.inner).segs.remove(&first);
        }

        /// A segment cut to `cut` and fdatasynced: its first `cut` bytes are
        /// durable if its name is.
        pub(crate) fn truncated(&self, first: u64, cut: u64) {
            if let Some(seg) = lock(&self.inner).segs.get_mut(&first) {
                seg.synced = seg.synced.map(|_| cut);
                seg.cut_since_capture = Some(seg.cut_since_capture.map_or(cut, |c| c.min(cut)));
            }
        }

        /// Called when a log sync begins, under the log's lock, with each
        /// segment's (first index, length): what the sync will make durable.
        pub(crate) fn capture(&self, segments: impl Iterator<Item = (u64, u64)>) -> Capture {
            let mut l = lock(&self.inner);
            let mut out = Vec::new();
            for (first, len) in segments {
                if let Some(seg) = l.segs.get_mut(&first) {
                    seg.cut_since_capture = None;
                    out.push((first, seg.serial, len));
                }
            }
            Capture(out)
        }

        /// The sync that made `capture` succeeded: each segment it covered
        /// is durable up to its captured length, or to a later truncation.
        /// Never returns if a power loss came first: that sync did not
        /// complete, and must acknowledge nothing.
        pub(crate) fn synced(&self, capture: Capture) {
            let mut l = lock(&self.inner);
            if l.frozen {
                drop(l);
                halt();
            }
            for (first, serial, len) in capture.0 {
                if let Some(seg) = l.segs.get_mut(&first).filter(|s| s.serial == serial) {
                    let len = seg.cut_since_capture.map_or(len, |c| c.min(len));
                    seg.synced = Some(len);
                }
            }
        }

        /// Freezes the map (no sync records anything again) and returns
        /// each segment's durable length (`None`: delete it).
        pub(crate) fn freeze(&self) -> BTreeMap<u64, Option<u64>> {
            let mut l = lock(&self.inner);
            l.frozen = true;
            l.segs.iter().map(|(first, s)| (*first, s.synced)).collect()
        }
    }

    /// A copy of sled's files (every file under the store's directory but
    /// the log's) as of the last successful durability sync.
    pub(crate) struct SledImage {
        dir: PathBuf,
        files: BTreeMap<PathBuf, Vec<u8>>,
        /// How many copies were taken, their total time, the last one's size.
        copies: u64,
        copy_time: Duration,
        bytes: u64,
        /// Set by a power loss: no sync may take a copy (or return) again.
        pub(crate) frozen: bool,
    }

    /// Where a sync that lost the race with a power loss ends: it never
    /// returns, so nothing it covered is acknowledged; the process aborts.
    pub(crate) fn halt() -> ! {
        loop {
            std::thread::park();
        }
    }

    /// Every regular file under `dir` (relative paths), but the log's.
    fn sled_files(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
        let mut out = Vec::new();
        let mut pending = vec![PathBuf::new()];
        while let Some(rel) = pending.pop() {
            let at = dir.join(&rel);
            let entries = match fs::read_dir(&at) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(StoreError::Io {
                        op: "list",
                        path: at,
                        source,
                    })
                }
            };
            for entry in entries {
                let entry = entry.map_err(|source| StoreError::Io {
                    op: "list",
                    path: at.clone(),
                    source,
                })?;
                let name = rel.join(entry.file_name());
                if name == Path::new(LOG_DIR) {
                    continue;
                }
                match entry.file_type() {
                    Ok(t) if t.is_dir() => pending.push(name),
                    Ok(t) if t.is_file() => out.push(name),
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    impl SledImage {
        pub(crate) fn new(dir: &Path) -> Self {
            SledImage {
                dir: dir.to_path_buf(),
                files: BTreeMap::new(),
                copies: 0,
                copy_time: Duration::ZERO,
                bytes: 0,
                frozen: false,
            }
        }

        /// Copies sled's files. Called at the end of each successful sync,
        /// under the sync lock.
        pub(crate) fn take(&mut self) -> Result<(), StoreError> {
            let started = Instant::now();
            let mut files = BTreeMap::new();
            for rel in sled_files(&self.dir)? {
                let path = self.dir.join(&rel);
                match fs::read(&path) {
                    Ok(bytes) => {
                        files.insert(rel, bytes);
                    }
                    // Removed meanwhile (a blob sled collected).
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(StoreError::Io {
                            op: "copy",
                            path,
                            source,
                        })
                    }
                }
            }
            self.bytes = files.values().map(|b| b.len() as u64).sum();
            self.files = files;
            self.copies += 1;
            self.copy_time += started.elapsed();
            Ok(())
        }

        /// Puts the copy back: deletes the files sled made since, replaces
        /// the others by rename (sled's open descriptors keep pointing at
        /// the old files). Returns a summary.
        fn restore(&self) -> Result<String, StoreError> {
            let io = |op: &'static str, path: &Path| {
                let path = path.to_path_buf();
                move |source| StoreError::Io { op, path, source }
            };
            let mut deleted = 0;
            for rel in sled_files(&self.dir)? {
                if !self.files.contains_key(&rel) {
                    let path = self.dir.join(&rel);
                    match fs::remove_file(&path) {
                        Ok(()) => deleted += 1,
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(io("delete", &path)(e)),
                    }
                }
            }
            let mut changed = 0;
            for (rel, bytes) in &self.files {
                let path = self.dir.join(rel);
                if fs::read(&path).map_or(true, |now| now != *bytes) {
                    changed += 1;
                }
                let mut tmp = path.clone().into_os_string();
                tmp.push(".power-loss");
                let tmp = PathBuf::from(tmp);
                fs::write(&tmp, bytes).map_err(io("write", &tmp))?;
                fs::rename(&tmp, &path).map_err(io("replace", &path))?;
            }
            Ok(format!(
                "sled's {} files put back as of its last sync ({} bytes; {} of them written since, \
                 {} newer files deleted; {} copies taken, {} ms in all, {:.2} ms each)",
                self.files.len(),
                self.bytes,
                changed,
                deleted,
                self.copies,
                self.copy_time.as_millis(),
                self.copy_time.as_secs_f64() * 1000.0 / self.copies.max(1) as f64,
            ))
        }
    }

    /// The open stores of this process.
    static STORES: Mutex<Vec<(Weak<Wal>, Weak<Durability>)>> = Mutex::new(Vec::new());

    pub(crate) fn register(wal: &Arc<Wal>, durability: &Arc<Durability>) {
        let mut stores = lock(&STORES);
        stores.retain(|(w, d)| w.strong_count() > 0 || d.strong_count() > 0);
        stores.push((Arc::downgrade(wal), Arc::downgrade(durability)));
    }

    /// Freezes every open store, discards what it did not make durable and
    /// returns what was done, one line per store. The stores are unusable
    /// afterwards (their locks are never released): abort next.
    pub(crate) fn discard_all() -> Vec<String> {
        let live: Vec<(Arc<Wal>, Arc<Durability>)> = lock(&STORES)
            .iter()
            .filter_map(|(w, d)| Some((w.upgrade()?, d.upgrade()?)))
            .collect();
        // Freeze all first: from here on nothing is written, synced or
        // acknowledged.
        let frozen: Vec<_> = live
            .iter()
            .map(|(wal, durability)| (wal.freeze(), durability.freeze()))
            .collect();
        let mut lines = Vec::new();
        for (mut wal, image) in frozen {
            let log = wal
                .discard_unsynced()
                .unwrap_or_else(|e| format!("the log: {e}"));
            let sled = image.restore().unwrap_or_else(|e| format!("sled: {e}"));
            lines.push(format!("{log}; {sled}"));
            // Never unlocked: nothing may touch the files again.
            std::mem::forget(wal);
            std::mem::forget(image);
        }
        std::mem::forget(live);
        lines
    }
}
