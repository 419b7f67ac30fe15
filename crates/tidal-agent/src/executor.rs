//! Tasks as child processes: start, capture, stop, kill, and the slot count.
//!
//! Each task runs `command[0] command[1..]` in its own process group, with the
//! payload on stdin and the task's identity in `TIDAL_*` variables. Its stdout
//! (capped) is the result; the tail of its stderr explains a failure. A
//! supervisor per child reports one [`ExecEvent`] when it is gone. A kill
//! is SIGKILL to the child's process group; a stop ([`Executor::stop`],
//! a drain's deadline) is SIGTERM to the group, then SIGKILL after a grace;
//! so is an attempt that runs longer than its max-run. A preemption
//! ([`Executor::preempt`]) gives notice first; a suspend is SIGSTOP to the
//! group, a resume SIGCONT, or for a task whose notice is by file its hook:
//! `suspend`, then `resume` in `TIDAL_PREEMPT_FILE` (see `worker`). A
//! worker that exits 0 after a preemption notice finished its work: a
//! success. Each attempt has a directory of
//! its own (see `taskdir`) for its checkpoint and preemption files.
//! Workers never outlive the agent: see `lifetime` (PDEATHSIG, a reaper of
//! process groups, a cgroup per worker where delegated).

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tidal_proto::v1;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::lifetime::{self, Cgroups, Reaper, WorkerCgroup};
use crate::taskdir::{RunDir, TaskDir};
use crate::worker::{self, Attempt, Notice, Order, LONGEST};
pub use crate::worker::{ExecEvent, STDERR_TAIL_BYTES};

/// What every task of this agent runs with.
#[derive(Debug, Clone)]
pub struct ExecSettings {
    pub agent_id: String,
    /// Program and arguments (non-empty; checked by the config).
    pub command: Vec<String>,
    pub max_result_bytes: usize,
    /// From SIGTERM to SIGKILL when the agent ends an attempt by itself
    /// (its max-run passed): the agent's stop grace.
    pub kill_grace: Duration,
    /// The agent's warm models file (absolute), given to workers as
    /// `TIDAL_WARM_MODELS_FILE`.
    pub warm_models_file: Option<PathBuf>,
    /// The agent's own `CUDA_VISIBLE_DEVICES`, when it was started with one:
    /// device index i of an assignment is its i-th entry (see [`gpu_env`]).
    pub cuda_visible: Option<Vec<String>>,
}

/// The agent's own `CUDA_VISIBLE_DEVICES` as a list (None when unset or
/// empty).
pub fn cuda_visible_of_env() -> Option<Vec<String>> {
    let v = std::env::var("CUDA_VISIBLE_DEVICES").ok()?;
    let list: Vec<String> = v.split(',').map(|d| d.trim().to_string()).collect();
    (!v.trim().is_empty()).then_some(list)
}

/// Refuses an agent that lists more GPUs (`--gpus`) than its own
/// `CUDA_VISIBLE_DEVICES` names: device index i is that list's i-th entry,
/// and an index past its end would name a device of the machine that a
/// lower index may already name for another worker.
pub fn check_visible(gpus: usize, agent_visible: Option<&[String]>) -> Result<(), String> {
    match agent_visible {
        Some(v) if gpus > v.len() => Err(format!(
            "--gpus lists {gpus} GPUs but this agent's CUDA_VISIBLE_DEVICES names {} ({}): \
             list at most that many, or unset CUDA_VISIBLE_DEVICES",
            v.len(),
            v.join(",")
        )),
        _ => Ok(()),
    }
}

/// The GPU variables of a worker, from its assignment's devices:
/// `(CUDA_VISIBLE_DEVICES, TIDAL_GPU_IDS)`, the indexes comma-joined (""
/// when the assignment took no GPU). None when the assignment names no
/// devices (made before cluster format version 5): the agent then sets
/// neither. `TIDAL_GPU_IDS` is always the indexes into the agent's
/// `--gpus`; `CUDA_VISIBLE_DEVICES` is the same, unless the agent itself
/// runs with a `CUDA_VISIBLE_DEVICES` (`agent_visible`): index i is then
/// its i-th entry, so a worker sees the same physical device its index
/// names (the agent does not start with more `--gpus` than that list
/// names: [`check_visible`]; an index past it would be passed as it is).
pub fn gpu_env(
    devices: Option<&v1::GpuDevices>,
    agent_visible: Option<&[String]>,
) -> Option<(String, String)> {
    let d = devices?;
    let ids: Vec<String> = d.index.iter().map(u32::to_string).collect();
    let cuda: Vec<String> = d
        .index
        .iter()
        .map(|&i| {
            agent_visible
                .and_then(|v| v.get(i as usize))
                .cloned()
                .unwrap_or_else(|| i.to_string())
        })
        .collect();
    Some((cuda.join(","), ids.join(",")))
}

/// The outcome of [`Executor::start`].
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// The child runs; report `TaskStarted`.
    Started,
    /// The same task under the same token already runs: a duplicate push.
    Duplicate,
    /// The task could not start: report this failed completion.
    Failed(v1::TaskCompleted),
    /// No room for it here now (the slots are held by workers still being
    /// stopped, which the leader already counts as free): report this
    /// stopped completion, so it is requeued without spending an attempt.
    NoRoom(v1::TaskCompleted),
}

#[derive(Debug)]
struct Running {
    slots: u32,
    /// Orders to the child's supervisor; dropping it kills the child.
    /// `None` once the child was killed (its token is given up).
    kill: Option<mpsc::UnboundedSender<Order>>,
    /// Told to stop: reported as stopped once gone (unless killed after).
    stopping: bool,
    /// Paused in place (SIGSTOP, or by its hook): its slots are free for
    /// other work, as the leader counts them (its GPUs stay its own).
    suspended: bool,
}

/// The children of this agent. Owned by the session loop; each child has a
/// supervisor task that sends one event on the channel from [`Executor::new`].
/// Dropping the executor kills every child.
#[derive(Debug)]
pub struct Executor {
    settings: Arc<ExecSettings>,
    slots: u32,
    /// Keyed by (task, token): a task reassigned under a newer token may
    /// briefly overlap its killed predecessor.
    running: BTreeMap<(String, u64), Running>,
    events: mpsc::UnboundedSender<ExecEvent>,
    /// Shared with the supervisors: the reaper and cgroups go when the last
    /// child is gone.
    guard: Arc<Guard>,
    /// The parent of the tasks' directories, made at the first start; it
    /// goes when the executor and the last task directory are gone.
    run_dir: Option<Arc<RunDir>>,
}

/// What makes workers die with the agent, beyond PDEATHSIG.
#[derive(Debug)]
struct Guard {
    reaper: Option<Reaper>,
    cgroups: Option<Cgroups>,
    /// Cleared when moving a worker into its cgroup failed once.
    cgroups_work: AtomicBool,
}

impl Guard {
    fn new() -> Guard {
        let cgroups = Cgroups::detect();
        let reaper = match Reaper::start(cgroups.as_ref().map(Cgroups::for_reaper)) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the worker reaper: what a worker forks may outlive a killed agent");
                None
            }
        };
        match &cgroups {
            Some(c) => {
                tracing::info!(cgroup = %c.parent().display(), "cgroup v2 is delegated: each task runs in a cgroup of its own")
            }
            None => tracing::debug!(
                "no delegated cgroup v2: tasks are contained by process groups and the reaper"
            ),
        }
        Guard {
            reaper,
            cgroups,
            cgroups_work: AtomicBool::new(true),
        }
    }

    /// The pipe a worker lists its own group in before exec.
    fn reaper_pipe(&self) -> Option<std::os::fd::RawFd> {
        self.reaper.as_ref().and_then(Reaper::pipe)
    }

    /// A cgroup for the next worker, if cgroups are in use.
    fn cgroup(&self) -> Option<(WorkerCgroup, std::os::fd::OwnedFd)> {
        let c = self.cgroups.as_ref()?;
        if !self.cgroups_work.load(Ordering::Relaxed) {
            return None;
        }
        match c.create() {
            Ok(w) => Some(w),
            Err(e) => {
                self.disable_cgroups(&e);
                None
            }
        }
    }

    fn disable_cgroups(&self, e: &std::io::Error) {
        if self.cgroups_work.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = %e, "cannot run tasks in cgroups of their own; using process groups only");
        }
    }
}

/// The slots a task needs (0 means 1).
pub fn slots_of(spec: Option<&v1::TaskSpec>) -> u32 {
    spec.map(|s| s.slots).unwrap_or(0).max(1)
}

impl Executor {
    /// An executor with `slots` slots, and the channel its events arrive on.
    pub fn new(
        settings: ExecSettings,
        slots: u32,
    ) -> (Executor, mpsc::UnboundedReceiver<ExecEvent>) {
        let (events, rx) = mpsc::unbounded_channel();
        (
            Executor {
                settings: Arc::new(settings),
                slots,
                running: BTreeMap::new(),
                events,
                guard: Arc::new(Guard::new()),
                run_dir: None,
            },
            rx,
        )
    }

    /// Slots held by children, including killed ones not yet reaped.
    pub fn used_slots(&self) -> u32 {
        self.running
            .values()
            .filter(|r| !r.suspended)
            .map(|r| r.slots)
            .sum()
    }

    /// Slots free for new tasks.
    pub fn free_slots(&self) -> u32 {
        self.slots.saturating_sub(self.used_slots())
    }

    /// Tasks running under a token this agent still holds (not killed).
    pub fn running(&self) -> Vec<v1::RunningTask> {
        self.running
            .iter()
            .filter(|(_, r)| r.kill.is_some())
            .map(|((task_id, token), _)| v1::RunningTask {
                task_id: task_id.clone(),
                token: *token,
            })
            .collect()
    }

    /// The number of live (not killed) children.
    pub fn live(&self) -> usize {
        self.running.values().filter(|r| r.kill.is_some()).count()
    }

    /// True when no child, live or being killed, remains.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty()
    }

    /// Starts an assignment. Never runs more than `slots` slots at once: a
    /// task that does not fit is handed back unstarted (the leader assigns
    /// only within the slots this agent declared, counting the tasks the
    /// committed state gives it, so the two views disagree: most often a
    /// worker stopped on the leader's order, or fenced, has not exited yet
    /// while the leader already freed its slots).
    pub fn start(&mut self, a: &v1::Assignment) -> Start {
        let key = (a.task_id.clone(), a.token);
        if self.running.get(&key).is_some_and(|r| r.kill.is_some()) {
            return Start::Duplicate;
        }
        // Invariant 1: a newer token for the same task means the older
        // assignment is dead at the server; stop it without reporting.
        let older: Vec<u64> = self
            .running
            .keys()
            .filter(|(t, tok)| *t == a.task_id && *tok < a.token)
            .map(|(_, tok)| *tok)
            .collect();
        for tok in older {
            self.kill(&a.task_id, tok);
        }
        let need = slots_of(a.spec.as_ref());
        let free = self.free_slots();
        if need > free {
            return Start::NoRoom(v1::TaskCompleted {
                task_id: a.task_id.clone(),
                token: a.token,
                error: format!(
                    "not started: agent {} has {free} free slot(s) of {}, the task needs {need} \
                     (handed back; its workers being stopped still hold them)",
                    self.settings.agent_id, self.slots
                ),
                exit_code: -1,
                stopped: true,
                ..Default::default()
            });
        }
        let dir = match self.task_dir(a) {
            Ok(d) => d,
            Err(e) => {
                return Start::Failed(failed(a, format!("cannot make the task's directory: {e}")))
            }
        };
        let (mut child, cgroup) = match spawn(&self.settings, a, &dir, &self.guard) {
            Ok(c) => c,
            Err(e) => {
                dir.remove();
                return Start::Failed(failed(
                    a,
                    format!("cannot start {:?}: {e}", self.settings.command[0]),
                ));
            }
        };
        let (kill_tx, kill_rx) = mpsc::unbounded_channel();
        let payload = a
            .spec
            .as_ref()
            .map(|s| s.payload.clone())
            .unwrap_or_default();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let events = self.events.clone();
        let (task_id, token) = key.clone();
        let attempt = Attempt {
            task_id,
            token,
            payload,
            max_result_bytes: self.settings.max_result_bytes,
            max_run: (a.max_run_ms > 0).then(|| Duration::from_millis(a.max_run_ms).min(LONGEST)),
            kill_grace: self.settings.kill_grace,
            dir,
            checkpoint: a.checkpoint.clone(),
            suspend_by_hook: a.preempt_notice == v1::PreemptNotice::File as i32,
            events: self.events.clone(),
        };
        let guard = self.guard.clone();
        let pid = child.id();
        if let Some(r) = &guard.reaper {
            r.listed_by_worker();
        }
        tokio::spawn(async move {
            let ev = worker::supervise(child, attempt, stdin, stdout, stderr, kill_rx).await;
            // The group was killed and its leader reaped; the cgroup takes
            // whatever left the group.
            if let Some(cg) = cgroup {
                cg.kill_and_remove().await;
            }
            if let (Some(r), Some(pid)) = (&guard.reaper, pid) {
                r.forget(pid);
            }
            let _ = events.send(ev);
        });
        self.running.insert(
            key,
            Running {
                slots: need,
                kill: Some(kill_tx),
                stopping: false,
                suspended: false,
            },
        );
        Start::Started
    }

    /// Kills the child of this task under this token. Its slots stay held
    /// until it is reaped ([`ExecEvent::Killed`]). Returns false if no such
    /// live child.
    pub fn kill(&mut self, task_id: &str, token: u64) -> bool {
        match self.running.get_mut(&(task_id.to_string(), token)) {
            Some(r) => match r.kill.take() {
                Some(k) => {
                    let _ = k.send(Order::Kill);
                    true
                }
                None => false,
            },
            None => false,
        }
    }

    /// Stops the child of this task under this token: SIGTERM to its
    /// process group, SIGKILL after `grace` if it is still there. It is
    /// reported as [`ExecEvent::Stopped`] once reaped (or as `Exited` if it
    /// ended on its own before the order reached it); its slots stay held
    /// until then. Returns false if no such live child; true also when it
    /// is already stopping.
    pub fn stop(&mut self, task_id: &str, token: u64, grace: Duration) -> bool {
        match self.running.get_mut(&(task_id.to_string(), token)) {
            Some(r) => match &r.kill {
                Some(k) => {
                    if !r.stopping {
                        r.stopping = true;
                        let _ = k.send(Order::Stop(grace.min(LONGEST)));
                    }
                    true
                }
                None => false,
            },
            None => false,
        }
    }

    /// Preempts the child of this task under this token: it gets notice
    /// (see [`Notice`]) and `grace` to checkpoint and exit, and is reported
    /// as [`ExecEvent::Stopped`] (preempted) once reaped, unless it exits 0
    /// (it finished its work within the grace: reported as
    /// [`ExecEvent::Exited`], a success). Like [`Executor::stop`]
    /// otherwise; an order to a child already stopping changes nothing.
    pub fn preempt(&mut self, task_id: &str, token: u64, notice: Notice, grace: Duration) -> bool {
        match self.running.get_mut(&(task_id.to_string(), token)) {
            Some(r) => match &r.kill {
                Some(k) => {
                    if !r.stopping {
                        r.stopping = true;
                        let grace = grace.min(LONGEST);
                        let _ = k.send(Order::Preempt { notice, grace });
                    }
                    true
                }
                None => false,
            },
            None => false,
        }
    }

    /// Suspends the child of this task under this token: SIGSTOP to its
    /// process group, or, when its assignment's notice is by file, its hook
    /// (`suspend` in `TIDAL_PREEMPT_FILE`; SIGSTOP if that file cannot be
    /// written). Either way its max-run clock pauses and its slots are
    /// free. False if no such live child, or it is being stopped.
    pub fn suspend(&mut self, task_id: &str, token: u64) -> bool {
        self.order(task_id, token, Order::Suspend, true)
    }

    /// Resumes a suspended child (SIGCONT to its process group, or
    /// `resume` in `TIDAL_PREEMPT_FILE` for one suspended by its hook).
    /// False if no such live child, or it is being stopped.
    pub fn resume(&mut self, task_id: &str, token: u64) -> bool {
        self.order(task_id, token, Order::Resume, false)
    }

    /// Sends a suspend or resume order; `suspended` is what the child is
    /// once it is sent.
    fn order(&mut self, task_id: &str, token: u64, order: Order, suspended: bool) -> bool {
        match self.running.get_mut(&(task_id.to_string(), token)) {
            Some(Running {
                kill: Some(k),
                stopping: false,
                suspended: s,
                ..
            }) => {
                let sent = k.send(order).is_ok();
                if sent {
                    *s = suspended;
                }
                sent
            }
            _ => false,
        }
    }

    /// Whether the live child of this task under this token is suspended.
    pub fn is_suspended(&self, task_id: &str, token: u64) -> bool {
        self.running
            .get(&(task_id.to_string(), token))
            .is_some_and(|r| r.suspended)
    }

    /// Whether a live child of this task under this token is held.
    pub fn holds(&self, task_id: &str, token: u64) -> bool {
        self.running
            .get(&(task_id.to_string(), token))
            .is_some_and(|r| r.kill.is_some())
    }

    /// A new directory for this attempt (see `taskdir`), with its
    /// checkpoint written.
    fn task_dir(&mut self, a: &v1::Assignment) -> std::io::Result<TaskDir> {
        let run = match &self.run_dir {
            Some(r) => r.clone(),
            None => {
                let r = Arc::new(RunDir::create()?);
                tracing::debug!(dir = %r.path().display(), "the tasks' directories are here");
                self.run_dir = Some(r.clone());
                r
            }
        };
        run.task(&a.task_id, a.token, &a.checkpoint)
    }

    /// Kills every live child; returns how many.
    pub fn kill_all(&mut self) -> usize {
        let mut n = 0;
        for r in self.running.values_mut() {
            if let Some(k) = r.kill.take() {
                let _ = k.send(Order::Kill);
                n += 1;
            }
        }
        n
    }

    /// Books an event from the channel. Returns the completion to report:
    /// `Some` only for a child that exited on its own while still held.
    pub fn on_event(&mut self, ev: &ExecEvent) -> Option<v1::TaskCompleted> {
        match ev {
            ExecEvent::Exited(c) => {
                let r = self.running.remove(&(c.task_id.clone(), c.token))?;
                r.kill.is_some().then(|| c.clone())
            }
            ExecEvent::Killed { task_id, token } => {
                self.running.remove(&(task_id.clone(), *token));
                None
            }
            ExecEvent::Stopped {
                task_id,
                token,
                preempted,
            } => {
                let r = self.running.remove(&(task_id.clone(), *token))?;
                r.kill.is_some().then(|| {
                    if *preempted {
                        preempted_report(task_id.clone(), *token)
                    } else {
                        stopped(task_id.clone(), *token)
                    }
                })
            }
            ExecEvent::Checkpoint(_) => None,
        }
    }
}

/// The report of a task stopped on the leader's order: not a result.
pub(crate) fn stopped(task_id: String, token: u64) -> v1::TaskCompleted {
    v1::TaskCompleted {
        task_id,
        token,
        success: false,
        result: Vec::new(),
        error: "stopped on the leader's order (the agent's drain deadline passed)".into(),
        exit_code: -1,
        stopped: true,
        ..Default::default()
    }
}

/// The report of a task preempted on the leader's order: not a result.
fn preempted_report(task_id: String, token: u64) -> v1::TaskCompleted {
    v1::TaskCompleted {
        error:
            "preempted on the leader's order (notice given; it ended or was killed at the grace)"
                .into(),
        ..stopped(task_id, token)
    }
}

fn failed(a: &v1::Assignment, error: String) -> v1::TaskCompleted {
    v1::TaskCompleted {
        task_id: a.task_id.clone(),
        token: a.token,
        success: false,
        result: Vec::new(),
        error,
        exit_code: -1,
        ..Default::default()
    }
}

/// The agent's variables that its workers do not inherit.
pub const AGENT_ONLY_ENV: [&str; 3] = ["TIDAL_TOKEN", "TIDAL_TLS_DIR", "TIDAL_INSECURE"];

fn command(settings: &ExecSettings, a: &v1::Assignment, dir: &TaskDir) -> Command {
    let spec = a.spec.clone().unwrap_or_default();
    let mut cmd = Command::new(&settings.command[0]);
    cmd.args(&settings.command[1..])
        .env("TIDAL_TASK_ID", &a.task_id)
        .env("TIDAL_FENCING_TOKEN", a.token.to_string())
        .env("TIDAL_ATTEMPT", a.attempt.to_string())
        .env("TIDAL_TASK_TYPE", &spec.task_type)
        .env("TIDAL_PIPELINE", &spec.pipeline)
        .env("TIDAL_MODELS", spec.models.join(","))
        .env("TIDAL_AGENT_ID", &settings.agent_id)
        .env("TIDAL_CHECKPOINT_FILE", dir.checkpoint_file())
        .env("TIDAL_PREEMPT_FILE", dir.preempt_file())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its GPUs (cluster format version 5); an assignment from before names
    // none, and the worker then keeps whatever the agent has.
    match gpu_env(a.gpu_devices.as_ref(), settings.cuda_visible.as_deref()) {
        Some((cuda, ids)) => {
            cmd.env("CUDA_VISIBLE_DEVICES", cuda)
                .env("TIDAL_GPU_IDS", ids);
        }
        None => {
            cmd.env_remove("TIDAL_GPU_IDS");
        }
    }
    match &settings.warm_models_file {
        Some(p) => cmd.env("TIDAL_WARM_MODELS_FILE", p),
        None => cmd.env_remove("TIDAL_WARM_MODELS_FILE"),
    };
    // The agent's own credentials are not the task's: a worker that logs
    // its environment must not hand out the agent token.
    for var in AGENT_ONLY_ENV {
        cmd.env_remove(var);
    }
    // Its own process group, so a kill reaches whatever the task started.
    cmd.process_group(0);
    cmd
}

/// Starts the worker, dying with the agent, in a cgroup of its own when
/// cgroups are in use (and without, if entering it fails).
fn spawn(
    settings: &ExecSettings,
    a: &v1::Assignment,
    dir: &TaskDir,
    guard: &Guard,
) -> std::io::Result<(Child, Option<WorkerCgroup>)> {
    let mut cgroup_error = None;
    if let Some((cg, procs)) = guard.cgroup() {
        let mut cmd = command(settings, a, dir);
        lifetime::guard(&mut cmd, Some(procs.as_raw_fd()), guard.reaper_pipe());
        match lifetime::spawn(cmd) {
            Ok(child) => return Ok((child, Some(cg))),
            Err(e) => {
                cg.remove();
                cgroup_error = Some(e);
            }
        }
    }
    let mut cmd = command(settings, a, dir);
    lifetime::guard(&mut cmd, None, guard.reaper_pipe());
    let child = lifetime::spawn(cmd)?;
    // It starts without a cgroup: entering one was what failed.
    if let Some(e) = cgroup_error {
        guard.disable_cgroups(&e);
    }
    Ok((child, None))
}

#[cfg(test)]
#[path = "executor_test.rs"]
mod tests;
