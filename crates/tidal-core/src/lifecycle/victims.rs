//! The preemption planner: which online tasks preempt, on which agent, and
//! whom (pure; the leader proposes what it returns as `Command::Preempt`).
//!
//! The online Pending tasks that may be dispatched (not in backoff) are
//! looked at in the dispatcher's order as far as it does not depend on the
//! round ([`online_waiting`]): queues by smooth weighted round-robin of
//! their weights, starting from even credits (so the heaviest queue first,
//! ties in name order), and within a queue earlier deadline, then age, over
//! all its tenants (tenants' dominant shares are not weighed). At most
//! [`PREEMPT_SCAN`] of them are examined per plan: searched for victims on
//! an agent that could run them. A task with a preemption under way is
//! passed over without counting, and one its tenant's quota holds back, one
//! some agent can take now (the dispatcher places it) or one no connected
//! agent could ever run is passed over counting towards a larger bound,
//! [`PREEMPT_PASS`], so such tasks at the front cannot keep the plan from
//! the ones behind them. A plan costs at most `PREEMPT_SCAN` victim
//! searches over the tasks held on the connected agents and `PREEMPT_PASS`
//! cheaper checks over the agents, and nothing at all when no online task
//! waits. A task past the bounds is looked at once those before it are
//! placed or preempted for (or, past `PREEMPT_SCAN`, once fewer of those
//! before it wait with no victim set that would make room). Headroom does not enter: it never
//! keeps online work out (nothing is reserved above online).
//!
//! An online task that no connected agent can take now, whose tenant's
//! running quota does not hold it back, and for which no preemption is under
//! way (no task is suspended or told to stop for it), looks at every
//! connected Ready agent that could run it (capable, serving its tenant) for
//! the cheapest set of victims that makes it fit:
//!
//! - victims are lower-class work that did not opt out
//!   (`TaskOptions::preemptible`), assigned at format version 4 or later,
//!   and not preempted already (suspended, or told to stop for an online
//!   task that still waits: one told to stop for a task that no longer
//!   waits may be taken again); never online work;
//! - they are taken in order: lowest class first (offline before
//!   nearline), then least work lost since the last checkpoint
//!   (`now - max(start, checkpoint)`; nothing for one not started yet),
//!   then youngest (latest start), then task id;
//! - a suspendable victim frees its slots only (its GPUs stay taken while
//!   it is paused), so a task that needs GPUs needs victims that stop;
//! - from cluster format version 5 on, an agent could run the task only if
//!   it also meets the task's label constraints and has GPUs of one of its
//!   shapes (`placement::check::could_run`), and GPUs are devices: the
//!   victims must free devices of a model and memory one of the task's
//!   shapes takes (a stopping victim frees the devices it holds), and the
//!   task's tag rules must hold there with the tags held now (victims are
//!   not chosen to lift a rule: an anti-affinity kept by a victim's tag
//!   makes no preemption);
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

use crate::collections::SetIter;
use crate::command::Command;
use crate::dispatch::eligibility;
use crate::model::{Agent, AgentId, FencingToken, Priority, Task, TaskId};
use crate::placement::check;
use crate::placement::types::PLACEMENT_VERSION;
use crate::state::{PendingKey, State};

use super::LIFECYCLE_VERSION;

/// How many online tasks one plan examines at most, in the order of
/// [`online_waiting`].
pub const PREEMPT_SCAN: usize = 16;

/// How many online tasks one plan passes over at most without a victim
/// search (held back by quota, placeable now, or runnable by no connected
/// agent).
pub const PREEMPT_PASS: usize = 256;

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
    if state.cluster_version() < LIFECYCLE_VERSION
        || max == 0
        || state.pending_by_tenant.of_class(Priority::Online) == 0
    {
        return out;
    }
    let agents: Vec<&Agent> = connected
        .iter()
        .filter_map(|id| state.agent(id))
        .filter(|a| eligibility::ready(a).is_ok())
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
    let (mut examined, mut passed) = (0, 0);
    for task in online_waiting(state) {
        if out.len() >= max
            || used.len() == agents.len()
            || examined >= PREEMPT_SCAN
            || passed >= PREEMPT_PASS
        {
            break;
        }
        if under_way.contains(&task.id) {
            continue;
        }
        // A task its tenant's running quota holds back would not be
        // assigned on the room a preemption makes.
        let ask = state.placement().ask(task.id);
        if state.admits_at_least(None, &task.spec, ask).is_err() {
            passed += 1;
            continue;
        }
        let bound = |a: &Agent| state.access().agent_tenant(&a.spec.id);
        let placed = state.cluster_version() >= PLACEMENT_VERSION;
        let eligible_now = |a: &&Agent| {
            if placed {
                check::eligible(a, bound(a), &task.spec, ask, state.placement()).is_ok()
            } else {
                eligibility::eligible(a, bound(a), &task.spec).is_ok()
            }
        };
        if agents.iter().any(eligible_now) {
            // The dispatcher places it.
            passed += 1;
            continue;
        }
        let could_run = |a: &&Agent| {
            if placed {
                check::could_run(a, bound(a), &task.spec, ask).is_ok()
                    && check::keeps_rules(a, ask, state.placement()).is_ok()
                    && state.admits_at_least(Some(a), &task.spec, ask).is_ok()
            } else {
                eligibility::capable(&a.spec, &task.spec).is_ok()
                    && eligibility::serves(bound(a), &task.spec).is_ok()
            }
        };
        if !agents.iter().any(could_run) {
            // No victim anywhere would make room for it.
            passed += 1;
            continue;
        }
        examined += 1;
        // (victims, work lost, agent) and the victims.
        type Choice<'a> = ((usize, u64, &'a str), Vec<(TaskId, FencingToken)>);
        let mut best: Option<Choice> = None;
        for agent in &agents {
            if used.contains(agent.spec.id.as_str()) || !could_run(agent) {
                continue;
            }
            let Some(victims) = victims_on(state, agent, task, now_ms, placed) else {
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

/// The online Pending tasks that may be dispatched (not in backoff),
/// lazily, in order: queues by smooth weighted round-robin of their weights
/// from even credits (ties: name order); within a queue, over its tenants,
/// earlier deadline first (none last), then age. Each step costs the
/// queues and the queue's tenants that have online work.
fn online_waiting(state: &State) -> impl Iterator<Item = &Task> + '_ {
    /// One queue's tenants' online tasks, each tenant's in order.
    struct Lane<'a> {
        weight: i64,
        credit: i64,
        tenants: Vec<std::iter::Peekable<SetIter<'a, PendingKey>>>,
    }
    impl Lane<'_> {
        /// The key of the queue's next online task and its tenant.
        fn peek(&mut self) -> Option<(u64, TaskId, usize)> {
            self.tenants
                .iter_mut()
                .enumerate()
                .filter_map(|(i, t)| {
                    t.peek()
                        .filter(|(p, _, _)| *p == Priority::Online)
                        .map(|(_, d, id)| (*d, *id, i))
                })
                .min()
        }
    }
    let mut lanes: Vec<Lane> = state
        .pending_by_tenant
        .iter()
        .map(|(queue, tenants)| Lane {
            weight: i64::from(state.queue(queue).map_or(1, |q| q.weight).max(1)),
            credit: 0,
            // Each tenant's set is in class order: its online tasks first.
            tenants: tenants.values().map(|s| s.iter().peekable()).collect(),
        })
        .collect();
    std::iter::from_fn(move || {
        lanes.retain_mut(|l| l.peek().is_some());
        let total: i64 = lanes.iter().map(|l| l.weight).sum();
        let mut best: Option<usize> = None;
        for i in 0..lanes.len() {
            lanes[i].credit += lanes[i].weight;
            // Strictly greater: on a tie the earlier name wins.
            if best.is_none_or(|b| lanes[i].credit > lanes[b].credit) {
                best = Some(i);
            }
        }
        let lane = &mut lanes[best?];
        lane.credit -= total;
        let (_, id, tenant) = lane.peek()?;
        lane.tenants[tenant].next();
        state.task(id)
    })
}

/// The cheapest victims on `agent` that make `task` fit, if any do.
///
/// From version 5 on (`placed`), GPUs are devices: a victim that stops
/// frees the devices it holds, and the set must free devices of a model
/// and memory that one of the task's shapes can take, not only a count.
fn victims_on(
    state: &State,
    agent: &Agent,
    task: &Task,
    now_ms: u64,
    placed: bool,
) -> Option<Vec<Victim>> {
    let need_slots = task
        .spec
        .slots
        .saturating_sub(eligibility::free_slots(agent));
    let ask = state.placement().ask(task.id);
    // From version 5 a task with GPU shapes needs the GPUs of the smallest
    // shape the agent has (devices_ok below checks the devices exactly).
    let gpus = if placed {
        crate::placement::devices::shapes_of(
            ask.map_or(&[][..], |a| &a.shapes),
            task.spec.gpus,
            task.spec.gpu_memory_mb,
        )
        .iter()
        .filter(|s| crate::placement::devices::possible(&agent.spec.gpus, std::slice::from_ref(*s)))
        .map(|s| s.count)
        .min()
        .unwrap_or(task.spec.gpus)
    } else {
        task.spec.gpus
    };
    let need_gpus = gpus.saturating_sub(eligibility::free_gpus(agent));
    let placement = state.placement();
    // The devices a stopping victim frees (none below version 5, or if it
    // is suspended).
    let frees = |v: &Victim| -> Vec<u16> {
        if !placed || v.gpus == 0 {
            return Vec::new();
        }
        placement
            .task(v.id)
            .and_then(|p| p.held.as_ref())
            .filter(|h| h.token == v.token)
            .map(|h| h.devices.clone())
            .unwrap_or_default()
    };
    // The devices Assign would then take hold a shape, and what they weigh
    // keeps the tenant within max-gpus (victims stopped for a task its
    // quota then holds back would be stopped for nothing, again and again).
    let devices_ok = |freed: &BTreeSet<u16>| {
        !placed
            || check::devices_fit(agent, &task.spec, ask, placement, freed)
                .is_some_and(|milli| state.access().admit_running(&task.spec, milli).is_ok())
    };
    let mut candidates: Vec<Victim> = agent
        .tasks
        .iter()
        .filter_map(|(id, token)| victim(state, *id, *token, task.spec.priority, now_ms))
        .collect();
    candidates.sort_by_key(|v| v.key);
    let (mut slots, mut gpus) = (0u32, 0u32);
    let mut freed: BTreeSet<u16> = BTreeSet::new();
    let mut chosen = Vec::new();
    for v in candidates {
        if slots >= need_slots && gpus >= need_gpus && devices_ok(&freed) {
            break;
        }
        let more_devices = placed && !devices_ok(&freed) && !frees(&v).is_empty();
        let helps =
            (slots < need_slots && v.slots > 0) || (gpus < need_gpus && v.gpus > 0) || more_devices;
        if helps {
            slots = slots.saturating_add(v.slots);
            gpus = gpus.saturating_add(v.gpus);
            freed.extend(frees(&v));
            chosen.push(v);
        }
    }
    if slots < need_slots || gpus < need_gpus || !devices_ok(&freed) {
        return None;
    }
    // Drop those it does not need, latest in the order first.
    let mut i = chosen.len();
    while i > 0 {
        i -= 1;
        let (s, g) = (chosen[i].slots, chosen[i].gpus);
        let gone = frees(&chosen[i]);
        let without: BTreeSet<u16> = freed
            .iter()
            .copied()
            .filter(|d| !gone.contains(d))
            .collect();
        if slots - s >= need_slots && gpus - g >= need_gpus && devices_ok(&without) {
            slots -= s;
            gpus -= g;
            freed = without;
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
    let stopping_for_another = life
        .preempting
        .as_ref()
        .is_some_and(|p| state.preemptor_waits(p.by));
    if !life.opts.preemptible || stopping_for_another || life.suspended.is_some() {
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
