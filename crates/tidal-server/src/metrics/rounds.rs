//! The duration of the leader's rounds: each pass of its driver's loop
//! (leader::driver) over what woke it (events, session input, timers), the
//! engine's steps (dispatch among them) and the actions performed, up to
//! its next wait.
//!
//! One histogram for the process: a server runs one node; servers run
//! in-process (tests) share it.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

static ROUNDS: LazyLock<Histogram> =
    // 50 µs to about 3.3 s, doubling.
    LazyLock::new(|| Histogram::new(exponential_buckets(0.000_05, 2.0, 17)));

/// The histogram of round durations, in seconds.
pub fn histogram() -> &'static Histogram {
    &ROUNDS
}

/// Records one round that took `took`.
pub fn observe(took: Duration) {
    ROUNDS.observe(took.as_secs_f64());
}
