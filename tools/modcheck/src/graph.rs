//! What the check reads a crate into: its files, the imports between them, its uses of other crates.

use std::collections::BTreeSet;
use std::path::PathBuf;

/// One import: `from` (a file, relative to the checked tree) names module
/// `to_module`, whose file is `to`, at `line`.
#[derive(Clone, Debug)]
pub struct Edge {
    pub from: PathBuf,
    pub line: usize,
    pub text: String,
    pub to: PathBuf,
    pub to_module: Vec<String>,
}

/// A use of another crate: `file` names crate `krate` at `line`.
#[derive(Clone, Debug)]
pub struct ExternUse {
    pub file: PathBuf,
    pub line: usize,
    pub text: String,
    pub krate: String,
}

/// One crate (one root file) as a graph of files.
#[derive(Debug, Default)]
pub struct CrateGraph {
    /// The package's folder, relative to the checked tree (`crates/tidal-core`).
    pub package: PathBuf,
    /// The root file (`crates/tidal-core/src/lib.rs`).
    pub root: PathBuf,
    pub files: BTreeSet<PathBuf>,
    pub edges: Vec<Edge>,
    pub externs: Vec<ExternUse>,
}
