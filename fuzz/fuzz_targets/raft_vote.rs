//! Fuzz target `raft_vote`: [`tidal_server::fuzz::raft_vote`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidal_server::fuzz::raft_vote(data));
