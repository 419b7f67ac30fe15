//! Fuzz target `token`: [`tidal_server::fuzz::token`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidal_server::fuzz::token(data));
