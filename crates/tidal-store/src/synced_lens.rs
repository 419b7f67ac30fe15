//! Each log segment's durable length, for simulated power loss (see
//! `power_loss`): with the feature `failpoints` it follows every segment's
//! creation, truncation, removal and sync; without it, it keeps nothing.

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
    use std::sync::{Mutex, PoisonError};

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

    /// Where a sync that lost the race with a power loss ends: it never
    /// returns, so nothing it covered is acknowledged; the process aborts.
    pub(crate) fn halt() -> ! {
        loop {
            std::thread::park();
        }
    }
}
