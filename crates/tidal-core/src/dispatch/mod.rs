//! The dispatcher: a pure function from the state to one round of assignments.
//!
//! [`plan`] reads the state, never changes it, and returns `(task, agent)`
//! pairs for one `Assign` entry. The state machine re-checks every pair at
//! apply with the same predicate ([`eligibility::eligible`]), so a stale plan is
//! rejected pair by pair, never over-commits (invariant 3), and a fresh plan is
//! granted in full.
//!
//! [`place_new`] plans the same way for the tasks a submit batch is about to
//! create, so the entry that creates them assigns them too
//! (`Command::SubmitPlaced`, `Command::SubmitWith`), when nothing of their
//! class or a higher one waits (below).
//!
//! # Dispatch order
//!
//! The tasks a round may place are the dispatchable Pending tasks
//! (`State::pending_by_tenant`: Pending and not waiting out a retry
//! backoff). Its agents, the *pool*, are the Ready, connected agents with a
//! free slot when the round starts. A round picks one task at a time:
//!
//! 1. **Class.** Priority classes strictly in order, online, then nearline,
//!    then offline, over all queues: a task of a class is picked only when
//!    no task of a higher class is left that the round may still place.
//!    Work-conserving both ways: once a higher class has nothing placeable
//!    left, every pick goes to the lower classes.
//! 2. **Queue**, within the class: smooth weighted round-robin
//!    ([`weighted_queues`]) by queue weight over the queues with a task of
//!    the class still to examine; its credits are kept per (class, queue)
//!    between rounds, so each class's rotation is exactly the one-class
//!    rotation of [`weighted_queues`]. A queue with nothing placeable left in
//!    the class leaves that class's rotation for the rest of the round, and
//!    its share goes to the others.
//! 3. **Tenant**, within the queue (DRF-lite, [`tenant_of`]): among the
//!    queue's tenants whose next task is of the class, the one with the
//!    lowest weighted dominant share,
//!    `max(run_slots / T_slots, run_gpus / T_gpus) / weight`, where `run_*`
//!    is what the tenant's tasks hold in the DC (all queues) plus what this
//!    round booked for it, `T_*` the capacity of the Ready, connected agents,
//!    and `weight` the tenant's (`tidal tenant set --weight`, 1 if never
//!    set); on equal shares, the tenant whose next task comes first by the
//!    next rule.
//! 4. **Task**, within the tenant: earlier deadline first (a task without
//!    one comes after every task with one), then the older (lower id).
//! 5. **Agent**: among the pool's agents that can take the task now (ready,
//!    capable, serving its tenant, fitting in what is free after the round's
//!    earlier picks: [`eligibility::eligible`]), the queue's [`Strategy`]
//!    chooses, with its own tie-breaker (LeastLoaded: the smaller agent id;
//!    WeightedRoundRobin: the agents' smooth-WRR credits, then the smaller
//!    id). A retry's tie-breaker comes first: when the task's last attempt
//!    ran on agent X (`Lifecycle::last_agent`), the strategy chooses among
//!    the fitting agents other than X, and X only when it is the only one.
//!
//! From cluster format version 5 on (`State::placement_on`), step 5 reads
//! the task's placement ask (`Placement::ask`) and takes only agents that
//! [`crate::placement::check::eligible`] accepts after the round's earlier
//! bookings ([`round_tags`]): its label constraints (checked once per
//! candidate list), free GPU devices for its first fitting shape (devices
//! booked in the round are not free; the shape's GPU count is what capacity,
//! headroom and the tenant's quotas count), and its tag rules, counting the
//! round's tagged tasks per scope group. The queue's
//! [`PlaceStrategy`](crate::placement::types::PlaceStrategy) then chooses
//! ([`strategies`]), with warm models ([`Live::warm`]) as a tie-breaker
//! weighed against load. Below version 5 none of this runs and planning is
//! as it was.
//!
//! A task that cannot be placed now is skipped, stays Pending, and its
//! tenant's next task competes in its place: no agent of the pool can take
//! it, its tenant would pass a running quota (below), or headroom (below)
//! keeps it out. With one tenant in each queue and one queue this is
//! exactly class, deadline, age.
//!
//! **Headroom** (`Command::SetHeadroom`): a task of
//! class C is not placed if, after it, the free slots summed over the pool
//! would be fewer than the slots reserved above C, or, for a task that takes
//! GPUs, the free GPUs summed over the pool would be fewer than the GPUs
//! reserved above C (`Lifecycle::reserved_above`: the headroom of every
//! class above C, summed). Free means after the round's earlier picks. So
//! online work always finds the reserved capacity, and a class is not
//! examined at all once the pool has no slot left beyond its reserve.
//!
//! **Scan bound.** A tenant's tasks in a queue are examined at most
//! `SCAN_FACTOR * max` times in a round, over all classes; the ones past the
//! bound count as not placeable in this round (they are next round's to
//! examine). So a lower class can pass a placeable task of a higher class
//! only from behind `4 * max` unplaceable ones of the same tenant and queue.
//!
//! Tenants' running quotas (`tidal tenant set --max-running-slots/--max-gpus`)
//! are respected in planning as apply checks them ([`crate::access::quota`]):
//! a task whose tenant would pass one, counting what the round (and the
//! round in flight) already booked, is skipped and stays Pending; the next
//! task is tried. A tenant at its max-running-slots, or with nothing left to
//! examine, drops out of its queues for the rest of the round. With no
//! running limit set, planning is as without tenants. An agent registered
//! with a token bound to one tenant takes only that tenant's tasks
//! ([`eligibility::serves`], checked at apply too). The shares are computed
//! each round from the tasks agents hold, so no memory is kept between
//! rounds for them.
//!
//! Cost: agents are pre-filtered once (Ready, connected, a free slot);
//! capability is computed once per task shape per round (from version 5 the
//! shape includes the ask's constraints and GPU shapes, so label checks run
//! once per ask shape); a shape that found no agent with room (slots and, from
//! version 5, devices: not tag rules, quotas or headroom, which can change
//! within a round) is not tried again in the round (capacity only shrinks
//! within it); a
//! tenant's scan of a queue stops after `4 * max` candidates; choosing the
//! tenant is a B-tree step (`State::pending_by_tenant` holds each tenant's
//! tasks apart, so a tenant with a million waiting costs the others
//! nothing); a retry's last agent is looked up only when more than one agent
//! fits; the round stops when no agent has room.

pub mod eligibility;
mod round_tags;
mod strategies;
mod weighted_queues;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use crate::access::quota::running_over;
use crate::access::{tenant_of, Access};
use crate::collections::SetIter;
use crate::collections::{Map, Set};
use crate::lifecycle::Headroom;
use crate::model::{Agent, AgentId, Priority, Strategy, TaskId, TaskSpec};
use crate::placement::devices::{self, Pick};
use crate::placement::hrw;
use crate::placement::types::{Constraint, GpuShape, PlaceAsk, PlaceStrategy, Placement};
use crate::state::{PendingKey, State};
use eligibility::Candidate;
use round_tags::RoundTags;
use strategies::Warmth;
use weighted_queues::QueueRotation;

/// How many candidates a queue may examine per round, per task asked for:
/// skips tasks no agent can take (no head-of-line blocking) within a bound.
const SCAN_FACTOR: usize = 4;

/// The priority classes in dispatch order.
const CLASSES: [Priority; 3] = [Priority::Online, Priority::Nearline, Priority::Offline];

/// Dispatcher memory kept by the leader between rounds (not replicated: a new
/// leader starts from `Default`, which only shifts round-robin phases).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DispatchCursor {
    /// Per priority class, the smooth-WRR credit of each queue, for queue
    /// selection within the class.
    queues: BTreeMap<Priority, BTreeMap<String, i64>>,
    /// Per queue, smooth-WRR credit of each agent (WeightedRoundRobin queues).
    agents: BTreeMap<String, BTreeMap<AgentId, i64>>,
    /// Where eager placement's next window of agents starts.
    next_agent: Option<AgentId>,
}

impl DispatchCursor {
    /// Forgets queues and agents that no longer exist, so the cursor stays
    /// bounded by the state.
    fn prune(&mut self, state: &State) {
        for credits in self.queues.values_mut() {
            credits.retain(|q, _| state.queue(q).is_some());
        }
        self.queues.retain(|_, credits| !credits.is_empty());
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

/// The cache key of a task's candidate list: its [`Shape`], and from
/// version 5 its ask's label constraints and GPU shapes (empty otherwise).
/// Tag rules and the hash key are not in it: they never make an agent
/// incapable, only unfit now.
type Key<'a> = (Shape<'a>, &'a [Constraint], &'a [GpuShape]);

enum Capable {
    /// Pool indices of the agents with the capabilities.
    Agents(Vec<usize>),
    /// No agent had room for this shape earlier in the round; capacity only
    /// shrinks within a round, so none will. (From version 5: room is
    /// slots and devices; an agent left out only by a tag rule, a quota or
    /// headroom does not make the shape exhausted.)
    Exhausted,
}

/// Which agents have which models warm, and how much that counts (see
/// [`Live`]).
type Warm<'a> = (&'a BTreeMap<AgentId, BTreeSet<String>>, u32);

/// The version-5 part of a round (cluster format version 5 on).
struct V5<'a> {
    placement: &'a Placement,
    /// Tagged tasks booked in the round, per scope group.
    tags: RoundTags,
    /// Per pool index, the agent's warm models; empty when none anywhere.
    warm: Vec<Option<&'a BTreeSet<String>>>,
    warm_weight_milli: u32,
    /// Per pool index, the agent id's rendezvous hash (consistent hashing).
    hashes: Vec<u64>,
    /// Per (queue, label key) of a spread queue seen in the round: the
    /// queue's tasks held or booked per value of the key ("" without it).
    spread: BTreeMap<(&'a str, &'a str), BTreeMap<&'a str, u64>>,
}

impl<'a> V5<'a> {
    fn new(state: &'a State, pool: &mut [Candidate<'a>], warm: Option<Warm<'a>>) -> Self {
        let placement = state.placement();
        for c in pool.iter_mut() {
            let (free, total, free_milli) = round_tags::devices_of(c.agent, placement);
            c.free_devices = free;
            c.gpu_total_milli = total;
            c.gpu_free_milli = free_milli;
        }
        let (warm, warm_weight_milli) = match warm {
            Some((sets, w)) if !sets.is_empty() && w > 0 => {
                (pool.iter().map(|c| sets.get(&c.agent.spec.id)).collect(), w)
            }
            _ => (Vec::new(), 0),
        };
        V5 {
            placement,
            tags: RoundTags::default(),
            warm,
            warm_weight_milli,
            hashes: pool
                .iter()
                .map(|c| hrw::hash_str(&c.agent.spec.id))
                .collect(),
            spread: BTreeMap::new(),
        }
    }

    /// The spread counts of `queue` over `key`, computed on first use from
    /// the tasks every agent holds.
    fn spread_counts(
        &mut self,
        state: &'a State,
        queue: &'a str,
        key: &'a str,
    ) -> &BTreeMap<&'a str, u64> {
        self.spread.entry((queue, key)).or_insert_with(|| {
            let mut counts: BTreeMap<&'a str, u64> = BTreeMap::new();
            for a in state.agents.values() {
                let value = a.spec.labels.get(key).map_or("", String::as_str);
                let n = a
                    .tasks
                    .keys()
                    .filter(|&id| state.tasks.get(id).is_some_and(|t| t.spec.queue == queue))
                    .count() as u64;
                if n > 0 {
                    *counts.entry(value).or_default() += n;
                }
            }
            counts
        })
    }
}

/// What checks a pick of `n` GPUs weighing `milli` thousandths: headroom
/// for a count other than the one checked before choosing, the tenant's
/// quotas for the weight.
type GpusOk<'f, 'a> = &'f dyn Fn(&Round<'a>, u32, u64) -> bool;

/// The agent chosen for a task at version 5 and the devices it would take
/// there (`None`: it takes no GPU).
type Choice = (usize, Option<Pick>);

/// One round's working set.
struct Round<'a> {
    state: &'a State,
    pool: Vec<Candidate<'a>>,
    /// Agents in the pool with at least one free slot; the round ends at 0.
    with_room: usize,
    /// Free slots and GPUs summed over the pool, after the round's picks:
    /// what headroom is checked against.
    free_slots: u64,
    free_gpus: u64,
    shapes: BTreeMap<Key<'a>, Capable>,
    /// Some agent of the pool serves only one tenant.
    tenanted: bool,
    /// Cluster format version 5 on: asks, devices, tags, strategies.
    v5: Option<V5<'a>>,
}

impl<'a> Round<'a> {
    fn new(state: &'a State, mut pool: Vec<Candidate<'a>>, warm: Option<Warm<'a>>) -> Self {
        let v5 = state
            .placement_on()
            .then(|| V5::new(state, &mut pool, warm));
        Round {
            v5,
            state,
            with_room: pool.len(),
            free_slots: pool.iter().map(|c| u64::from(c.free_slots)).sum(),
            free_gpus: pool.iter().map(|c| u64::from(c.free_gpus)).sum(),
            tenanted: pool.iter().any(|c| c.bound.is_some()),
            pool,
            shapes: BTreeMap::new(),
        }
    }

    /// Whether the pool has a slot beyond `reserved`: else no task of the
    /// class it is reserved above can be placed.
    fn room_beyond(&self, reserved: Headroom) -> bool {
        self.free_slots > u64::from(reserved.slots)
    }

    /// Headroom: whether `spec` leaves at least `reserved` free in the pool
    /// (the GPUs only if it takes some).
    fn leaves(&self, reserved: Headroom, spec: &TaskSpec) -> bool {
        let slots = u64::from(spec.slots) + u64::from(reserved.slots);
        let gpus = u64::from(spec.gpus) + u64::from(reserved.gpus);
        self.free_slots >= slots && (spec.gpus == 0 || self.free_gpus >= gpus)
    }

    /// The agent for `task` under `strategy`, if any can take it now. For a
    /// task that ran before (`retry`), not the agent of its last attempt
    /// unless it is the only one that fits.
    fn choose(
        &mut self,
        spec: &'a TaskSpec,
        retry: Option<TaskId>,
        strategy: Strategy,
        credits: &mut BTreeMap<AgentId, i64>,
    ) -> Option<usize> {
        let pool = &self.pool;
        let state = self.state;
        let entry = self
            .shapes
            .entry((shape(spec, self.tenanted), &[], &[]))
            .or_insert_with(|| {
                Capable::Agents((0..pool.len()).filter(|&i| pool[i].takes(spec)).collect())
            });
        let Capable::Agents(capable) = entry else {
            return None;
        };
        // Invariant 3: only agents whose remaining capacity fits the task.
        capable.retain(|&i| pool[i].free_slots > 0);
        let mut fit: Vec<usize> = capable
            .iter()
            .copied()
            .filter(|&i| eligibility::fits(pool[i].free_slots, pool[i].free_gpus, spec).is_ok())
            .collect();
        if fit.len() > 1 {
            if let Some(last) = retry.and_then(|id| state.lifecycle().last_agent(id)) {
                fit.retain(|&i| &pool[i].agent.spec.id != last);
            }
        }
        let chosen = match strategy {
            Strategy::LeastLoaded => eligibility::least_loaded(pool, &fit),
            Strategy::WeightedRoundRobin => eligibility::weighted_round_robin(pool, &fit, credits),
        };
        if chosen.is_none() {
            *entry = Capable::Exhausted;
        }
        chosen
    }

    /// Books the task's resources (its slots, and `gpus` GPUs) on the agent
    /// for the rest of the round.
    fn book(&mut self, i: usize, slots: u32, gpus: u32) {
        let c = &mut self.pool[i];
        c.free_slots -= slots;
        c.free_gpus -= gpus;
        c.in_flight += 1;
        if c.free_slots == 0 {
            self.with_room -= 1;
        }
        self.free_slots -= u64::from(slots);
        self.free_gpus -= u64::from(gpus);
    }

    /// [`Round::choose`] from version 5 on: only agents that
    /// [`crate::placement::check::eligible`] accepts after the round's
    /// earlier bookings (constraints, devices for the first fitting shape,
    /// tag rules counting the round's tagged tasks), whose pick `gpus_ok`
    /// accepts (quotas for its weight, headroom for its count), then
    /// the queue's strategy (module [`strategies`]).
    #[allow(clippy::too_many_arguments)]
    fn choose_v5(
        &mut self,
        spec: &'a TaskSpec,
        ask: Option<&'a PlaceAsk>,
        retry: Option<TaskId>,
        queue: &'a str,
        strategy: &'a PlaceStrategy,
        credits: &mut BTreeMap<AgentId, i64>,
        gpus_ok: GpusOk<'_, 'a>,
    ) -> Option<Choice> {
        let asked = ask.map_or(&[][..], |a| &a.shapes);
        let key = (
            shape(spec, self.tenanted),
            ask.map_or(&[][..], |a| &a.constraints),
            asked,
        );
        if let Some(Capable::Exhausted) = self.shapes.get(&key) {
            return None;
        }
        let shapes = devices::shapes_of(asked, spec.gpus, spec.gpu_memory_mb);
        let mut entry = self.shapes.remove(&key).unwrap_or_else(|| {
            Capable::Agents(
                (0..self.pool.len())
                    .filter(|&i| round_tags::takes(&self.pool[i], spec, ask, &shapes))
                    .collect(),
            )
        });
        let chosen = match &mut entry {
            Capable::Exhausted => None,
            Capable::Agents(capable) => {
                capable.retain(|&i| self.pool[i].free_slots > 0);
                let mut room = false;
                let mut fit = Vec::with_capacity(capable.len());
                // Only for a task that takes GPUs (else every pick is None).
                let mut picks = Vec::new();
                let v5 = self.v5.as_ref().expect("version 5");
                let gpuless = round_tags::needs_no_gpus(&shapes);
                let ruled = ask.filter(|a| !a.rules.is_empty());
                for &i in capable.iter() {
                    let c = &self.pool[i];
                    let pick = if gpuless {
                        if c.free_slots < spec.slots {
                            continue;
                        }
                        None
                    } else {
                        let Ok(pick) = round_tags::room(c, spec, &shapes, v5.placement) else {
                            continue;
                        };
                        pick
                    };
                    room = true;
                    let (n, milli) = pick
                        .as_ref()
                        .map_or((0, 0), |p| (p.devices.len() as u32, u64::from(p.gpu_milli)));
                    if !gpus_ok(self, n, milli)
                        || (ruled.is_some()
                            && !round_tags::keeps_rules(c, ruled, v5.placement, &v5.tags))
                    {
                        continue;
                    }
                    fit.push(i);
                    if !gpuless {
                        picks.push(pick);
                    }
                }
                if !room {
                    entry = Capable::Exhausted;
                    None
                } else {
                    self.strategy_v5(spec, ask, retry, queue, strategy, credits, fit, picks)
                }
            }
        };
        self.shapes.insert(key, entry);
        chosen
    }

    /// The queue's strategy among `fit` (with their `picks`), after the
    /// retry rule.
    #[allow(clippy::too_many_arguments)]
    fn strategy_v5(
        &mut self,
        spec: &'a TaskSpec,
        ask: Option<&'a PlaceAsk>,
        retry: Option<TaskId>,
        queue: &'a str,
        strategy: &'a PlaceStrategy,
        credits: &mut BTreeMap<AgentId, i64>,
        mut fit: Vec<usize>,
        mut picks: Vec<Option<Pick>>,
    ) -> Option<Choice> {
        if fit.len() > 1 {
            if let Some(last) = retry.and_then(|id| self.state.lifecycle().last_agent(id)) {
                if let Some(k) = fit
                    .iter()
                    .position(|&i| &self.pool[i].agent.spec.id == last)
                {
                    fit.remove(k);
                    if !picks.is_empty() {
                        picks.remove(k);
                    }
                }
            }
        }
        if matches!(strategy, PlaceStrategy::BinPack) {
            for (k, &i) in fit.iter().enumerate() {
                let pick = picks.get(k).and_then(Option::as_ref);
                self.pool[i].pick_milli = pick.map_or(0, |p| p.gpu_milli);
            }
        }
        let state = self.state;
        let v5 = self.v5.as_mut().expect("version 5");
        if let PlaceStrategy::Spread { key } = strategy {
            v5.spread_counts(state, queue, key);
        }
        let v5 = &*v5;
        let gpus = picks.iter().any(Option::is_some);
        let pool = &self.pool;
        let warm = Warmth {
            sets: &v5.warm,
            models: &spec.models,
            weight_milli: v5.warm_weight_milli,
        };
        let chosen = match strategy {
            PlaceStrategy::LeastLoaded => strategies::least_loaded(pool, &fit, gpus, &warm),
            PlaceStrategy::WeightedRoundRobin => {
                eligibility::weighted_round_robin(pool, &fit, credits)
            }
            PlaceStrategy::BinPack => strategies::bin_pack(pool, &fit, spec.slots, &warm),
            PlaceStrategy::Spread { key } => {
                let counts = &v5.spread[&(queue, key.as_str())];
                let group = |i: usize| {
                    let value = pool[i].agent.spec.labels.get(key.as_str());
                    let value = value.map_or("", String::as_str);
                    (counts.get(value).copied().unwrap_or(0), value)
                };
                strategies::spread(pool, &fit, group, gpus, &warm)
            }
            PlaceStrategy::ConsistentHash => match ask.and_then(|a| a.hash_key.as_deref()) {
                Some(k) => strategies::consistent_hash(&fit, &v5.hashes, k),
                None => strategies::least_loaded(pool, &fit, gpus, &warm),
            },
        }?;
        if picks.is_empty() {
            return Some((chosen, None));
        }
        let k = fit.iter().position(|&i| i == chosen)?;
        Some((chosen, picks.swap_remove(k)))
    }

    /// Books a version-5 choice: slots and the pick's GPUs and devices, the
    /// task's tags, and its queue's spread counts.
    fn book_v5(
        &mut self,
        (i, pick): &Choice,
        spec: &TaskSpec,
        ask: Option<&'a PlaceAsk>,
        queue: &str,
    ) {
        self.book(*i, spec.slots, picked_gpus(pick));
        let c = &mut self.pool[*i];
        if let Some(p) = pick {
            round_tags::take_devices(c, p);
        }
        let agent: &'a Agent = c.agent;
        let agent = &agent.spec;
        let v5 = self.v5.as_mut().expect("version 5");
        if let Some(ask) = ask {
            v5.tags.book(agent, &ask.tags);
        }
        for ((q, key), counts) in v5.spread.iter_mut() {
            if *q == queue {
                let value = agent.labels.get(*key).map_or("", String::as_str);
                *counts.entry(value).or_default() += 1;
            }
        }
    }
}

/// The GPUs a task takes with a pick (its shape's count).
fn picked_gpus(pick: &Option<Pick>) -> u32 {
    pick.as_ref().map_or(0, |p| p.devices.len() as u32)
}

/// The least a task's GPUs could weigh on any agent, in thousandths (1000
/// per GPU below version 5): its tenant's quotas are checked with it before
/// an agent is chosen, and with the pick's weight after.
fn least_milli(state: &State, spec: &TaskSpec, ask: Option<&PlaceAsk>) -> u64 {
    if state.placement_on() {
        crate::placement::check::gpu_milli_floor(None, spec, ask, state.placement()).unwrap_or(0)
    } else {
        u64::from(spec.gpus) * 1000
    }
}

/// What a version-5 pick's GPUs weigh, in thousandths.
fn picked_milli(pick: &Option<Pick>) -> u64 {
    pick.as_ref().map_or(0, |p| u64::from(p.gpu_milli))
}

/// `spec` with the GPU count of the shape it would take (what apply counts
/// for quotas once the shape is taken).
fn with_gpus(spec: &TaskSpec, gpus: u32) -> std::borrow::Cow<'_, TaskSpec> {
    if spec.gpus == gpus {
        std::borrow::Cow::Borrowed(spec)
    } else {
        let mut s = spec.clone();
        s.gpus = gpus;
        std::borrow::Cow::Owned(s)
    }
}

/// The fewest GPUs any of the ask's shapes takes (the spec's count without
/// shapes): what the checks before choosing an agent count.
fn min_gpus(spec: &TaskSpec, ask: Option<&PlaceAsk>) -> u32 {
    match ask.map(|a| &a.shapes) {
        Some(shapes) if !shapes.is_empty() => shapes.iter().map(|s| s.count).min().unwrap_or(0),
        _ => spec.gpus,
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
    /// GPUs' weight (thousandths). None: no queue has tasks of two tenants.
    capacity: Option<(u64, u64)>,
    /// Slots and GPUs' weight (thousandths) per tenant; kept while `limits`
    /// or `capacity` is set.
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

    /// Whether an agent may take `spec`, its GPUs weighing `gpu_milli`
    /// thousandths there (asked only when a limit is set), without its
    /// tenant passing a running quota.
    fn allows(&self, spec: &TaskSpec, gpu_milli: impl FnOnce() -> u64) -> bool {
        if !self.limits {
            return true;
        }
        let tenant = tenant_of(spec);
        let Some(limits) = self.access.tenant(tenant) else {
            return true;
        };
        running_over(limits, self.held(tenant), spec, gpu_milli()).is_none()
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

    /// What `tenant`'s tasks hold, slots and GPUs' weight (thousandths),
    /// with the round's bookings.
    fn held(&self, tenant: &str) -> (u64, u64) {
        let used = self.access.usage(tenant);
        let (slots, milli) = self.booked.get(tenant).copied().unwrap_or_default();
        (
            used.running_slots.saturating_add(slots),
            used.running_gpu_milli.saturating_add(milli),
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

    /// Books `spec` for its tenant, its GPUs weighing `gpu_milli`
    /// thousandths.
    fn book(&mut self, spec: &'a TaskSpec, gpu_milli: u64) {
        if self.limits || self.capacity.is_some() {
            let e = self.booked.entry(tenant_of(spec)).or_default();
            e.0 = e.0.saturating_add(u64::from(spec.slots));
            e.1 = e.1.saturating_add(gpu_milli);
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
    /// The queue's name.
    name: &'a str,
    tenants: Vec<TenantScan<'a>>,
    /// The tenants still in the round, by their next task's priority
    /// class, their share when they were filed, their next task's deadline
    /// and id, and their index in `tenants`. Shares only grow within a
    /// round, so a filed share may be below the tenant's share now, never
    /// above.
    order: BTreeSet<(Priority, Share, u64, TaskId, usize)>,
    budget: usize,
}

impl<'a> QueueScan<'a> {
    fn new(
        (strategy, name): (Strategy, &'a str),
        tenants: Option<&'a Map<String, Set<PendingKey>>>,
        quotas: &Quotas<'_>,
        budget: usize,
    ) -> Self {
        let mut scan = QueueScan {
            strategy,
            name,
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
        if let Some(&(priority, deadline, id)) = t.pending.next() {
            t.scanned += 1;
            self.order
                .insert((priority, quotas.share(t.tenant), deadline, id, i));
        }
    }

    /// The class of the next task the queue would examine, if any.
    fn head(&self) -> Option<Priority> {
        self.order.first().map(|k| k.0)
    }

    /// The next task of `class` to examine, and its tenant's index: the
    /// module's rule, among the tenants filed under `class`. The tenant is
    /// out of `order` until filed again. None when the queue has no task of
    /// `class` left to examine.
    fn next(&mut self, class: Priority, quotas: &Quotas<'_>) -> Option<(TaskId, usize)> {
        loop {
            if self.head()? != class {
                return None;
            }
            let (priority, filed, deadline, id, i) = self.order.pop_first()?;
            if self.tenants.len() > 1 {
                let now = quotas.share(self.tenants[i].tenant);
                if now > filed {
                    self.order.insert((priority, now, deadline, id, i));
                    continue;
                }
            }
            return Some((id, i));
        }
    }
}

/// The capacity, slots and GPUs' weight (thousandths; 1000 per GPU below
/// version 5), of the agents a round may place on with room or without:
/// what tenants' shares are shares of.
fn capacity(state: &State, connected: &BTreeSet<AgentId>) -> (u64, u64) {
    let weighed = state.placement_on();
    let placement = state.placement();
    state
        .agents
        .values()
        .filter(|a| connected.contains(&a.spec.id) && eligibility::ready(a).is_ok())
        .fold((0, 0), |(slots, milli), a| {
            let gpus: u64 = if weighed {
                let w = a.spec.gpus.iter().map(|g| placement.gpu_weight(&g.model));
                w.map(u64::from).sum()
            } else {
                a.spec.gpus.len() as u64 * 1000
            };
            (slots + u64::from(a.spec.slots), milli + gpus)
        })
}

/// The agents a round may place on: Ready, connected, with a free slot.
fn pool<'a>(state: &'a State, connected: &BTreeSet<AgentId>) -> Vec<Candidate<'a>> {
    state
        .agents
        .values()
        .filter(|a| connected.contains(&a.spec.id) && eligibility::ready(a).is_ok())
        .map(|a| Candidate {
            agent: a,
            bound: state.access().agent_tenant(&a.spec.id),
            free_slots: eligibility::free_slots(a),
            free_gpus: eligibility::free_gpus(a),
            in_flight: a.tasks.len() as u64,
            free_devices: Vec::new(),
            gpu_total_milli: 0,
            gpu_free_milli: 0,
            pick_milli: 0,
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
        if !connected.contains(id) || eligibility::ready(a).is_err() {
            continue;
        }
        let (slots, gpus, tasks) = dispatching.per_agent.get(id).copied().unwrap_or_default();
        let c = Candidate {
            agent: a,
            bound: state.access().agent_tenant(id),
            free_slots: eligibility::free_slots(a).saturating_sub(slots),
            free_gpus: eligibility::free_gpus(a).saturating_sub(gpus),
            in_flight: a.tasks.len() as u64 + tasks,
            free_devices: Vec::new(),
            gpu_total_milli: 0,
            gpu_free_milli: 0,
            pick_milli: 0,
        };
        if c.free_slots > 0 {
            pool.push(c);
        }
    }
    // Visited the whole fleet: the next call starts from the beginning.
    (pool, true)
}

/// A dispatch round being committed, as eager placement needs it: how many
/// of its tasks each priority class has (they are dispatchable but not
/// waiting) and what it takes from each agent. Built once per round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InFlight {
    /// Tasks per class, by `Priority as usize`.
    per_class: [usize; 3],
    /// Slots, GPUs and tasks per agent.
    per_agent: BTreeMap<AgentId, (u32, u32, u64)>,
    /// Slots and GPUs' weight (thousandths) per tenant, counted only while
    /// a tenant has a running limit.
    per_tenant: BTreeMap<String, (u64, u64)>,
    /// From version 5: per agent, the devices the round's tasks take there
    /// (as `Assign` will pick them, in the round's order).
    devices: BTreeMap<AgentId, BTreeSet<u16>>,
    /// From version 5: the round's tagged tasks, as (agent, tags).
    tagged: Vec<(AgentId, Vec<String>)>,
}

impl InFlight {
    pub fn of(state: &State, round: &[(TaskId, AgentId)]) -> InFlight {
        let mut f = InFlight::default();
        let tenants = state.access().any_running_limit();
        let v5 = state.placement_on();
        for (id, agent) in round {
            let Some(task) = state.tasks.get(id) else {
                continue;
            };
            let (gpus, milli) = if v5 {
                f.take_v5(state, *id, agent, &task.spec)
            } else {
                (task.spec.gpus, u64::from(task.spec.gpus) * 1000)
            };
            f.per_class[task.spec.priority as usize] += 1;
            let e = f.per_agent.entry(agent.clone()).or_default();
            e.0 += task.spec.slots;
            e.1 += gpus;
            e.2 += 1;
            if tenants {
                let t = f
                    .per_tenant
                    .entry(tenant_of(&task.spec).to_string())
                    .or_default();
                t.0 += u64::from(task.spec.slots);
                t.1 += milli;
            }
        }
        f
    }

    /// Records the devices and tags task `id` takes on `agent` when the
    /// round applies (version 5); returns its GPU count and what they weigh
    /// (thousandths).
    fn take_v5(
        &mut self,
        state: &State,
        id: TaskId,
        agent: &AgentId,
        spec: &TaskSpec,
    ) -> (u32, u64) {
        let placement = state.placement();
        let ask = placement.ask(id);
        if let Some(tags) = ask.map(|a| &a.tags).filter(|t| !t.is_empty()) {
            self.tagged.push((agent.clone(), tags.clone()));
        }
        // Apply will refuse it: count what the spec says.
        let as_spec = (spec.gpus, u64::from(spec.gpus) * 1000);
        let Some(a) = state.agent(agent) else {
            return as_spec;
        };
        let shapes = devices::shapes_of(
            ask.map_or(&[][..], |a| &a.shapes),
            spec.gpus,
            spec.gpu_memory_mb,
        );
        if round_tags::needs_no_gpus(&shapes) {
            return (0, 0);
        }
        let busy = placement.busy(agent);
        let taken = self.devices.entry(agent.clone()).or_default();
        let pick = devices::pick(
            &a.spec.gpus,
            |i| busy.is_none_or(|b| !b.contains_key(&i)) && !taken.contains(&i),
            &shapes,
            |m| placement.gpu_weight(m),
        );
        match pick {
            Some(p) => {
                taken.extend(&p.devices);
                (p.devices.len() as u32, u64::from(p.gpu_milli))
            }
            None => as_spec,
        }
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

/// The highest class with a task waiting (dispatchable, in
/// `State::pending_by_tenant`, and not in the round in flight), if any:
/// eager placement places nothing of that class or a lower one. One look
/// per class at the index's counts.
fn waiting_class(state: &State, dispatching: &InFlight) -> Option<Priority> {
    CLASSES
        .into_iter()
        .find(|&c| state.pending_by_tenant.of_class(c) > dispatching.per_class[c as usize])
}

/// Plans where the tasks of a submit batch go, for the entry that creates
/// them to assign them too (`Command::SubmitPlaced`, `Command::SubmitWith`),
/// with the queues' strategies. A spec of class C is placed only if no
/// task of class C or a higher one waits in any queue (dispatchable and not
/// in the round in flight, whose capacity is taken too), so a new task
/// never overtakes a waiting one the dispatcher would place first. The
/// batch is taken class by class (online specs first, then nearline, then
/// offline; within a class in batch order), and once a spec of class C
/// finds no agent, or headroom keeps it out, no spec of class C or lower
/// is placed (the ones after it would overtake it). A spec whose tenant
/// would pass a running quota is skipped (it waits for a dispatch round;
/// the others still go). It runs for every submit entry, so it does not
/// look at the whole fleet: it takes a window of agents with room, starting
/// where the previous call stopped (a rotation over the fleet), so the
/// strategies hold within the window and the load spreads as the window
/// turns. Headroom (the module's rule) is checked against the window's free
/// capacity, a part of the pool's: stricter than a round, never looser.
/// Returns (index into `specs`, agent) pairs. Expects specs with apply's
/// defaults filled in (`state::normalize`); others are not placed. Specs
/// that apply will reject, or that repeat an idempotency key, may be
/// planned: apply skips them. Pure: reads `state`, updates only `cursor`.
pub fn place_new(
    state: &State,
    connected: &BTreeSet<AgentId>,
    specs: &[TaskSpec],
    dispatching: &InFlight,
    cursor: &mut DispatchCursor,
) -> Vec<(u32, AgentId)> {
    place_new_asked(state, connected, specs, &[], None, dispatching, cursor)
}

/// [`place_new`] with each spec's ask (normalized; `None`: plain) and the
/// agents' warm models, if known.
fn place_new_asked(
    state: &State,
    connected: &BTreeSet<AgentId>,
    specs: &[TaskSpec],
    asks: &[Option<PlaceAsk>],
    warm: Option<Warm<'_>>,
    dispatching: &InFlight,
    cursor: &mut DispatchCursor,
) -> Vec<(u32, AgentId)> {
    let mut out = Vec::new();
    // Specs of this class or a lower one wait for a dispatch round.
    let mut closed = waiting_class(state, dispatching);
    let open = |closed: Option<Priority>, spec: &TaskSpec| closed.is_none_or(|c| spec.priority < c);
    if !specs.iter().any(|s| open(closed, s)) {
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
    // The specs' queues' strategies from version 5 on.
    let places: BTreeMap<&str, PlaceStrategy> = if state.placement_on() {
        specs
            .iter()
            .map(|s| (s.queue.as_str(), state.queue_strategy(&s.queue)))
            .collect()
    } else {
        BTreeMap::new()
    };
    let mut round = Round::new(state, pool, warm);
    if let Some(v5) = round.v5.as_mut() {
        // What the round in flight takes first: its devices and its tags.
        for c in round.pool.iter_mut() {
            let Some(taken) = dispatching.devices.get(&c.agent.spec.id) else {
                continue;
            };
            for &d in taken {
                if let Ok(k) = c.free_devices.binary_search(&d) {
                    c.free_devices.remove(k);
                    let w = v5
                        .placement
                        .gpu_weight(&c.agent.spec.gpus[usize::from(d)].model);
                    c.gpu_free_milli = c.gpu_free_milli.saturating_sub(u64::from(w));
                }
            }
        }
        for (agent, tags) in &dispatching.tagged {
            if let Some(a) = state.agent(agent) {
                v5.tags.book(&a.spec, tags);
            }
        }
    }
    let mut quotas = Quotas::new(state, Some(dispatching));
    // Class order, then batch order; most batches are of one class.
    let mut order: Vec<usize> = (0..specs.len()).collect();
    if !specs.is_sorted_by_key(|s| s.priority) {
        order.sort_by_key(|&i| specs[i].priority);
    }
    for i in order {
        let spec = &specs[i];
        if round.with_room == 0 {
            break;
        }
        let Ok(index) = u32::try_from(i) else {
            continue;
        };
        // Not normalized: apply would give it other values than planning read.
        if !open(closed, spec) || spec.queue.is_empty() || spec.slots == 0 {
            continue;
        }
        let Some(q) = state.queue(&spec.queue) else {
            continue;
        };
        let ask = match round.v5 {
            Some(_) => asks.get(i).and_then(Option::as_ref),
            None => None,
        };
        // Below version 5, and without shapes, exactly the spec.
        let least = with_gpus(spec, min_gpus(spec, ask));
        if !quotas.allows(spec, || least_milli(state, spec, ask)) {
            continue;
        }
        let reserved = state.lifecycle().reserved_above(spec.priority);
        let credits = cursor.agents.entry(spec.queue.clone()).or_default();
        let chosen = if !round.leaves(reserved, &least) {
            None
        } else if let Some(place) = places
            .get(spec.queue.as_str())
            .filter(|_| round.v5.is_some())
        {
            let gpus_ok = |r: &Round<'_>, n: u32, milli: u64| {
                (n == least.gpus || r.leaves(reserved, &with_gpus(spec, n)))
                    && quotas.allows(spec, || milli)
            };
            round.choose_v5(spec, ask, None, &spec.queue, place, credits, &gpus_ok)
        } else {
            round
                .choose(spec, None, q.strategy, credits)
                .map(|i| (i, None))
        };
        match chosen {
            Some(choice) => {
                if round.v5.is_some() {
                    round.book_v5(&choice, spec, ask, &spec.queue);
                    quotas.book(spec, picked_milli(&choice.1));
                } else {
                    round.book(choice.0, spec.slots, spec.gpus);
                    quotas.book(spec, u64::from(spec.gpus) * 1000);
                }
                out.push((index, round.pool[choice.0].agent.spec.id.clone()));
            }
            None => closed = Some(spec.priority),
        }
    }
    cursor.agents.retain(|_, credits| !credits.is_empty());
    out
}

/// What the leader knows of the agents beyond the state: which have a live
/// session, and which models each has loaded now (its heartbeats).
#[derive(Clone, Copy, Debug)]
pub struct Live<'a> {
    /// Agents with a live session: the only ones placement may use.
    pub connected: &'a BTreeSet<AgentId>,
    /// Per agent, the models it reports warm (loaded now).
    pub warm: &'a BTreeMap<AgentId, BTreeSet<String>>,
    /// How much a task's models being warm on an agent counts against its
    /// load, in thousandths of one task per unit of weight.
    pub warm_weight_milli: u32,
}

/// [`plan`] with what the leader knows of the agents beyond the state: from
/// version 5 on, warm models break ties (module [`strategies`]).
pub fn plan_with(
    state: &State,
    live: &Live<'_>,
    max: usize,
    cursor: &mut DispatchCursor,
) -> Vec<(TaskId, AgentId)> {
    let warm = (live.warm, live.warm_weight_milli);
    plan_warm(state, live.connected, Some(warm), max, cursor)
}

/// [`place_new`] with each spec's placement ask (`asks[i]` for `specs[i]`;
/// missing ones ask nothing) and what the leader knows of the agents.
pub fn place_new_with(
    state: &State,
    live: &Live<'_>,
    specs: &[TaskSpec],
    asks: &[crate::placement::types::PlaceAsk],
    dispatching: &InFlight,
    cursor: &mut DispatchCursor,
) -> Vec<(u32, AgentId)> {
    // As apply reads them (`state::submit_opts`); below version 5 a
    // non-plain ask is refused at apply, so nothing is planned for it.
    let asks: Vec<Option<PlaceAsk>> = asks
        .iter()
        .map(|a| Some(crate::placement::validate::normalize(a.clone())).filter(|a| !a.is_plain()))
        .collect();
    if !state.placement_on() && asks.iter().any(Option::is_some) {
        return Vec::new();
    }
    let warm = (live.warm, live.warm_weight_milli);
    place_new_asked(
        state,
        live.connected,
        specs,
        &asks,
        Some(warm),
        dispatching,
        cursor,
    )
}

/// Plans one dispatch round of at most `max` assignments onto agents that are
/// Ready and in `connected`, in the module's dispatch order. Pure: reads
/// `state`, updates only `cursor`.
pub fn plan(
    state: &State,
    connected: &BTreeSet<AgentId>,
    max: usize,
    cursor: &mut DispatchCursor,
) -> Vec<(TaskId, AgentId)> {
    plan_warm(state, connected, None, max, cursor)
}

/// [`plan`] with the agents' warm models, if known.
fn plan_warm(
    state: &State,
    connected: &BTreeSet<AgentId>,
    warm: Option<Warm<'_>>,
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
    // Each queue's strategy from version 5 on, in queue order.
    let places: Vec<PlaceStrategy> = if state.placement_on() {
        state
            .queues
            .keys()
            .map(|q| state.queue_strategy(q))
            .collect()
    } else {
        Vec::new()
    };
    let mut round = Round::new(state, pool, warm);

    let queues: Vec<(&str, u32)> = state
        .queues
        .values()
        .map(|q| (q.name.as_str(), q.weight))
        .collect();
    let budget = max.saturating_mul(SCAN_FACTOR);
    let mut scans: Vec<QueueScan<'_>> = state
        .queues
        .values()
        .map(|q| {
            QueueScan::new(
                (q.strategy, &q.name),
                state.pending_by_tenant.get(&q.name),
                &quotas,
                budget,
            )
        })
        .collect();

    for class in CLASSES {
        if out.len() >= max || round.with_room == 0 {
            break;
        }
        let reserved = state.lifecycle().reserved_above(class);
        if !round.room_beyond(reserved) {
            // Nothing of this class fits beside the reserve, nor of a lower
            // class, whose reserve is at least as large.
            break;
        }
        let saved = cursor.queues.remove(&class).unwrap_or_default();
        let mut rotation = QueueRotation::new(queues.clone(), &saved);
        for (i, scan) in scans.iter().enumerate() {
            // Every higher class is done: a queue's head is of this class
            // or a lower one.
            if scan.head() != Some(class) {
                rotation.deactivate(i);
            }
        }
        while out.len() < max && round.with_room > 0 {
            let Some(qi) = rotation.next() else { break };
            let queue = rotation.name(qi);
            let credits = cursor.agents.entry(queue.to_string()).or_default();
            let scan = &mut scans[qi];
            let mut placed = None;
            while let Some((id, tenant)) = scan.next(class, &quotas) {
                let Some(task) = round.state.tasks.get(&id) else {
                    scan.file(tenant, &quotas);
                    continue;
                };
                let ask = match round.v5 {
                    Some(_) => state.placement().ask(task.id),
                    None => None,
                };
                // Below version 5, and without shapes, exactly the spec.
                let least = with_gpus(&task.spec, min_gpus(&task.spec, ask));
                if !quotas.allows(&task.spec, || least_milli(state, &task.spec, ask))
                    || !round.leaves(reserved, &least)
                {
                    scan.file(tenant, &quotas);
                    continue;
                }
                let chosen = if round.v5.is_some() {
                    let gpus_ok = |r: &Round<'_>, n: u32, milli: u64| {
                        (n == least.gpus || r.leaves(reserved, &with_gpus(&task.spec, n)))
                            && quotas.allows(&task.spec, || milli)
                    };
                    round.choose_v5(
                        &task.spec,
                        ask,
                        Some(task.id),
                        scan.name,
                        &places[qi],
                        credits,
                        &gpus_ok,
                    )
                } else {
                    round
                        .choose(&task.spec, Some(task.id), scan.strategy, credits)
                        .map(|i| (i, None))
                };
                if let Some(choice) = chosen {
                    placed = Some((task, choice, ask, tenant));
                    break;
                }
                scan.file(tenant, &quotas);
            }
            match placed {
                Some((task, choice, ask, tenant)) => {
                    if round.v5.is_some() {
                        round.book_v5(&choice, &task.spec, ask, scan.name);
                        quotas.book(&task.spec, picked_milli(&choice.1));
                    } else {
                        round.book(choice.0, task.spec.slots, task.spec.gpus);
                        quotas.book(&task.spec, u64::from(task.spec.gpus) * 1000);
                    }
                    scan.file(tenant, &quotas);
                    out.push((task.id, round.pool[choice.0].agent.spec.id.clone()));
                }
                // Nothing placeable of this class left in this queue this
                // round: its share goes to the others (work-conserving).
                None => rotation.retract(qi),
            }
        }
        let mut saved = saved;
        rotation.save(&mut saved);
        if !saved.is_empty() {
            cursor.queues.insert(class, saved);
        }
    }
    cursor.agents.retain(|_, credits| !credits.is_empty());
    out
}

#[cfg(test)]
#[path = "dispatch_test.rs"]
mod tests;

#[cfg(test)]
#[path = "scenario_test.rs"]
mod scenario_tests;

#[cfg(test)]
#[path = "placement_test.rs"]
mod placement_tests;
