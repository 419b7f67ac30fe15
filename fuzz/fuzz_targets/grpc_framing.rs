//! Fuzz target `grpc_framing`: [`tidal_server::grpc::fuzz::grpc_framing`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidal_server::grpc::fuzz::grpc_framing(data));
