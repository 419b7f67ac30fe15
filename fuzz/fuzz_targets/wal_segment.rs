//! Fuzz target `wal_segment`: [`tidal_store::fuzz::wal_segment`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidal_store::fuzz::wal_segment(data));
