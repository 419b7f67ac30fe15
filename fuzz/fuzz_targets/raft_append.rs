//! Fuzz target `raft_append`: [`tidal_server::fuzz::raft_append`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidal_server::fuzz::raft_append(data));
