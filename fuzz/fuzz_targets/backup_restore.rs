//! Fuzz target `backup_restore`: [`tidal_store::fuzz::backup_restore`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidal_store::fuzz::backup_restore(data));
