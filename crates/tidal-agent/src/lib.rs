//! The tidal agent runtime: the library behind `tidal agent`.
//!
//! An agent holds one session (`Agents/Session`) with its DC's leader, runs
//! each assigned task as a child process, reports starts and completions,
//! and self-fences: when it has not renewed its lease within its own TTL
//! (shorter than the server's), it kills its tasks and drops their tokens
//! before the server can give them to another agent (invariant 6).
//!
//! Module map:
//! - `config`: [`AgentConfig`] and its validation, the agent-side TTL.
//! - `session`: the one loop: session, heartbeats, assignments, stop
//!   orders, reconnects, and the graceful exit (drain, deregister). The
//!   agent's state is in `session` itself; what the loop does with it is
//!   in its children: `run` (the loop), `conn` (sessions, heartbeats),
//!   `orders` (the leader's messages), `reports` (completions,
//!   checkpoints), `drain` (the graceful exit), `fencing`.
//! - `executor`: tasks as child processes (stdin payload, capped stdout,
//!   stderr tail, `TIDAL_*` environment), and the slot count.
//! - `worker`: one child's supervisor: process-group kill, stop (SIGTERM to
//!   the group, SIGKILL after a grace), preemption notice (signal or file),
//!   suspend and resume (SIGSTOP, SIGCONT, or the worker's hook through
//!   `TIDAL_PREEMPT_FILE` when its notice is by file), its max-run clock, its
//!   checkpoint file, its report.
//! - `taskdir`: each attempt's directory (`TIDAL_CHECKPOINT_FILE`,
//!   `TIDAL_PREEMPT_FILE`) and the watch on its checkpoint file.
//! - `lifetime`: workers never outlive the agent (PDEATHSIG from a spawner
//!   thread that never exits, a reaper process for their process groups, a
//!   cgroup per worker where cgroup v2 is delegated).
//! - `fence`: the lease deadline as a pure struct ([`Lease`]).
//! - `warm`: the models loaded on this machine now (`--warm-models-file`),
//!   read before every heartbeat.
//! - `metrics`: the families served on `--metrics-listen` (workers
//!   running, their exits by code, completions, the session and lease).
//! - `outbox`: completions and stop reports kept until the leader
//!   acknowledges them, and the latest checkpoint of each task held until
//!   the leader answers it (sent again with backoff meanwhile).
//!
//! Dependency rule: the agent speaks only the public API (`tidal-proto`
//! through `tidal-client`), as any user's agent in another language would;
//! it never depends on `tidal-core` or `tidal-server`.

mod config;
mod executor;
mod fence;
mod lifetime;
mod metrics;
mod outbox;
mod session;
mod taskdir;
mod warm;
mod worker;

#[cfg(test)]
mod session_test;

use std::future::Future;

pub use config::{
    AgentConfig, ConfigError, DEFAULT_DRAIN_TIMEOUT, DEFAULT_MAX_RESULT_BYTES, DEFAULT_STOP_GRACE,
    DEFAULT_TTL_SHARE,
};
pub use executor::{gpu_env, ExecEvent, ExecSettings, Executor, Start, STDERR_TAIL_BYTES};
pub use fence::Lease;
pub use outbox::Outbox;
pub use session::Displaced;
pub use warm::MAX_WARM_MODELS;
pub use worker::Notice;

/// Runs the agent until `shutdown` completes (then kills its tasks and
/// returns `Ok`), or until a fatal error: an invalid configuration, a
/// registration the server refuses as invalid, or an agent TTL that is not
/// shorter than the server's. Connection trouble is never fatal: the agent
/// reconnects with backoff and self-fences when its lease lapses.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    session::Agent::new(config, None)?.run(shutdown).await
}

/// Runs the agent like [`run`], but leaves gracefully: when `drain`
/// completes (the first SIGTERM), the agent asks the leader to drain it
/// with a deadline of `config.drain_timeout`: nothing new is placed on it,
/// its tasks finish or are stopped at the deadline (and requeued). Once it
/// runs nothing and every report is acknowledged, it deregisters and
/// returns `Ok`. When `now` completes first (a second signal), it kills its
/// tasks and returns at once: `Ok` if nothing was running, else an error
/// naming how many tasks were killed.
pub async fn run_draining(
    config: AgentConfig,
    drain: impl Future<Output = ()> + Send,
    now: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    session::Agent::new(config, None)?
        .run_with_drain(drain, now)
        .await
}
