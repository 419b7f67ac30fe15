//! tidal-store's integration tests: one binary, a module per area.

mod common;
mod corruption;
mod crash;
mod reopen;
mod snapshot;
mod suite;
