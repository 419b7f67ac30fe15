//! The graceful exit: ask the leader to drain this agent (or drain
//! locally when the cluster cannot record it), wait until nothing runs and
//! every report is acknowledged, then deregister.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::Code;

use super::{Agent, Answer, LeaveStep, Leaving};

/// A graceful exit gives up (and exits with an error) this long after the
/// drain's deadline and the stop grace, when it could not finish: no
/// leader to commit the drain, the stops or the deregistration.
pub(super) const LEAVE_SLACK: Duration = Duration::from_secs(30);
/// Pause between retries of a graceful exit's requests.
const LEAVE_RETRY: Duration = Duration::from_millis(500);

/// Whether a graceful exit's request failed for good: retrying it until
/// the exit gives up would only delay the exit.
fn is_final(e: &tidal_client::Error) -> bool {
    e.is_tls_refusal() || e.is_credentials_refused()
}

impl Agent {
    /// The first shutdown signal: ask the leader to drain this agent.
    pub(super) fn start_leaving(&mut self) {
        let deadline_ms = self.config.drain_timeout.as_millis() as u64;
        tracing::info!(
            deadline_ms,
            running = self.exec.live(),
            "shutdown signal: draining (no new tasks; running tasks finish or are stopped at the deadline), \
             then deregistering and exiting; a second signal exits at once"
        );
        let call = self.drain_call(deadline_ms);
        let now = Instant::now();
        self.leaving = Some(Leaving {
            step: LeaveStep::Draining,
            call: Some(call),
            known: true,
            local: false,
            deadline: now + self.config.drain_timeout,
            stop_at: None,
            give_up_at: now + self.config.drain_timeout + self.config.stop_grace + LEAVE_SLACK,
        });
    }

    /// Asks the leader to drain this agent with a deadline `deadline_ms`
    /// from now, retrying what may pass.
    fn drain_call(&self, deadline_ms: u64) -> JoinHandle<Answer> {
        let (client, id) = (self.client.clone(), self.config.id.clone());
        tokio::spawn(async move {
            loop {
                match client.drain_agent(&id, Some(deadline_ms)).await {
                    Ok(_) => return Answer::Done,
                    Err(e) if e.code == Code::NotFound => return Answer::Unknown,
                    // The cluster's format version lacks drains (a rolling
                    // upgrade under way), or the server predates them.
                    Err(e) if matches!(e.code, Code::FailedPrecondition | Code::Unimplemented) => {
                        return Answer::Cannot(e.to_string())
                    }
                    Err(e) if is_final(&e) => return Answer::Refused(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot drain this agent yet; retrying");
                        tokio::time::sleep(LEAVE_RETRY).await;
                    }
                }
            }
        })
    }

    /// A local drain's deadline: every task still running is stopped
    /// (SIGTERM to its group, SIGKILL after the grace). Their stops are not
    /// reported (the cluster cannot take them back without an attempt): the
    /// leader requeues them once this agent's lease has ended.
    pub(super) fn stop_at_local_deadline(&mut self) {
        if let Some(l) = self.leaving.as_mut() {
            l.stop_at = None;
        }
        let running = self.exec.running();
        if !running.is_empty() {
            tracing::warn!(
                running = running.len(),
                grace_ms = self.config.stop_grace.as_millis() as u64,
                "local drain deadline passed: stopping the running tasks (SIGTERM to their process groups, SIGKILL after the grace)"
            );
        }
        for r in running {
            self.exec.stop(&r.task_id, r.token, self.config.stop_grace);
        }
    }

    pub(super) fn leaving_locally(&self) -> bool {
        self.leaving.as_ref().is_some_and(|l| l.local)
    }

    /// The graceful exit's request answered; true when the exit is done,
    /// an error when it cannot finish (a drain or a deregistration refused
    /// for good: the running tasks are killed, and requeued by the leader
    /// once this agent's lease runs out).
    pub(super) fn on_leave(&mut self, answer: Answer) -> anyhow::Result<bool> {
        let live = self.exec.live();
        let Some(l) = self.leaving.as_mut() else {
            return Ok(false);
        };
        l.call = None;
        match (l.step, answer) {
            (LeaveStep::Draining | LeaveStep::Deregistering, Answer::Refused(e)) => {
                Err(anyhow::anyhow!(
                    "the graceful exit cannot finish (at step {:?}): {e}: killing {live} running \
                     task(s) and exiting; the leader requeues them once this agent's lease runs out",
                    l.step
                ))
            }
            (step, answer) => Ok(self.on_leave_answer(step, answer)),
        }
    }

    /// [`Agent::on_leave`] for an answer the exit goes on after.
    fn on_leave_answer(&mut self, step: LeaveStep, answer: Answer) -> bool {
        let Some(l) = self.leaving.as_mut() else {
            return false;
        };
        match step {
            LeaveStep::Draining => {
                l.step = LeaveStep::Drained;
                match answer {
                    Answer::Done => {
                        tracing::info!(
                            "drain committed: no new tasks; waiting for the running ones"
                        )
                    }
                    Answer::Unknown => {
                        l.known = false;
                        tracing::info!("the cluster does not know this agent: nothing to drain");
                    }
                    // Taken by `on_leave`.
                    Answer::Refused(_) => {}
                    Answer::Cannot(e) => {
                        // Drain here: start nothing new, let the running
                        // tasks finish until the deadline, stop the rest
                        // then, and leave as after a committed drain.
                        l.local = true;
                        l.stop_at = Some(l.deadline);
                        tracing::warn!(
                            error = %e,
                            deadline_ms = l.deadline.saturating_duration_since(Instant::now()).as_millis() as u64,
                            "the cluster cannot record a drain (its format version is 1, or the server is older): \
                             draining locally: no new task starts here, the running ones finish or are stopped at \
                             the deadline, then this agent deregisters (or, if the leader still counts tasks on it, \
                             exits and they are requeued once its lease has ended)"
                        );
                    }
                }
                false
            }
            LeaveStep::Drained => {
                if answer != Answer::Done {
                    tracing::warn!(answer = ?answer, "the drain asked for again was not committed");
                }
                false
            }
            LeaveStep::Deregistering => {
                match answer {
                    Answer::Cannot(e) => tracing::warn!(
                        error = %e,
                        "cannot deregister after a local drain; exiting: the leader requeues what it still counts \
                         on this agent once its lease has ended"
                    ),
                    _ => tracing::info!("deregistered; exiting"),
                }
                true
            }
        }
    }

    /// Once the drain is committed, nothing runs and every report is
    /// acknowledged: deregister (or, for an agent the cluster does not
    /// know, leave at once).
    pub(super) fn leave_when_idle(&mut self) {
        let idle = self.exec.is_idle() && self.outbox.is_empty();
        let Some(l) = self.leaving.as_mut() else {
            return;
        };
        if l.step != LeaveStep::Drained || !idle {
            return;
        }
        l.step = LeaveStep::Deregistering;
        if !l.known {
            l.call = Some(tokio::spawn(async { Answer::Done }));
            return;
        }
        tracing::info!("drained: nothing runs and every report is acknowledged; deregistering");
        let (client, id, local) = (self.client.clone(), self.config.id.clone(), l.local);
        l.call = Some(tokio::spawn(async move {
            loop {
                match client.deregister_agent(&id).await {
                    // NotFound: a retry after an answer that was lost.
                    Ok(_) => return Answer::Done,
                    Err(e) if e.code == Code::NotFound => return Answer::Done,
                    // After a local drain the leader may still count tasks
                    // on this agent (stopped here, not reported), or the
                    // server may predate deregistration.
                    Err(e)
                        if local
                            && matches!(e.code, Code::FailedPrecondition | Code::Unimplemented) =>
                    {
                        return Answer::Cannot(e.to_string())
                    }
                    Err(e) if is_final(&e) => return Answer::Refused(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot deregister this agent yet; retrying");
                        tokio::time::sleep(LEAVE_RETRY).await;
                    }
                }
            }
        }));
    }

    pub(super) fn deregistering(&self) -> bool {
        self.leaving
            .as_ref()
            .is_some_and(|l| l.step == LeaveStep::Deregistering)
    }

    /// Registered again while leaving after a committed drain: the drain
    /// ended if the agent was marked down meanwhile (it registered as
    /// ready), so it is asked for again, with what is left of the deadline.
    pub(super) fn drain_again(&mut self) {
        let Some(l) = self.leaving.as_ref() else {
            return;
        };
        if l.step != LeaveStep::Drained || !l.known || l.local || l.call.is_some() {
            return;
        }
        let left = l.deadline.saturating_duration_since(Instant::now());
        tracing::info!(
            deadline_ms = left.as_millis() as u64,
            "registered again while leaving: asking the leader to drain this agent again"
        );
        let call = self.drain_call(left.as_millis() as u64);
        if let Some(l) = self.leaving.as_mut() {
            l.call = Some(call);
        }
    }
}

/// The graceful exit's request in flight, if any.
pub(super) async fn leave_call(leaving: &mut Option<Leaving>) -> Answer {
    match leaving.as_mut().and_then(|l| l.call.as_mut()) {
        // A request task that panicked or was aborted counts as done.
        Some(call) => call.await.unwrap_or(Answer::Done),
        None => std::future::pending().await,
    }
}
