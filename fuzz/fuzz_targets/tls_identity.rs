//! Fuzz target `tls_identity`: [`tidal_server::fuzz::tls_identity`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidal_server::fuzz::tls_identity(data));
