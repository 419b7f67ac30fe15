//! The children's events: completions and stop reports (kept in the
//! outbox until acknowledged), and checkpoints (kept until answered, sent
//! again with backoff).

use tidal_proto::v1::{self, agent_message::Msg as Out};
use tokio::time::Instant;

use super::Agent;
use crate::executor::ExecEvent;

impl Agent {
    pub(super) fn observe(&self, e: ExecEvent) {
        if let Some(o) = &self.observer {
            let _ = o.send(e);
        }
    }

    /// Keeps the latest checkpoint of each task held here (running, or
    /// with its completion not yet acknowledged); forgets the others.
    pub(super) fn settle_checkpoints(&mut self) {
        let exec = &self.exec;
        self.outbox
            .retain_checkpoints(|task_id, token| exec.holds(task_id, token));
    }

    /// Sends again the checkpoints the leader has not answered in time.
    pub(super) fn resend_checkpoints(&mut self) {
        for c in self.outbox.checkpoints_due(Instant::now()) {
            tracing::debug!(task_id = %c.task_id, token = c.token, seq = c.seq, "checkpoint not answered yet; sending it again");
            self.send_if_registered(Out::Checkpoint(c));
        }
    }

    pub(super) fn on_exec(&mut self, e: ExecEvent) {
        if let ExecEvent::Checkpoint(c) = &e {
            if self.exec.holds(&c.task_id, c.token) {
                self.checkpoint_seq += 1;
                let c = v1::TaskCheckpoint {
                    seq: self.checkpoint_seq,
                    ..c.clone()
                };
                self.outbox.checkpoint(c.clone(), Instant::now());
                self.send_if_registered(Out::Checkpoint(c));
            }
            self.observe(e);
            return;
        }
        let label = self.metrics.worker_gone(&e).unwrap_or_default();
        self.on_child_gone(&e, &label);
        self.settle_checkpoints();
        self.observe(e);
    }

    /// A child's last event: report it if it is to be reported.
    fn on_child_gone(&mut self, e: &ExecEvent, label: &str) {
        if let Some(c) = self.exec.on_event(e) {
            if c.stopped && self.leaving_locally() {
                // Stopped at a local drain's deadline: not reported (the
                // cluster cannot take it back); its token never runs here
                // again, and the leader requeues it once this agent's lease
                // has ended.
                self.never_start(c.task_id.clone(), c.token);
                tracing::info!(task_id = %c.task_id, token = c.token, "task stopped at the local drain deadline; the leader requeues it once this agent's lease has ended");
                return;
            }
            if c.stopped {
                // Its token never runs here again (the leader requeues the
                // task and grants it under a new one).
                self.never_start(c.task_id.clone(), c.token);
                tracing::info!(task_id = %c.task_id, token = c.token, "task stopped on the leader's order; reporting it");
            } else {
                tracing::info!(task_id = %c.task_id, token = c.token, success = c.success, exit_code = c.exit_code, timed_out = c.timed_out, "task finished");
            }
            let outcome = match e {
                ExecEvent::Stopped {
                    preempted: true, ..
                } => "preempted",
                _ if c.stopped => "stopped",
                _ if c.success => "succeeded",
                _ if c.timed_out => "timed_out",
                _ => "failed",
            };
            self.metrics.completed(label, outcome);
            self.outbox.push(c.clone());
            self.send_if_registered(Out::Completed(c));
        }
    }
}
