//! Fuzz target `exchange_reply`: [`tidal_server::fuzz::exchange_reply`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidal_server::fuzz::exchange_reply(data));
