//! A copy of sled's files as of the last durability sync, put back by a
//! simulated power loss (feature `failpoints`; see `power_loss`).

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::wal::LOG_DIR;
use crate::StoreError;

/// A copy of sled's files (every file under the store's directory but
/// the log's) as of the last successful durability sync.
pub(crate) struct SledImage {
    dir: PathBuf,
    files: BTreeMap<PathBuf, Vec<u8>>,
    /// How many copies were taken, their total time, the last one's size.
    copies: u64,
    copy_time: Duration,
    bytes: u64,
    /// Set by a power loss: no sync may take a copy (or return) again.
    pub(crate) frozen: bool,
}

/// Every regular file under `dir` (relative paths), but the log's.
fn sled_files(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut out = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let at = dir.join(&rel);
        let entries = match fs::read_dir(&at) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(StoreError::Io {
                    op: "list",
                    path: at,
                    source,
                })
            }
        };
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Io {
                op: "list",
                path: at.clone(),
                source,
            })?;
            let name = rel.join(entry.file_name());
            if name == Path::new(LOG_DIR) {
                continue;
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => pending.push(name),
                Ok(t) if t.is_file() => out.push(name),
                _ => {}
            }
        }
    }
    Ok(out)
}

impl SledImage {
    pub(crate) fn new(dir: &Path) -> Self {
        SledImage {
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
            copies: 0,
            copy_time: Duration::ZERO,
            bytes: 0,
            frozen: false,
        }
    }

    /// Copies sled's files. Called at the end of each successful sync,
    /// under the sync lock.
    pub(crate) fn take(&mut self) -> Result<(), StoreError> {
        let started = Instant::now();
        let mut files = BTreeMap::new();
        for rel in sled_files(&self.dir)? {
            let path = self.dir.join(&rel);
            match fs::read(&path) {
                Ok(bytes) => {
                    files.insert(rel, bytes);
                }
                // Removed meanwhile (a blob sled collected).
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StoreError::Io {
                        op: "copy",
                        path,
                        source,
                    })
                }
            }
        }
        self.bytes = files.values().map(|b| b.len() as u64).sum();
        self.files = files;
        self.copies += 1;
        self.copy_time += started.elapsed();
        Ok(())
    }

    /// Puts the copy back: deletes the files sled made since, replaces
    /// the others by rename (sled's open descriptors keep pointing at
    /// the old files). Returns a summary.
    pub(crate) fn restore(&self) -> Result<String, StoreError> {
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { op, path, source }
        };
        let mut deleted = 0;
        for rel in sled_files(&self.dir)? {
            if !self.files.contains_key(&rel) {
                let path = self.dir.join(&rel);
                match fs::remove_file(&path) {
                    Ok(()) => deleted += 1,
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(io("delete", &path)(e)),
                }
            }
        }
        let mut changed = 0;
        for (rel, bytes) in &self.files {
            let path = self.dir.join(rel);
            if fs::read(&path).map_or(true, |now| now != *bytes) {
                changed += 1;
            }
            let mut tmp = path.clone().into_os_string();
            tmp.push(".power-loss");
            let tmp = PathBuf::from(tmp);
            fs::write(&tmp, bytes).map_err(io("write", &tmp))?;
            fs::rename(&tmp, &path).map_err(io("replace", &path))?;
        }
        Ok(format!(
            "sled's {} files put back as of its last sync ({} bytes; {} of them written since, \
             {} newer files deleted; {} copies taken, {} ms in all, {:.2} ms each)",
            self.files.len(),
            self.bytes,
            changed,
            deleted,
            self.copies,
            self.copy_time.as_millis(),
            self.copy_time.as_secs_f64() * 1000.0 / self.copies.max(1) as f64,
        ))
    }
}
