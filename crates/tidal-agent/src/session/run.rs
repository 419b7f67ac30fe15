//! The agent's one loop: what it waits for, in which order it acts, and
//! the kill of every task when it ends.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::Instant;

use super::conn::{next_conn_event, ConnEvent};
use super::drain::{leave_call, LEAVE_SLACK};
use super::{sleep_until_opt, Agent, Answer, RECONNECT_MAX};
use crate::executor::ExecEvent;

/// How long shutdown waits for killed children to be reaped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Short-lived, on the stack of one loop turn: size does not matter.
#[allow(clippy::large_enum_variant)]
enum Event {
    Shutdown,
    /// The first shutdown signal of a graceful exit: drain, then leave.
    Drain,
    /// The graceful exit's request in flight answered (see [`Leaving`](super::Leaving)).
    Leave(Answer),
    /// A local drain's deadline: stop what still runs.
    LocalDeadline,
    /// The graceful exit did not finish in time.
    GiveUp,
    LeaseExpired,
    /// An unanswered checkpoint is due to go again.
    ResendCheckpoints,
    Exec(ExecEvent),
    Conn(ConnEvent),
}

impl Agent {
    /// Runs until `shutdown` completes, then kills the tasks and returns.
    pub(crate) async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        self.run_with_drain(std::future::pending(), shutdown).await
    }

    /// Runs until `now` completes (kill the tasks, return), or until the
    /// graceful exit that `drain` starts is done (see `run_draining`).
    #[tracing::instrument(name = "agent", skip_all, fields(agent_id = %self.config.id))]
    pub(crate) async fn run_with_drain(
        mut self,
        drain: impl Future<Output = ()> + Send,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        tokio::pin!(drain);
        tracing::info!(endpoints = ?self.config.endpoints, slots = self.config.slots, instance = %self.instance, "agent starting");
        let metrics_server =
            serve_metrics(self.config.metrics_listen, self.metrics.clone()).await?;
        let outcome = loop {
            let leaving = self.leaving.is_some();
            let give_up_at = self.leaving.as_ref().map(|l| l.give_up_at);
            let stop_at = self.leaving.as_ref().and_then(|l| l.stop_at);
            let resend_at = self.outbox.next_checkpoint_resend();
            let ev = tokio::select! {
                biased;
                _ = &mut shutdown => Event::Shutdown,
                _ = &mut drain, if !leaving => Event::Drain,
                done = leave_call(&mut self.leaving) => Event::Leave(done),
                _ = sleep_until_opt(give_up_at) => Event::GiveUp,
                _ = sleep_until_opt(stop_at) => Event::LocalDeadline,
                _ = sleep_until_opt(self.lease.deadline()) => Event::LeaseExpired,
                _ = sleep_until_opt(resend_at) => Event::ResendCheckpoints,
                Some(e) = self.events.recv() => Event::Exec(e),
                c = next_conn_event(&mut self.conn, self.lease.oldest_unacked()) => Event::Conn(c),
            };
            // Invariant 6: whatever arrived, a lapsed lease is acted on first,
            // so nothing (not even a late Registered) extends it.
            if self.lease.expired(Instant::now()) {
                self.fence();
            }
            let step = match ev {
                Event::Shutdown => {
                    let live = self.exec.live();
                    if self.leaving.is_some() && live > 0 {
                        break Err(anyhow::anyhow!(
                            "a second signal: exiting without finishing the drain; \
                             killed {live} running task(s), which the leader requeues once this agent's lease runs out"
                        ));
                    }
                    break Ok(());
                }
                Event::Drain
                    if self.exec.is_idle() && self.outbox.is_empty() && !self.registered() =>
                {
                    // No leader to drain with, and nothing that a drain
                    // would wait for: its registration (if any) ends with
                    // its lease on the server.
                    tracing::info!("shutdown signal: nothing runs and no session is open; exiting without deregistering");
                    break Ok(());
                }
                Event::Drain => {
                    self.start_leaving();
                    Ok(())
                }
                Event::Leave(answer) => match self.on_leave(answer) {
                    Ok(true) => break Ok(()),
                    Ok(false) => Ok(()),
                    Err(e) => Err(e),
                },
                Event::LocalDeadline => {
                    self.stop_at_local_deadline();
                    Ok(())
                }
                Event::GiveUp => {
                    let step = self.leaving.as_ref().map(|l| l.step);
                    break Err(anyhow::anyhow!(
                        "the drain did not finish within {:?} (at step {step:?}; no leader to commit it?): \
                         killing {} running task(s) and exiting",
                        self.config.drain_timeout + self.config.stop_grace + LEAVE_SLACK,
                        self.exec.live()
                    ));
                }
                Event::LeaseExpired => Ok(()),
                Event::ResendCheckpoints => {
                    self.resend_checkpoints();
                    Ok(())
                }
                Event::Exec(e) => {
                    self.on_exec(e);
                    Ok(())
                }
                Event::Conn(c) => self.on_conn(c),
            };
            if let Err(e) = step {
                break Err(e);
            }
            self.leave_when_idle();
            self.metrics.set_lease_deadline(self.lease.deadline());
        };
        self.stop().await;
        if let Some(server) = metrics_server {
            server.abort();
        }
        outcome
    }

    /// Stops heartbeating, kills every child and waits (briefly) for them.
    pub(super) async fn stop(&mut self) {
        self.drop_session(Instant::now() + RECONNECT_MAX);
        let n = self.exec.kill_all();
        if n > 0 {
            tracing::info!(killed = n, "agent stopping: killed running tasks");
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while !self.exec.is_idle() {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => {
                    self.metrics.worker_gone(&e);
                    self.exec.on_event(&e);
                    self.observe(e);
                }
                _ => break,
            }
        }
        tracing::info!("agent stopped");
    }
}

/// Binds `--metrics-listen` (a taken address stops the agent before it
/// registers) and serves it until the returned task is aborted.
async fn serve_metrics(
    addr: Option<std::net::SocketAddr>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding --metrics-listen {addr}"))?;
    let bound = listener
        .local_addr()
        .context("reading the metrics listener's address")?;
    // The agent has no data directory to write it to: it is logged.
    tracing::info!(metrics_listen = %bound, "serving metrics at /metrics");
    Ok(Some(tokio::spawn(tidal_client::plain_http::serve(
        listener,
        move |head| metrics.answer(head),
    ))))
}
