//! Fuzz target `config_toml`: [`tidal_server::fuzz::config_toml`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidal_server::fuzz::config_toml(data));
