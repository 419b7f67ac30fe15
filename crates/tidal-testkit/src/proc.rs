//! One child process: `exe args...` with stdout and stderr appended to a log
//! file, optionally inside a network namespace; SIGKILLed and reaped on drop.
//!
//! Every process dies with the launcher's process ([`Proc::die_with_parent`]):
//! it is forked by one thread of the kit that lives as long as the process,
//! because Linux's PR_SET_PDEATHSIG fires when the *thread* that forked the
//! child ends, and a tokio worker or blocking thread may end long before the
//! launcher does.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::time::{sleep, Instant};

/// How often the waits below look at the process or its log.
const EXIT_POLL: Duration = Duration::from_millis(1);
const LOG_POLL: Duration = Duration::from_millis(20);

/// A child process that can be started again after it ended (same program,
/// arguments and log).
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    pub exe: PathBuf,
    pub args: Vec<String>,
    /// Environment of every start.
    env: Vec<(String, String)>,
    /// Environment of the next starts after `env`, for the launcher to
    /// change between starts (e.g. armed crash points).
    pub extra_env: Vec<(String, String)>,
    /// Variables removed from the inherited environment at each start.
    pub env_remove: Vec<String>,
    /// The network namespace it runs in (`ip netns exec NS exe ...`).
    pub netns: Option<String>,
    /// The signal the kernel sends it when the launcher's process ends.
    death_signal: i32,
    /// Started in a process group of its own (a terminal's Ctrl-C reaches
    /// only the parent).
    own_group: bool,
    child: Option<Child>,
    /// How many times it was restarted (the first start is incarnation 0).
    pub incarnation: u32,
    started: bool,
    pub paused: bool,
}

impl Proc {
    /// A process to start (nothing runs yet).
    pub fn new(name: &str, exe: &Path, args: Vec<String>, log: &Path) -> Proc {
        Proc {
            name: name.to_string(),
            log: log.to_path_buf(),
            exe: exe.to_path_buf(),
            args,
            env: Vec::new(),
            extra_env: Vec::new(),
            env_remove: Vec::new(),
            netns: None,
            death_signal: libc::SIGKILL,
            own_group: false,
            child: None,
            incarnation: 0,
            started: false,
            paused: false,
        }
    }

    /// Starts `exe args...` now.
    pub fn spawn(name: &str, exe: &Path, args: Vec<String>, log: &Path) -> anyhow::Result<Proc> {
        let mut p = Proc::new(name, exe, args, log);
        p.start()?;
        Ok(p)
    }

    pub fn env(mut self, key: &str, value: &str) -> Proc {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn envs(mut self, env: &[(String, String)]) -> Proc {
        self.env.extend_from_slice(env);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Proc {
        self.env_remove.push(key.to_string());
        self
    }

    /// Runs it in network namespace `ns` (`ip netns exec` enters the
    /// namespace and execs the program in place, so the child's pid is the
    /// program's and signals reach it, not a wrapper).
    pub fn netns(mut self, ns: Option<String>) -> Proc {
        self.netns = ns;
        self
    }

    /// On Linux, the kernel sends `signal` to the child when the launcher's
    /// process ends (SIGKILL unless set here), so a launcher killed (by a CI
    /// timeout, a crash) leaves no servers or agents behind. Any thread may
    /// start it: the fork happens on the kit's spawner thread, which never
    /// ends.
    pub fn die_with_parent(mut self, signal: i32) -> Proc {
        self.death_signal = signal;
        self
    }

    /// Starts it in a process group of its own.
    pub fn own_process_group(mut self) -> Proc {
        self.own_group = true;
        self
    }

    /// Starts the process unless it runs; a start after the first is a new
    /// incarnation.
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let out = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening log file {}", self.log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("opening log file {}", self.log.display()))?;
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.exe);
                c
            }
            None => Command::new(&self.exe),
        };
        cmd.args(&self.args);
        for k in &self.env_remove {
            cmd.env_remove(k);
        }
        cmd.envs(self.env.iter().chain(&self.extra_env).map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if self.own_group {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        die_with_parent(&mut cmd, self.death_signal);
        let child = spawner::spawn(cmd)
            .with_context(|| format!("starting {} ({})", self.name, self.exe.display()))?;
        if self.started {
            self.incarnation += 1;
        }
        self.started = true;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True from a start until the process is seen to exit or is killed.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.try_exit();
        self.child.is_some()
    }

    /// If the process has exited, reaps it and says how.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        self.paused = false;
        Some(status)
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) and returns at once.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) of our own child, not reaped yet; no memory effects.
            unsafe {
                libc::kill(pid as libc::pid_t, signal);
            }
        }
    }

    /// SIGKILL and reap (a crash, as far as the process can tell).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// Sends SIGTERM: a graceful stop.
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends SIGUSR1: a `tidal server` built with `failpoints` loses power
    /// (drops every write it has not fsynced and aborts).
    pub fn lose_power(&self) {
        self.signal(libc::SIGUSR1);
    }

    /// SIGSTOP.
    pub fn pause(&mut self) {
        if self.child.is_some() && !self.paused {
            self.signal(libc::SIGSTOP);
            self.paused = true;
        }
    }

    /// SIGCONT after [`Proc::pause`].
    pub fn resume(&mut self) {
        if self.paused {
            self.signal(libc::SIGCONT);
            self.paused = false;
        }
    }

    /// Waits up to `timeout` for the process to exit; reaps it and says how
    /// (`None`: it still runs, or was not running).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if self.child.is_none() || Instant::now() >= deadline {
                return None;
            }
            sleep(EXIT_POLL).await;
        }
    }

    /// Waits up to `timeout` until the log has a line containing `needle`.
    pub async fn wait_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if std::fs::read_to_string(&self.log).is_ok_and(|t| t.contains(needle)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} logged no {needle:?} in {timeout:?}\n{}",
                    self.name,
                    self.log_tail(20)
                );
            }
            sleep(LOG_POLL).await;
        }
    }

    /// The last `n` lines of the log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The log's lines that contain `needle`, trimmed.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(|l| l.trim().to_string())
            .collect()
    }

    /// The last line of the log that contains `needle`, trimmed.
    pub fn last_log_line(&self, needle: &str) -> Option<String> {
        self.log_lines(needle).pop()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// Makes the child of `cmd` receive `signal` when this process ends (on
/// Linux; elsewhere nothing). The kernel sends it when the thread that forks
/// the child ends: spawn `cmd` from a thread that lives as long as the
/// process, or that waits for the child (as `Command::output` does).
#[cfg(target_os = "linux")]
pub fn die_with_parent(cmd: &mut Command, signal: i32) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl, getppid and _exit are async-signal-safe and touch no
    // memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent ended between the fork and the prctl: no signal will
            // come, so end now, as the signal would have.
            if libc::getppid() != parent {
                libc::_exit(128 + signal);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub fn die_with_parent(_cmd: &mut Command, _signal: i32) {}

/// The thread that forks every [`Proc`].
mod spawner {
    use std::io;
    use std::process::{Child, Command};
    use std::sync::mpsc::{channel, sync_channel, Sender, SyncSender};
    use std::sync::OnceLock;

    type Job = (Command, SyncSender<io::Result<Child>>);

    /// The spawner's queue; the sender lives in this static, so the thread's
    /// `recv` never fails and the thread ends only with the process.
    static JOBS: OnceLock<Sender<Job>> = OnceLock::new();

    /// Spawns `cmd` on the spawner thread and returns the child.
    pub fn spawn(cmd: Command) -> io::Result<Child> {
        let jobs = JOBS.get_or_init(|| {
            let (tx, rx) = channel::<Job>();
            std::thread::Builder::new()
                .name("tidal-testkit-spawner".into())
                .spawn(move || {
                    while let Ok((mut cmd, reply)) = rx.recv() {
                        let _ = reply.send(cmd.spawn());
                    }
                })
                .expect("start the spawner thread");
            tx
        });
        let (reply, child) = sync_channel(1);
        jobs.send((cmd, reply))
            .map_err(|_| io::Error::other("the spawner thread is gone"))?;
        child
            .recv()
            .map_err(|_| io::Error::other("the spawner thread is gone"))?
    }
}

#[cfg(test)]
#[path = "proc_test.rs"]
mod tests;
