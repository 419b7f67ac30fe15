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
#[derive(Clone, Debug)]
pub struct DiskWait(Arc<Mutex<Waits>>);

#[derive(Debug)]
struct Waits {
    /// A wait at least this long is a stall.
    stall: Duration,
    /// Appends handed to the flusher and not yet acknowledged.
    appends: usize,
    /// Since when the core has waited for an acknowledgement, while
    /// `appends > 0`.
    appends_since: Option<Instant>,
    /// Since when the core has been inside a store call, if it is.
    call_since: Option<Instant>,
    /// The latest wait that was a stall and has ended: (start, end).
    last_stall: Option<(Instant, Instant)>,
}

/// The Raft core's latest stall on the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stall {
    /// When the core began to wait.
    pub since: Instant,
    /// When it stopped waiting; `None` while it still waits.
    pub ended: Option<Instant>,
}

impl DiskWait {
    /// A wait of `stall` or longer counts as a stall.
    pub fn new(stall: Duration) -> DiskWait {
        DiskWait(Arc::new(Mutex::new(Waits {
            stall,
            appends: 0,
            appends_since: None,
            call_since: None,
            last_stall: None,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waits> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An append was handed to the flusher at `now`: the core waits for it.
    pub(crate) fn append_submitted(&self, now: Instant) {
        let mut w = self.lock();
        w.appends += 1;
        w.appends_since.get_or_insert(now);
    }

    /// `n` appends were acknowledged at `now` by a sync that began at
    /// `sync_began`. Appends still queued came during that sync, so their
    /// wait began no earlier than it did.
    pub(crate) fn appends_done(&self, n: usize, sync_began: Instant, now: Instant) {
        let mut w = self.lock();
        w.appends = w.appends.saturating_sub(n);
        if let Some(since) = w.appends_since.take() {
            w.ended(since, now);
        }
        if w.appends > 0 {
            w.appends_since = Some(sync_began);
        }
    }

    /// The core entered a store call at `now`.
    pub(crate) fn call_began(&self, now: Instant) {
        self.lock().call_since = Some(now);
    }

    /// The core's store call ended at `now`.
    pub(crate) fn call_ended(&self, now: Instant) {
        let mut w = self.lock();
        if let Some(since) = w.call_since.take() {
            w.ended(since, now);
        }
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

    /// The core's latest stall at `now`: the wait going on if it has lasted
    /// a stall's length already, else the latest one that did and ended.
    pub fn last_stall(&self, now: Instant) -> Option<Stall> {
        let stall = self.lock().stall;
        if let Some(waited) = self.waiting(now).filter(|w| *w >= stall) {
            return Some(Stall {
                since: now - waited,
                ended: None,
            });
        }
        self.lock().last_stall.map(|(since, ended)| Stall {
            since,
            ended: Some(ended),
        })
    }
}

impl Waits {
    fn ended(&mut self, since: Instant, now: Instant) {
        if now.saturating_duration_since(since) >= self.stall
            && self.last_stall.is_none_or(|(_, e)| e <= now)
        {
            self.last_stall = Some((since, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{DiskWait, Stall};
    use std::time::{Duration, Instant};

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn short_waits_are_no_stall_and_long_ones_are_remembered() {
        let t0 = Instant::now();
        let d = DiskWait::new(50 * MS);
        assert_eq!(d.waiting(t0), None);
        d.append_submitted(t0);
        assert_eq!(d.waiting(t0 + 3 * MS), Some(3 * MS));
        d.appends_done(1, t0, t0 + 3 * MS);
        assert_eq!(d.waiting(t0 + 4 * MS), None);
        assert_eq!(d.last_stall(t0 + 4 * MS), None, "3 ms is no stall");

        let t1 = t0 + 10 * MS;
        d.append_submitted(t1);
        assert_eq!(d.last_stall(t1 + 20 * MS), None, "not a stall yet");
        let going = Stall {
            since: t1,
            ended: None,
        };
        assert_eq!(d.last_stall(t1 + 60 * MS), Some(going));
        d.appends_done(1, t1, t1 + 300 * MS);
        let done = Stall {
            since: t1,
            ended: Some(t1 + 300 * MS),
        };
        assert_eq!(d.last_stall(t1 + 400 * MS), Some(done));
        assert_eq!(d.waiting(t1 + 400 * MS), None);
    }

    #[test]
    fn appends_queued_during_a_sync_wait_from_its_start() {
        let t0 = Instant::now();
        let d = DiskWait::new(50 * MS);
        d.append_submitted(t0);
        let sync = t0 + MS;
        d.append_submitted(t0 + 20 * MS);
        d.appends_done(1, sync, t0 + 30 * MS);
        assert_eq!(
            d.waiting(t0 + 40 * MS),
            Some(39 * MS),
            "the second append waits since the sync began"
        );
        d.appends_done(1, t0 + 30 * MS, t0 + 45 * MS);
        assert_eq!(d.waiting(t0 + 50 * MS), None);
    }

    #[test]
    fn a_store_call_is_a_wait_and_the_earliest_wait_counts() {
        let t0 = Instant::now();
        let d = DiskWait::new(50 * MS);
        d.call_began(t0);
        d.append_submitted(t0 + 10 * MS);
        assert_eq!(d.waiting(t0 + 70 * MS), Some(70 * MS));
        d.call_ended(t0 + 80 * MS);
        assert_eq!(d.waiting(t0 + 90 * MS), Some(80 * MS));
        assert_eq!(
            d.last_stall(t0 + 90 * MS),
            Some(Stall {
                since: t0 + 10 * MS,
                ended: None
            })
        );
    }
}
