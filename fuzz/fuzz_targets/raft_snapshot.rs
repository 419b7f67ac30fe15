//! Fuzz target `raft_snapshot`: [`tidal_server::fuzz::raft_snapshot`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidal_server::fuzz::raft_snapshot(data));
