//! When the Raft core waits for this node's disk.
//!
//! openraft 0.9's core awaits each log append until its fdatasync is done
//! (`append_to_log`), and awaits the store's other calls (a vote, a purge,
//! the committed id) as they run: while it waits it sends no heartbeat and
//! answers no vote. A disk that stalls for a few hundred ms (cloud disks do,
//! now and then; three servers on one disk stall together) silences the
//! node's Raft for that long. [`DiskWait`] records those waits, so the
//! server can tell such a silence from a dead or cut-off leader
//! (tidal-server's `raft::alive`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A shared record of the Raft core's waits for the disk; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct DiskWait(Arc<Mutex<Waits>>);

#[derive(Debug, Default)]
struct Waits {
    /// Appends handed to the flusher and not yet acknowledged.
    appends: usize,
    /// Since when the core has waited for an acknowledgement, while
    /// `appends > 0`.
    appends_since: Option<Instant>,
    /// Since when the core has been inside a store call, if it is.
    call_since: Option<Instant>,
}

impl DiskWait {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waits> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An append was handed to the flusher at `now`: the core waits for it.
    pub(crate) fn append_submitted(&self, now: Instant) {
        let mut w = self.lock();
        w.appends += 1;
        w.appends_since.get_or_insert(now);
    }

    /// `n` appends are acknowledged now by a sync that began at
    /// `sync_began`. Appends still queued came during that sync, so their
    /// wait began no earlier than it did.
    pub(crate) fn appends_done(&self, n: usize, sync_began: Instant) {
        let mut w = self.lock();
        w.appends = w.appends.saturating_sub(n);
        w.appends_since = (w.appends > 0).then_some(sync_began);
    }

    /// The core entered a store call at `now`.
    pub(crate) fn call_began(&self, now: Instant) {
        self.lock().call_since = Some(now);
    }

    /// The core's store call ended.
    pub(crate) fn call_ended(&self) {
        self.lock().call_since = None;
    }

    /// How long the core has been waiting for the disk at `now`, if it is.
    pub fn waiting(&self, now: Instant) -> Option<Duration> {
        let w = self.lock();
        let since = match (w.appends_since, w.call_since) {
            (Some(a), Some(c)) => a.min(c),
            (a, c) => a.or(c)?,
        };
        Some(now.saturating_duration_since(since))
    }
}

#[cfg(test)]
mod tests {
    use super::DiskWait;
    use std::time::{Duration, Instant};

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_append_is_waited_for_until_its_sync_acknowledges_it() {
        let t0 = Instant::now();
        let d = DiskWait::default();
        assert_eq!(d.waiting(t0), None);
        d.append_submitted(t0);
        assert_eq!(d.waiting(t0 + 300 * MS), Some(300 * MS));
        d.appends_done(1, t0);
        assert_eq!(d.waiting(t0 + 301 * MS), None);
    }

    #[test]
    fn appends_queued_during_a_sync_wait_from_its_start() {
        let t0 = Instant::now();
        let d = DiskWait::default();
        d.append_submitted(t0);
        let sync = t0 + MS;
        d.append_submitted(t0 + 20 * MS);
        d.appends_done(1, sync);
        assert_eq!(
            d.waiting(t0 + 40 * MS),
            Some(39 * MS),
            "the second append waits since the sync began"
        );
        d.appends_done(1, t0 + 30 * MS);
        assert_eq!(d.waiting(t0 + 50 * MS), None);
        // An acknowledgement the thread gives back (its queue closed)
        // leaves nothing counted.
        d.appends_done(1, t0 + 60 * MS);
        assert_eq!(d.waiting(t0 + 70 * MS), None);
    }

    #[test]
    fn a_store_call_is_a_wait_and_the_earliest_wait_counts() {
        let t0 = Instant::now();
        let d = DiskWait::default();
        d.call_began(t0);
        d.append_submitted(t0 + 10 * MS);
        assert_eq!(d.waiting(t0 + 70 * MS), Some(70 * MS));
        d.call_ended();
        assert_eq!(d.waiting(t0 + 90 * MS), Some(80 * MS));
        d.appends_done(1, t0 + 10 * MS);
        assert_eq!(d.waiting(t0 + 95 * MS), None);
    }
}
