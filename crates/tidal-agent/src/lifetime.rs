//! Workers never outlive their agent, however the agent ends.
//!
//! Three layers, each covering what the one before cannot:
//!
//! 1. `PR_SET_PDEATHSIG(SIGKILL)` on each worker: the kernel kills the worker
//!    when its parent dies, even by SIGKILL. The signal fires when the
//!    *thread* that forked the worker exits, not the process, and tokio
//!    forks on whichever thread polls (a blocking-pool thread exits after
//!    10 s idle; `block_in_place` retires worker threads). So every worker is
//!    forked by one dedicated thread that never exits ([`spawn`]).
//! 2. PDEATHSIG is not inherited by what the worker forks. Each worker leads
//!    its own process group, and a [`Reaper`] process, forked when the
//!    executor starts, reads a pipe whose write end only the agent holds. It
//!    is told each worker's group by the worker itself, before `exec`; when
//!    the pipe closes (the agent exited or was killed) it SIGKILLs every
//!    group still listed, then exits.
//! 3. Where cgroup v2 is delegated to the agent (its own cgroup directory is
//!    writable), each worker also runs in a cgroup of its own under
//!    `<agent's cgroup>/tidal-agent-<pid>/`, entered before `exec`, and killed
//!    whole (`cgroup.kill`) when the task ends: this reaches processes that
//!    left the group (`setsid`). The reaper kills the parent cgroup when the
//!    agent dies. Without delegation this layer is skipped ([`Cgroups::detect`]).
//!
//! Limits: the reaper remembers at most [`REAPER_GROUPS`] groups at once.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Mutex, OnceLock};
use std::time::Duration;

use tokio::process::{Child, Command};

/// Process groups the reaper can hold at once (running and killed workers
/// not yet reaped; the agent's slots bound the running ones).
pub const REAPER_GROUPS: usize = 16384;

struct SpawnRequest {
    cmd: Command,
    handle: tokio::runtime::Handle,
    reply: std_mpsc::SyncSender<io::Result<Child>>,
}

static SPAWNER: OnceLock<Option<Mutex<std_mpsc::Sender<SpawnRequest>>>> = OnceLock::new();

/// Spawns `cmd` on the process's spawner thread, which never exits, so the
/// worker's PDEATHSIG fires only when the agent process dies. Must be called
/// inside a tokio runtime (the child is registered with it).
pub fn spawn(cmd: Command) -> io::Result<Child> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|e| io::Error::other(format!("no tokio runtime to spawn a worker in: {e}")))?;
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = std_mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("tidal-worker-spawner".into())
            .spawn(move || {
                // Lives as long as the process: the parent thread of every
                // worker (PDEATHSIG). `recv` fails only if every sender is
                // gone, and the static one never is.
                while let Ok(req) = rx.recv() {
                    let SpawnRequest {
                        mut cmd,
                        handle,
                        reply,
                    } = req;
                    let _enter = handle.enter();
                    let _ = reply.send(cmd.spawn());
                }
            })
            .ok()
            .map(|_| Mutex::new(tx))
    });
    let Some(tx) = tx else {
        return Err(io::Error::other(
            "the worker spawner thread could not start",
        ));
    };
    let (reply, rx) = std_mpsc::sync_channel(1);
    tx.lock()
        .expect("spawner lock poisoned")
        .send(SpawnRequest { cmd, handle, reply })
        .map_err(|_| io::Error::other("the worker spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("the worker spawner thread did not answer"))?
}

/// Sets up `cmd` to die with the agent (PDEATHSIG, with the race where the
/// agent died before the prctl closed), with `cgroup_procs` (an open
/// `cgroup.procs` of the worker's cgroup) to enter that cgroup before exec,
/// and with `reaper` (its pipe, [`Reaper::pipe`]) to list its own process
/// group with the reaper before exec: nothing the worker forks can exist
/// before the reaper knows its group (the agent then counts it,
/// [`Reaper::listed_by_worker`]).
pub fn guard(cmd: &mut Command, cgroup_procs: Option<RawFd>, reaper: Option<RawFd>) {
    // SAFETY: getpid has no preconditions.
    let agent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid, write, _exit); it does not
    // allocate (io::Error::last_os_error holds an errno).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The agent died between fork and prctl: the signal will never
            // come, so go now.
            if libc::getppid() != agent {
                libc::_exit(137);
            }
            if let Some(fd) = cgroup_procs {
                // "0" moves the writing process itself.
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(fd) = reaper {
                // Its own group (`process_group(0)`: the group id is its pid).
                // A reaper that is gone makes this fail; PDEATHSIG remains.
                let rec = watch_record(libc::getpid());
                libc::write(fd, rec.as_ptr().cast(), rec.len());
            }
            Ok(())
        });
    }
}

/// A process that SIGKILLs the listed worker process groups (and the
/// workers' parent cgroup) once the agent is gone.
#[derive(Debug)]
pub struct Reaper {
    pid: libc::pid_t,
    tx: Option<OwnedFd>,
    warned_full: AtomicBool,
    listed: AtomicU64,
}

const OP_WATCH: i32 = 1;
const OP_FORGET: i32 = 2;

/// What the reaper needs of the workers' cgroups, opened before the fork:
/// it kills them and removes their directories when the agent is gone.
#[derive(Debug, Clone, Copy)]
pub struct ReaperCgroup {
    /// `<parent>/cgroup.kill`.
    kill: RawFd,
    /// The parent `tidal-agent-<pid>` directory.
    parent: RawFd,
    /// The agent's own cgroup directory, which holds the parent.
    own: RawFd,
    /// The parent's name, NUL-terminated (lives in the Cgroups, which
    /// outlive the fork; the child has its own copy of the memory).
    name: *const libc::c_char,
}

impl Reaper {
    /// Forks the reaper. With `cgroup`, it also kills the workers' cgroups
    /// and removes them when the agent is gone.
    pub fn start(cgroup: Option<ReaperCgroup>) -> io::Result<Reaper> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two fds into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let (rfd, wfd) = (fds[0], fds[1]);
        // SAFETY: the child runs only `reaper_main`, which makes
        // async-signal-safe calls and never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let e = io::Error::last_os_error();
            // SAFETY: both fds are ours.
            unsafe {
                libc::close(rfd);
                libc::close(wfd);
            }
            return Err(e);
        }
        if pid == 0 {
            // SAFETY: in the forked child.
            unsafe { reaper_main(rfd, cgroup) }
        }
        // SAFETY: the read end is the reaper's now; wfd is ours alone.
        unsafe { libc::close(rfd) };
        Ok(Reaper {
            pid,
            // SAFETY: wfd is an open fd owned by nobody else.
            tx: Some(unsafe { OwnedFd::from_raw_fd(wfd) }),
            warned_full: AtomicBool::new(false),
            listed: AtomicU64::new(0),
        })
    }

    /// The reaper's pipe, for a worker to list its own group before exec
    /// ([`guard`]).
    pub fn pipe(&self) -> Option<RawFd> {
        self.tx.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// A worker listed its own group ([`guard`]): counted until
    /// [`Reaper::forget`] says it is gone.
    pub fn listed_by_worker(&self) {
        self.count_one();
    }

    fn count_one(&self) {
        let n = self.listed.fetch_add(1, Ordering::Relaxed) + 1;
        if n as usize > REAPER_GROUPS && !self.warned_full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                limit = REAPER_GROUPS,
                "more worker process groups than the reaper can list: some would outlive a killed agent"
            );
        }
    }

    /// The group is gone (killed and its leader reaped).
    pub fn forget(&self, pgid: u32) {
        self.listed.fetch_sub(1, Ordering::Relaxed);
        self.send(OP_FORGET, pgid);
    }

    fn send(&self, op: i32, pgid: u32) {
        let rec = record(op, pgid as i32);
        // One 8-byte write is atomic on a pipe (under PIPE_BUF). A reaper
        // that died makes this EPIPE (SIGPIPE is ignored by Rust programs).
        // SAFETY: writes 8 bytes from a live buffer to our fd.
        let Some(tx) = &self.tx else { return };
        let n = unsafe { libc::write(tx.as_raw_fd(), rec.as_ptr().cast(), rec.len()) };
        if n != rec.len() as isize {
            tracing::warn!(
                error = %io::Error::last_os_error(),
                reaper_pid = self.pid,
                "cannot reach the worker reaper: workers' children may outlive a killed agent"
            );
        }
    }
}

/// One message to the reaper: an op and a process group.
fn record(op: i32, pgid: i32) -> [u8; 8] {
    let mut rec = [0u8; 8];
    rec[..4].copy_from_slice(&op.to_ne_bytes());
    rec[4..].copy_from_slice(&pgid.to_ne_bytes());
    rec
}

/// [`record`] of `OP_WATCH`, without allocating (a forked child's).
fn watch_record(pgid: libc::pid_t) -> [u8; 8] {
    record(OP_WATCH, pgid)
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // Closing the pipe ends the reaper, which kills what is still
        // listed (nothing, after an orderly stop); then reap it.
        drop(self.tx.take());
        let mut status = 0;
        // SAFETY: waits for our own child, which exits at once on EOF.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
    }
}

/// The reaper's body, in the forked child: async-signal-safe calls only, no
/// allocation, no panics (no indexing that can fail), never returns.
unsafe fn reaper_main(rfd: RawFd, cgroup: Option<ReaperCgroup>) -> ! {
    // Its own group: a terminal's ^C or a kill of the agent's group leaves
    // it to do its job.
    libc::setpgid(0, 0);
    let mut keep = [rfd, -1, -1, -1];
    if let Some(c) = cgroup {
        keep = [rfd, c.kill, c.parent, c.own];
    }
    close_except(keep);
    let mut groups = [0i32; REAPER_GROUPS];
    let mut n = 0usize;
    let mut buf = [0u8; 4096];
    let mut carry = [0u8; 8];
    let mut have = 0usize;
    loop {
        let r = libc::read(rfd, buf.as_mut_ptr().cast(), buf.len());
        if r < 0 && *libc::__errno_location() == libc::EINTR {
            continue;
        }
        if r <= 0 {
            break;
        }
        let mut i = 0usize;
        while i < r as usize && i < buf.len() {
            if have < carry.len() {
                carry[have] = buf[i];
            }
            have += 1;
            i += 1;
            if have == 8 {
                have = 0;
                let op = i32::from_ne_bytes([carry[0], carry[1], carry[2], carry[3]]);
                let pgid = i32::from_ne_bytes([carry[4], carry[5], carry[6], carry[7]]);
                if op == OP_WATCH {
                    // Drop groups that are gone: a worker lists itself before
                    // exec, and one whose exec failed is never forgotten.
                    let mut j = 0;
                    while j < n && j < groups.len() {
                        if libc::kill(-groups[j], 0) != 0
                            && *libc::__errno_location() == libc::ESRCH
                        {
                            n -= 1;
                            groups[j] = groups[n];
                        } else {
                            j += 1;
                        }
                    }
                    if n < groups.len() {
                        groups[n] = pgid;
                        n += 1;
                    }
                } else if op == OP_FORGET {
                    let mut j = 0;
                    while j < n && j < groups.len() {
                        if groups[j] == pgid {
                            n -= 1;
                            if n < groups.len() {
                                groups[j] = groups[n];
                            }
                            break;
                        }
                        j += 1;
                    }
                }
            }
        }
    }
    // The agent is gone (or dropped its executor): nothing it started stays.
    let mut j = 0;
    while j < n && j < groups.len() {
        if groups[j] > 1 {
            libc::kill(-groups[j], libc::SIGKILL);
        }
        j += 1;
    }
    if let Some(c) = cgroup {
        libc::write(c.kill, b"1".as_ptr().cast(), 1);
        // cgroup.kill is asynchronous: a cgroup is removable once its
        // processes have exited. Up to about 2 s.
        let mut tries = 0;
        loop {
            if !remove_children(c.parent, &mut buf)
                && (libc::unlinkat(c.own, c.name, libc::AT_REMOVEDIR) == 0
                    || *libc::__errno_location() != libc::EBUSY)
            {
                break;
            }
            tries += 1;
            if tries > 400 {
                break;
            }
            let pause = libc::timespec {
                tv_sec: 0,
                tv_nsec: 5_000_000,
            };
            libc::nanosleep(&pause, std::ptr::null_mut());
        }
    }
    libc::_exit(0)
}

/// Removes every subdirectory (worker cgroup) of `dir`; true if some
/// remain. Raw getdents64: async-signal-safe, no allocation.
unsafe fn remove_children(dir: RawFd, buf: &mut [u8; 4096]) -> bool {
    let mut left = false;
    libc::lseek(dir, 0, libc::SEEK_SET);
    loop {
        let n = libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len());
        if n <= 0 {
            return left;
        }
        let n = (n as usize).min(buf.len());
        let mut off = 0usize;
        // struct linux_dirent64 { u64 ino; i64 off; u16 reclen; u8 type; char name[]; }
        while off + 19 < n {
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            let kind = buf[off + 18];
            if reclen < 21 || off + reclen > n {
                break;
            }
            let name = buf.as_ptr().add(off + 19).cast::<libc::c_char>();
            let dot = buf[off + 19] == b'.'
                && (buf[off + 20] == 0
                    || (buf[off + 20] == b'.' && off + 21 < n && buf[off + 21] == 0));
            if kind == libc::DT_DIR && !dot && libc::unlinkat(dir, name, libc::AT_REMOVEDIR) != 0 {
                left = true;
            }
            off += reclen;
        }
    }
}

/// Closes every fd but those in `keep` (-1 for none).
unsafe fn close_except(mut keep: [RawFd; 4]) {
    keep.sort_unstable();
    let mut from: libc::c_uint = 0;
    for k in keep {
        if k < 0 {
            continue;
        }
        let k = k as libc::c_uint;
        if k > from {
            close_range(from, k - 1);
        }
        from = from.max(k + 1);
    }
    close_range(from, libc::c_uint::MAX);
}

unsafe fn close_range(first: libc::c_uint, last: libc::c_uint) {
    if libc::syscall(libc::SYS_close_range, first, last, 0) == 0 {
        return;
    }
    // Kernels before 5.9: close one by one, up to a generous bound.
    let mut fd = first;
    while fd <= last && fd < 65536 {
        libc::close(fd as RawFd);
        fd += 1;
    }
}

/// The workers' cgroups, where cgroup v2 is delegated to the agent: a parent
/// `tidal-agent-<pid>` under the agent's own cgroup and one child per worker.
#[derive(Debug)]
pub struct Cgroups {
    parent: PathBuf,
    /// `<parent>/cgroup.kill`, open for the reaper.
    kill: OwnedFd,
    /// The parent and the agent's own cgroup directories, open for the
    /// reaper, and the parent's name.
    parent_dir: OwnedFd,
    own_dir: OwnedFd,
    name: std::ffi::CString,
    next: AtomicU64,
}

/// `TIDAL_AGENT_CGROUPS=0` turns the cgroup layer off.
pub const NO_CGROUPS_ENV: &str = "TIDAL_AGENT_CGROUPS";

/// A worker's cgroup.
#[derive(Debug)]
pub struct WorkerCgroup {
    pub dir: PathBuf,
}

/// How long to wait for a killed cgroup to empty before giving up on
/// removing its directory.
const CGROUP_EMPTY_WAIT: Duration = Duration::from_secs(2);

impl Cgroups {
    /// The agent's own cgroup v2 directory, if it may create cgroups there
    /// and move processes into them (delegated); `None` otherwise, which is
    /// fine: process groups and the reaper still apply.
    pub fn detect() -> Option<Cgroups> {
        if std::env::var_os(NO_CGROUPS_ENV).is_some_and(|v| v == "0") {
            return None;
        }
        let own = own_cgroup_dir()?;
        if !own.join("cgroup.kill").exists() && !own.join("cgroup.procs").exists() {
            return None;
        }
        // SAFETY: access(2) on a NUL-terminated path.
        let procs = std::ffi::CString::new(
            own.join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .ok()?;
        if unsafe { libc::access(procs.as_ptr(), libc::W_OK) } != 0 {
            return None;
        }
        remove_stale(&own);
        // SAFETY: getpid has no preconditions.
        let name = format!("tidal-agent-{}", unsafe { libc::getpid() });
        let parent = own.join(&name);
        if let Err(e) = std::fs::create_dir(&parent) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return None;
            }
        }
        let kill = match std::fs::OpenOptions::new()
            .write(true)
            .open(parent.join("cgroup.kill"))
        {
            Ok(f) => OwnedFd::from(f),
            Err(_) => {
                // No cgroup.kill (kernel before 5.14): not worth a half layer.
                let _ = std::fs::remove_dir(&parent);
                return None;
            }
        };
        let open_dir = |p: &Path| std::fs::File::open(p).map(OwnedFd::from);
        let (Ok(parent_dir), Ok(own_dir), Ok(name)) = (
            open_dir(&parent),
            open_dir(&own),
            std::ffi::CString::new(name),
        ) else {
            let _ = std::fs::remove_dir(&parent);
            return None;
        };
        Some(Cgroups {
            parent,
            kill,
            parent_dir,
            own_dir,
            name,
            next: AtomicU64::new(1),
        })
    }

    pub fn parent(&self) -> &Path {
        &self.parent
    }

    /// What the reaper needs to kill and remove the workers' cgroups.
    pub fn for_reaper(&self) -> ReaperCgroup {
        ReaperCgroup {
            kill: self.kill.as_raw_fd(),
            parent: self.parent_dir.as_raw_fd(),
            own: self.own_dir.as_raw_fd(),
            name: self.name.as_ptr(),
        }
    }

    /// Makes a cgroup for one worker and opens its `cgroup.procs` (closed on
    /// exec) for [`guard`].
    pub fn create(&self) -> io::Result<(WorkerCgroup, OwnedFd)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.parent.join(format!("w{n}"));
        std::fs::create_dir(&dir)?;
        match std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
        {
            Ok(f) => Ok((WorkerCgroup { dir }, OwnedFd::from(f))),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        // SAFETY: writes one byte to our own fd.
        unsafe { libc::write(self.kill.as_raw_fd(), b"1".as_ptr().cast(), 1) };
        if let Ok(entries) = std::fs::read_dir(&self.parent) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    remove_when_empty_blocking(&e.path());
                }
            }
        }
        remove_when_empty_blocking(&self.parent);
    }
}

impl WorkerCgroup {
    /// Kills everything in the cgroup and removes it once empty.
    pub async fn kill_and_remove(&self) {
        if let Err(e) = std::fs::write(self.dir.join("cgroup.kill"), "1") {
            tracing::warn!(cgroup = %self.dir.display(), error = %e, "cannot kill the worker's cgroup");
        }
        let deadline = tokio::time::Instant::now() + CGROUP_EMPTY_WAIT;
        loop {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(e) => {
                    if tokio::time::Instant::now() >= deadline {
                        tracing::warn!(cgroup = %self.dir.display(), error = %e, "the worker's cgroup did not empty; left in place");
                        return;
                    }
                }
            }
            // cgroup.kill is asynchronous: the processes exit shortly.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Removes the (unused) cgroup of a worker that did not start.
    pub fn remove(&self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn remove_when_empty_blocking(dir: &Path) {
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    let deadline = std::time::Instant::now() + CGROUP_EMPTY_WAIT;
    while std::fs::remove_dir(dir).is_err_and(|e| e.kind() != io::ErrorKind::NotFound)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Removes `tidal-agent-<pid>` cgroups of agents that are gone (killed
/// before they could remove their own).
fn remove_stale(own: &Path) {
    let Ok(entries) = std::fs::read_dir(own) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("tidal-agent-"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks existence.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            if let Ok(children) = std::fs::read_dir(e.path()) {
                for c in children.flatten() {
                    if c.path().is_dir() {
                        remove_when_empty_blocking(&c.path());
                    }
                }
            }
            remove_when_empty_blocking(&e.path());
        }
    }
}

/// This process's cgroup v2 directory: the `0::` line of /proc/self/cgroup
/// under the cgroup2 mount named in /proc/self/mountinfo.
fn own_cgroup_dir() -> Option<PathBuf> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        if !post.starts_with("cgroup2 ") {
            continue;
        }
        let fields: Vec<&str> = pre.split(' ').collect();
        let (Some(root), Some(mnt)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        // The path in /proc/self/cgroup is relative to the mount's root
        // when both are in one cgroup namespace.
        let under = if *root == "/" {
            rel
        } else if let Some(r) = rel.strip_prefix(root) {
            r
        } else {
            continue;
        };
        let dir = Path::new(mnt).join(under.trim_start_matches('/'));
        if dir.is_dir() {
            return Some(dir);
        }
    }
    None
}
