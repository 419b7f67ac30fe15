//! Per-task directories: where a worker finds its checkpoint file
//! (`TIDAL_CHECKPOINT_FILE`) and gets its preemption notice
//! (`TIDAL_PREEMPT_FILE`: a deadline, or `suspend` and `resume` for a
//! worker suspended by its hook), and how the agent notices a new
//! checkpoint.

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
/// `TIDAL_PREEMPT_FILE` of a worker suspended by its hook (a suspendable
/// task with notice by file): release compute, keep memory, wait.
pub(crate) const SUSPEND_LINE: &str = "suspend\n";
/// `TIDAL_PREEMPT_FILE` once such a worker is resumed: go on.
pub(crate) const RESUME_LINE: &str = "resume\n";

/// The agent's directory of per-task directories: created under the
/// system's temporary directory (`$TMPDIR`), readable by the agent's user
/// only, and removed with what is left in it once the executor and every
/// task directory are gone. An agent that was killed leaves its directory
/// behind: the next agent to start there removes it (see
/// [`remove_stale`]).
#[derive(Debug)]
pub(crate) struct RunDir {
    path: PathBuf,
    /// Numbers task directories, so no two attempts share one.
    next: AtomicU64,
}

/// The name of an agent's directory: `tidal-agent-<pid namespace>-<pid>-<hex>`
/// (the namespace's inode number, or 0 if unknown).
const RUN_DIR_PREFIX: &str = "tidal-agent-";

/// The inode number of this process's pid namespace: pids name processes
/// only within it.
fn pid_namespace() -> Option<u64> {
    let link = fs::read_link("/proc/self/ns/pid").ok()?;
    let link = link.to_str()?;
    link.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

impl RunDir {
    /// Under `$TMPDIR`.
    pub(crate) fn create() -> io::Result<RunDir> {
        RunDir::create_in(&std::env::temp_dir())
    }

    pub(crate) fn create_in(base: &Path) -> io::Result<RunDir> {
        remove_stale(base);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        let mut last = None;
        for i in 0..16u64 {
            let path = base.join(format!(
                "{RUN_DIR_PREFIX}{}-{}-{:x}",
                pid_namespace().unwrap_or(0),
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

/// Removes the directories that agents which are gone (killed before they
/// could clean up) left in `base`: only directories named as an agent's of
/// this pid namespace, owned by this user, whose process no longer exists.
/// Best effort; nothing when the pid namespace is unknown.
pub(crate) fn remove_stale(base: &Path) {
    let Some(ns) = pid_namespace() else {
        return;
    };
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    // SAFETY: geteuid(2) has no failure mode and no memory effects.
    let uid = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(RUN_DIR_PREFIX))
            .and_then(|rest| rest.strip_prefix(&format!("{ns}-")))
            .and_then(|rest| rest.split_once('-'))
            .filter(|(_, hex)| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
            .filter(|pid| *pid > 0)
        else {
            continue;
        };
        // Not a symlink, and this user's.
        let Ok(meta) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != uid || process_exists(pid) {
            continue;
        }
        match fs::remove_dir_all(entry.path()) {
            Ok(()) => {
                tracing::info!(dir = %entry.path().display(), pid, "removed the task directories of an agent that is gone")
            }
            Err(e) => {
                tracing::debug!(dir = %entry.path().display(), error = %e, "cannot remove a gone agent's task directories")
            }
        }
    }
}

/// Whether a process with this pid exists (any user's).
fn process_exists(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 sends nothing; it only checks the pid.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
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
    /// decimal text) appears in `TIDAL_PREEMPT_FILE` whole.
    pub(crate) fn notify_preempt(&self, deadline_ms: u64) -> io::Result<()> {
        self.notify(&format!("{deadline_ms}\n"))
    }

    /// The suspension by the worker's hook: `TIDAL_PREEMPT_FILE` holds
    /// [`SUSPEND_LINE`] (release compute, keep memory), then
    /// [`RESUME_LINE`] (go on).
    pub(crate) fn notify_suspend(&self, suspend: bool) -> io::Result<()> {
        self.notify(if suspend { SUSPEND_LINE } else { RESUME_LINE })
    }

    /// Replaces `TIDAL_PREEMPT_FILE` whole with `text` (written aside, then
    /// renamed into place), so the worker never reads half of it.
    fn notify(&self, text: &str) -> io::Result<()> {
        let aside = self.path.join(".preempt.tmp");
        let _ = fs::remove_file(&aside);
        write_new(&aside, text.as_bytes())?;
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
