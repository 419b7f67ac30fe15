//! Fuzz target `member_addr`: [`tidal_server::fuzz::member_addr`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidal_server::fuzz::member_addr(data));
