//! tidal-store: openraft storage for tidal — the Raft log in its own segment
//! files; the vote, the last purged log id and snapshots on sled; and the
//! in-memory state machine wrapper.
//!
//! [`open`] opens the log files and one sled database under a directory and returns the two
//! halves openraft drives: a [`LogStore`] ([`openraft::storage::RaftLogStorage`])
//! and a [`StateMachineStore`] ([`openraft::storage::RaftStateMachine`]). The
//! applied [`tidal_core::State`] lives in memory behind a [`StateHandle`] the
//! server reads from; it is rebuilt at start-up from the latest stored snapshot
//! plus the log (openraft re-applies committed entries).
//!
//! Every stored value is a one-byte format version, a crc32 of the body, and
//! a bincode body ([`codec`]). All of them are verified when the store opens:
//! a corrupt store is a [`StoreError`] at start-up, never a silent load (such
//! a node can be wiped and re-added through a snapshot).
//!
//! Durability (RELIABILITY.md, Known dependency risks): an append is
//! acknowledged to openraft only after an fdatasync of the log files (one per
//! group of appends, on the flusher thread); a vote, a purge or a snapshot
//! only after sled's flush *and* an fdatasync of sled's files
//! ([`durability`]), done off the async runtime.
//!
//! # Modules
//!
//! - [`error`]: [`StoreError`] and its mapping to openraft's `StorageError`.
//! - `fuzz` (tests and the `fuzzing` feature only): the fuzz targets of the
//!   store's decoders, their corpus replay and seeds (fuzz/README.md).
//! - [`failure`]: [`Failures`], the first write the store could not make.
//! - [`codec`]: the versioned, checksummed value encoding.
//! - [`crash`]: crash points and simulated power loss for fault-injection runs
//!   (feature `failpoints`).
//! - `power_loss`: what is durable of the log and of sled, and discarding the rest.
//! - `disk_wait`: [`DiskWait`], when the Raft core waits for the disk.
//! - `durability`: flush + fsync of sled's files, and the group-commit flusher thread.
//! - [`events`]: [`StoreEvents`], what apply and the log tell the server's metrics.
//! - `wal`: the Raft log's segment files: append, read, truncate, purge, recovery.
//! - [`log_store`]: [`LogStore`] and [`LogReader`]: log entries, vote, purge, truncate.
//! - [`state_machine`]: [`StateMachineStore`], [`Applied`], [`StateHandle`].
//! - [`restore`]: seeding an empty store from a backup (disaster recovery).
//! - [`snapshot`]: snapshot encoding, the stored snapshot, and [`SnapshotBuilder`].
//!
//! # Dependency rule
//!
//! Depends on tidal-core, openraft, sled, bincode (and crc32fast, serde,
//! thiserror, tracing, tokio for `spawn_blocking`). Never on tonic or the
//! server; everything outside this crate sees the store only through
//! openraft's storage traits, [`open`], and [`StateHandle`], so sled can be
//! replaced.

pub mod applied;
pub mod codec;
pub mod crash;
mod disk_wait;
mod durability;
pub mod error;
pub mod events;
pub mod failure;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz;
pub mod log_store;
#[cfg(feature = "failpoints")]
mod power_loss;
pub mod restore;
#[cfg(feature = "failpoints")]
mod sled_image;
pub mod snapshot;
pub mod state_machine;
mod synced_lens;
mod types;
pub mod upgrade;
mod wal;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use applied::Applied;
pub use disk_wait::DiskWait;
pub use error::StoreError;
pub use events::{EventsSlot, StoreEvents};
pub use failure::{Failures, WriteFailure};
pub use log_store::{LogReader, LogStore};
pub use restore::restore;
pub use snapshot::{decode_snapshot, encode_snapshot, SnapshotBuilder};
pub use state_machine::{StateHandle, StateMachineStore};
pub use types::{
    Entry, LogId, Membership, NodeId, Raft, Snapshot, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig, Vote,
};

/// Tuning of the store; `Default` is what production uses.
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    /// Benchmarks only: sleep this long before each durable flush, to imitate
    /// a slow disk. `None` in production.
    pub flush_delay: Option<Duration>,
    /// Tests only: the highest cluster format version this node claims to
    /// support, below the build's [`tidal_core::FORMAT_VERSION_MAX`], to
    /// imitate an older build. `None`: the build's.
    pub max_format_version: Option<u8>,
}

impl StoreOptions {
    /// The highest cluster format version this node supports.
    pub fn supported_format_version(&self) -> u8 {
        self.max_format_version
            .unwrap_or(tidal_core::FORMAT_VERSION_MAX)
            .clamp(
                tidal_core::FORMAT_VERSION_MIN,
                tidal_core::FORMAT_VERSION_MAX,
            )
    }
}

/// sled's page cache.
const SLED_CACHE_BYTES: u64 = 64 << 20;

/// Opens (or creates) the store under `dir`: the log's segment files under
/// `dir/log`, and one sled database holding the vote, the last purged id and
/// the latest snapshot.
///
/// Every stored value is verified (format version and checksum) and the log
/// is checked for holes; the state machine is restored from the latest
/// snapshot. Any problem is an error here, before the node serves anything.
pub fn open(dir: &Path, opts: StoreOptions) -> Result<(LogStore, StateMachineStore), StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
        op: "create directory",
        path: dir.to_path_buf(),
        source,
    })?;
    // sled caches 1 GiB by default; the state machine lives in memory and
    // the log is read back only for followers that fall behind, so a small
    // cache is enough and keeps the server's memory near its state's size.
    let started = std::time::Instant::now();
    let db = open_sled(
        sled::Config::new()
            .path(dir)
            .cache_capacity(SLED_CACHE_BYTES),
    )?;
    let sled_ms = started.elapsed().as_millis() as u64;
    let durability = Arc::new(durability::Durability::open(
        db.clone(),
        dir,
        opts.flush_delay,
    )?);
    let synced_ms = started.elapsed().as_millis() as u64;
    let failures = Failures::new(dir);
    let events = EventsSlot::default();
    let log = LogStore::open(
        &db,
        dir,
        durability.clone(),
        opts.flush_delay,
        failures.clone(),
        DiskWait::default(),
        events.clone(),
    )?;
    let log_ms = started.elapsed().as_millis() as u64;
    let sm = StateMachineStore::open(
        &db,
        durability,
        failures,
        opts.supported_format_version(),
        events,
    )?;
    tracing::info!(
        dir = %dir.display(),
        sled_ms,
        synced_ms,
        log_ms,
        took_ms = started.elapsed().as_millis() as u64,
        last_applied = ?sm.handle().read().last_applied,
        "store opened"
    );
    Ok((log, sm))
}

/// How long [`open_sled`] waits for sled's lock to be released.
const SLED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens sled, waiting (at most [`SLED_LOCK_WAIT`]) while its directory's
/// lock is held: sled releases it only when its last background thread has
/// let go of the database, some time after the `Db` was dropped, and a
/// process restarted by its supervisor may start before the old one has
/// quite exited. Then it is an error naming the directory.
pub fn open_sled(config: sled::Config) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + SLED_LOCK_WAIT;
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other.map_err(StoreError::from),
        }
    }
}
