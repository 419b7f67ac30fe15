//! Long-running children (`tidal dev`): each in its own process group (so a
//! terminal's Ctrl-C reaches only the parent, which then stops agents before
//! servers), sent SIGTERM if the parent dies, stopped with SIGTERM and then
//! SIGKILL after a grace period.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use crate::proc::Proc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Server,
    Agent,
}

struct Child {
    kind: Kind,
    proc: Proc,
    /// Set once the exit has been seen (and reported).
    exited: Option<ExitStatus>,
}

/// Every child of this process; stopping them is explicit ([`Supervisor::stop_all`]),
/// and dropping the supervisor kills whatever is left.
#[derive(Default)]
pub struct Supervisor {
    children: Vec<Child>,
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
        self.start(kind, Proc::new(name, exe, args.to_vec(), log))
    }

    /// Starts `proc` (its environment as set) in a process group of its
    /// own, sent SIGTERM if this process dies.
    pub fn start(&mut self, kind: Kind, proc: Proc) -> anyhow::Result<()> {
        let mut proc = proc.own_process_group().die_with_parent(libc::SIGTERM);
        proc.start()?;
        self.children.push(Child {
            kind,
            proc,
            exited: None,
        });
        Ok(())
    }

    /// Children that exited since the last call, as `(name, status, log)`.
    pub fn newly_exited(&mut self) -> Vec<(String, ExitStatus, PathBuf)> {
        let mut out = Vec::new();
        for c in &mut self.children {
            if c.exited.is_none() {
                if let Some(status) = c.proc.try_exit() {
                    c.exited = Some(status);
                    out.push((c.proc.name.clone(), status, c.proc.log.clone()));
                }
            }
        }
        out
    }

    /// An error naming the child and its log if `name` has exited.
    pub fn check_alive(&mut self, name: &str) -> anyhow::Result<()> {
        for c in &mut self.children {
            if c.proc.name == name {
                if let Some(status) = c.proc.try_exit().or(c.exited) {
                    c.exited = Some(status);
                    anyhow::bail!("{name} exited ({status}); see {}", c.proc.log.display());
                }
            }
        }
        Ok(())
    }

    /// Agents first (so they finish reporting while servers still listen),
    /// then servers: SIGTERM, wait up to `grace`, then SIGKILL.
    pub async fn stop_all(&mut self, grace: Duration) {
        for kind in [Kind::Agent, Kind::Server] {
            let group: Vec<&mut Child> = self
                .children
                .iter_mut()
                .filter(|c| c.kind == kind)
                .collect();
            stop_group(group, grace).await;
        }
        self.children.clear();
    }
}

/// How long a SIGKILLed child may take to be reaped.
const KILLED_EXIT: Duration = Duration::from_secs(5);

async fn stop_group(mut group: Vec<&mut Child>, grace: Duration) {
    for c in group.iter_mut() {
        if c.exited.is_none() {
            c.proc.terminate();
        }
    }
    let deadline = tokio::time::Instant::now() + grace;
    for c in group {
        if c.exited.is_some() {
            continue;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.proc.wait_exit(left).await {
            Some(status) => {
                c.exited = Some(status);
                println!("stopped {} ({status})", c.proc.name);
            }
            None => {
                c.proc.signal(libc::SIGKILL);
                let status = c.proc.wait_exit(KILLED_EXIT).await;
                println!(
                    "killed {} after {}s ({status:?})",
                    c.proc.name,
                    grace.as_secs()
                );
            }
        }
    }
}
