//! Fuzz target `raft_replies`: [`tidal_server::fuzz::raft_replies`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidal_server::fuzz::raft_replies(data));
