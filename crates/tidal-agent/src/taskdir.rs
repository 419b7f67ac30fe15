//! Per-task directories: where a worker finds its checkpoint file
//! (`TIDAL_CHECKPOINT_FILE`) and gets its preemption notice
//! (`TIDAL_PREEMPT_FILE`), and how the agent notices a new checkpoint.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The largest checkpoint the agent reads and sends; a larger file is
/// logged and not sent.
pub const CHECKPOINT_MAX_BYTES: usize = 64 * 1024;
const CHECKPOINT_FILE: &str = "checkpoint";
const PREEMPT_FILE: &str = "preempt";

/// The agent's directory of per-task directories: created under the
/// system's temporary directory (`$TMPDIR`), readable by the agent's user
/// only, and removed with what is left in it once the executor and every
/// task directory are gone.
#[derive(Debug)]
pub(crate) struct RunDir {
    path: PathBuf,
    /// Numbers task directories, so no two attempts share one.
    next: AtomicU64,
}

impl RunDir {
    pub(crate) fn create() -> io::Result<RunDir> {
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        let mut last = None;
        for i in 0..16u64 {
            let path = base.join(format!(
                "tidal-agent-{}-{:x}",
                std::process::id(),
                nanos.wrapping_add(i) & 0xffff_ffff_ffff
            ));
            // Not create_all: an existing path (someone else's) is never used.
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    return Ok(RunDir {
                        path,
                        next: AtomicU64::new(1),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free directory name")))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A new directory for one attempt, with `checkpoint` written to its
    /// checkpoint file when not empty.
    pub(crate) fn task(
        self: &Arc<RunDir>,
        task_id: &str,
        token: u64,
        checkpoint: &[u8],
    ) -> io::Result<TaskDir> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name: String = task_id
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self.path.join(format!("{n}-{name}-{token}"));
        fs::DirBuilder::new().mode(0o700).create(&path)?;
        let dir = TaskDir {
            path,
            _run: self.clone(),
        };
        if !checkpoint.is_empty() {
            if let Err(e) = write_new(&dir.checkpoint_file(), checkpoint) {
                dir.remove();
                return Err(e);
            }
        }
        Ok(dir)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// One attempt's directory. Removed by [`TaskDir::remove`] once its worker
/// is gone (and when dropped).
#[derive(Debug)]
pub(crate) struct TaskDir {
    path: PathBuf,
    /// The parent stays while any task directory does.
    _run: Arc<RunDir>,
}

impl Drop for TaskDir {
    fn drop(&mut self) {
        self.remove();
    }
}

impl TaskDir {
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `TIDAL_CHECKPOINT_FILE`.
    pub(crate) fn checkpoint_file(&self) -> PathBuf {
        self.path.join(CHECKPOINT_FILE)
    }

    /// `TIDAL_PREEMPT_FILE`.
    pub(crate) fn preempt_file(&self) -> PathBuf {
        self.path.join(PREEMPT_FILE)
    }

    /// The preemption notice: the deadline (ms since the Unix epoch, as
    /// decimal text) appears in `TIDAL_PREEMPT_FILE` whole (written aside,
    /// then renamed into place).
    pub(crate) fn notify_preempt(&self, deadline_ms: u64) -> io::Result<()> {
        let aside = self.path.join(".preempt.tmp");
        let _ = fs::remove_file(&aside);
        write_new(&aside, format!("{deadline_ms}\n").as_bytes())?;
        fs::rename(&aside, self.preempt_file())
    }

    /// Removes the directory and whatever the worker left in it (best
    /// effort).
    pub(crate) fn remove(&self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.path.display(), error = %e, "cannot remove a task's directory");
            }
        }
    }
}

fn write_new(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_data()
}

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// What a look at the checkpoint file found.
#[derive(Debug, PartialEq)]
pub(crate) enum Seen {
    /// Nothing new (missing, empty, unchanged, or the same contents as last
    /// time).
    Nothing,
    /// New contents to send.
    New(Vec<u8>),
    /// Changed, but larger than [`CHECKPOINT_MAX_BYTES`]: not sent.
    TooLarge(u64),
}

/// Notices when a worker rewrote its checkpoint file: by its inode, length
/// and times, then by its contents.
#[derive(Debug)]
pub(crate) struct CheckpointWatch {
    path: PathBuf,
    stamp: Option<Stamp>,
    /// The contents last sent (or written by the agent at start).
    last: Vec<u8>,
}

impl CheckpointWatch {
    /// Watches `path`, whose contents the agent wrote as `initial` (not
    /// news). The first look reads the file: the worker may have rewritten
    /// it before the watch began.
    pub(crate) fn new(path: PathBuf, initial: &[u8]) -> CheckpointWatch {
        CheckpointWatch {
            path,
            stamp: None,
            last: initial.to_vec(),
        }
    }

    /// Looks at the file once.
    pub(crate) fn poll(&mut self) -> Seen {
        let Ok(meta) = fs::metadata(&self.path) else {
            return Seen::Nothing;
        };
        let stamp = Stamp::of(&meta);
        if self.stamp == Some(stamp) || !meta.is_file() {
            return Seen::Nothing;
        }
        self.stamp = Some(stamp);
        let mut data = Vec::new();
        let read = fs::File::open(&self.path).and_then(|f| {
            f.take(CHECKPOINT_MAX_BYTES as u64 + 1)
                .read_to_end(&mut data)
        });
        if read.is_err() {
            // Replaced meanwhile: the next look sees the new file.
            self.stamp = None;
            return Seen::Nothing;
        }
        if data.len() > CHECKPOINT_MAX_BYTES {
            return Seen::TooLarge(meta.len().max(data.len() as u64));
        }
        // Empty: no checkpoint (as on the wire), or one being rewritten in
        // place, caught between truncation and write.
        if data.is_empty() {
            return Seen::Nothing;
        }
        if data == self.last {
            return Seen::Nothing;
        }
        self.last = data.clone();
        Seen::New(data)
    }
}

#[cfg(test)]
#[path = "taskdir_test.rs"]
mod tests;
