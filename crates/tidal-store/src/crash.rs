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
//!
//! Power loss ([`power_loss`], `failpoints` builds only): the store tracks
//! what it has fsynced, and on demand throws away everything else and
//! aborts, as a machine losing power would lose its page cache. `tidal
//! server` fires it on SIGUSR1; a point armed with `return(power-loss)`
//! fires it at that point.

/// Aborts the process if the point `name` is configured to fire now: with
/// `return(power-loss)`, after a simulated power loss ([`power_loss`]);
/// with any other `return`, at once.
#[cfg(feature = "failpoints")]
pub(crate) fn point(name: &str) {
    if let Some(arg) = fail::eval(name, |arg| arg) {
        if arg.as_deref() == Some(POWER_LOSS_ARG) {
            eprintln!("crash point {name}: power loss");
            power_loss();
        }
        eprintln!("crash point {name}: aborting");
        std::process::abort();
    }
}

/// The argument that makes a crash point lose power rather than just abort:
/// `store::vote::before_sync=return(power-loss)`.
#[cfg(feature = "failpoints")]
pub const POWER_LOSS_ARG: &str = "power-loss";

/// Arms (or, with `off`, disarms) one point from code, in the `fail`
/// crate's syntax (`return`, `return(power-loss)`, `pause`, `1%return`, ...),
/// as `FAILPOINTS` does at start-up. For tests.
#[cfg(feature = "failpoints")]
pub fn arm(point: &str, actions: &str) -> Result<(), String> {
    fail::cfg(point, actions)
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

/// Simulates a power loss: every open store of this process drops what it
/// has not made durable (log bytes written since the last sync that covered
/// them, segments created since, and every change to sled's files since the
/// last durability sync), then the process aborts at once: no further
/// write, no clean shutdown. Prints what was dropped on stderr first.
///
/// The chaos harness fires it with SIGUSR1, which `tidal server` handles
/// only in `failpoints` builds (in a normal build SIGUSR1 just terminates
/// the process, discarding nothing).
#[cfg(feature = "failpoints")]
pub fn power_loss() -> ! {
    let lines = DISCARD_ALL
        .get()
        .map(|discard| discard())
        .unwrap_or_default();
    if lines.is_empty() {
        eprintln!("power loss: no store open; aborting");
    }
    for line in lines {
        eprintln!("power loss: {line}; aborting");
    }
    std::process::abort();
}

/// What a power loss runs first: freezes every open store and discards what
/// it did not make durable, one line per store. Set when the first store
/// opens (`power_loss::register`); unset, no store is open.
#[cfg(feature = "failpoints")]
static DISCARD_ALL: std::sync::OnceLock<fn() -> Vec<String>> = std::sync::OnceLock::new();

/// Sets what [`power_loss`] runs to discard the open stores' unsynced writes.
#[cfg(feature = "failpoints")]
pub(crate) fn on_power_loss(discard_all: fn() -> Vec<String>) {
    let _ = DISCARD_ALL.set(discard_all);
}
