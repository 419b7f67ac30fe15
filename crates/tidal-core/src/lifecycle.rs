//! Task lifecycle in the replicated state (cluster format version 4):
//! retries with backoff, attempt history, dead letters and replay,
//! deadlines, checkpoints and the classes' headroom.
//!
//! Every decision is a committed entry, so fencing covers a late answer from
//! an old attempt and every replica decides alike:
//!
//! - a failed attempt (non-zero exit, a max-run timeout, a lost agent) with
//!   attempts left puts the task back to Pending *in backoff*: it is not
//!   dispatched before `not_before_ms`, which the failing entry computes from
//!   its own time ([`backoff_ms`]: exponential, capped, with a jitter derived
//!   from the task and its token, never from a random source). The leader
//!   commits [`Command::Wake`](crate::Command::Wake) once the time passed;
//! - a failed attempt with none left fails the task as a *dead letter*
//!   (`TaskLife::dead`); `Replay` puts it back with a fresh budget and its
//!   history kept;
//! - a Pending task whose deadline passed is reported once by
//!   `DeadlineMissed` (a counter and an event) and, with `OnDeadline::Fail`,
//!   failed;
//! - checkpoints are accepted only from the current holder's token.
//!
//! Nothing here changes below version 4: the apply paths of older entries
//! are exactly what they were, so a log replays alike across an upgrade.

use crate::access::Principal;
use crate::command::{ApplyCtx, Rejection, Response};
use crate::model::{AgentId, FencingToken, Priority, Task, TaskId, TaskSpec, TaskState};
use crate::state::State;

pub mod preempt;
#[cfg(test)]
pub(crate) mod test_world;
pub mod types;
pub use types::{backoff_ms, validate_options};
pub mod victims;
pub use types::{
    Attempt, AttemptEnd, Checkpoint, Headroom, Lifecycle, Notice, OnDeadline, Preemption,
    Suspension, TaskLife, TaskOptions, DEFAULT_BACKOFF_BASE_MS, DEFAULT_BACKOFF_MAX_MS,
    DEFAULT_PREEMPT_GRACE_MS, LIFECYCLE_VERSION, MAX_ATTEMPT_HISTORY, MAX_BACKOFF_MS,
    MAX_CHECKPOINT_BYTES, MAX_PREEMPT_GRACE_MS,
};
pub use victims::plan_preemption;

// ---- reads ----

impl Lifecycle {
    /// What the lifecycle state keeps of task `id`.
    pub fn task(&self, id: TaskId) -> Option<&TaskLife> {
        self.tasks.get(&id)
    }

    /// The capacity kept free for `class` and the classes above it.
    pub fn headroom(&self, class: Priority) -> Headroom {
        self.headroom.get(&class).copied().unwrap_or_default()
    }

    /// The headroom set per class, in class order.
    pub fn headrooms(&self) -> impl Iterator<Item = (Priority, Headroom)> + '_ {
        self.headroom.iter().map(|(c, h)| (*c, *h))
    }

    /// What a task of `class` must leave free: the headroom of every class
    /// above it, summed.
    pub fn reserved_above(&self, class: Priority) -> Headroom {
        self.headroom.iter().filter(|(c, _)| **c < class).fold(
            Headroom::default(),
            |acc, (_, h)| Headroom {
                slots: acc.slots.saturating_add(h.slots),
                gpus: acc.gpus.saturating_add(h.gpus),
            },
        )
    }

    /// How many times a task's deadline passed before it started.
    pub fn deadlines_missed(&self) -> u64 {
        self.deadlines_missed
    }

    /// The earliest time a task in backoff may run again.
    pub fn next_wake(&self) -> Option<u64> {
        self.delayed.iter().next().map(|(t, _)| *t)
    }

    /// Up to `limit` tasks whose backoff ended at or before `now_ms`: what
    /// a `Wake` entry may name.
    pub fn wakes_due(&self, now_ms: u64, limit: usize) -> Vec<TaskId> {
        self.delayed
            .iter()
            .take_while(|(t, _)| *t <= now_ms)
            .take(limit)
            .map(|(_, id)| *id)
            .collect()
    }

    /// The earliest deadline of a Pending task not yet reported missed.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.iter().next().map(|(t, _)| *t)
    }

    /// Up to `limit` Pending tasks whose deadline passed at `now_ms` and
    /// that were not reported yet: what a `DeadlineMissed` entry may name.
    pub fn deadlines_due(&self, now_ms: u64, limit: usize) -> Vec<TaskId> {
        self.deadlines
            .iter()
            .take_while(|(t, _)| *t < now_ms)
            .take(limit)
            .map(|(_, id)| *id)
            .collect()
    }

    /// The agent of the task's last attempt, if any: placement prefers
    /// another one for a retry.
    pub fn last_agent(&self, id: TaskId) -> Option<&AgentId> {
        self.tasks
            .get(&id)
            .and_then(|l| l.attempts.last())
            .map(|a| &a.agent)
    }

    /// The dead letters (failed with their attempts used up) with ids after
    /// `after`, in id order: what `task list --dead` and `Replay` of a
    /// queue's dead letters read. Looks only at tasks with a lifecycle.
    pub fn dead_after(&self, after: Option<TaskId>) -> impl Iterator<Item = TaskId> + '_ {
        let from = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        self.tasks
            .range((from, std::ops::Bound::Unbounded))
            .filter(|(_, l)| l.dead)
            .map(|(id, _)| *id)
    }

    /// The dispatch-order deadline of a Pending task, or `None` while it is
    /// in backoff (it is then out of the dispatch index).
    pub(crate) fn dispatch_key(&self, id: TaskId) -> Option<u64> {
        match self.tasks.get(&id) {
            None => Some(u64::MAX),
            Some(l) if l.not_before_ms.is_some() => None,
            Some(l) => Some(l.opts.deadline_ms.unwrap_or(u64::MAX)),
        }
    }

    /// Files a task that became Pending in the backoff and deadline
    /// indexes; returns its dispatch key (see [`Self::dispatch_key`]).
    pub(crate) fn index_pending(&mut self, id: TaskId) -> Option<u64> {
        if let Some(l) = self.tasks.get(&id) {
            if let Some(t) = l.not_before_ms {
                self.delayed.insert((t, id));
            }
            if let (Some(d), false) = (l.opts.deadline_ms, l.deadline_missed) {
                self.deadlines.insert((d, id));
            }
        }
        self.dispatch_key(id)
    }

    /// Takes a task that stops being Pending out of those indexes; returns
    /// its dispatch key as it was.
    pub(crate) fn unindex_pending(&mut self, id: TaskId) -> Option<u64> {
        if let Some(l) = self.tasks.get(&id) {
            if let Some(t) = l.not_before_ms {
                self.delayed.remove(&(t, id));
            }
            if let Some(d) = l.opts.deadline_ms {
                self.deadlines.remove(&(d, id));
            }
        }
        self.dispatch_key(id)
    }

    /// Clears a task's backoff (it left Pending); call after
    /// [`Self::unindex_pending`].
    pub(crate) fn end_backoff(&mut self, id: TaskId) {
        if let Some(l) = self.tasks.get_mut(&id) {
            l.not_before_ms = None;
        }
    }

    /// Forgets a task's checkpoint (it ended and will not run again).
    pub(crate) fn drop_checkpoint(&mut self, id: TaskId) {
        if self.tasks.get(&id).is_some_and(|l| l.checkpoint.is_some()) {
            if let Some(l) = self.tasks.get_mut(&id) {
                l.checkpoint = None;
            }
        }
    }

    /// Rebuilds the derived indexes from the tasks.
    pub(crate) fn reindex(&mut self, tasks: &crate::collections::Map<TaskId, Task>) {
        self.delayed = Default::default();
        self.deadlines = Default::default();
        self.preempted = self
            .tasks
            .iter()
            .filter(|(_, l)| l.preempting.is_some() || l.suspended.is_some())
            .map(|(id, _)| *id)
            .collect();
        let pending: Vec<TaskId> = tasks
            .values()
            .filter(|t| t.state == TaskState::Pending)
            .map(|t| t.id)
            .collect();
        for id in pending {
            self.index_pending(id);
        }
    }

    /// The life of a task, created (with default options) for a task
    /// submitted before version 4.
    pub(crate) fn life_mut(&mut self, id: TaskId) -> &mut TaskLife {
        if self.tasks.get(&id).is_none() {
            self.tasks.insert(id, TaskLife::default());
        }
        self.tasks.get_mut(&id).expect("inserted above")
    }

    /// Ends the preemption or suspension of a task whose hold ends;
    /// returns whether it was suspended (its slots were released already).
    pub(crate) fn let_go(&mut self, id: TaskId) -> bool {
        match self.tasks.get_mut(&id) {
            Some(l) => {
                self.preempted.remove(&id);
                l.preempting = None;
                l.suspended.take().is_some()
            }
            None => false,
        }
    }

    /// Records a new assignment in the task's history.
    pub(crate) fn begin(&mut self, id: TaskId, attempt: u32, agent: &str, token: u64, now: u64) {
        let life = self.life_mut(id);
        life.attempts.push(Attempt {
            attempt,
            agent: agent.to_string(),
            token,
            assigned_ms: now,
            started_ms: None,
            ended_ms: None,
            end: None,
            error: String::new(),
        });
        if life.attempts.len() > MAX_ATTEMPT_HISTORY {
            let over = life.attempts.len() - MAX_ATTEMPT_HISTORY;
            life.attempts.drain(..over);
        }
    }

    /// Records that the attempt under `token` started.
    pub(crate) fn mark_started(&mut self, id: TaskId, token: u64, now: u64) {
        if let Some(a) = self
            .tasks
            .get_mut(&id)
            .and_then(|l| l.attempts.iter_mut().rev().find(|a| a.token == token))
        {
            a.started_ms.get_or_insert(now);
        }
    }

    /// Records how the attempt under `token` ended.
    pub(crate) fn end(&mut self, id: TaskId, token: u64, end: AttemptEnd, error: &str, now: u64) {
        if let Some(a) = self
            .tasks
            .get_mut(&id)
            .and_then(|l| l.attempts.iter_mut().rev().find(|a| a.token == token))
        {
            if a.end.is_none() {
                a.end = Some(end);
                a.ended_ms = Some(now);
                a.error = error.chars().take(1024).collect();
            }
        }
    }
}

// ---- apply ----

impl State {
    /// The lifecycle state (cluster format version 4).
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// Sets the lifecycle state of a state read from a snapshot (tidal-store
    /// keeps it beside the state) and rebuilds what derives from it. Not a
    /// replicated change.
    pub fn restore_lifecycle(&mut self, lifecycle: Lifecycle) {
        self.lifecycle = lifecycle;
        self.lifecycle.reindex(&self.tasks);
        self.pending_by_tenant = crate::state::tenant_index(&self.tasks, &self.lifecycle);
    }

    /// `SubmitWith`: `SubmitAs` with each task's options; `by` may be
    /// empty (no credential was checked).
    pub(crate) fn submit_with(
        &mut self,
        specs: Vec<TaskSpec>,
        place: Vec<(u32, AgentId)>,
        by: Vec<Principal>,
        opts: Vec<TaskOptions>,
        asks: Vec<crate::placement::types::PlaceAsk>,
        ctx: ApplyCtx,
    ) -> Response {
        if !by.is_empty() && by.len() != specs.len() {
            return Response::Rejected(Rejection::Invalid(format!(
                "{} principals for {} tasks",
                by.len(),
                specs.len()
            )));
        }
        if opts.len() > specs.len() {
            return Response::Rejected(Rejection::Invalid(format!(
                "{} option sets for {} tasks",
                opts.len(),
                specs.len()
            )));
        }
        if asks.len() > specs.len() {
            return Response::Rejected(Rejection::Invalid(format!(
                "{} placement asks for {} tasks",
                asks.len(),
                specs.len()
            )));
        }
        let response = self.submit_placed_with(specs, opts, asks, place, ctx);
        if let Response::SubmittedPlaced { submitted, .. } = &response {
            for (result, principal) in submitted.iter().zip(by) {
                if let Ok(s) = result {
                    if !s.existed {
                        self.access.submitted_by.insert(s.id, principal);
                    }
                }
            }
        }
        response
    }

    /// Whether the cluster applies the lifecycle rules (version 4 on).
    pub(crate) fn lifecycle_on(&self) -> bool {
        self.cluster_version >= LIFECYCLE_VERSION
    }

    /// How many attempts task `t` has used since its last replay.
    pub(crate) fn attempts_used(&self, t: &Task) -> u32 {
        let base = self.lifecycle.task(t.id).map_or(0, |l| l.budget_base);
        t.attempt.saturating_sub(base)
    }

    /// A task whose attempt under `token` failed (`end` says how) and that
    /// its holder let go of already (released): retried after its backoff
    /// while attempts are left, else failed as a dead letter. Version 4
    /// only. Returns true if it was requeued. The caller reports it to its
    /// origin DC.
    pub(crate) fn retry_or_bury(
        &mut self,
        id: TaskId,
        agent: Option<AgentId>,
        token: FencingToken,
        end: AttemptEnd,
        ctx: ApplyCtx,
    ) -> bool {
        let Some(task) = self.tasks.get(&id) else {
            return false;
        };
        let used = self.attempts_used(task);
        let max = task.spec.max_attempts;
        let error = task.error.clone();
        self.lifecycle.end(id, token, end, &error, ctx.time_ms);
        let task = self.tasks.get_mut(&id).expect("looked up above");
        task.updated_ms = ctx.time_ms;
        if used < max {
            let life = self.lifecycle.life_mut(id);
            let wait = backoff_ms(&life.opts, id, token, used.max(1));
            life.not_before_ms = Some(ctx.time_ms.saturating_add(wait));
            crate::state::requeue(
                &mut self.pending,
                &mut self.pending_by_tenant,
                &mut self.access,
                &mut self.lifecycle,
                task,
                id,
            );
            true
        } else {
            task.state = TaskState::Failed { agent, token };
            if task.error.is_empty() {
                task.error = format!("attempt {} failed", task.attempt);
            }
            task.error = format!("{}; max_attempts {max} used up", task.error);
            self.lifecycle.life_mut(id).dead = true;
            crate::state::refile(&mut self.finished, task, None);
            false
        }
    }

    /// An entry of independent items: each applied (or refused) alone, in
    /// order, by `one`.
    pub(crate) fn items<T>(
        &mut self,
        items: Vec<T>,
        mut one: impl FnMut(&mut Self, T) -> Result<(), Rejection>,
    ) -> Response {
        Response::Items(items.into_iter().map(|item| one(self, item)).collect())
    }

    /// `Wake`: tasks whose backoff ended at or before the entry's time go
    /// back into the dispatch order.
    pub(crate) fn wake(&mut self, ids: Vec<TaskId>, ctx: ApplyCtx) -> Response {
        self.items(ids, |s, id| s.wake_one(id, ctx))
    }

    fn wake_one(&mut self, id: TaskId, ctx: ApplyCtx) -> Result<(), Rejection> {
        let task = self.tasks.get(&id).ok_or(Rejection::TaskNotFound(id))?;
        if task.state != TaskState::Pending {
            return Err(crate::state::wrong_state(id, &task.state));
        }
        match self.lifecycle.task(id).and_then(|l| l.not_before_ms) {
            None => return Err(Rejection::Invalid(format!("task {id} is not in backoff"))),
            Some(t) if t > ctx.time_ms => {
                return Err(Rejection::Invalid(format!(
                    "task {id} is in backoff until {t} ms, after the entry's time {} ms",
                    ctx.time_ms
                )))
            }
            Some(_) => {}
        }
        let spec = task.spec.clone();
        self.lifecycle.unindex_pending(id);
        self.lifecycle.life_mut(id).not_before_ms = None;
        if let Some(deadline) = self.lifecycle.index_pending(id) {
            crate::state::index_tenant(&mut self.pending_by_tenant, &spec, id, deadline);
        }
        Ok(())
    }

    /// `DeadlineMissed`: Pending tasks whose deadline passed before the
    /// entry's time are counted once; those that asked for it fail.
    pub(crate) fn deadline_missed(&mut self, ids: Vec<TaskId>, ctx: ApplyCtx) -> Response {
        self.items(ids, |s, id| s.deadline_missed_one(id, ctx))
    }

    fn deadline_missed_one(&mut self, id: TaskId, ctx: ApplyCtx) -> Result<(), Rejection> {
        let task = self.tasks.get_mut(&id).ok_or(Rejection::TaskNotFound(id))?;
        if task.state != TaskState::Pending {
            return Err(crate::state::wrong_state(id, &task.state));
        }
        let (deadline, on) = match self.lifecycle.task(id) {
            Some(l) if !l.deadline_missed => match l.opts.deadline_ms {
                Some(d) if d < ctx.time_ms => (d, l.opts.on_deadline),
                Some(d) => {
                    return Err(Rejection::Invalid(format!(
                        "task {id}'s deadline {d} ms is not before the entry's time {} ms",
                        ctx.time_ms
                    )))
                }
                None => return Err(Rejection::Invalid(format!("task {id} has no deadline"))),
            },
            Some(_) => {
                return Err(Rejection::Invalid(format!(
                    "task {id}'s missed deadline was reported already"
                )))
            }
            None => return Err(Rejection::Invalid(format!("task {id} has no deadline"))),
        };
        self.lifecycle.deadlines_missed = self.lifecycle.deadlines_missed.saturating_add(1);
        match on {
            OnDeadline::Report => {
                // Its place in the dispatch order does not change: the
                // deadline stays its key; only the report index drops it.
                self.lifecycle.deadlines.remove(&(deadline, id));
                self.lifecycle.life_mut(id).deadline_missed = true;
            }
            OnDeadline::Fail => {
                crate::state::unqueue(
                    &mut self.pending,
                    &mut self.pending_by_tenant,
                    &mut self.access,
                    &mut self.lifecycle,
                    task,
                    id,
                );
                self.lifecycle.life_mut(id).deadline_missed = true;
                task.state = TaskState::Failed {
                    agent: None,
                    token: 0,
                };
                task.error = format!(
                    "its deadline ({deadline} ms) passed before it started (--on-deadline fail)"
                );
                task.updated_ms = ctx.time_ms;
                crate::state::refile(&mut self.finished, task, None);
                self.report(id, ctx);
            }
        }
        Ok(())
    }

    /// `Replay`: dead letters go back to Pending with a fresh attempt
    /// budget; their history stays.
    pub(crate) fn replay(&mut self, ids: Vec<TaskId>, ctx: ApplyCtx) -> Response {
        self.items(ids, |s, id| s.replay_one(id, ctx))
    }

    fn replay_one(&mut self, id: TaskId, ctx: ApplyCtx) -> Result<(), Rejection> {
        let task = self.tasks.get_mut(&id).ok_or(Rejection::TaskNotFound(id))?;
        let dead = self.lifecycle.task(id).is_some_and(|l| l.dead);
        if !dead || !matches!(task.state, TaskState::Failed { .. }) {
            return Err(Rejection::WrongState {
                task: id,
                state: format!(
                    "{} and not a dead letter (only a task that used up its attempts is \
                     replayed)",
                    task.state.kind().as_str()
                ),
            });
        }
        // The task is ended: its tenant's pending limit applies as to a
        // new submit.
        self.access.admit_pending(&task.spec)?;
        let finished_at = task.updated_ms;
        let life = self.lifecycle.life_mut(id);
        life.dead = false;
        life.not_before_ms = None;
        life.budget_base = task.attempt;
        task.error.clear();
        task.exit_code = 0;
        task.result.clear();
        task.updated_ms = ctx.time_ms;
        self.finished.remove(&(finished_at, id));
        crate::state::requeue(
            &mut self.pending,
            &mut self.pending_by_tenant,
            &mut self.access,
            &mut self.lifecycle,
            task,
            id,
        );
        self.report(id, ctx);
        Ok(())
    }

    /// `Checkpoint`: the latest checkpoint of each task, from its current
    /// holder only.
    pub(crate) fn checkpoint(
        &mut self,
        items: Vec<(TaskId, FencingToken, Vec<u8>)>,
        ctx: ApplyCtx,
    ) -> Response {
        self.items(items, |s, (id, token, data)| {
            s.checkpoint_one(id, token, data, ctx)
        })
    }

    fn checkpoint_one(
        &mut self,
        id: TaskId,
        token: FencingToken,
        data: Vec<u8>,
        ctx: ApplyCtx,
    ) -> Result<(), Rejection> {
        let task = self.tasks.get(&id).ok_or(Rejection::TaskNotFound(id))?;
        match task.state.holder() {
            Some((_, current)) if current == token => {}
            holder => {
                return Err(Rejection::StaleToken {
                    task: id,
                    presented: token,
                    current: holder.map(|(_, t)| t),
                })
            }
        }
        if data.len() > MAX_CHECKPOINT_BYTES {
            return Err(Rejection::OverLimit(format!(
                "checkpoint of {} bytes is over {MAX_CHECKPOINT_BYTES}",
                data.len()
            )));
        }
        self.lifecycle.life_mut(id).checkpoint = Some(Checkpoint {
            token,
            at_ms: ctx.time_ms,
            data,
        });
        Ok(())
    }

    /// `SetHeadroom`: capacity kept free for `class` and the classes above.
    pub(crate) fn set_headroom(&mut self, class: Priority, headroom: Headroom) -> Response {
        if class == Priority::Offline {
            return Response::Rejected(Rejection::Invalid(
                "headroom for offline keeps nothing from anyone (no class is below it): set it \
                 for online or nearline"
                    .to_string(),
            ));
        }
        if headroom == Headroom::default() {
            self.lifecycle.headroom.remove(&class);
        } else {
            self.lifecycle.headroom.insert(class, headroom);
        }
        Response::Ok
    }
}

#[cfg(test)]
#[path = "lifecycle_test.rs"]
mod tests;
