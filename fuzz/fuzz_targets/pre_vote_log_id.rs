//! Fuzz target `pre_vote_log_id`: [`tidal_server::fuzz::pre_vote_log_id`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidal_server::fuzz::pre_vote_log_id(data));
