//! Whether an agent can take a task: the one predicate shared by the planner and by `Assign` at apply.
//!
//! The planner works on a read-only view and the state machine re-checks at
//! apply (nomad's plan/apply split). Both call the functions here, so a plan
//! made from the current state is always granted in full, and apply can never
//! over-commit an agent (invariant 3).

use std::collections::BTreeMap;

use crate::access::types::tenant_of;
use crate::model::{Agent, AgentSpec, AgentState, TaskSpec};

/// Static fit: task type, pipeline, models and GPU memory. It depends only on
/// the two specs, so the planner caches it per task shape within a round.
pub fn capable(agent: &AgentSpec, task: &TaskSpec) -> Result<(), String> {
    capable_work(agent, task)?;
    capable_gpus(agent, task)
}

/// The part of [`capable`] about the work: task type, pipeline and models.
pub fn capable_work(agent: &AgentSpec, task: &TaskSpec) -> Result<(), String> {
    if !agent.task_types.contains(&task.task_type) {
        return Err(format!("does not run task type {:?}", task.task_type));
    }
    // An empty pipeline on either side means "any pipeline of the type".
    if !task.pipeline.is_empty()
        && !agent.pipelines.is_empty()
        && !agent.pipelines.contains(&task.pipeline)
    {
        return Err(format!("does not run pipeline {:?}", task.pipeline));
    }
    if let Some(missing) = task.models.iter().find(|m| !agent.models.contains(*m)) {
        return Err(format!("does not have model {missing:?}"));
    }
    Ok(())
}

/// The part of [`capable`] about GPUs, counted (below version 5).
fn capable_gpus(agent: &AgentSpec, task: &TaskSpec) -> Result<(), String> {
    if task.gpus as usize > agent.gpus.len() {
        return Err(format!(
            "has {} GPUs, the task needs {}",
            agent.gpus.len(),
            task.gpus
        ));
    }
    if task.gpu_memory_mb > 0 {
        // GPUs are counted, not tracked one by one, so the memory check is
        // static: enough of the agent's GPUs are big enough. A task that asks
        // for GPU memory without a GPU count needs at least one such GPU.
        let needed = task.gpus.max(1) as usize;
        let big = agent
            .gpus
            .iter()
            .filter(|g| g.memory_mb >= task.gpu_memory_mb)
            .count();
        if big < needed {
            return Err(format!(
                "has {big} GPUs with at least {} MB, the task needs {needed}",
                task.gpu_memory_mb
            ));
        }
    }
    Ok(())
}

/// Dynamic fit: free slots and free GPUs, given what is already in use.
/// Invariant 3: a task is only placed where it fits entirely.
pub fn fits(free_slots: u32, free_gpus: u32, task: &TaskSpec) -> Result<(), String> {
    if free_slots < task.slots {
        return Err(format!(
            "has {free_slots} free slots, the task needs {}",
            task.slots
        ));
    }
    if free_gpus < task.gpus {
        return Err(format!(
            "has {free_gpus} free GPUs, the task needs {}",
            task.gpus
        ));
    }
    Ok(())
}

/// The agent's free slots; zero if its spec shrank below what is in use.
pub fn free_slots(agent: &Agent) -> u32 {
    agent.spec.slots.saturating_sub(agent.slots_in_use)
}

/// The agent's free GPUs; zero if its spec shrank below what is in use.
pub fn free_gpus(agent: &Agent) -> u32 {
    (agent.spec.gpus.len() as u32).saturating_sub(agent.gpus_in_use)
}

/// Whether the agent is taking new work at all.
pub fn ready(agent: &Agent) -> Result<(), String> {
    match agent.state {
        AgentState::Ready => Ok(()),
        AgentState::Draining { .. } => Err("is draining".to_string()),
        AgentState::Down => Err("is down".to_string()),
    }
}

/// Tenancy: an agent that registered with a token bound to one tenant
/// (`bound`, as `Access::agent_tenant` reads it from the state) takes only
/// that tenant's tasks; `None` takes every tenant's.
pub fn serves(bound: Option<&str>, task: &TaskSpec) -> Result<(), String> {
    match bound {
        Some(tenant) if tenant != tenant_of(task) => Err(format!(
            "serves only tenant {tenant:?}, the task is tenant {:?}'s",
            tenant_of(task)
        )),
        _ => Ok(()),
    }
}

/// The full predicate `Assign` applies: ready, capable, serving the task's
/// tenant (`bound`: see [`serves`]), and the task fits in what is free now.
/// The planner applies the same four parts, with the free capacity reduced
/// by what it already placed in the round.
pub fn eligible(agent: &Agent, bound: Option<&str>, task: &TaskSpec) -> Result<(), String> {
    ready(agent)?;
    capable(&agent.spec, task)?;
    serves(bound, task)?;
    fits(free_slots(agent), free_gpus(agent), task)
}

/// An agent as the planner sees it during a round: capacity left after what
/// the round already placed on it.
pub(crate) struct Candidate<'a> {
    pub(crate) agent: &'a Agent,
    /// The one tenant it serves, if it is bound to one ([`serves`]).
    pub(crate) bound: Option<&'a str>,
    pub(crate) free_slots: u32,
    pub(crate) free_gpus: u32,
    /// Tasks held plus tasks placed in this round.
    pub(crate) in_flight: u64,
    /// From version 5: its free GPU device indexes, ascending, after the
    /// round's picks (empty below version 5 and for an agent without GPUs).
    pub(crate) free_devices: Vec<u16>,
    /// From version 5: its GPUs' weights summed, and the free ones' (after
    /// the round's picks), in thousandths.
    pub(crate) gpu_total_milli: u64,
    pub(crate) gpu_free_milli: u64,
    /// Scratch for the pick being chosen: the weighted GPUs (thousandths)
    /// the task would take here.
    pub(crate) pick_milli: u32,
}

impl Candidate<'_> {
    fn weight(&self) -> u64 {
        u64::from(self.agent.spec.weight.max(1))
    }

    /// The static part of [`eligible`]: capable, and serving the task's tenant.
    pub(crate) fn takes(&self, task: &TaskSpec) -> bool {
        capable(&self.agent.spec, task).is_ok() && serves(self.bound, task).is_ok()
    }
}

/// LeastLoaded: the candidate with the fewest in-flight tasks per unit of
/// weight. Compared exactly by cross-multiplication (no floats, so every node
/// agrees); ties go to the earlier index, i.e. the smaller agent id.
pub(crate) fn least_loaded(pool: &[Candidate<'_>], candidates: &[usize]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for &i in candidates {
        let better = best.is_none_or(|b| {
            let (c, d) = (&pool[i], &pool[b]);
            u128::from(c.in_flight) * u128::from(d.weight())
                < u128::from(d.in_flight) * u128::from(c.weight())
        });
        if better {
            best = Some(i);
        }
    }
    best
}

/// WeightedRoundRobin: smooth weighted round-robin over the candidates by
/// agent weight. `credits` is the queue's state, kept between rounds; agents
/// that cannot take this task keep their credit.
pub(crate) fn weighted_round_robin(
    pool: &[Candidate<'_>],
    candidates: &[usize],
    credits: &mut BTreeMap<String, i64>,
) -> Option<usize> {
    let total: i64 = candidates.iter().map(|&i| pool[i].weight() as i64).sum();
    let mut best: Option<(usize, i64)> = None;
    for &i in candidates {
        let credit = credits.entry(pool[i].agent.spec.id.clone()).or_insert(0);
        *credit += pool[i].weight() as i64;
        if best.is_none_or(|(_, c)| *credit > c) {
            best = Some((i, *credit));
        }
    }
    let (i, _) = best?;
    *credits
        .get_mut(&pool[i].agent.spec.id)
        .expect("credited above") -= total;
    Some(i)
}

#[cfg(test)]
#[path = "eligibility_test.rs"]
mod tests;
