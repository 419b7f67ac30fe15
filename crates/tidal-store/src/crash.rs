//! Crash points for fault-injection runs: with the `failpoints` feature, a
//! point configured in the `FAILPOINTS` environment variable (the `fail`
//! crate's syntax, e.g. `store::flush::before_sync=2%return`) aborts the
//! process right there, as a power cut or a kill would. Without the feature
//! every point compiles to nothing.
//!
//! Points: `store::append::before_write`, `store::append::after_write`
//! (written, not yet durable), `store::flush::before_sync`,
//! `store::flush::after_sync` (durable, not yet acknowledged),
//! `store::vote::before_sync`, `store::vote::after_sync`,
//! `store::snapshot::before_save`, `store::snapshot::after_save`.

/// Aborts the process if the point `name` is configured to fire now.
#[cfg(feature = "failpoints")]
pub(crate) fn point(name: &str) {
    if fail::eval(name, |_| ()).is_some() {
        eprintln!("crash point {name}: aborting");
        std::process::abort();
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn point(_name: &str) {}

/// Reads `FAILPOINTS` once at start-up; returns whether crash points are
/// compiled in. Call it before the store is opened.
pub fn init_from_env() -> bool {
    #[cfg(feature = "failpoints")]
    {
        // The scenario lives as long as the process.
        std::mem::forget(fail::FailScenario::setup());
        true
    }
    #[cfg(not(feature = "failpoints"))]
    false
}
