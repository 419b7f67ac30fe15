//! The dispatcher: a pure function from the state to one round of assignments.
//!
//! [`plan`] reads the state, never changes it, and returns `(task, agent)`
//! pairs for one `Assign` entry. The state machine re-checks every pair at
//! apply with the same predicate ([`placement::eligible`]), so a stale plan is
//! rejected pair by pair, never over-commits (invariant 3), and a fresh plan is
//! granted in full.
//!
//! [`place_new`] plans the same way for the tasks a submit batch is about to
//! create, so the entry that creates them assigns them too
//! (`Command::SubmitPlaced`), when their queue has nothing waiting.
//!
//! Which task next: queues by smooth weighted round-robin ([`weighted_queues`]);
//! within the queue that picks, its tenants share it (below); within a
//! tenant, priority class, then age (id). Which agent: the queue's
//! [`Strategy`].
//!
//! Sharing a queue between tenants (DRF-lite, [`tenant_of`]): the queue's
//! next task is
//! 1. of the highest priority class waiting among its tenants still in the
//!    round;
//! 2. among the tenants whose next task is of that class, of the one with
//!    the lowest weighted dominant share,
//!    `max(run_slots / T_slots, run_gpus / T_gpus) / weight`, where
//!    `run_*` is what the tenant's tasks hold in the DC (all queues) plus
//!    what this round booked for it, `T_*` the capacity of the Ready,
//!    connected agents, and `weight` the tenant's (`tidal tenant set
//!    --weight`, 1 if never set);
//! 3. on equal shares, of the tenant whose next task is the oldest;
//! 4. within the tenant, the oldest of that class.
//!
//! A task no agent can take (or that would pass its tenant's running quota)
//! is skipped, and that tenant's next task competes in its place. The round
//! is work-conserving: a tenant at its max-running-slots, or with nothing
//! placeable left, drops out of the queue for the rest of the round, and a
//! queue with no tenant left drops out of the rotation. With one tenant in a
//! queue this is exactly priority class, then age. The shares are computed
//! each round from the tasks agents hold, so no memory is kept between
//! rounds for them; weights between queues are unchanged.
//!
//! Tenants' running quotas (`tidal tenant set --max-running-slots/--max-gpus`)
//! are respected in planning as apply checks them ([`crate::access::quota`]):
//! a task whose tenant would pass one, counting what the round (and the
//! round in flight) already booked, is skipped and stays Pending; the next
//! task is tried. With no running limit set, planning is as without tenants.
//! An agent registered with a token bound to one tenant takes only that
//! tenant's tasks ([`placement::serves`], checked at apply too).
//!
//! Cost: agents are pre-filtered once (Ready, connected, a free slot);
//! capability is computed once per task shape per round; a shape that found no
//! agent is not tried again in the round (capacity only shrinks within it); a
//! tenant's scan of a queue stops after `4 * max` candidates; choosing the
//! tenant is a B-tree step (`State::pending_by_tenant` holds each tenant's
//! tasks apart, so a tenant with a million waiting costs the others
//! nothing); the round stops when no agent has room.

pub mod placement;
mod weighted_queues;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use crate::access::quota::running_over;
use crate::access::{tenant_of, Access};
use crate::collections::SetIter;
use crate::collections::{Map, Set};
use crate::model::{AgentId, Priority, Strategy, TaskId, TaskSpec};
use crate::state::{PendingKey, State};
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
    /// Where eager placement's next window of agents starts.
    next_agent: Option<AgentId>,
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
/// Tasks with equal shapes have equal candidate lists. The last part is the
/// task's tenant while an agent of the round serves only one tenant, else
/// empty.
type Shape<'a> = (&'a str, &'a str, &'a [String], u32, u32, u64, &'a str);

fn shape(s: &TaskSpec, tenanted: bool) -> Shape<'_> {
    (
        &s.task_type,
        &s.pipeline,
        &s.models,
        s.slots,
        s.gpus,
        s.gpu_memory_mb,
        if tenanted { tenant_of(s) } else { "" },
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
    /// Some agent of the pool serves only one tenant.
    tenanted: bool,
}

impl<'a> Round<'a> {
    fn new(state: &'a State, pool: Vec<Candidate<'a>>) -> Self {
        Round {
            state,
            with_room: pool.len(),
            tenanted: pool.iter().any(|c| c.bound.is_some()),
            pool,
            shapes: BTreeMap::new(),
        }
    }

    /// The agent for `task` under `strategy`, if any can take it now.
    fn choose(
        &mut self,
        spec: &'a TaskSpec,
        strategy: Strategy,
        credits: &mut BTreeMap<AgentId, i64>,
    ) -> Option<usize> {
        let pool = &self.pool;
        let entry = self
            .shapes
            .entry(shape(spec, self.tenanted))
            .or_insert_with(|| {
                Capable::Agents((0..pool.len()).filter(|&i| pool[i].takes(spec)).collect())
            });
        let Capable::Agents(capable) = entry else {
            return None;
        };
        // Invariant 3: only agents whose remaining capacity fits the task.
        capable.retain(|&i| pool[i].free_slots > 0);
        let fit: Vec<usize> = capable
            .iter()
            .copied()
            .filter(|&i| placement::fits(pool[i].free_slots, pool[i].free_gpus, spec).is_ok())
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
    fn book(&mut self, i: usize, spec: &TaskSpec) {
        let c = &mut self.pool[i];
        c.free_slots -= spec.slots;
        c.free_gpus -= spec.gpus;
        c.in_flight += 1;
        if c.free_slots == 0 {
            self.with_room -= 1;
        }
    }
}

/// Tenants during a round: their running quotas and their shares, from each
/// tenant's usage plus what the round (and the round in flight) booked for
/// it.
struct Quotas<'a> {
    access: &'a Access,
    /// Some tenant has a running limit: check them.
    limits: bool,
    /// Shares are asked for: the capacity they are shares of, slots and
    /// GPUs. None: no queue has tasks of two tenants.
    capacity: Option<(u64, u64)>,
    /// Kept while `limits` or `capacity` is set.
    booked: BTreeMap<&'a str, (u64, u64)>,
}

impl<'a> Quotas<'a> {
    fn new(state: &'a State, dispatching: Option<&'a InFlight>) -> Self {
        let limits = state.access().any_running_limit();
        let mut booked = BTreeMap::new();
        if limits {
            for (tenant, used) in dispatching.into_iter().flat_map(|f| &f.per_tenant) {
                booked.insert(tenant.as_str(), *used);
            }
        }
        Quotas {
            access: state.access(),
            limits,
            capacity: None,
            booked,
        }
    }

    /// Whether an agent may take `spec` without its tenant passing a
    /// running quota.
    fn allows(&self, spec: &TaskSpec) -> bool {
        if !self.limits {
            return true;
        }
        let tenant = tenant_of(spec);
        let Some(limits) = self.access.tenant(tenant) else {
            return true;
        };
        let (slots, gpus) = self.held(tenant);
        running_over(limits, slots, gpus, spec).is_none()
    }

    /// Whether `tenant` is at its max-running-slots: no task of it fits.
    fn exhausted(&self, tenant: &str) -> bool {
        self.limits
            && self
                .access
                .tenant(tenant)
                .and_then(|l| l.max_running_slots)
                .is_some_and(|max| self.held(tenant).0 >= max)
    }

    /// What `tenant`'s tasks hold, slots and GPUs, with the round's
    /// bookings.
    fn held(&self, tenant: &str) -> (u64, u64) {
        let used = self.access.usage(tenant);
        let (slots, gpus) = self.booked.get(tenant).copied().unwrap_or_default();
        (
            used.running_slots.saturating_add(slots),
            used.running_gpus.saturating_add(gpus),
        )
    }

    /// `tenant`'s weighted dominant share (see the module's doc); 0 when
    /// shares are not asked for.
    fn share(&self, tenant: &str) -> Share {
        let Some((total_slots, total_gpus)) = self.capacity else {
            return Share::ZERO;
        };
        let (slots, gpus) = self.held(tenant);
        let weight = self
            .access
            .tenant(tenant)
            .map_or(1, |l| u128::from(l.weight.max(1)));
        // The larger of slots/total_slots and gpus/total_gpus.
        let (num, den) = if total_gpus > 0
            && u128::from(gpus) * u128::from(total_slots.max(1))
                > u128::from(slots) * u128::from(total_gpus)
        {
            (gpus, total_gpus)
        } else {
            (slots, total_slots.max(1))
        };
        Share {
            num: u128::from(num),
            den: u128::from(den).saturating_mul(weight),
        }
    }

    fn book(&mut self, spec: &'a TaskSpec) {
        if self.limits || self.capacity.is_some() {
            let e = self.booked.entry(tenant_of(spec)).or_default();
            e.0 = e.0.saturating_add(u64::from(spec.slots));
            e.1 = e.1.saturating_add(u64::from(spec.gpus));
        }
    }
}

/// A weighted dominant share as a fraction `num / den` (`den` > 0),
/// compared exactly.
#[derive(Clone, Copy, Debug)]
struct Share {
    num: u128,
    den: u128,
}

impl Share {
    const ZERO: Share = Share { num: 0, den: 1 };
}

impl Ord for Share {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.num
            .saturating_mul(other.den)
            .cmp(&other.num.saturating_mul(self.den))
    }
}

impl PartialOrd for Share {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Share {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Share {}

/// One tenant's progress through its Pending tasks of one queue in this
/// round.
struct TenantScan<'a> {
    tenant: &'a str,
    pending: SetIter<'a, PendingKey>,
    scanned: usize,
}

/// One queue's progress in this round: its tenants' scans, in the order
/// they pick (the module's rule).
struct QueueScan<'a> {
    strategy: Strategy,
    tenants: Vec<TenantScan<'a>>,
    /// The tenants still in the round, by their next task's priority
    /// class, their share when they were filed, their next task's id, and
    /// their index in `tenants`. Shares only grow within a round, so a
    /// filed share may be below the tenant's share now, never above.
    order: BTreeSet<(Priority, Share, TaskId, usize)>,
    budget: usize,
}

impl<'a> QueueScan<'a> {
    fn new(
        strategy: Strategy,
        tenants: Option<&'a Map<String, Set<PendingKey>>>,
        quotas: &Quotas<'_>,
        budget: usize,
    ) -> Self {
        let mut scan = QueueScan {
            strategy,
            tenants: Vec::new(),
            order: BTreeSet::new(),
            budget,
        };
        for (tenant, pending) in tenants.into_iter().flatten() {
            scan.tenants.push(TenantScan {
                tenant,
                pending: pending.iter(),
                scanned: 0,
            });
            scan.file(scan.tenants.len() - 1, quotas);
        }
        scan
    }

    /// Files tenant `i` under its next task, unless it has none left to
    /// examine this round.
    fn file(&mut self, i: usize, quotas: &Quotas<'_>) {
        let t = &mut self.tenants[i];
        if t.scanned >= self.budget || quotas.exhausted(t.tenant) {
            return;
        }
        if let Some(&(priority, _, id)) = t.pending.next() {
            t.scanned += 1;
            self.order.insert((priority, quotas.share(t.tenant), id, i));
        }
    }

    /// The next task to examine, and its tenant's index: the module's rule,
    /// among the tenants filed. The tenant is out of `order` until filed
    /// again.
    fn next(&mut self, quotas: &Quotas<'_>) -> Option<(TaskId, usize)> {
        loop {
            let (priority, filed, id, i) = self.order.pop_first()?;
            if self.tenants.len() > 1 {
                let now = quotas.share(self.tenants[i].tenant);
                if now > filed {
                    self.order.insert((priority, now, id, i));
                    continue;
                }
            }
            return Some((id, i));
        }
    }
}

/// The capacity, slots and GPUs, of the agents a round may place on with
/// room or without: what tenants' shares are shares of.
fn capacity(state: &State, connected: &BTreeSet<AgentId>) -> (u64, u64) {
    state
        .agents
        .values()
        .filter(|a| connected.contains(&a.spec.id) && placement::ready(a).is_ok())
        .fold((0, 0), |(slots, gpus), a| {
            (
                slots + u64::from(a.spec.slots),
                gpus + a.spec.gpus.len() as u64,
            )
        })
}

/// The agents a round may place on: Ready, connected, with a free slot.
fn pool<'a>(state: &'a State, connected: &BTreeSet<AgentId>) -> Vec<Candidate<'a>> {
    state
        .agents
        .values()
        .filter(|a| connected.contains(&a.spec.id) && placement::ready(a).is_ok())
        .map(|a| Candidate {
            agent: a,
            bound: state.access().agent_tenant(&a.spec.id),
            free_slots: placement::free_slots(a),
            free_gpus: placement::free_gpus(a),
            in_flight: a.tasks.len() as u64,
        })
        .filter(|c| c.free_slots > 0)
        .collect()
}

/// Up to `want` agents with room (after what the round in flight takes),
/// connected and Ready, visiting at most `want * WINDOW_VISITS` agents from
/// the cursor's position on, wrapping around once; moves the cursor past the
/// last agent visited. True if the visit passed the end of the fleet.
fn window<'a>(
    state: &'a State,
    connected: &BTreeSet<AgentId>,
    dispatching: &InFlight,
    cursor: &mut DispatchCursor,
    want: usize,
) -> (Vec<Candidate<'a>>, bool) {
    let start = cursor.next_agent.take().unwrap_or_default();
    let after = state
        .agents
        .range::<_, str>((Bound::Included(start.as_str()), Bound::Unbounded));
    let before = state
        .agents
        .range::<_, str>((Bound::Unbounded, Bound::Excluded(start.as_str())));
    let mut pool = Vec::new();
    let mut wrapped = false;
    let mut last = None;
    let budget = want.saturating_mul(WINDOW_VISITS);
    for (n, (id, a)) in after.chain(before).enumerate() {
        if n == budget || pool.len() == want {
            cursor.next_agent = Some(id.clone());
            return (pool, wrapped);
        }
        if last.is_some_and(|l: &AgentId| id < l) {
            wrapped = true;
        }
        last = Some(id);
        if !connected.contains(id) || placement::ready(a).is_err() {
            continue;
        }
        let (slots, gpus, tasks) = dispatching.per_agent.get(id).copied().unwrap_or_default();
        let c = Candidate {
            agent: a,
            bound: state.access().agent_tenant(id),
            free_slots: placement::free_slots(a).saturating_sub(slots),
            free_gpus: placement::free_gpus(a).saturating_sub(gpus),
            in_flight: a.tasks.len() as u64 + tasks,
        };
        if c.free_slots > 0 {
            pool.push(c);
        }
    }
    // Visited the whole fleet: the next call starts from the beginning.
    (pool, true)
}

/// A dispatch round being committed, as eager placement needs it: how many
/// of its tasks each queue has (they are pending but not waiting) and what it
/// takes from each agent. Built once per round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InFlight {
    per_queue: BTreeMap<String, usize>,
    /// Slots, GPUs and tasks per agent.
    per_agent: BTreeMap<AgentId, (u32, u32, u64)>,
    /// Slots and GPUs per tenant, counted only while a tenant has a running
    /// limit.
    per_tenant: BTreeMap<String, (u64, u64)>,
}

impl InFlight {
    pub fn of(state: &State, round: &[(TaskId, AgentId)]) -> InFlight {
        let mut f = InFlight::default();
        let tenants = state.access().any_running_limit();
        for (id, agent) in round {
            let Some(task) = state.tasks.get(id) else {
                continue;
            };
            *f.per_queue.entry(task.spec.queue.clone()).or_default() += 1;
            let e = f.per_agent.entry(agent.clone()).or_default();
            e.0 += task.spec.slots;
            e.1 += task.spec.gpus;
            e.2 += 1;
            if tenants {
                let t = f
                    .per_tenant
                    .entry(tenant_of(&task.spec).to_string())
                    .or_default();
                t.0 += u64::from(task.spec.slots);
                t.1 += u64::from(task.spec.gpus);
            }
        }
        f
    }

    /// How many of the round's tasks each agent takes, in agent order.
    pub fn tasks_per_agent(&self) -> impl Iterator<Item = (&AgentId, u64)> + '_ {
        self.per_agent
            .iter()
            .map(|(agent, (_, _, tasks))| (agent, *tasks))
    }
}

/// How many agents with room eager placement considers per spec (at least
/// [`WINDOW_MIN`]), and how many agents it may look at per candidate found.
const WINDOW_PER_SPEC: usize = 2;
const WINDOW_MIN: usize = 32;
const WINDOW_VISITS: usize = 8;

/// Plans where the tasks of a submit batch go, for the entry that creates
/// them to assign them too (`Command::SubmitPlaced`), with the queues'
/// strategies, only for tasks whose queue has nothing pending apart from the
/// tasks of the round in flight (whose capacity is taken too), and in a
/// queue only until one task finds no agent (the ones after it would
/// overtake it); a spec whose tenant would pass a running quota is skipped
/// (it waits for a dispatch round; the queue stays open to other tenants'
/// specs). It runs for every submit entry, so it does not look at the
/// whole fleet: it takes a window of agents with room, starting where the
/// previous call stopped (a rotation over the fleet), so the strategies hold
/// within the window and the load spreads as the window turns. Returns
/// (index into `specs`, agent) pairs. Expects specs with apply's defaults
/// filled in (`state::normalize`); others are not placed. Specs that apply
/// will reject, or that repeat an idempotency key, may be planned: apply
/// skips them. Pure: reads `state`, updates only `cursor`.
pub fn place_new(
    state: &State,
    connected: &BTreeSet<AgentId>,
    specs: &[TaskSpec],
    dispatching: &InFlight,
    cursor: &mut DispatchCursor,
) -> Vec<(u32, AgentId)> {
    let mut out = Vec::new();
    // Queues where a task waits (pending and not in the round in flight).
    let waits = |queue: &str| {
        let pending = state.pending.get(queue).map_or(0, |p| p.len());
        pending > dispatching.per_queue.get(queue).copied().unwrap_or(0)
    };
    if specs.iter().all(|s| waits(&s.queue)) {
        return out;
    }
    let want = (specs.len() * WINDOW_PER_SPEC).max(WINDOW_MIN);
    let (pool, wrapped) = window(state, connected, dispatching, cursor, want);
    if wrapped {
        cursor.prune(state);
    }
    if pool.is_empty() {
        return out;
    }
    let mut round = Round::new(state, pool);
    let mut quotas = Quotas::new(state, Some(dispatching));
    // Queues where a task is waiting, or where one of this batch found no agent.
    let mut closed: BTreeSet<&str> = BTreeSet::new();
    for (i, spec) in specs.iter().enumerate() {
        if round.with_room == 0 {
            break;
        }
        let Ok(index) = u32::try_from(i) else { break };
        let queue = spec.queue.as_str();
        // Not normalized: apply would give it other values than planning read.
        if closed.contains(queue) || queue.is_empty() || spec.slots == 0 {
            continue;
        }
        let Some(q) = state.queue(queue) else {
            continue;
        };
        if waits(queue) {
            closed.insert(queue);
            continue;
        }
        if !quotas.allows(spec) {
            continue;
        }
        let credits = cursor.agents.entry(queue.to_string()).or_default();
        match round.choose(spec, q.strategy, credits) {
            Some(agent) => {
                round.book(agent, spec);
                quotas.book(spec);
                out.push((index, round.pool[agent].agent.spec.id.clone()));
            }
            None => {
                closed.insert(queue);
            }
        }
    }
    cursor.agents.retain(|_, credits| !credits.is_empty());
    out
}

/// Plans one dispatch round of at most `max` assignments onto agents that are
/// Ready and in `connected`. Pure: reads `state`, updates only `cursor`.
pub fn plan(
    state: &State,
    connected: &BTreeSet<AgentId>,
    max: usize,
    cursor: &mut DispatchCursor,
) -> Vec<(TaskId, AgentId)> {
    let mut out = Vec::new();
    // Woken by every submit, most of which eager placement already placed:
    // nothing pending costs no look at the fleet.
    if max == 0 || state.pending_total() == 0 {
        return out;
    }
    cursor.prune(state);
    let pool = pool(state, connected);
    if pool.is_empty() {
        return out;
    }
    let mut quotas = Quotas::new(state, None);
    let shared = state.pending_by_tenant.values().any(|q| q.len() > 1);
    if shared {
        quotas.capacity = Some(capacity(state, connected));
    }
    let mut round = Round::new(state, pool);

    let queues: Vec<(&str, u32)> = state
        .queues
        .values()
        .map(|q| (q.name.as_str(), q.weight))
        .collect();
    let mut rotation = QueueRotation::new(queues, &cursor.queues);
    let budget = max.saturating_mul(SCAN_FACTOR);
    let mut scans: Vec<QueueScan<'_>> = Vec::new();
    for (i, q) in state.queues.values().enumerate() {
        let scan = QueueScan::new(
            q.strategy,
            state.pending_by_tenant.get(&q.name),
            &quotas,
            budget,
        );
        if scan.order.is_empty() {
            rotation.deactivate(i);
        }
        scans.push(scan);
    }

    while out.len() < max && round.with_room > 0 {
        let Some(qi) = rotation.next() else { break };
        let queue = rotation.name(qi);
        let credits = cursor.agents.entry(queue.to_string()).or_default();
        let scan = &mut scans[qi];
        let mut placed = None;
        while let Some((id, tenant)) = scan.next(&quotas) {
            let Some(task) = round.state.tasks.get(&id) else {
                scan.file(tenant, &quotas);
                continue;
            };
            if !quotas.allows(&task.spec) {
                scan.file(tenant, &quotas);
                continue;
            }
            if let Some(agent) = round.choose(&task.spec, scan.strategy, credits) {
                placed = Some((task, agent, tenant));
                break;
            }
            scan.file(tenant, &quotas);
        }
        match placed {
            Some((task, agent, tenant)) => {
                round.book(agent, &task.spec);
                quotas.book(&task.spec);
                scan.file(tenant, &quotas);
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
