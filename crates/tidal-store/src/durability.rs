//! Making sled's writes durable (votes, purges, snapshots): flush, then
//! fdatasync sled's files; and the flusher thread that acknowledges log
//! appends only after the log files' sync (`wal`).
//!
//! Why not just `Db::flush`: sled 0.34.7 writes its log into one file, `db`,
//! and its flush ends in `sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)`
//! (`pagecache/iobuf.rs`), which pushes the dirty pages to the device but does
//! not flush the device's write cache and does not persist file metadata such
//! as the file's grown size. Values too large for a segment go to
//! `blobs/<lsn>` files (`pagecache/blob_io.rs`), which sled never fsyncs, and
//! neither the `blobs` directory nor sled's `conf` file are synced. openraft
//! requires that a saved vote and a purge survive a
//! power loss (RELIABILITY.md, Known dependency risks), so after every flush
//! we fdatasync `db`, fsync each new blob file and then the `blobs` directory.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use openraft::storage::LogFlushed;

use crate::disk_wait::DiskWait;
use crate::events::EventsSlot;
use crate::{StoreError, TypeConfig};

/// sled 0.34.7's file names under its directory (`config.rs`: `db_path`,
/// `config_path`, `blob_path`).
const SLED_DATA_FILE: &str = "db";
const SLED_CONF_FILE: &str = "conf";
const SLED_BLOB_DIR: &str = "blobs";

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

use crate::wal::sync_dir;

/// Flushes sled and fsyncs its files. Shared by the log store (appends, vote,
/// purge) and the state machine store (snapshots): one sled log holds all.
pub(crate) struct Durability {
    db: sled::Db,
    /// sled's log file, opened once and kept for `sync_data`.
    data_file: File,
    data_path: PathBuf,
    blob_dir: PathBuf,
    /// Blob files already synced. Blobs are written once (`create_new`) and
    /// never modified, so one fsync each is enough. The mutex also serializes
    /// whole sync rounds.
    synced_blobs: Mutex<BTreeSet<OsString>>,
    flush_delay: Option<Duration>,
    /// sled's files as of the last successful sync (power-loss runs only).
    #[cfg(feature = "failpoints")]
    image: Mutex<crate::sled_image::SledImage>,
}

impl Durability {
    /// Opens sled's data file for syncing, and makes the files sled created
    /// at open (and their directory entries) durable.
    pub(crate) fn open(
        db: sled::Db,
        dir: &Path,
        flush_delay: Option<Duration>,
    ) -> Result<Self, StoreError> {
        let data_path = dir.join(SLED_DATA_FILE);
        // Read-only is enough: fdatasync works on any open descriptor.
        let data_file =
            File::open(&data_path).map_err(io_err("open sled data file", &data_path))?;
        let conf_path = dir.join(SLED_CONF_FILE);
        match File::open(&conf_path) {
            Ok(f) => f.sync_all().map_err(io_err("fsync", &conf_path))?,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("open", &conf_path)(e)),
        }
        let blob_dir = dir.join(SLED_BLOB_DIR);
        let durability = Durability {
            db,
            data_file,
            data_path,
            blob_dir,
            synced_blobs: Mutex::new(BTreeSet::new()),
            flush_delay,
            #[cfg(feature = "failpoints")]
            image: Mutex::new(crate::sled_image::SledImage::new(dir)),
        };
        durability.sync()?;
        sync_dir(&durability.blob_dir)?;
        sync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(durability)
    }

    /// Makes every write sled accepted before this call durable. Blocking:
    /// call it from a blocking thread, never on an async worker.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        let mut synced = self
            .synced_blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(delay) = self.flush_delay {
            std::thread::sleep(delay);
        }
        self.db.flush()?;
        self.data_file
            .sync_data()
            .map_err(io_err("fdatasync sled data file", &self.data_path))?;
        self.sync_new_blobs(&mut synced)?;
        #[cfg(feature = "failpoints")]
        {
            let mut image = self.image.lock().unwrap_or_else(PoisonError::into_inner);
            if image.frozen {
                // A power loss came first: this sync never happened.
                crate::synced_lens::halt();
            }
            image.take()?;
        }
        Ok(())
    }

    /// Takes the image of sled's files as of the last sync and marks it
    /// frozen: a sync under way or to come never returns (power-loss runs
    /// only).
    #[cfg(feature = "failpoints")]
    pub(crate) fn freeze(&self) -> std::sync::MutexGuard<'_, crate::sled_image::SledImage> {
        let mut image = self.image.lock().unwrap_or_else(PoisonError::into_inner);
        image.frozen = true;
        image
    }

    fn sync_new_blobs(&self, synced: &mut BTreeSet<OsString>) -> Result<(), StoreError> {
        let entries = match std::fs::read_dir(&self.blob_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("list sled blob directory", &self.blob_dir)(e)),
        };
        let mut present = BTreeSet::new();
        let mut new_blobs = false;
        for entry in entries {
            let entry = entry.map_err(io_err("list sled blob directory", &self.blob_dir))?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                let path = entry.path();
                match File::open(&path).and_then(|f| f.sync_data()) {
                    Ok(()) => new_blobs = true,
                    // sled garbage-collected it meanwhile: nothing to keep.
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err("fdatasync sled blob", &path)(e)),
                }
            }
            present.insert(name);
        }
        if new_blobs {
            sync_dir(&self.blob_dir)?;
        }
        *synced = present;
        Ok(())
    }
}

/// A log sync that takes this long is logged (the disk is the bottleneck).
const SLOW_SYNC: std::time::Duration = std::time::Duration::from_millis(100);

/// A thread that acknowledges appends once they are durable. It takes every
/// callback queued so far, syncs once (group commit: the log files'
/// fdatasync, `wal::Wal::sync`), then fires them in order; appends that
/// arrive meanwhile wait for the next round. Each append's time, from the
/// core's call to its acknowledgement, goes to the store's events.
pub(crate) struct Flusher {
    tx: Option<mpsc::Sender<(LogFlushed<TypeConfig>, Instant)>>,
    thread: Option<JoinHandle<()>>,
    /// Appends queued and acknowledged: the Raft core waits meanwhile.
    disk: DiskWait,
}

impl Flusher {
    pub(crate) fn spawn(
        disk: DiskWait,
        events: EventsSlot,
        sync: impl Fn() -> Result<(), StoreError> + Send + 'static,
    ) -> Result<Self, StoreError> {
        let queued = disk.clone();
        let (tx, rx) = mpsc::channel::<(LogFlushed<TypeConfig>, Instant)>();
        let thread = std::thread::Builder::new()
            .name("tidal-store-flush".to_string())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    // Before the crash point: a stall armed there counts.
                    let started = std::time::Instant::now();
                    crate::crash::point("store::flush::before_sync");
                    let result = sync();
                    let took = started.elapsed();
                    if took >= SLOW_SYNC {
                        tracing::warn!(
                            took_ms = took.as_millis() as u64,
                            appends = batch.len(),
                            "the Raft log's fdatasync was slow; appends wait for it to be acknowledged"
                        );
                    }
                    crate::crash::point("store::flush::after_sync");
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "log flush failed; appends are not acknowledged");
                    }
                    // Uncounted before the core hears: it may append again
                    // at once, before this thread runs on.
                    disk.appends_done(batch.len(), started);
                    let events = events.get().filter(|_| result.is_ok());
                    if let Some(events) = events {
                        events.log_synced(took, batch.len());
                    }
                    for (callback, began) in batch {
                        if let Some(events) = events {
                            events.append_durable(began.elapsed());
                        }
                        // io::Error is not Clone: rebuild it for each callback.
                        callback.log_io_completed(
                            result.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string())),
                        );
                    }
                }
            })
            .map_err(|source| StoreError::Io {
                op: "spawn the flusher thread for",
                path: PathBuf::from(crate::wal::LOG_DIR),
                source,
            })?;
        Ok(Flusher {
            tx: Some(tx),
            thread: Some(thread),
            disk: queued,
        })
    }

    /// Queues `callback` of the append the core began at `began` to fire
    /// after the next durable sync. Gives it back if the thread is gone.
    pub(crate) fn submit(
        &self,
        callback: LogFlushed<TypeConfig>,
        began: Instant,
    ) -> Result<(), LogFlushed<TypeConfig>> {
        match &self.tx {
            Some(tx) => {
                // Counted before the thread can acknowledge it.
                let now = std::time::Instant::now();
                self.disk.append_submitted(now);
                tx.send((callback, began)).map_err(|e| {
                    self.disk.appends_done(1, now);
                    e.0 .0
                })
            }
            None => Err(callback),
        }
    }
}

impl Drop for Flusher {
    /// Closes the queue and waits for the last round, so every queued
    /// callback fires and the sled handle is released when the store drops.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the store's flusher thread panicked");
            }
        }
    }
}
