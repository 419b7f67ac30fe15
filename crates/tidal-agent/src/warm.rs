//! The models loaded on this machine now (`--warm-models-file`): read again
//! before every heartbeat and registration, and sent as `warm_models`.
//!
//! The file has one model per line; its workers may rewrite it (its path is
//! their `TIDAL_WARM_MODELS_FILE`) as they load and unload models. Blank
//! lines and lines starting with `#` are skipped. A line that is not a name
//! (1 to [`MAX_NAME_BYTES`] bytes of letters, digits and `. _ : / -`) is
//! skipped with a warning; repeats count once; past [`MAX_WARM_MODELS`]
//! models the rest are dropped with a warning; only the first
//! [`MAX_FILE_BYTES`] of the file are read. A missing file means no model
//! is warm. Warnings are logged when the file's contents change, not on
//! every read.

use std::io::Read as _;
use std::path::{Path, PathBuf};

/// The most models sent in one heartbeat: the servers' default model limit
/// (more are ignored there).
pub const MAX_WARM_MODELS: usize = 32;
/// The longest model name (the servers' name rule).
pub const MAX_NAME_BYTES: usize = 128;
/// The most bytes of the file read.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;

/// The file and what it said when last read.
#[derive(Debug)]
pub struct WarmModels {
    path: PathBuf,
    /// What the last read found (None: not read yet).
    last: Option<Seen>,
    models: Vec<String>,
}

impl WarmModels {
    pub fn new(path: PathBuf) -> WarmModels {
        WarmModels {
            path,
            last: None,
            models: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again; the models it lists now.
    pub fn read(&mut self) -> Vec<String> {
        let seen = match read_capped(&self.path) {
            Ok(bytes) => Seen::Bytes(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Seen::Missing,
            Err(e) => Seen::Error(e.to_string()),
        };
        if self.last.as_ref() != Some(&seen) {
            let file = self.path.display();
            self.models = match &seen {
                Seen::Bytes(bytes) => {
                    let (models, problems) = parse(bytes);
                    for p in problems {
                        tracing::warn!(file = %file, "warm models file: {p}");
                    }
                    tracing::debug!(file = %file, ?models, "warm models");
                    models
                }
                Seen::Missing => {
                    tracing::debug!(file = %file, "no warm models file: no model is warm");
                    Vec::new()
                }
                Seen::Error(e) => {
                    tracing::warn!(file = %file, error = %e, "cannot read the warm models file: no model is warm");
                    Vec::new()
                }
            };
            self.last = Some(seen);
        }
        self.models.clone()
    }
}

/// What a read of the file found.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Bytes(Vec<u8>),
    Missing,
    Error(String),
}

fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// Whether `s` is a name: 1 to [`MAX_NAME_BYTES`] bytes of letters, digits
/// and `. _ : / -`.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_BYTES
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-'))
}

/// The models a file's bytes list, in file order without repeats, and what
/// was wrong with it.
pub fn parse(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
    let text = String::from_utf8_lossy(bytes);
    let mut models: Vec<String> = Vec::new();
    let mut problems = Vec::new();
    let mut dropped = 0usize;
    for (n, line) in text.lines().enumerate() {
        let m = line.trim();
        if m.is_empty() || m.starts_with('#') {
            continue;
        }
        if !is_name(m) {
            problems.push(format!(
                "line {}: {:?} is not a model name (1 to {MAX_NAME_BYTES} bytes of letters, \
                 digits and . _ : / -): skipped",
                n + 1,
                shorten(m)
            ));
            continue;
        }
        if models.iter().any(|x| x == m) {
            continue;
        }
        if models.len() == MAX_WARM_MODELS {
            dropped += 1;
            continue;
        }
        models.push(m.to_string());
    }
    if dropped > 0 {
        problems.push(format!(
            "lists more than {MAX_WARM_MODELS} models: the last {dropped} are not sent"
        ));
    }
    (models, problems)
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
#[path = "warm_test.rs"]
mod tests;
