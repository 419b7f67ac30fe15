//! One worker's supervisor: its orders (kill, stop, preempt, suspend,
//! resume), its max-run clock, its checkpoint file, and the one
//! [`ExecEvent`] that says it is gone.
//!
//! Signals go to the worker's process group. A suspended group (SIGSTOP)
//! gets SIGCONT with whatever must reach it (a stop's SIGTERM, a preemption
//! notice) and after every SIGKILL, so nothing of the group stays stopped.
//! A worker whose notice is by file is suspended by its hook instead:
//! `TIDAL_PREEMPT_FILE` says `suspend`, then `resume` (see `taskdir`); it
//! keeps running, and is trusted to release compute meanwhile.

use std::process::ExitStatus;
use std::time::Duration;

use tidal_proto::v1;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::taskdir::{CheckpointWatch, Seen, TaskDir, CHECKPOINT_MAX_BYTES};

/// How much of a task's stderr is kept for its error message.
pub const STDERR_TAIL_BYTES: usize = 4096;

/// A child is gone.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecEvent {
    /// It exited on its own, or the agent ended it for running longer than
    /// its max-run (`timed_out`): the completion to report.
    Exited(v1::TaskCompleted),
    /// It was killed (cancel, self-fence, shutdown) and has been reaped.
    Killed { task_id: String, token: u64 },
    /// It was stopped (`Executor::stop`, or `Executor::preempt`:
    /// `preempted`) and has been reaped.
    Stopped {
        task_id: String,
        token: u64,
        preempted: bool,
    },
    /// Its worker wrote a new checkpoint (sent before the child's last
    /// event).
    Checkpoint(v1::TaskCheckpoint),
}

/// How long to wait for a finished task's pipes to close (a grandchild that
/// escaped the process group could hold them open).
const PIPE_GRACE: Duration = Duration::from_secs(2);
/// How often the checkpoint file is looked at.
pub const CHECKPOINT_POLL: Duration = Duration::from_millis(200);
/// The longest max-run or grace the agent keeps (about 30 years): longer
/// ones, which the wire allows, are cut to it, so no deadline overflows.
pub const LONGEST: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// How a worker is told that it is being preempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// SIGTERM to the group at once, SIGKILL at the grace.
    Signal,
    /// `TIDAL_PREEMPT_FILE` names the deadline; SIGTERM at the grace,
    /// SIGKILL after the agent's stop grace.
    File,
}

/// What the session loop asks of a child's supervisor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Order {
    /// SIGKILL its process group now.
    Kill,
    /// SIGTERM its process group, SIGKILL after this grace.
    Stop(Duration),
    /// Give the worker notice, and `grace` to checkpoint and exit.
    Preempt { notice: Notice, grace: Duration },
    /// SIGSTOP its process group; its max-run clock pauses.
    Suspend,
    /// SIGCONT its process group; its max-run clock runs again.
    Resume,
}

/// What one supervisor needs to know of its attempt.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub task_id: String,
    pub token: u64,
    pub payload: Vec<u8>,
    pub max_result_bytes: usize,
    /// Assignment.max_run_ms (None: no limit).
    pub max_run: Option<Duration>,
    /// The agent's stop grace: from SIGTERM to SIGKILL when the agent ends
    /// an attempt by itself (its max-run), or after a notice by file.
    pub kill_grace: Duration,
    /// Its directory (checkpoint and preemption files); removed once the
    /// worker is gone.
    pub dir: TaskDir,
    /// The checkpoint the agent wrote before the start (not news).
    pub checkpoint: Vec<u8>,
    /// Suspended by its hook (its notice is by file), not by SIGSTOP.
    pub suspend_by_hook: bool,
    /// Where checkpoints are sent as they appear.
    pub events: mpsc::UnboundedSender<ExecEvent>,
}

/// An attempt's running time: it runs from the worker's start and pauses
/// while the worker is suspended. Time is passed in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunClock {
    limit: Option<Duration>,
    /// Running time before `since`.
    used: Duration,
    /// Running since then; None while paused.
    since: Option<Instant>,
}

impl RunClock {
    /// A clock running from `now` with this limit (None: none).
    pub(crate) fn start(limit: Option<Duration>, now: Instant) -> RunClock {
        RunClock {
            limit,
            used: Duration::ZERO,
            since: Some(now),
        }
    }

    /// When the running time reaches the limit, if the clock runs and has one.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let limit = self.limit?;
        let since = self.since?;
        Some(since + limit.saturating_sub(self.used))
    }

    /// Running time so far.
    pub(crate) fn used(&self, now: Instant) -> Duration {
        self.used
            + self
                .since
                .map(|s| now.saturating_duration_since(s))
                .unwrap_or_default()
    }

    /// Stops counting (suspended). A no-op when paused.
    pub(crate) fn pause(&mut self, now: Instant) {
        if let Some(s) = self.since.take() {
            self.used += now.saturating_duration_since(s);
        }
    }

    /// Counts again from `now` (resumed). A no-op when running.
    pub(crate) fn resume(&mut self, now: Instant) {
        if self.since.is_none() {
            self.since = Some(now);
        }
    }
}

/// How a suspended worker was paused.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Paused {
    /// SIGSTOP to its process group.
    Stopped,
    /// `suspend` in its `TIDAL_PREEMPT_FILE`: it runs, holding its work.
    Hook,
}

/// Why the supervisor is ending the worker (once it began to).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    /// A stop order: reported stopped, whatever the exit.
    Stop,
    /// A preemption notice was given: reported stopped, unless the worker
    /// exits 0 (it finished its work within the grace: a success).
    Preempt,
    /// Its max-run passed: reported as a timed-out failure.
    Timeout,
}

/// Supervises the child until it is gone; returns what to report. Each
/// checkpoint the worker writes is sent on `attempt.events` as it is seen,
/// and once more (if new) after the worker has exited, before the report.
pub(crate) async fn supervise(
    mut child: Child,
    attempt: Attempt,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    mut orders: mpsc::UnboundedReceiver<Order>,
) -> ExecEvent {
    let Attempt {
        task_id,
        token,
        payload,
        max_result_bytes,
        max_run,
        kill_grace,
        dir,
        checkpoint,
        suspend_by_hook,
        events,
    } = attempt;
    let pid = child.id();
    let writer = tokio::spawn(async move {
        if let Some(mut stdin) = stdin {
            // A child that does not read its stdin gets EPIPE here: fine.
            let _ = stdin.write_all(&payload).await;
            let _ = stdin.shutdown().await;
        }
    });
    let out = tokio::spawn(async move {
        match stdout {
            Some(s) => read_capped(s, max_result_bytes).await,
            None => (Vec::new(), false),
        }
    });
    let err = tokio::spawn(async move {
        match stderr {
            Some(s) => read_tail(s, STDERR_TAIL_BYTES).await,
            None => Vec::new(),
        }
    });
    let mut watch = CheckpointWatch::new(dir.checkpoint_file(), &checkpoint);
    let mut poll = tokio::time::interval(CHECKPOINT_POLL);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut clock = RunClock::start(max_run, Instant::now());
    let mut suspended: Option<Paused> = None;
    let mut ending: Option<Ending> = None;
    // When the group gets SIGTERM (a notice by file's grace).
    let mut term_at: Option<Instant> = None;
    // When the group gets SIGKILL (a stop's, a notice's or a timeout's grace).
    let mut kill_at: Option<Instant> = None;
    let status = loop {
        // Once the attempt is being ended, its max-run no longer matters; a
        // suspended clock has no deadline.
        let timeout_at = clock.deadline().filter(|_| ending.is_none());
        tokio::select! {
            s = child.wait() => break s,
            // A kill order or a dropped sender both mean: kill.
            o = orders.recv() => match o.unwrap_or(Order::Kill) {
                Order::Kill => {
                    kill_group(&mut child, pid);
                    let _ = child.wait().await;
                    writer.abort();
                    out.abort();
                    err.abort();
                    dir.remove();
                    return ExecEvent::Killed { task_id, token };
                }
                order @ (Order::Stop(grace) | Order::Preempt { notice: Notice::Signal, grace }) => {
                    if ending.is_none() {
                        ending = Some(if matches!(order, Order::Stop(_)) { Ending::Stop } else { Ending::Preempt });
                        signal_group(pid, SIGTERM);
                        // A suspended worker runs again to take the signal.
                        if suspended.take() == Some(Paused::Stopped) {
                            signal_group(pid, SIGCONT);
                        }
                        kill_at = Some(Instant::now() + grace);
                    }
                }
                Order::Preempt { notice: Notice::File, grace } => {
                    if ending.is_none() {
                        ending = Some(Ending::Preempt);
                        let deadline = std::time::SystemTime::now() + grace;
                        let deadline_ms = deadline
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_millis() as u64)
                            .unwrap_or_default();
                        match dir.notify_preempt(deadline_ms) {
                            Ok(()) => term_at = Some(Instant::now() + grace),
                            Err(e) => {
                                // No notice by file: by signal, then.
                                tracing::warn!(%task_id, token, error = %e, "cannot write the preemption notice file; giving notice by SIGTERM");
                                signal_group(pid, SIGTERM);
                                kill_at = Some(Instant::now() + grace);
                            }
                        }
                        // Its notice replaced a hook's `suspend`.
                        if suspended.take() == Some(Paused::Stopped) {
                            signal_group(pid, SIGCONT);
                        }
                    }
                }
                Order::Suspend => {
                    if ending.is_some() {
                        tracing::info!(%task_id, token, "suspend order while the task is being stopped; ignored");
                    } else if suspended.is_none() {
                        let hooked = suspend_by_hook
                            && match dir.notify_suspend(true) {
                                Ok(()) => true,
                                Err(e) => {
                                    tracing::warn!(%task_id, token, error = %e, "cannot write the suspension to the preemption file; suspending by SIGSTOP");
                                    false
                                }
                            };
                        if !hooked {
                            signal_group(pid, SIGSTOP);
                        }
                        suspended = Some(if hooked { Paused::Hook } else { Paused::Stopped });
                        clock.pause(Instant::now());
                        let ran_ms = clock.used(Instant::now()).as_millis() as u64;
                        if hooked {
                            tracing::info!(%task_id, token, ran_ms, "task suspended by its hook: `suspend` in its preemption file");
                        } else {
                            tracing::info!(%task_id, token, ran_ms, "task suspended: SIGSTOP to its process group");
                        }
                    }
                }
                Order::Resume => match suspended.take() {
                    Some(Paused::Stopped) => {
                        signal_group(pid, SIGCONT);
                        clock.resume(Instant::now());
                        tracing::info!(%task_id, token, "task resumed: SIGCONT to its process group");
                    }
                    Some(Paused::Hook) => {
                        // The worker goes on when it reads the file: its
                        // clock runs from the order, as after a SIGCONT.
                        clock.resume(Instant::now());
                        match dir.notify_suspend(false) {
                            Ok(()) => tracing::info!(%task_id, token, "task resumed by its hook: `resume` in its preemption file"),
                            Err(e) => tracing::error!(%task_id, token, error = %e, "cannot write the resumption to the preemption file: the worker may stay paused until it is stopped or its max-run passes"),
                        }
                    }
                    None => {}
                },
            },
            _ = sleep_until_opt(timeout_at) => {
                tracing::info!(%task_id, token, max_run_ms = max_run.unwrap_or_default().as_millis() as u64, "task ran longer than its max-run: SIGTERM to its process group, SIGKILL after the grace");
                ending = Some(Ending::Timeout);
                signal_group(pid, SIGTERM);
                kill_at = Some(Instant::now() + kill_grace);
            }
            _ = sleep_until_opt(term_at) => {
                term_at = None;
                signal_group(pid, SIGTERM);
                kill_at = Some(Instant::now() + kill_grace);
            }
            _ = sleep_until_opt(kill_at) => {
                kill_at = None;
                signal_group(pid, SIGKILL);
                signal_group(pid, SIGCONT);
            }
            _ = poll.tick() => look_at_checkpoint(&mut watch, &task_id, token, &events),
        }
    };
    // Whatever the task left behind in its group goes with it, closing pipes.
    kill_group(&mut child, pid);
    writer.abort();
    // What it wrote just before it exited.
    look_at_checkpoint(&mut watch, &task_id, token, &events);
    dir.remove();
    // A preempted worker that exits 0 finished its work within the grace:
    // its result is reported, as a success.
    let finished = ending == Some(Ending::Preempt) && status.as_ref().is_ok_and(|s| s.success());
    if finished {
        tracing::info!(%task_id, token, "the preempted worker exited 0 after its notice: it finished its work, reported as a success");
    }
    if matches!(ending, Some(Ending::Stop | Ending::Preempt)) && !finished {
        out.abort();
        err.abort();
        return ExecEvent::Stopped {
            task_id,
            token,
            preempted: ending == Some(Ending::Preempt),
        };
    }
    let (result, truncated) = match tokio::time::timeout(PIPE_GRACE, out).await {
        Ok(Ok(r)) => r,
        _ => (Vec::new(), false),
    };
    let tail = match tokio::time::timeout(PIPE_GRACE, err).await {
        Ok(Ok(t)) => t,
        _ => Vec::new(),
    };
    let mut c = completion(
        task_id,
        token,
        status,
        result,
        truncated,
        &tail,
        max_result_bytes,
    );
    if ending == Some(Ending::Timeout) {
        c.success = false;
        c.timed_out = true;
        c.error = format!(
            "ran longer than its max-run-ms of {} ms",
            max_run.unwrap_or_default().as_millis()
        );
    }
    ExecEvent::Exited(c)
}

/// Sends the worker's checkpoint if it wrote a new one.
fn look_at_checkpoint(
    watch: &mut CheckpointWatch,
    task_id: &str,
    token: u64,
    events: &mpsc::UnboundedSender<ExecEvent>,
) {
    match watch.poll() {
        Seen::Nothing => {}
        Seen::New(data) => {
            tracing::debug!(%task_id, token, bytes = data.len(), "new checkpoint");
            // Numbered (`seq`) by the session as it sends it.
            let _ = events.send(ExecEvent::Checkpoint(v1::TaskCheckpoint {
                task_id: task_id.to_string(),
                token,
                data,
                seq: 0,
            }));
        }
        Seen::TooLarge(len) => {
            tracing::warn!(%task_id, token, bytes = len, max_bytes = CHECKPOINT_MAX_BYTES, "the task's checkpoint file is larger than the agent sends; ignored");
        }
    }
}

const SIGTERM: i32 = libc::SIGTERM;
const SIGKILL: i32 = libc::SIGKILL;
const SIGSTOP: i32 = libc::SIGSTOP;
const SIGCONT: i32 = libc::SIGCONT;

/// Sends `sig` to the child's process group (best effort: it may be gone).
fn signal_group(pid: Option<u32>, sig: i32) {
    #[cfg(unix)]
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) has no memory effects; a negative pid names the
        // process group this child leads (its own group, see `spawn`).
        unsafe {
            libc::kill(-pid, sig);
        }
    }
    #[cfg(not(unix))]
    let _ = (pid, sig);
}

/// Kills the child's whole process group (best effort: it may be gone),
/// stopped members too (SIGCONT after SIGKILL, so none stays stopped).
fn kill_group(child: &mut Child, pid: Option<u32>) {
    signal_group(pid, SIGKILL);
    signal_group(pid, SIGCONT);
    let _ = child.start_kill();
}

async fn sleep_until_opt(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

pub(crate) fn completion(
    task_id: String,
    token: u64,
    status: std::io::Result<ExitStatus>,
    result: Vec<u8>,
    truncated: bool,
    stderr_tail: &[u8],
    max: usize,
) -> v1::TaskCompleted {
    let tail = String::from_utf8_lossy(stderr_tail).trim_end().to_string();
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            return v1::TaskCompleted {
                task_id,
                token,
                success: false,
                result,
                error: format!("cannot wait for the task's process: {e}"),
                exit_code: -1,
                ..Default::default()
            }
        }
    };
    let exit_code = exit_code(&status);
    let success = status.success();
    let mut notes: Vec<String> = Vec::new();
    if !success {
        notes.push(if tail.is_empty() {
            describe(&status)
        } else {
            tail
        });
    }
    if truncated {
        notes.push(format!("result truncated to {max} bytes"));
    }
    v1::TaskCompleted {
        task_id,
        token,
        success,
        result,
        error: notes.join("; "),
        exit_code,
        ..Default::default()
    }
}

/// The exit code, or 128 + the signal number as shells report it.
fn exit_code(status: &ExitStatus) -> i32 {
    if let Some(c) = status.code() {
        return c;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return 128 + sig;
        }
    }
    -1
}

fn describe(status: &ExitStatus) -> String {
    match status.code() {
        Some(c) => format!("exited with code {c}"),
        None => format!("terminated by a signal (exit code {})", exit_code(status)),
    }
}

/// Reads everything, keeping the first `max` bytes; reading on past the cap
/// keeps the child from blocking on a full pipe.
async fn read_capped(mut r: impl AsyncRead + Unpin, max: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                if n > room {
                    truncated = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (kept, truncated)
}

/// Reads everything, keeping the last `max` bytes.
async fn read_tail(mut r: impl AsyncRead + Unpin, max: usize) -> Vec<u8> {
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > max {
                    let cut = tail.len() - max;
                    tail.drain(..cut);
                }
            }
        }
    }
    tail
}

#[cfg(test)]
#[path = "worker_test.rs"]
mod tests;
