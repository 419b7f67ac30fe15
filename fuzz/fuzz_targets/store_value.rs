//! Fuzz target `store_value`: [`tidal_store::fuzz::store_value`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidal_store::fuzz::store_value(data));
