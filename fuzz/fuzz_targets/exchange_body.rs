//! Fuzz target `exchange_body`: [`tidal_server::fuzz::exchange_body`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidal_server::fuzz::exchange_body(data));
