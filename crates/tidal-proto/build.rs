//! Compiles proto/*.proto with protox (pure Rust), so no system `protoc` is
//! needed, and writes the descriptors of `tidal.proto` (the public API, with
//! its comments) to `OUT_DIR/tidal_descriptor.bin` for server reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [root.join("tidal.proto"), root.join("raft.proto")];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    let public = public_api(&fds);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("tidal_descriptor.bin"), public.encode_to_vec())?;
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        // Decode errors are the sender's: INVALID_ARGUMENT (see src/codec.rs).
        .codec_path("crate::codec::StrictCodec")
        .compile_fds(fds)?;
    Ok(())
}

/// `tidal.proto` and the files it imports, if any, in the compiled set's
/// order (imports first): not `raft.proto`, the servers' own transport,
/// which reflection does not advertise.
fn public_api(all: &prost_types::FileDescriptorSet) -> prost_types::FileDescriptorSet {
    let mut wanted = std::collections::BTreeSet::new();
    let mut next = vec!["tidal.proto".to_string()];
    while let Some(name) = next.pop() {
        let Some(f) = all.file.iter().find(|f| f.name() == name) else {
            panic!("{name} is not among the compiled files");
        };
        if wanted.insert(name) {
            next.extend(f.dependency.iter().cloned());
        }
    }
    prost_types::FileDescriptorSet {
        file: all
            .file
            .iter()
            .filter(|f| wanted.contains(f.name()))
            .cloned()
            .collect(),
    }
}
