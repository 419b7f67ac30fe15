//! The preemption planner: which online tasks preempt, on which agent, and
//! whom (pure; the leader proposes what it returns as `Command::Preempt`).
//!
//! An online Pending task (dispatchable: not in backoff) that no connected
//! agent can take now, and for which no preemption is under way (no task is
//! suspended or told to stop for it), looks at every connected Ready agent
//! that could run it (capable, serving its tenant) for the cheapest set of
//! victims that makes it fit:
//!
//! - victims are lower-class work that did not opt out
//!   (`TaskOptions::preemptible`), assigned at format version 4 or later,
//!   and not preempted already; never online work;
//! - they are taken in order: lowest class first (offline before
//!   nearline), then least work lost since the last checkpoint
//!   (`now - max(start, checkpoint)`; nothing for one not started yet),
//!   then youngest (latest start), then task id;
//! - a suspendable victim frees its slots only (its GPUs stay taken while
//!   it is paused), so a task that needs GPUs needs victims that stop;
//! - a victim is taken only if it frees something still missing; then the
//!   set is pruned of victims it does not need, latest in the order first;
//! - agents are compared by the number of victims, then the work lost in
//!   total, then agent id.
//!
//! Each agent serves at most one preemption per plan, and a task is named
//! by at most one, so what one plan returns never names a victim twice.
//! The plan is deterministic: the same state, agents and time give the same
//! commands.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use crate::command::Command;
use crate::dispatch::placement;
use crate::model::{Agent, AgentId, FencingToken, Priority, Task, TaskId, TaskState};
use crate::state::State;

use super::LIFECYCLE_VERSION;

/// One possible victim, with what it frees and its place in the order.
#[derive(Debug)]
struct Victim {
    id: TaskId,
    token: FencingToken,
    /// Slots and GPUs it frees (GPUs: none if it is suspended).
    slots: u32,
    gpus: u32,
    /// Work lost, in ms.
    lost: u64,
    /// Order: lowest class first, least work lost, youngest.
    key: (Reverse<Priority>, u64, Reverse<u64>, TaskId),
}

/// Up to `max` preemptions for online Pending tasks that no agent of
/// `connected` can take at `now_ms`: see the module's documentation.
pub fn plan_preemption(
    state: &State,
    connected: &BTreeSet<AgentId>,
    now_ms: u64,
    max: usize,
) -> Vec<Command> {
    let mut out = Vec::new();
    if state.cluster_version() < LIFECYCLE_VERSION || max == 0 {
        return out;
    }
    let agents: Vec<&Agent> = connected
        .iter()
        .filter_map(|id| state.agent(id))
        .filter(|a| placement::ready(a).is_ok())
        .collect();
    if agents.is_empty() {
        return out;
    }
    // Preemptors with a preemption under way.
    let under_way: BTreeSet<TaskId> = state
        .preempting()
        .map(|(_, p)| p.by)
        .chain(state.suspended().map(|(_, s)| s.by))
        .collect();
    let mut used: BTreeSet<&str> = BTreeSet::new();
    for task in online_waiting(state) {
        if out.len() >= max || used.len() == agents.len() {
            break;
        }
        if under_way.contains(&task.id) {
            continue;
        }
        // A task its tenant's running quota holds back would not be
        // assigned on the room a preemption makes.
        if state.access().admit_running(&task.spec).is_err() {
            continue;
        }
        let bound = |a: &Agent| state.access().agent_tenant(&a.spec.id);
        if agents
            .iter()
            .any(|a| placement::eligible(a, bound(a), &task.spec).is_ok())
        {
            // The dispatcher places it.
            continue;
        }
        // (victims, work lost, agent) and the victims.
        type Choice<'a> = ((usize, u64, &'a str), Vec<(TaskId, FencingToken)>);
        let mut best: Option<Choice> = None;
        for agent in &agents {
            if used.contains(agent.spec.id.as_str())
                || placement::capable(&agent.spec, &task.spec).is_err()
                || placement::serves(bound(agent), &task.spec).is_err()
            {
                continue;
            }
            let Some(victims) = victims_on(state, agent, task, now_ms) else {
                continue;
            };
            let cost = (
                victims.len(),
                victims.iter().map(|v| v.lost).sum::<u64>(),
                agent.spec.id.as_str(),
            );
            if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                best = Some((cost, victims.iter().map(|v| (v.id, v.token)).collect()));
            }
        }
        if let Some(((_, _, agent), victims)) = best {
            used.insert(agent);
            out.push(Command::Preempt {
                task: task.id,
                agent: agent.to_string(),
                victims,
            });
        }
    }
    out
}

/// The online Pending tasks that may be dispatched (not in backoff), in
/// dispatch order within the class: earlier deadline first (none last),
/// then age.
fn online_waiting(state: &State) -> Vec<&Task> {
    let mut tasks: Vec<(u64, &Task)> = state
        .queues()
        // Each queue's Pending are in class order: its online ones first.
        .flat_map(|q| {
            state
                .pending_in_order(&q.name)
                .take_while(|t| t.spec.priority == Priority::Online)
        })
        .filter(|t| t.state == TaskState::Pending)
        .filter_map(|t| state.lifecycle().dispatch_key(t.id).map(|d| (d, t)))
        .collect();
    tasks.sort_by_key(|(d, t)| (*d, t.id));
    tasks.into_iter().map(|(_, t)| t).collect()
}

/// The cheapest victims on `agent` that make `task` fit, if any do.
fn victims_on(state: &State, agent: &Agent, task: &Task, now_ms: u64) -> Option<Vec<Victim>> {
    let need_slots = task.spec.slots.saturating_sub(placement::free_slots(agent));
    let need_gpus = task.spec.gpus.saturating_sub(placement::free_gpus(agent));
    let mut candidates: Vec<Victim> = agent
        .tasks
        .iter()
        .filter_map(|(id, token)| victim(state, *id, *token, task.spec.priority, now_ms))
        .collect();
    candidates.sort_by_key(|v| v.key);
    let (mut slots, mut gpus) = (0u32, 0u32);
    let mut chosen = Vec::new();
    for v in candidates {
        if slots >= need_slots && gpus >= need_gpus {
            break;
        }
        let helps = (slots < need_slots && v.slots > 0) || (gpus < need_gpus && v.gpus > 0);
        if helps {
            slots = slots.saturating_add(v.slots);
            gpus = gpus.saturating_add(v.gpus);
            chosen.push(v);
        }
    }
    if slots < need_slots || gpus < need_gpus {
        return None;
    }
    // Drop those it does not need, latest in the order first.
    let mut i = chosen.len();
    while i > 0 {
        i -= 1;
        let (s, g) = (chosen[i].slots, chosen[i].gpus);
        if slots - s >= need_slots && gpus - g >= need_gpus {
            slots -= s;
            gpus -= g;
            chosen.remove(i);
        }
    }
    // More than one entry may name: apply would refuse it every time.
    (!chosen.is_empty() && chosen.len() <= super::preempt::MAX_VICTIMS).then_some(chosen)
}

/// Task `id`, held under `token`, as a victim for work of class `class`,
/// if it may be one.
fn victim(
    state: &State,
    id: TaskId,
    token: FencingToken,
    class: Priority,
    now_ms: u64,
) -> Option<Victim> {
    let task = state.task(id)?;
    if task.spec.priority <= class || task.spec.priority == Priority::Online {
        return None;
    }
    let life = state.lifecycle().task(id)?;
    if !life.opts.preemptible || life.preempting.is_some() || life.suspended.is_some() {
        return None;
    }
    let attempt = life.attempts.last().filter(|a| a.token == token)?;
    let started = attempt.started_ms;
    let since = started.max(life.checkpoint.as_ref().map(|c| c.at_ms));
    let lost = match (started, since) {
        (Some(_), Some(since)) => now_ms.saturating_sub(since),
        _ => 0,
    };
    let youngest = started.unwrap_or(attempt.assigned_ms);
    Some(Victim {
        id,
        token,
        slots: task.spec.slots,
        gpus: if life.opts.suspendable {
            0
        } else {
            task.spec.gpus
        },
        lost,
        key: (Reverse(task.spec.priority), lost, Reverse(youngest), id),
    })
}

#[cfg(test)]
#[path = "victims_test.rs"]
mod tests;
