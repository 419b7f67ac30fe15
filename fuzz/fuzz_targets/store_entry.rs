//! Fuzz target `store_entry`: [`tidal_store::fuzz::store_entry`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidal_store::fuzz::store_entry(data));
