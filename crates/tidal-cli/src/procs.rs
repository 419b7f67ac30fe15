//! Child processes of `tidal dev`: spawned with their output in a log file,
//! in their own process group (so a terminal's Ctrl-C reaches only the
//! parent, which then stops agents before servers), stopped with SIGTERM,
//! then SIGKILL after a grace period.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Server,
    Agent,
}

pub struct Proc {
    pub name: String,
    pub kind: Kind,
    pub log: PathBuf,
    child: Child,
    /// Set once the exit has been seen (and reported).
    exited: Option<ExitStatus>,
}

/// Every child of this process; stopping them is explicit ([`Supervisor::stop_all`]),
/// and dropping the supervisor kills whatever is left.
#[derive(Default)]
pub struct Supervisor {
    procs: Vec<Proc>,
}

impl Supervisor {
    /// Starts `exe args...` with stdout and stderr appended to `log`.
    pub fn spawn(
        &mut self,
        name: &str,
        kind: Kind,
        exe: &Path,
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log file {}", log.display()))?;
        let err = file
            .try_clone()
            .with_context(|| format!("opening log file {}", log.display()))?;
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .process_group(0)
            .kill_on_drop(true);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            // If this process dies without stopping its children (SIGKILL, a
            // crash), the kernel sends them SIGTERM.
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({})", exe.display()))?;
        self.procs.push(Proc {
            name: name.to_string(),
            kind,
            log: log.to_path_buf(),
            child,
            exited: None,
        });
        Ok(())
    }

    /// Children that exited since the last call, as `(name, status, log)`.
    pub fn newly_exited(&mut self) -> Vec<(String, ExitStatus, PathBuf)> {
        let mut out = Vec::new();
        for p in &mut self.procs {
            if p.exited.is_none() {
                if let Ok(Some(status)) = p.child.try_wait() {
                    p.exited = Some(status);
                    out.push((p.name.clone(), status, p.log.clone()));
                }
            }
        }
        out
    }

    /// An error naming the child and its log if `name` has exited.
    pub fn check_alive(&mut self, name: &str) -> anyhow::Result<()> {
        for p in &mut self.procs {
            if p.name == name {
                if let Ok(Some(status)) = p.child.try_wait() {
                    p.exited = Some(status);
                    anyhow::bail!("{name} exited ({status}); see {}", p.log.display());
                }
            }
        }
        Ok(())
    }

    /// Agents first (so they finish reporting while servers still listen),
    /// then servers: SIGTERM, wait up to `grace`, then SIGKILL.
    pub async fn stop_all(&mut self, grace: Duration) {
        for kind in [Kind::Agent, Kind::Server] {
            let group: Vec<&mut Proc> = self.procs.iter_mut().filter(|p| p.kind == kind).collect();
            stop_group(group, grace).await;
        }
        self.procs.clear();
    }
}

async fn stop_group(mut group: Vec<&mut Proc>, grace: Duration) {
    for p in group.iter_mut() {
        if p.exited.is_none() {
            if let Some(pid) = p.child.id() {
                // SAFETY: kill(2) with a pid we spawned and have not reaped.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
        }
    }
    let deadline = tokio::time::Instant::now() + grace;
    for p in group {
        if p.exited.is_some() {
            continue;
        }
        match tokio::time::timeout_at(deadline, p.child.wait()).await {
            Ok(Ok(status)) => {
                p.exited = Some(status);
                println!("stopped {} ({status})", p.name);
            }
            _ => {
                let _ = p.child.start_kill();
                let status = p.child.wait().await;
                println!(
                    "killed {} after {}s ({:?})",
                    p.name,
                    grace.as_secs(),
                    status.ok()
                );
            }
        }
    }
}
