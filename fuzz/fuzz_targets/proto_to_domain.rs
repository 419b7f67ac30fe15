//! Fuzz target `proto_to_domain`: [`tidal_server::grpc::fuzz::proto_to_domain`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidal_server::grpc::fuzz::proto_to_domain(data));
