//! tidal-store's integration tests: one binary, a module per area.

mod common;
mod corruption;
mod crash;
mod events;
mod format_version;
#[cfg(feature = "failpoints")]
mod power_loss;
mod reopen;
mod snapshot;
mod suite;
