//! Fuzz target `snapshot`: [`tidal_store::fuzz::snapshot`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidal_store::fuzz::snapshot(data));
