//! The dispatcher: a pure function from the state to one round of assignments.
//!
//! [`plan`] reads the state, never changes it, and returns `(task, agent)`
//! pairs for one `Assign` entry. The state machine re-checks every pair at
//! apply with the same predicate ([`placement::eligible`]), so a stale plan is
//! rejected pair by pair, never over-commits (invariant 3), and a fresh plan is
//! granted in full.
//!
//! Which task next: queues by smooth weighted round-robin ([`weighted_queues`]),
//! then priority class, then age (id). Which agent: the queue's [`Strategy`].
//!
//! Cost: agents are pre-filtered once (Ready, connected, a free slot);
//! capability is computed once per task shape per round; a shape that found no
//! agent is not tried again in the round (capacity only shrinks within it); a
//! queue's scan stops after `4 * max` candidates; the round stops when no
//! agent has room.

pub mod placement;
mod weighted_queues;

use std::collections::btree_set;
use std::collections::{BTreeMap, BTreeSet};

use crate::model::{AgentId, Priority, Strategy, Task, TaskId};
use crate::state::State;
use placement::Candidate;
use weighted_queues::QueueRotation;

/// How many candidates a queue may examine per round, per task asked for:
/// skips tasks no agent can take (no head-of-line blocking) within a bound.
const SCAN_FACTOR: usize = 4;

/// Dispatcher memory kept by the leader between rounds (not replicated: a new
/// leader starts from `Default`, which only shifts round-robin phases).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DispatchCursor {
    /// Smooth-WRR credit of each queue, for queue selection.
    queues: BTreeMap<String, i64>,
    /// Per queue, smooth-WRR credit of each agent (WeightedRoundRobin queues).
    agents: BTreeMap<String, BTreeMap<AgentId, i64>>,
}

impl DispatchCursor {
    /// Forgets queues and agents that no longer exist, so the cursor stays
    /// bounded by the state.
    fn prune(&mut self, state: &State) {
        self.queues.retain(|q, _| state.queue(q).is_some());
        self.agents.retain(|q, _| state.queue(q).is_some());
        for credits in self.agents.values_mut() {
            credits.retain(|a, _| state.agent(a).is_some());
        }
    }
}

/// What decides which agents can take a task, apart from free capacity.
/// Tasks with equal shapes have equal candidate lists.
type Shape<'a> = (&'a str, &'a str, &'a [String], u32, u32, u64);

fn shape(task: &Task) -> Shape<'_> {
    let s = &task.spec;
    (
        &s.task_type,
        &s.pipeline,
        &s.models,
        s.slots,
        s.gpus,
        s.gpu_memory_mb,
    )
}

enum Capable {
    /// Pool indices of the agents with the capabilities.
    Agents(Vec<usize>),
    /// No agent had room for this shape earlier in the round; capacity only
    /// shrinks within a round, so none will.
    Exhausted,
}

/// One round's working set.
struct Round<'a> {
    state: &'a State,
    pool: Vec<Candidate<'a>>,
    /// Agents in the pool with at least one free slot; the round ends at 0.
    with_room: usize,
    shapes: BTreeMap<Shape<'a>, Capable>,
}

impl<'a> Round<'a> {
    /// The agent for `task` under `strategy`, if any can take it now.
    fn choose(
        &mut self,
        task: &'a Task,
        strategy: Strategy,
        credits: &mut BTreeMap<AgentId, i64>,
    ) -> Option<usize> {
        let pool = &self.pool;
        let entry = self.shapes.entry(shape(task)).or_insert_with(|| {
            Capable::Agents(
                (0..pool.len())
                    .filter(|&i| placement::capable(&pool[i].agent.spec, &task.spec).is_ok())
                    .collect(),
            )
        });
        let Capable::Agents(capable) = entry else {
            return None;
        };
        // Invariant 3: only agents whose remaining capacity fits the task.
        capable.retain(|&i| pool[i].free_slots > 0);
        let fit: Vec<usize> = capable
            .iter()
            .copied()
            .filter(|&i| placement::fits(pool[i].free_slots, pool[i].free_gpus, &task.spec).is_ok())
            .collect();
        let chosen = match strategy {
            Strategy::LeastLoaded => placement::least_loaded(pool, &fit),
            Strategy::WeightedRoundRobin => placement::weighted_round_robin(pool, &fit, credits),
        };
        if chosen.is_none() {
            *entry = Capable::Exhausted;
        }
        chosen
    }

    /// Books the task's resources on the agent for the rest of the round.
    fn book(&mut self, i: usize, task: &Task) {
        let c = &mut self.pool[i];
        c.free_slots -= task.spec.slots;
        c.free_gpus -= task.spec.gpus;
        c.in_flight += 1;
        if c.free_slots == 0 {
            self.with_room -= 1;
        }
    }
}

/// One queue's progress through its pending index in this round.
struct QueueScan<'a> {
    strategy: Strategy,
    pending: btree_set::Iter<'a, (Priority, TaskId)>,
    scanned: usize,
}

/// Plans one dispatch round of at most `max` assignments onto agents that are
/// Ready and in `connected`. Pure: reads `state`, updates only `cursor`.
pub fn plan(
    state: &State,
    connected: &BTreeSet<AgentId>,
    max: usize,
    cursor: &mut DispatchCursor,
) -> Vec<(TaskId, AgentId)> {
    cursor.prune(state);
    let pool: Vec<Candidate<'_>> = state
        .agents
        .values()
        .filter(|a| connected.contains(&a.spec.id) && placement::ready(a).is_ok())
        .map(|a| Candidate {
            agent: a,
            free_slots: placement::free_slots(a),
            free_gpus: placement::free_gpus(a),
            in_flight: a.tasks.len() as u64,
        })
        .filter(|c| c.free_slots > 0)
        .collect();
    let mut out = Vec::new();
    if max == 0 || pool.is_empty() || state.pending_total() == 0 {
        return out;
    }
    let mut round = Round {
        state,
        with_room: pool.len(),
        pool,
        shapes: BTreeMap::new(),
    };

    let queues: Vec<(&str, u32)> = state
        .queues
        .values()
        .map(|q| (q.name.as_str(), q.weight))
        .collect();
    let mut rotation = QueueRotation::new(queues, &cursor.queues);
    let mut scans: Vec<QueueScan<'_>> = Vec::new();
    for (i, q) in state.queues.values().enumerate() {
        let pending = state.pending.get(&q.name);
        if pending.is_none_or(BTreeSet::is_empty) {
            rotation.deactivate(i);
        }
        scans.push(QueueScan {
            strategy: q.strategy,
            pending: pending.map(|p| p.iter()).unwrap_or_default(),
            scanned: 0,
        });
    }
    let budget = max.saturating_mul(SCAN_FACTOR);

    while out.len() < max && round.with_room > 0 {
        let Some(qi) = rotation.next() else { break };
        let queue = rotation.name(qi);
        let credits = cursor.agents.entry(queue.to_string()).or_default();
        let scan = &mut scans[qi];
        let mut placed = None;
        while scan.scanned < budget {
            let Some(&(_, id)) = scan.pending.next() else {
                break;
            };
            scan.scanned += 1;
            let Some(task) = round.state.tasks.get(&id) else {
                continue;
            };
            if let Some(agent) = round.choose(task, scan.strategy, credits) {
                placed = Some((task, agent));
                break;
            }
        }
        match placed {
            Some((task, agent)) => {
                round.book(agent, task);
                out.push((task.id, round.pool[agent].agent.spec.id.clone()));
            }
            // Nothing placeable left in this queue this round: its share goes
            // to the others (work-conserving).
            None => rotation.retract(qi),
        }
    }
    rotation.save(&mut cursor.queues);
    cursor.agents.retain(|_, credits| !credits.is_empty());
    out
}

#[cfg(test)]
#[path = "dispatch_test.rs"]
mod tests;
