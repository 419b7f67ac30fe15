//! One worker's supervisor: its orders (kill, stop), its max-run clock, and
//! the one [`ExecEvent`] that says it is gone.

use std::process::ExitStatus;
use std::time::Duration;

use tidal_proto::v1;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::executor::{ExecEvent, STDERR_TAIL_BYTES};

/// How long to wait for a finished task's pipes to close (a grandchild that
/// escaped the process group could hold them open).
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// What the session loop asks of a child's supervisor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Order {
    /// SIGKILL its process group now.
    Kill,
    /// SIGTERM its process group, SIGKILL after this grace.
    Stop(Duration),
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
    /// an attempt by itself (its max-run).
    pub kill_grace: Duration,
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
}

/// Why the supervisor is ending the worker (once it began to).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    /// A stop order: reported stopped, whatever the exit.
    Stop,
    /// Its max-run passed: reported as a timed-out failure.
    Timeout,
}

/// Supervises the child until it is gone; returns what to report.
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
    let clock = RunClock::start(max_run, Instant::now());
    let mut ending: Option<Ending> = None;
    // When the group gets SIGKILL (a stop's or a timeout's grace).
    let mut kill_at: Option<Instant> = None;
    let status = loop {
        // Once the attempt is being ended, its max-run no longer matters.
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
                    return ExecEvent::Killed { task_id, token };
                }
                Order::Stop(grace) => {
                    if ending.is_none() {
                        ending = Some(Ending::Stop);
                        signal_group(pid, SIGTERM);
                        kill_at = Some(Instant::now() + grace);
                    }
                }
            },
            _ = sleep_until_opt(timeout_at) => {
                tracing::info!(%task_id, token, max_run_ms = max_run.unwrap_or_default().as_millis() as u64, "task ran longer than its max-run: SIGTERM to its process group, SIGKILL after the grace");
                ending = Some(Ending::Timeout);
                signal_group(pid, SIGTERM);
                kill_at = Some(Instant::now() + kill_grace);
            }
            _ = sleep_until_opt(kill_at) => {
                kill_at = None;
                signal_group(pid, SIGKILL);
            }
        }
    };
    // Whatever the task left behind in its group goes with it, closing pipes.
    kill_group(&mut child, pid);
    writer.abort();
    if ending == Some(Ending::Stop) {
        out.abort();
        err.abort();
        return ExecEvent::Stopped { task_id, token };
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

#[cfg(unix)]
const SIGTERM: i32 = libc::SIGTERM;
#[cfg(unix)]
const SIGKILL: i32 = libc::SIGKILL;
#[cfg(not(unix))]
const SIGTERM: i32 = 15;
#[cfg(not(unix))]
const SIGKILL: i32 = 9;

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

/// Kills the child's whole process group (best effort: it may be gone).
fn kill_group(child: &mut Child, pid: Option<u32>) {
    signal_group(pid, SIGKILL);
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
