//! Simulated power loss for fault-injection runs (feature `failpoints`):
//! the store keeps apart what it wrote and what it made durable, and
//! [`crate::crash::power_loss`] throws away everything not made durable, then
//! aborts the process, as if the machine had lost power at that instant.
//!
//! What counts as durable is exactly what the store fsynced:
//!
//! - The log's segments ([`SyncedLens`](crate::synced_lens::SyncedLens)): each segment's length as of the
//!   last log sync that covered it (the group commit's fdatasync and the log
//!   directory's fsync), or of the truncation that cut it (`set_len` +
//!   fdatasync). A segment created since the last log sync is not durable
//!   at all (its name is not): a power loss deletes it. Segments removed
//!   (truncation, purge) stay removed.
//! - sled's files (vote, last purged id, committed id, snapshots) ([`SledImage`](crate::sled_image::SledImage)): a
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
//! Without the feature, [`SyncedLens`](crate::synced_lens::SyncedLens) keeps nothing and [`SledImage`](crate::sled_image::SledImage) does
//! not exist: a normal build has no trace of this.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::durability::Durability;
use crate::wal::Wal;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The open stores of this process.
static STORES: Mutex<Vec<(Weak<Wal>, Weak<Durability>)>> = Mutex::new(Vec::new());

pub(crate) fn register(wal: &Arc<Wal>, durability: &Arc<Durability>) {
    crate::crash::on_power_loss(discard_all);
    let mut stores = lock(&STORES);
    stores.retain(|(w, d)| w.strong_count() > 0 || d.strong_count() > 0);
    stores.push((Arc::downgrade(wal), Arc::downgrade(durability)));
}

/// Freezes every open store, discards what it did not make durable and
/// returns what was done, one line per store. The stores are unusable
/// afterwards (their locks are never released): abort next.
fn discard_all() -> Vec<String> {
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
