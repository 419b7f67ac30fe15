//! Preemption, suspension and resumption in the replicated state
//! (cluster format version 4).
//!
//! `Preempt` is one decision, taken whole or refused whole: an online
//! Pending task is to run on an agent, and the lower-class work named on
//! that agent makes room. A suspendable victim is paused in place: its
//! slots go back to the agent at once, its GPUs stay taken (its GPU memory
//! is still in use), and its attempt goes on. Any other victim is
//! *preempting*: it keeps what it holds until its agent reports it stopped
//! (`Stopped`), and is then Pending again with its attempt given back and
//! `preempted` + 1. When every victim was suspended and the task then
//! fits, the same entry assigns it.
//!
//! `Resume` lets a suspended task go on once its preemptor has ended (or
//! went elsewhere) and its agent has room for its slots again. A suspended
//! or preempting task that ends otherwise (completion, cancel, a lost
//! agent, a regrant) lets its marker go with its hold
//! (`Lifecycle::let_go`), so nothing it held is counted twice.

use crate::command::{ApplyCtx, Granted, Rejection, Response, Stopping};
use crate::dispatch::eligibility;
use crate::model::{AgentId, FencingToken, Priority, TaskId, TaskState};
use crate::placement::check;
use crate::placement::types::PLACEMENT_VERSION;
use crate::state::State;

use super::{Preemption, Suspension};

/// The most victims one `Preempt` entry may name.
pub const MAX_VICTIMS: usize = 256;

impl State {
    /// Whether `Preempt { task, agent, victims }` would be applied (its
    /// checks only; nothing changes).
    pub fn check_preempt(
        &self,
        task: TaskId,
        agent: &str,
        victims: &[(TaskId, FencingToken)],
    ) -> Result<(), Rejection> {
        let t = self.tasks.get(&task).ok_or(Rejection::TaskNotFound(task))?;
        if t.state != TaskState::Pending {
            return Err(crate::state::wrong_state(task, &t.state));
        }
        if t.spec.priority != Priority::Online {
            return Err(Rejection::Invalid(format!(
                "task {task} is not online: only online work preempts"
            )));
        }
        if let Some(at) = self.lifecycle.task(task).and_then(|l| l.not_before_ms) {
            return Err(Rejection::WrongState {
                task,
                state: format!("pending in retry backoff until {at} ms"),
            });
        }
        let a = self
            .agents
            .get(agent)
            .ok_or_else(|| Rejection::AgentNotFound(agent.to_string()))?;
        // Room made for a task its tenant's running quota holds back would
        // go to waste (and its victims be preempted again and again): the
        // GPUs it could take on this agent weigh too much.
        self.admits_at_least(Some(a), &t.spec, self.placement.ask(task))?;
        let bound = self.access.agent_tenant(agent);
        let placed = self.cluster_version() >= PLACEMENT_VERSION;
        eligibility::ready(a)
            .and_then(|()| {
                if placed {
                    // Constraints and GPU models too: victims stopped on an
                    // agent the task cannot use would stop for nothing.
                    let ask = self.placement.ask(task);
                    check::could_run(a, bound, &t.spec, ask)
                        .and_then(|()| check::keeps_rules(a, ask, &self.placement))
                } else {
                    eligibility::capable(&a.spec, &t.spec)
                        .and_then(|()| eligibility::serves(bound, &t.spec))
                }
            })
            .map_err(|reason| Rejection::Ineligible {
                task,
                agent: agent.to_string(),
                reason,
            })?;
        if victims.is_empty() {
            return Err(Rejection::Invalid("a preemption names no victim".into()));
        }
        if victims.len() > MAX_VICTIMS {
            return Err(Rejection::OverLimit(format!(
                "{} victims, at most {MAX_VICTIMS}",
                victims.len()
            )));
        }
        for (i, (v, token)) in victims.iter().enumerate() {
            if victims[..i].iter().any(|(w, _)| w == v) {
                return Err(Rejection::Invalid(format!("victim {v} is named twice")));
            }
            let vt = self.tasks.get(v).ok_or(Rejection::TaskNotFound(*v))?;
            match vt.state.holder() {
                Some((holder, current)) if holder == agent && current == *token => {}
                Some((holder, current)) if holder == agent => {
                    return Err(Rejection::StaleToken {
                        task: *v,
                        presented: *token,
                        current: Some(current),
                    })
                }
                _ => {
                    return Err(Rejection::Invalid(format!(
                        "victim {v} is not held by agent {agent:?}"
                    )))
                }
            }
            if vt.spec.priority <= t.spec.priority {
                return Err(Rejection::Invalid(format!(
                    "victim {v} is {:?}, not of a lower class than {task}",
                    vt.spec.priority
                )));
            }
            let Some(life) = self.lifecycle.task(*v) else {
                return Err(Rejection::Invalid(format!(
                    "victim {v} was assigned before cluster format version 4: it is not preempted"
                )));
            };
            if !life.opts.preemptible {
                return Err(Rejection::Invalid(format!(
                    "victim {v} opted out of preemption"
                )));
            }
            // A victim told to stop for a preemptor that no longer waits
            // (placed elsewhere, cancelled, ended) may be taken again.
            if life.suspended.is_some()
                || life
                    .preempting
                    .as_ref()
                    .is_some_and(|p| self.preemptor_waits(p.by))
            {
                return Err(Rejection::Invalid(format!(
                    "victim {v} is already preempted"
                )));
            }
        }
        Ok(())
    }

    /// Whether the online task `by`, for which victims were told to stop,
    /// still waits for the room: Pending and not in a retry backoff. Once
    /// it does not (placed elsewhere, cancelled, ended), its victims are
    /// not told to stop, and another preemption may take them.
    pub fn preemptor_waits(&self, by: TaskId) -> bool {
        self.tasks.get(&by).is_some_and(|t| {
            t.state == TaskState::Pending
                && self
                    .lifecycle
                    .task(by)
                    .is_none_or(|l| l.not_before_ms.is_none())
        })
    }

    /// `Preempt`: see the module's documentation.
    pub(crate) fn preempt(
        &mut self,
        task: TaskId,
        agent: AgentId,
        victims: Vec<(TaskId, FencingToken)>,
        ctx: ApplyCtx,
    ) -> Response {
        if let Err(r) = self.check_preempt(task, &agent, &victims) {
            return Response::Rejected(r);
        }
        let (mut suspended, mut stopping) = (Vec::new(), Vec::new());
        for (v, token) in victims {
            let slots = self.tasks.get(&v).map_or(0, |t| t.spec.slots);
            self.lifecycle.preempted.insert(v);
            let life = self.lifecycle.life_mut(v);
            if life.opts.suspendable {
                life.suspended = Some(Suspension {
                    by: task,
                    since_ms: ctx.time_ms,
                });
                life.preempted = life.preempted.saturating_add(1);
                // Invariant 3: a suspended task's slots are free, its GPUs
                // stay taken.
                if let Some(a) = self.agents.get_mut(&agent) {
                    a.slots_in_use = a.slots_in_use.saturating_sub(slots);
                }
                suspended.push((v, token));
            } else {
                let grace_ms = life.opts.grace_ms();
                life.preempting = Some(Preemption {
                    by: task,
                    at_ms: ctx.time_ms,
                    grace_ms,
                });
                stopping.push(Stopping {
                    task: v,
                    token,
                    notice: life.opts.notice,
                    grace_ms,
                });
            }
        }
        let granted: Option<Granted> = if stopping.is_empty() {
            self.assign_one(task, agent.clone(), ctx).ok()
        } else {
            None
        };
        Response::Preempted {
            agent,
            granted,
            suspended,
            stopping,
        }
    }

    /// Whether the suspended task `id` may go on now: its preemptor has
    /// ended (finished, gone, or no longer held by the task's agent and not
    /// waiting there for a victim to stop), and its agent has room for its
    /// slots.
    pub fn check_resume(&self, id: TaskId) -> Result<(), Rejection> {
        let task = self.tasks.get(&id).ok_or(Rejection::TaskNotFound(id))?;
        let Some(s) = self.lifecycle.task(id).and_then(|l| l.suspended.as_ref()) else {
            return Err(Rejection::WrongState {
                task: id,
                state: format!("{} and not suspended", task.state.kind().as_str()),
            });
        };
        let Some((agent_id, _)) = task.state.holder() else {
            return Err(crate::state::wrong_state(id, &task.state));
        };
        let agent = self
            .agents
            .get(agent_id)
            .ok_or_else(|| Rejection::AgentNotFound(agent_id.clone()))?;
        if let Some(by) = self.tasks.get(&s.by) {
            let waits = match by.state.holder() {
                Some((holder, _)) => holder == agent_id,
                // Pending: it still waits for a victim on this agent to stop.
                None if by.state == TaskState::Pending => agent.tasks.keys().any(|t| {
                    self.lifecycle
                        .task(*t)
                        .and_then(|l| l.preempting.as_ref())
                        .is_some_and(|p| p.by == s.by)
                }),
                None => false,
            };
            if waits {
                return Err(Rejection::Invalid(format!(
                    "task {id} is suspended for {}, which has not ended",
                    s.by
                )));
            }
        }
        let free = eligibility::free_slots(agent);
        if free < task.spec.slots {
            return Err(Rejection::Ineligible {
                task: id,
                agent: agent_id.clone(),
                reason: format!(
                    "has {free} free slots, the suspended task needs {} again",
                    task.spec.slots
                ),
            });
        }
        Ok(())
    }

    /// `Resume`: each suspended task that may go on takes its slots back.
    pub(crate) fn resume(&mut self, ids: Vec<TaskId>) -> Response {
        self.items(ids, Self::resume_one)
    }

    fn resume_one(&mut self, id: TaskId) -> Result<(), Rejection> {
        self.check_resume(id)?;
        let task = self.tasks.get(&id).ok_or(Rejection::TaskNotFound(id))?;
        let slots = task.spec.slots;
        let agent_id = task
            .state
            .holder()
            .map(|(a, _)| a.clone())
            .ok_or_else(|| crate::state::wrong_state(id, &task.state))?;
        if let Some(a) = self.agents.get_mut(&agent_id) {
            a.slots_in_use = a.slots_in_use.saturating_add(slots);
        }
        self.lifecycle.life_mut(id).suspended = None;
        self.lifecycle.preempted.remove(&id);
        Ok(())
    }

    /// The tasks suspended for a preemption, with their suspension.
    pub fn suspended(&self) -> impl Iterator<Item = (TaskId, &Suspension)> + '_ {
        self.marked()
            .filter_map(|(id, l)| l.suspended.as_ref().map(|s| (id, s)))
    }

    /// The tasks told to stop for a preemption, with their preemption.
    pub fn preempting(&self) -> impl Iterator<Item = (TaskId, &Preemption)> + '_ {
        self.marked()
            .filter_map(|(id, l)| l.preempting.as_ref().map(|p| (id, p)))
    }

    /// The tasks suspended or told to stop, in id order.
    fn marked(&self) -> impl Iterator<Item = (TaskId, &super::TaskLife)> + '_ {
        self.lifecycle
            .preempted
            .iter()
            .filter_map(|id| self.lifecycle.tasks.get(id).map(|l| (*id, l)))
    }
}

#[cfg(test)]
#[path = "preempt_test.rs"]
mod tests;
