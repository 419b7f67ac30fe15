//! The leader's messages on a session: assignments, cancels, stops and
//! preemptions, suspends and resumes, and the answers to reports.

use std::time::Duration;

use tidal_proto::v1::{self, agent_message::Msg as Out, server_message::Msg as In};

use super::Agent;
use crate::executor::Start;
use crate::worker::Notice;

impl Agent {
    pub(super) fn on_server(&mut self, m: In) -> anyhow::Result<()> {
        match m {
            In::Registered(r) => self.on_registered(r)?,
            In::HeartbeatAck(a) => {
                self.lease.acked(a.seq);
            }
            In::Assignment(a) => self.on_assignment(a),
            In::Cancel(c) => {
                if self.exec.kill(&c.task_id, c.token) {
                    tracing::info!(task_id = %c.task_id, token = c.token, reason = %c.reason, "task cancelled: killed");
                } else {
                    tracing::debug!(task_id = %c.task_id, token = c.token, "cancel for a task not running here");
                }
            }
            In::Stop(s) => self.on_stop(s),
            In::Suspend(s) => {
                if self.exec.is_suspended(&s.task_id, s.token) {
                    // A new leader or session re-sends the orders of the state.
                    tracing::debug!(task_id = %s.task_id, token = s.token, "suspend order for a task suspended already");
                } else if self.exec.suspend(&s.task_id, s.token) {
                    tracing::info!(task_id = %s.task_id, token = s.token, "suspending task (SIGSTOP to its process group, or its hook when its notice is by file)");
                } else {
                    tracing::warn!(task_id = %s.task_id, token = s.token, "suspend order for a task not running here under this token (or being stopped); ignored");
                }
            }
            In::Resume(r) => {
                if self.exec.holds(&r.task_id, r.token)
                    && !self.exec.is_suspended(&r.task_id, r.token)
                {
                    // A re-sent resume (a new leader owes it) for a worker
                    // that goes on already.
                    tracing::debug!(task_id = %r.task_id, token = r.token, "resume order for a task that is not suspended; nothing to do");
                } else if self.exec.resume(&r.task_id, r.token) {
                    tracing::info!(task_id = %r.task_id, token = r.token, "resuming task");
                } else {
                    tracing::warn!(task_id = %r.task_id, token = r.token, "resume order for a task not running here under this token (or being stopped); ignored");
                }
            }
            In::CheckpointAck(a) => {
                if self.outbox.checkpoint_answered(&a.task_id, a.token, a.seq) {
                    if a.accepted {
                        tracing::debug!(task_id = %a.task_id, token = a.token, seq = a.seq, "checkpoint committed");
                    } else {
                        tracing::info!(task_id = %a.task_id, token = a.token, seq = a.seq, reason = %a.reason, "checkpoint refused by the leader");
                    }
                }
            }
            In::CompletionAck(a) => {
                self.outbox.ack(&a.task_id, a.token);
                self.settle_checkpoints();
                if a.accepted {
                    tracing::debug!(task_id = %a.task_id, token = a.token, "completion accepted");
                } else {
                    tracing::info!(task_id = %a.task_id, token = a.token, reason = %a.reason, "completion rejected by the leader");
                }
            }
        }
        Ok(())
    }

    /// The leader's order to stop a task (its drain's deadline passed), or
    /// to preempt it (`preempt`: notice, then a grace).
    fn on_stop(&mut self, s: v1::StopTask) {
        if s.preempt {
            // 0: the agent's own grace.
            let grace = match s.grace_ms {
                0 => self.config.stop_grace,
                ms => Duration::from_millis(ms),
            };
            let notice = match v1::PreemptNotice::try_from(s.notice) {
                Ok(v1::PreemptNotice::File) => Notice::File,
                _ => Notice::Signal,
            };
            if self.exec.preempt(&s.task_id, s.token, notice, grace) {
                tracing::info!(task_id = %s.task_id, token = s.token, reason = %s.reason, ?notice, grace_ms = grace.as_millis() as u64, "preempting task: notice given");
                return;
            }
        } else if self.exec.stop(&s.task_id, s.token, self.config.stop_grace) {
            tracing::info!(task_id = %s.task_id, token = s.token, reason = %s.reason, grace_ms = self.config.stop_grace.as_millis() as u64, "stopping task: SIGTERM to its process group, SIGKILL after the grace");
            return;
        }
        if self.outbox.get(&s.task_id, s.token).is_some() {
            tracing::debug!(task_id = %s.task_id, token = s.token, "stop for a task that already ended; its report settles it");
            return;
        }
        // Not running here under this token: this process never ran it, or
        // it ended and its report was settled. Another process (the one whose
        // agent id this one took over) may still run it, so a "stopped"
        // report from here could requeue it while that copy runs: none is
        // sent (the leader settles it once that process's lease has ended).
        // This token never starts here.
        self.never_start(s.task_id.clone(), s.token);
        tracing::warn!(task_id = %s.task_id, token = s.token, "stop order for a task this process does not run; not reporting it stopped (the leader requeues it once whoever may run it has stopped)");
    }

    fn on_assignment(&mut self, a: v1::Assignment) {
        if !self.registered() {
            tracing::warn!(task_id = %a.task_id, token = a.token, "assignment before registration; ignored");
            return;
        }
        if self
            .stopped
            .iter()
            .any(|(t, k)| *t == a.task_id && *k == a.token)
        {
            tracing::error!(
                task_id = %a.task_id,
                token = a.token,
                "refusing an assignment under a token this agent stopped (when it fenced itself, or on the leader's order); \
                 a token never runs twice (the leader regrants the task under a new token)"
            );
            return;
        }
        if let Some(done) = self.outbox.get(&a.task_id, a.token).cloned() {
            // Already ran under this token: the leader has not seen the result.
            self.send_if_registered(Out::Completed(done));
            return;
        }
        if let Some(local) = self.leaving.as_ref().map(|l| l.local) {
            // Leaving: nothing new starts here (the leader may place a task
            // before the drain is committed, or after this agent was marked
            // down and registered again as ready). Its token never runs here.
            self.never_start(a.task_id.clone(), a.token);
            if local {
                tracing::warn!(task_id = %a.task_id, token = a.token, "assignment while draining locally: not started; the leader requeues it once this agent's lease has ended");
                return;
            }
            // Handed back at once as stopped: requeued without spending an
            // attempt (the session it came on holds it, so the report counts).
            tracing::info!(task_id = %a.task_id, token = a.token, "assignment while leaving: not started; handing it back as stopped");
            let c = crate::executor::stopped(a.task_id, a.token);
            let label = self.metrics.type_label(&task_type(&a.spec));
            self.metrics.completed(&label, "handed_back");
            self.outbox.push(c.clone());
            self.send_if_registered(Out::Completed(c));
            return;
        }
        match self.exec.start(&a) {
            Start::Started => {
                self.metrics
                    .worker_started(&a.task_id, a.token, &task_type(&a.spec));
                tracing::info!(task_id = %a.task_id, token = a.token, attempt = a.attempt, "task started");
                self.send_if_registered(Out::Started(v1::TaskStarted {
                    task_id: a.task_id,
                    token: a.token,
                }));
            }
            Start::Duplicate => {
                tracing::debug!(task_id = %a.task_id, token = a.token, "duplicate assignment ignored");
            }
            Start::Failed(c) => {
                tracing::warn!(task_id = %c.task_id, token = c.token, error = %c.error, "task could not start");
                let task_type = task_type(&a.spec);
                self.metrics.spawn_failed(&task_type);
                let label = self.metrics.type_label(&task_type);
                self.metrics.completed(&label, "failed");
                self.outbox.push(c.clone());
                self.send_if_registered(Out::Completed(c));
            }
            Start::NoRoom(c) => {
                tracing::warn!(task_id = %c.task_id, token = c.token, error = %c.error, "no room for the task: handing it back as stopped");
                self.never_start(c.task_id.clone(), c.token);
                let label = self.metrics.type_label(&task_type(&a.spec));
                self.metrics.completed(&label, "handed_back");
                self.outbox.push(c.clone());
                self.send_if_registered(Out::Completed(c));
            }
        }
    }
}

fn task_type(spec: &Option<v1::TaskSpec>) -> String {
    spec.as_ref()
        .map(|s| s.task_type.clone())
        .unwrap_or_default()
}
