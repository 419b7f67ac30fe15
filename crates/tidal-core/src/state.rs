//! The replicated state machine: `State::apply` is the only way tidal's state changes.
//!
//! Apply is deterministic: time comes from [`ApplyCtx`], fencing tokens are log
//! indexes, and every collection is ordered (`BTreeMap`/`BTreeSet`, and the
//! persistent [`Map`]/[`Set`] for the state's own), so replicas that
//! apply the same log end in equal states with equal [`State::digest`]s. Each
//! command (or each item of a batch) is validated against the current state
//! first and then applied whole; a rejection is returned as data, never a panic,
//! because a committed entry cannot fail.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::access::types::{tally, tenant_of, usage_index, Access, Tally, ACCESS_VERSION};
use crate::collections::{Map, Set};
use crate::command::{
    ApplyCtx, Body, CannotApply, Command, Completion, Envelope, Granted, Rejection, Response,
    Submitted, FORMAT_VERSION_MAX, FORMAT_VERSION_MIN,
};
use crate::digest::Fnv64;
use crate::dispatch::eligibility;
use crate::forwarding::types::Links;
use crate::lifecycle::types::{AttemptEnd, Lifecycle, TaskLife, TaskOptions, LIFECYCLE_VERSION};
use crate::model::{
    Agent, AgentId, AgentSpec, AgentState, FencingToken, Priority, Queue, Strategy, Task, TaskId,
    TaskSpec, TaskState, TaskStateKind,
};
use crate::placement::check as placement_check;
use crate::placement::types::{PlaceAsk, Placement, PLACEMENT_VERSION};

/// The queue every state starts with; a submit without a queue goes here.
pub const DEFAULT_QUEUE: &str = "default";
/// What `max_attempts: 0` means at submit.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Highest queue weight `SetQueue` accepts.
pub const MAX_QUEUE_WEIGHT: u32 = 1000;

/// Tasks, agents and queues of one DC, as every replica holds them.
///
/// Encoded field by field in this order (snapshots, backups); `finished` and
/// `pending_by_tenant` are derived from the tasks, not encoded, and rebuilt
/// when a state is decoded (through [`StateData`], which lists the same
/// encoded fields in the same order), so adding them left the snapshot
/// format as it was.
///
/// Hashed by hand (see the `Hash` impl): the digest covers the replicated
/// fields only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StateData")]
pub struct State {
    pub(crate) tasks: Map<TaskId, Task>,
    /// Idempotency key -> the task submitted with it.
    pub(crate) keys: Map<String, TaskId>,
    pub(crate) queues: Map<String, Queue>,
    /// Per queue, its Pending tasks in dispatch order: priority class, then id
    /// (age). Holds exactly the Pending tasks (checked by `check_invariants`).
    pub(crate) pending: Map<String, Set<(Priority, TaskId)>>,
    /// `pending` split by tenant ([`tenant_of`]): per queue, per tenant with
    /// a Pending task there, its Pending tasks in dispatch order. What the
    /// dispatcher shares a queue between tenants with. Holds exactly what
    /// `pending` holds and no empty set or map (checked by
    /// `check_invariants`); kept by the code that keeps `pending`.
    #[serde(skip)]
    pub(crate) pending_by_tenant: ByTenant,
    pub(crate) agents: Map<AgentId, Agent>,
    /// The id the next submitted task gets; ids start at 1.
    pub(crate) next_id: u64,
    /// Cross-DC outboxes and what was ingested from other DCs.
    pub(crate) links: Links,
    /// Every finished task (`TaskState::is_terminal`) by the time it
    /// finished, its `updated_ms`, which does not change once it finished:
    /// what retention expires, oldest first. Holds exactly the finished
    /// tasks (checked by `check_invariants`).
    #[serde(skip)]
    pub(crate) finished: Set<(u64, TaskId)>,
    /// The cluster's format version (README: Rolling upgrade): commands of a
    /// higher [`Command::required_version`] are refused. Not part of the
    /// state's own encoding, which stays what builds before format versions
    /// read: tidal-store writes it after the state in snapshots of version 2
    /// and later, and a snapshot without it is of version 1.
    #[serde(skip)]
    pub(crate) cluster_version: u8,
    /// Tokens, tenants and who submitted what (cluster format version 3).
    /// Not part of the state's own encoding either: tidal-store writes it
    /// after the cluster version in snapshots of version 3 and later. Its
    /// `usage` is derived from the tasks.
    #[serde(skip)]
    pub(crate) access: Access,
    /// Tasks' declared lives and histories, and the classes' headroom
    /// (cluster format version 4). Not part of the state's own encoding:
    /// tidal-store writes it after the access section in snapshots of
    /// version 4 and later. Its indexes are derived.
    #[serde(skip)]
    pub(crate) lifecycle: Lifecycle,
    /// What tasks ask of placement, the GPU devices assignments hold, queues'
    /// strategies and GPU weights (cluster format version 5). Not part of
    /// the state's own encoding: tidal-store writes it after the lifecycle
    /// section in snapshots of version 5 and later. Its indexes are derived.
    #[serde(skip)]
    pub(crate) placement: Placement,
}

/// What [`State::digest`] covers: the encoded fields in their order, as the
/// derived `Hash` of builds before the `finished` index and format versions
/// hashed them, then the cluster's format version only when it is above 1,
/// then the access state only from version 3 on (where it can be other
/// than empty), the lifecycle state only from version 4 on, and the
/// placement state only from version 5 on. So a state at version 1 or 2 has the digest the builds
/// before it give it, and `status
/// --digest` and chaos's convergence check can compare a mixed cluster
/// during a rolling upgrade. `finished` and `pending_by_tenant` are derived
/// from `tasks` and left out.
impl Hash for State {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let State {
            tasks,
            keys,
            queues,
            pending,
            pending_by_tenant: _,
            agents,
            next_id,
            links,
            finished: _,
            cluster_version,
            access,
            lifecycle,
            placement,
        } = self;
        tasks.hash(h);
        keys.hash(h);
        queues.hash(h);
        pending.hash(h);
        agents.hash(h);
        next_id.hash(h);
        links.hash(h);
        if *cluster_version > FORMAT_VERSION_MIN {
            cluster_version.hash(h);
        }
        if *cluster_version >= ACCESS_VERSION {
            access.hash(h);
        }
        if *cluster_version >= LIFECYCLE_VERSION {
            lifecycle.hash(h);
        }
        if *cluster_version >= PLACEMENT_VERSION {
            placement.hash(h);
        }
    }
}

/// The encoded fields of [`State`], in its order; decoding goes through
/// this and rebuilds the derived index.
#[derive(Deserialize)]
struct StateData {
    tasks: Map<TaskId, Task>,
    keys: Map<String, TaskId>,
    queues: Map<String, Queue>,
    pending: Map<String, Set<(Priority, TaskId)>>,
    agents: Map<AgentId, Agent>,
    next_id: u64,
    links: Links,
}

impl From<StateData> for State {
    fn from(d: StateData) -> State {
        let finished = finished_index(&d.tasks);
        let pending_by_tenant = tenant_index(&d.tasks, &Lifecycle::default());
        let access = Access {
            // Placement is restored after (`restore_placement`), which
            // weighs held GPUs again.
            usage: usage_index(&d.tasks, |_, spec| u64::from(spec.gpus) * 1000),
            ..Access::default()
        };
        State {
            tasks: d.tasks,
            keys: d.keys,
            queues: d.queues,
            pending: d.pending,
            pending_by_tenant,
            agents: d.agents,
            next_id: d.next_id,
            links: d.links,
            finished,
            // Kept beside the state in snapshots (tidal-store).
            cluster_version: FORMAT_VERSION_MIN,
            access,
            lifecycle: Lifecycle::default(),
            placement: Placement::default(),
        }
    }
}

/// The finished tasks of `tasks` by finish time (see `State::finished`).
pub(crate) fn finished_index(tasks: &Map<TaskId, Task>) -> Set<(u64, TaskId)> {
    tasks
        .values()
        .filter(|t| t.state.is_terminal())
        .map(|t| (t.updated_ms, t.id))
        .collect()
}

/// Keeps `State::finished` in step with a task after a change: `before` is
/// its finish time if it had finished before the change.
pub(crate) fn refile(finished: &mut Set<(u64, TaskId)>, task: &Task, before: Option<u64>) {
    if let Some(t) = before {
        finished.remove(&(t, task.id));
    }
    if task.state.is_terminal() {
        finished.insert((task.updated_ms, task.id));
    }
}

/// Where a Pending task sits in the dispatch order within its tenant:
/// priority class, then deadline (`u64::MAX` when it has none), then age.
pub(crate) type PendingKey = (Priority, u64, TaskId);

/// Per queue, per tenant, Pending tasks in dispatch order: see
/// `State::pending_by_tenant`. Reads go through `Deref` to the map; changes
/// only through [`index_tenant`] and [`unindex_tenant`], which keep the
/// per-class counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ByTenant {
    queues: Map<String, Map<String, Set<PendingKey>>>,
    /// How many tasks of each priority class the index holds (in all
    /// queues), by `Priority as usize`: whether a class waits anywhere is
    /// one look (eager placement). Checked by `check_invariants` (a
    /// recomputed index must equal this one, counts included).
    per_class: [usize; 3],
}

impl ByTenant {
    pub(crate) fn new() -> Self {
        ByTenant::default()
    }

    /// How many dispatchable Pending tasks of `class` there are, over all
    /// queues.
    pub(crate) fn of_class(&self, class: Priority) -> usize {
        self.per_class[class as usize]
    }

    /// The per-class counts, recounted from the sets (`check_invariants`).
    pub(crate) fn recount(&self) -> [usize; 3] {
        let mut n = [0; 3];
        for set in self.queues.values().flat_map(|q| q.values()) {
            for (p, _, _) in set.iter() {
                n[*p as usize] += 1;
            }
        }
        n
    }

    pub(crate) fn counts(&self) -> [usize; 3] {
        self.per_class
    }
}

impl std::ops::Deref for ByTenant {
    type Target = Map<String, Map<String, Set<PendingKey>>>;
    fn deref(&self) -> &Self::Target {
        &self.queues
    }
}

/// The Pending tasks of `tasks` that may be dispatched (not in backoff), by
/// queue and tenant, recomputed: what `State::pending_by_tenant` must
/// equal.
pub(crate) fn tenant_index(tasks: &Map<TaskId, Task>, lifecycle: &Lifecycle) -> ByTenant {
    let mut index = ByTenant::new();
    for task in tasks.values() {
        if task.state == TaskState::Pending {
            if let Some(deadline) = lifecycle.dispatch_key(task.id) {
                index_tenant(&mut index, &task.spec, task.id, deadline);
            }
        }
    }
    index
}

/// Adds a Pending task to `pending_by_tenant`.
pub(crate) fn index_tenant(index: &mut ByTenant, spec: &TaskSpec, id: TaskId, deadline: u64) {
    let queues = &mut index.queues;
    // Looked up before inserting, so the names are copied only when new.
    if queues.get(&spec.queue).is_none() {
        queues.insert(spec.queue.clone(), Map::new());
    }
    let queue = queues.get_mut(&spec.queue).expect("inserted above");
    let tenant = tenant_of(spec);
    if queue.get(tenant).is_none() {
        queue.insert(tenant.to_string(), Set::new());
    }
    let added =
        queue
            .get_mut(tenant)
            .expect("inserted above")
            .insert((spec.priority, deadline, id));
    if added {
        index.per_class[spec.priority as usize] += 1;
    }
}

/// Takes a task out of `pending_by_tenant`, dropping what it leaves empty.
fn unindex_tenant(index: &mut ByTenant, spec: &TaskSpec, id: TaskId, deadline: u64) {
    let Some(queue) = index.queues.get_mut(&spec.queue) else {
        return;
    };
    let tenant = tenant_of(spec);
    let Some(set) = queue.get_mut(tenant) else {
        return;
    };
    if set.remove(&(spec.priority, deadline, id)) {
        index.per_class[spec.priority as usize] -= 1;
    }
    if set.is_empty() {
        queue.remove(tenant);
        if queue.is_empty() {
            index.queues.remove(&spec.queue);
        }
    }
}

/// Puts a task back among the Pending of its queue (`pending`, and
/// `by_tenant` unless it is in backoff), in its tenant's usage, and in the
/// lifecycle's indexes.
pub(crate) fn requeue(
    pending: &mut Map<String, Set<(Priority, TaskId)>>,
    by_tenant: &mut ByTenant,
    access: &mut Access,
    lifecycle: &mut Lifecycle,
    task: &mut Task,
    id: TaskId,
) {
    task.state = TaskState::Pending;
    pending
        .entry(task.spec.queue.clone())
        .or_default()
        .insert((task.spec.priority, id));
    if let Some(deadline) = lifecycle.index_pending(id) {
        index_tenant(by_tenant, &task.spec, id, deadline);
    }
    tally(&mut access.usage, &task.spec, Tally::AddPending);
}

/// Takes a task out of the Pending of its queue (`pending` and
/// `by_tenant`, its tenant's usage and the lifecycle's indexes); the task's
/// new state is the caller's to set.
pub(crate) fn unqueue(
    pending: &mut Map<String, Set<(Priority, TaskId)>>,
    by_tenant: &mut ByTenant,
    access: &mut Access,
    lifecycle: &mut Lifecycle,
    task: &Task,
    id: TaskId,
) {
    let removed = pending
        .get_mut(&task.spec.queue)
        .is_some_and(|index| index.remove(&(task.spec.priority, id)));
    if removed {
        if let Some(deadline) = lifecycle.unindex_pending(id) {
            unindex_tenant(by_tenant, &task.spec, id, deadline);
        }
        // Whatever it becomes, it is no longer waiting out a backoff.
        lifecycle.end_backoff(id);
        tally(&mut access.usage, &task.spec, Tally::SubPending);
    }
}

/// Makes `agent` hold `task` under `token`: its capacity is taken, in the
/// agent's counters and in the task's tenant's usage (its GPUs weighing
/// `gpu_milli`, [`Placement::held_gpu_milli`] once the hold is recorded).
pub(crate) fn hold(
    agent: &mut Agent,
    access: &mut Access,
    (task, id): (&mut Task, TaskId),
    token: FencingToken,
    gpu_milli: u64,
) {
    agent.tasks.insert(id, token);
    tally(&mut access.usage, &task.spec, Tally::AddHeld(gpu_milli));
    agent.slots_in_use += task.spec.slots;
    agent.gpus_in_use += task.spec.gpus;
    task.state = TaskState::Assigned {
        agent: agent.spec.id.clone(),
        token,
    };
}

/// A task with GPU shapes holds the GPUs of the shape its assignment took:
/// its spec's `gpus` and `gpu_memory_mb` become that shape's, so what its
/// agent and its tenant count is what it holds. Nothing changes for a task
/// without shapes (its spec is its only shape).
fn take_shape(
    spec: &mut TaskSpec,
    pick: &crate::placement::devices::Pick,
    shapes: Option<&[crate::placement::types::GpuShape]>,
) {
    if let Some(shape) = shapes.and_then(|s| s.get(usize::from(pick.shape))) {
        spec.gpus = shape.count;
        spec.gpu_memory_mb = shape.min_memory_mb;
    }
}

/// What the GPUs of an assignment weigh, in thousandths: its pick's devices
/// (version 5), else 1000 per GPU of its spec. Equal to
/// [`Placement::held_gpu_milli`] once the pick is recorded.
fn pick_gpu_milli(pick: Option<&crate::placement::devices::Pick>, spec: &TaskSpec) -> u64 {
    pick.map_or(u64::from(spec.gpus) * 1000, |p| u64::from(p.gpu_milli))
}

/// Fails a task that lost its holder with no attempt left.
fn fail_exhausted(task: &mut Task, agent_id: &str, token: FencingToken, what: &str) {
    task.state = TaskState::Failed {
        agent: Some(agent_id.to_string()),
        token,
    };
    task.error = format!(
        "agent {agent_id} {what}; max_attempts {} reached",
        task.spec.max_attempts
    );
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

/// Fills in the defaults a client may leave out, so every replica stores the
/// same spec and the dispatcher never sees a zero-slot task. Idempotent.
pub fn normalize(spec: &mut TaskSpec) {
    if spec.queue.is_empty() {
        spec.queue = DEFAULT_QUEUE.to_string();
    }
    if spec.max_attempts == 0 {
        spec.max_attempts = DEFAULT_MAX_ATTEMPTS;
    }
    if spec.slots == 0 {
        spec.slots = 1;
    }
}

/// Whether two specs ask for the same task, so a submit that reuses an
/// idempotency key gets the existing task back instead of a conflict. Both
/// are compared after [`normalize`] (an empty queue is "default",
/// `max_attempts` 0 is the default, `slots` 0 is 1; the API maps an
/// unspecified priority to nearline before this), field by field, payload
/// bytes included; `models` is compared as a set, since order and repeats do
/// not change where a task can run.
pub fn same_spec(a: &TaskSpec, b: &TaskSpec) -> bool {
    let (mut a, mut b) = (a.clone(), b.clone());
    normalize(&mut a);
    normalize(&mut b);
    for models in [&mut a.models, &mut b.models] {
        models.sort_unstable();
        models.dedup();
    }
    a == b
}

pub(crate) fn wrong_state(task: TaskId, state: &TaskState) -> Rejection {
    Rejection::WrongState {
        task,
        state: state.kind().as_str().to_string(),
    }
}

/// Gives back the capacity a task held on its agent. Invariant 3: the agent's
/// in-use counters stay equal to the sum over the tasks it holds (its
/// slots only while it is not suspended). A preemption or suspension of
/// the task ends with its hold.
fn release(
    agents: &mut Map<AgentId, Agent>,
    access: &mut Access,
    lifecycle: &mut Lifecycle,
    placement: &mut Placement,
    agent: &str,
    id: TaskId,
    spec: &TaskSpec,
) {
    if let Some(a) = agents.get_mut(agent) {
        release_from(a, access, lifecycle, placement, id, spec);
    }
}

/// [`release`] on an agent at hand; the task's state is the caller's to set.
pub(crate) fn release_from(
    agent: &mut Agent,
    access: &mut Access,
    lifecycle: &mut Lifecycle,
    placement: &mut Placement,
    id: TaskId,
    spec: &TaskSpec,
) {
    let suspended = lifecycle.let_go(id);
    let gpu_milli = placement.held_gpu_milli(id, spec);
    placement.let_go(&agent.spec, id);
    if agent.tasks.remove(&id).is_some() {
        tally(&mut access.usage, spec, Tally::SubHeld(gpu_milli));
        if !suspended {
            agent.slots_in_use = agent.slots_in_use.saturating_sub(spec.slots);
        }
        agent.gpus_in_use = agent.gpus_in_use.saturating_sub(spec.gpus);
    }
}

impl State {
    /// An empty state with the queue "default" (weight 1, least-loaded).
    pub fn new() -> State {
        let mut state = State {
            tasks: Map::new(),
            keys: Map::new(),
            queues: Map::new(),
            pending: Map::new(),
            pending_by_tenant: ByTenant::new(),
            agents: Map::new(),
            next_id: 1,
            links: Links::default(),
            finished: Set::new(),
            cluster_version: FORMAT_VERSION_MIN,
            access: Access::default(),
            lifecycle: Lifecycle::default(),
            placement: Placement::default(),
        };
        state.upsert_queue(DEFAULT_QUEUE.to_string(), 1, Strategy::LeastLoaded);
        state
    }

    /// Applies one log entry with the entry's index and the leader's time.
    ///
    /// An entry of a format version above `supported` (this node's highest,
    /// at most [`FORMAT_VERSION_MAX`]), or whose command did not decode, is
    /// [`CannotApply`]: the state is left as it was and the caller must stop
    /// applying, never skip the entry. A command the cluster's version does
    /// not include is refused (as data, like any rejection: every replica
    /// refuses it alike).
    pub fn apply_envelope(
        &mut self,
        env: Envelope,
        log_index: u64,
        supported: u8,
    ) -> Result<Response, CannotApply> {
        let supported = supported.min(FORMAT_VERSION_MAX);
        if env.version > supported {
            return Err(CannotApply {
                needed: env.version,
                supported,
                reason: format!(
                    "entry {log_index} needs cluster format version {}; this node supports \
                     versions {FORMAT_VERSION_MIN} to {supported}",
                    env.version
                ),
            });
        }
        let command = match env.body {
            Body::Command(c) => c,
            Body::Undecoded { reason, .. } => {
                return Err(CannotApply {
                    needed: env.version,
                    supported,
                    reason: format!("entry {log_index} cannot be read: {reason}"),
                })
            }
        };
        let ctx = ApplyCtx {
            log_index,
            time_ms: env.time_ms,
        };
        let needed = command.required_version();
        if needed > env.version {
            return Ok(Response::Rejected(Rejection::UnsupportedVersion(
                env.version,
            )));
        }
        // The command that raises the version is the one exception.
        if needed > self.cluster_version && !matches!(command, Command::SetClusterVersion { .. }) {
            return Ok(Response::Rejected(Rejection::NeedsClusterVersion {
                needed,
                current: self.cluster_version,
            }));
        }
        Ok(self.apply(command, ctx))
    }

    /// The cluster's format version (README: Rolling upgrade).
    pub fn cluster_version(&self) -> u8 {
        self.cluster_version
    }

    /// Sets the cluster's format version of a state read from a snapshot
    /// (tidal-store keeps it beside the state). Not a replicated change:
    /// [`Command::SetClusterVersion`] is.
    pub fn restore_cluster_version(&mut self, version: u8) {
        self.cluster_version = version;
    }

    fn set_cluster_version(&mut self, version: u8) -> Response {
        if version <= self.cluster_version {
            return Response::Rejected(Rejection::Invalid(format!(
                "the cluster is already at format version {}, not below {version}",
                self.cluster_version
            )));
        }
        if version > FORMAT_VERSION_MAX {
            // Not reached through apply_envelope, whose entry version is at
            // least `version`; kept for direct calls of `apply`.
            return Response::Rejected(Rejection::UnsupportedVersion(version));
        }
        self.cluster_version = version;
        Response::Ok
    }

    /// The only mutation of the state. Deterministic; never panics on input.
    pub fn apply(&mut self, cmd: Command, ctx: ApplyCtx) -> Response {
        match cmd {
            Command::Submit(specs) => {
                Response::Submitted(specs.into_iter().map(|s| self.submit(s, ctx)).collect())
            }
            Command::Cancel { task } => self.cancel(task, ctx),
            Command::RegisterAgent(spec) => self.register_agent(spec, ctx),
            Command::DeregisterAgent { agent } => self.deregister_agent(&agent, ctx),
            Command::AgentDown { agent } => self.agent_down(&agent, ctx),
            Command::Assign(pairs) => self.assign(pairs, ctx),
            Command::Started { task, token } => self.started(task, token, ctx),
            Command::StartedBatch(list) => Response::StartedBatch(
                list.into_iter()
                    .map(|(task, token)| match self.started(task, token, ctx) {
                        Response::Rejected(r) => Err(r),
                        _ => Ok(()),
                    })
                    .collect(),
            ),
            Command::Complete(list) => {
                Response::Completed(list.into_iter().map(|c| self.complete(c, ctx)).collect())
            }
            Command::SetQueue {
                name,
                weight,
                strategy,
            } => self.set_queue(name, weight, strategy),
            Command::Noop => Response::Ok,
            Command::Forward(pairs) => Response::Forwarded(
                pairs
                    .into_iter()
                    .map(|(task, dc)| self.forward(task, dc, ctx))
                    .collect(),
            ),
            Command::Ingest { origin, records } => self.ingest(origin, records, ctx),
            Command::ForwardAck { peer, verdicts } => self.forward_ack(peer, verdicts, ctx),
            Command::SubmitPlaced { specs, place } => self.submit_placed(specs, place, ctx),
            Command::Regrant { agent, tasks } => self.regrant(&agent, tasks, ctx),
            Command::DrainAgent { agent, deadline_ms } => self.drain_agent(&agent, deadline_ms),
            Command::UndrainAgent { agent } => self.undrain_agent(&agent),
            Command::Stopped(list) => Response::Stopped(
                list.into_iter()
                    .map(|(task, token)| self.stopped(task, token, ctx))
                    .collect(),
            ),
            Command::Expire { before_ms, tasks } => self.expire(before_ms, tasks, ctx),
            Command::SetClusterVersion { version } => self.set_cluster_version(version),
            Command::CreateToken {
                id,
                record,
                first_only,
            } => self.create_token(id, record, first_only, ctx),
            Command::RevokeToken { id } => self.revoke_token(id, ctx),
            Command::SetTenant { name, limits } => self.set_tenant(name, limits),
            Command::RemoveTenant { name } => self.remove_tenant(&name),
            Command::SubmitAs { specs, place, by } => self.submit_as(specs, place, by, ctx),
            Command::RegisterAgentAs { spec, token } => self.register_agent_as(spec, token, ctx),
            Command::SubmitWith {
                specs,
                place,
                by,
                opts,
            } => self.submit_with(specs, place, by, opts, Vec::new(), ctx),
            Command::Finished(list) => Response::Completed(
                list.into_iter()
                    .map(|f| {
                        let end = match (f.outcome.success, f.timed_out) {
                            (true, _) => AttemptEnd::Succeeded,
                            (false, true) => AttemptEnd::TimedOut,
                            (false, false) => AttemptEnd::Failed {
                                exit_code: f.outcome.exit_code,
                            },
                        };
                        self.complete_as(
                            Completion {
                                task: f.task,
                                token: f.token,
                                outcome: f.outcome,
                            },
                            end,
                            ctx,
                        )
                    })
                    .collect(),
            ),
            Command::Wake(ids) => self.wake(ids, ctx),
            Command::DeadlineMissed(ids) => self.deadline_missed(ids, ctx),
            Command::Replay(ids) => self.replay(ids, ctx),
            Command::Checkpoint(items) => self.checkpoint(items, ctx),
            Command::SetHeadroom { class, headroom } => self.set_headroom(class, headroom),
            Command::Preempt {
                task,
                agent,
                victims,
            } => self.preempt(task, agent, victims, ctx),
            Command::Resume(ids) => self.resume(ids),
            Command::SubmitWithPlacement {
                specs,
                place,
                by,
                opts,
                asks,
            } => self.submit_with_placement(specs, place, by, opts, asks, ctx),
            Command::SetQueueWith {
                name,
                weight,
                placement,
            } => self.set_queue_with(name, weight, placement),
            Command::SetGpuWeights(weights) => self.set_gpu_weights(weights),
        }
    }

    pub(crate) fn submit_placed(
        &mut self,
        specs: Vec<TaskSpec>,
        place: Vec<(u32, AgentId)>,
        ctx: ApplyCtx,
    ) -> Response {
        self.submit_placed_with(specs, Vec::new(), Vec::new(), place, ctx)
    }

    /// `SubmitPlaced` with each task's lifecycle options (`opts[i]` for
    /// `specs[i]`; missing ones are the defaults) and placement asks
    /// (`asks[i]`, likewise).
    pub(crate) fn submit_placed_with(
        &mut self,
        specs: Vec<TaskSpec>,
        opts: Vec<TaskOptions>,
        asks: Vec<PlaceAsk>,
        place: Vec<(u32, AgentId)>,
        ctx: ApplyCtx,
    ) -> Response {
        if self.cluster_version >= PLACEMENT_VERSION {
            return self.submit_placed_in_order(specs, opts, asks, place, ctx);
        }
        let mut place: BTreeMap<u32, AgentId> = place.into_iter().collect();
        let mut submitted = Vec::with_capacity(specs.len());
        let mut granted = Vec::new();
        let mut opts = opts.into_iter();
        let mut asks = asks.into_iter();
        for (i, spec) in specs.into_iter().enumerate() {
            let agent = u32::try_from(i).ok().and_then(|i| place.remove(&i));
            let result = self.submit_opts(spec, opts.next(), asks.next(), ctx);
            if let (Ok(s), Some(agent)) = (&result, agent) {
                if !s.existed {
                    if let Ok(g) = self.assign_one(s.id, agent, ctx) {
                        granted.push(g);
                    }
                }
            }
            submitted.push(result);
        }
        Response::SubmittedPlaced { submitted, granted }
    }

    /// From version 5 on: every task of the batch is submitted, then the
    /// placements are assigned in the order the entry lists them, which is
    /// the order the planner booked them in (class first): with concrete
    /// devices and tag rules, which task is assigned first decides what
    /// the next one finds. The first placement named for an index counts.
    fn submit_placed_in_order(
        &mut self,
        specs: Vec<TaskSpec>,
        opts: Vec<TaskOptions>,
        asks: Vec<PlaceAsk>,
        place: Vec<(u32, AgentId)>,
        ctx: ApplyCtx,
    ) -> Response {
        let mut opts = opts.into_iter();
        let mut asks = asks.into_iter();
        let submitted: Vec<Result<Submitted, Rejection>> = specs
            .into_iter()
            .map(|spec| self.submit_opts(spec, opts.next(), asks.next(), ctx))
            .collect();
        let mut granted = Vec::new();
        let mut done = BTreeSet::new();
        for (i, agent) in place {
            if !done.insert(i) {
                continue;
            }
            match submitted.get(i as usize) {
                Some(Ok(s)) if !s.existed => {
                    if let Ok(g) = self.assign_one(s.id, agent, ctx) {
                        granted.push(g);
                    }
                }
                _ => {}
            }
        }
        Response::SubmittedPlaced { submitted, granted }
    }

    pub(crate) fn submit(&mut self, spec: TaskSpec, ctx: ApplyCtx) -> Result<Submitted, Rejection> {
        self.submit_opts(spec, None, None, ctx)
    }

    /// Submits one task; from version 4 on it gets a lifecycle entry with
    /// `opts` (the defaults when `None`), from version 5 on a placement
    /// entry when its `ask` asks anything.
    pub(crate) fn submit_opts(
        &mut self,
        mut spec: TaskSpec,
        opts: Option<TaskOptions>,
        ask: Option<PlaceAsk>,
        ctx: ApplyCtx,
    ) -> Result<Submitted, Rejection> {
        normalize(&mut spec);
        let ask = match ask.map(crate::placement::validate::normalize) {
            Some(a) if !a.is_plain() => {
                crate::placement::validate::validate(&a).map_err(Rejection::Invalid)?;
                // Its spec's GPUs are its first shape's until an assignment
                // takes one.
                if let Some(first) = a.shapes.first() {
                    spec.gpus = first.count;
                    spec.gpu_memory_mb = first.min_memory_mb;
                }
                Some(a)
            }
            _ => None,
        };
        // A repeated key with the same spec returns the first task, also
        // within one batch: the client retries a submit whose answer it lost
        // (invariant 2). The same key with another spec is a conflict, never
        // the old task passed off as this one.
        if let Some((key, id)) = spec
            .idempotency_key
            .as_ref()
            .and_then(|k| self.keys.get(k).map(|id| (k, *id)))
        {
            let same = self.tasks.get(&id).is_some_and(|t| {
                // A plain task that holds devices has an entry with a plain
                // ask: it asked nothing.
                let theirs = self.placement.ask(id).filter(|a| !a.is_plain());
                theirs == ask.as_ref() && {
                    // A task with shapes holds the GPUs of the one it took.
                    let mut mine = spec.clone();
                    if theirs.is_some_and(|a| !a.shapes.is_empty()) {
                        mine.gpus = t.spec.gpus;
                        mine.gpu_memory_mb = t.spec.gpu_memory_mb;
                    }
                    same_spec(&t.spec, &mine)
                }
            });
            if !same {
                return Err(Rejection::KeyConflict {
                    key: key.clone(),
                    existing: id,
                });
            }
            return Ok(Submitted { id, existed: true });
        }
        if spec.task_type.is_empty() {
            return Err(Rejection::Invalid("task_type \"\" is empty".to_string()));
        }
        if !self.queues.contains_key(&spec.queue) {
            return Err(Rejection::QueueNotFound(spec.queue));
        }
        if let Some(o) = &opts {
            crate::lifecycle::types::validate_options(o).map_err(Rejection::Invalid)?;
        }
        self.access.admit_pending(&spec)?;
        let Some(after) = self.next_id.checked_add(1) else {
            return Err(Rejection::Invalid("task id space exhausted".to_string()));
        };
        let id = TaskId(self.next_id);
        self.next_id = after;
        if let Some(key) = &spec.idempotency_key {
            self.keys.insert(key.clone(), id);
        }
        self.pending
            .entry(spec.queue.clone())
            .or_default()
            .insert((spec.priority, id));
        tally(&mut self.access.usage, &spec, Tally::AddPending);
        if self.lifecycle_on() {
            let life = TaskLife {
                opts: opts.unwrap_or_default(),
                ..TaskLife::default()
            };
            self.lifecycle.tasks.insert(id, life);
        }
        if let Some(ask) = ask {
            self.placement.tasks.insert(
                id,
                crate::placement::types::TaskPlace {
                    ask,
                    ..Default::default()
                },
            );
        }
        if let Some(deadline) = self.lifecycle.index_pending(id) {
            index_tenant(&mut self.pending_by_tenant, &spec, id, deadline);
        }
        let task = Task {
            id,
            spec,
            state: TaskState::Pending,
            attempt: 0,
            result: Vec::new(),
            error: String::new(),
            exit_code: 0,
            submitted_index: ctx.log_index,
            created_ms: ctx.time_ms,
            updated_ms: ctx.time_ms,
        };
        self.tasks.insert(id, task);
        Ok(Submitted { id, existed: false })
    }

    pub(crate) fn cancel(&mut self, id: TaskId, ctx: ApplyCtx) -> Response {
        let Some(task) = self.tasks.get_mut(&id) else {
            return Response::Rejected(Rejection::TaskNotFound(id));
        };
        if task.state.is_terminal() || self.links.cancelled.contains(&id) {
            return Response::Rejected(wrong_state(id, &task.state));
        }
        if let TaskState::Forwarded { dc, .. } = &task.state {
            let dc = dc.clone();
            return self.cancel_forwarded(id, dc, ctx);
        }
        let holder = task.state.holder().map(|(a, t)| (a.clone(), t));
        if let (Some((_, token)), true) = (&holder, self.cluster_version >= LIFECYCLE_VERSION) {
            self.lifecycle
                .end(id, *token, AttemptEnd::Cancelled, "", ctx.time_ms);
        }
        self.lifecycle.drop_checkpoint(id);
        match &holder {
            Some((agent, _)) => release(
                &mut self.agents,
                &mut self.access,
                &mut self.lifecycle,
                &mut self.placement,
                agent,
                id,
                &task.spec,
            ),
            None => unqueue(
                &mut self.pending,
                &mut self.pending_by_tenant,
                &mut self.access,
                &mut self.lifecycle,
                task,
                id,
            ),
        }
        task.state = TaskState::Cancelled {
            agent: holder.as_ref().map(|(a, _)| a.clone()),
            token: holder.as_ref().map_or(0, |(_, t)| *t),
        };
        task.updated_ms = ctx.time_ms;
        refile(&mut self.finished, task, None);
        self.report(id, ctx);
        Response::Cancelled { task: id, holder }
    }

    pub(crate) fn register_agent(&mut self, mut spec: AgentSpec, ctx: ApplyCtx) -> Response {
        if spec.id.is_empty() {
            return Response::Rejected(Rejection::Invalid("agent id \"\" is empty".to_string()));
        }
        if spec.slots == 0 {
            return Response::Rejected(Rejection::Invalid(format!(
                "agent {:?} offers 0 slots: use at least 1",
                spec.id
            )));
        }
        if spec.weight == 0 {
            spec.weight = 1;
        }
        match self.agents.get_mut(&spec.id) {
            // A re-registering agent keeps the tasks it holds (it reconnected
            // and still runs them). If its new spec is smaller than what is in
            // use, it just takes no new work until enough is freed.
            // A draining agent that reconnects (a new session, a new
            // leader) stays draining, with its deadline.
            Some(agent) => {
                let held: Vec<TaskId> = agent.tasks.keys().copied().collect();
                self.placement.relabel(&agent.spec, &spec, &held);
                agent.spec = spec;
                if !agent.is_draining() {
                    agent.state = AgentState::Ready;
                }
                agent.registered_ms = ctx.time_ms;
            }
            None => {
                let agent = Agent {
                    spec,
                    state: AgentState::Ready,
                    tasks: BTreeMap::new(),
                    slots_in_use: 0,
                    gpus_in_use: 0,
                    registered_ms: ctx.time_ms,
                };
                self.agents.insert(agent.spec.id.clone(), agent);
            }
        }
        Response::Ok
    }

    fn deregister_agent(&mut self, agent: &str, ctx: ApplyCtx) -> Response {
        let response = self.agent_down(agent, ctx);
        if matches!(response, Response::AgentDown { .. }) {
            self.agents.remove(agent);
            self.access.agent_tokens.remove(agent);
        }
        response
    }

    fn agent_down(&mut self, agent_id: &str, ctx: ApplyCtx) -> Response {
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return Response::Rejected(Rejection::AgentNotFound(agent_id.to_string()));
        };
        agent.state = AgentState::Down;
        // Invariant 3: the agent holds nothing once its tasks are taken back.
        let held = std::mem::take(&mut agent.tasks);
        let mut gpu_milli = BTreeMap::new();
        for id in held.keys() {
            if let Some(task) = self.tasks.get(id) {
                gpu_milli.insert(*id, self.placement.held_gpu_milli(*id, &task.spec));
            }
            self.placement.let_go(&agent.spec, *id);
        }
        agent.slots_in_use = 0;
        agent.gpus_in_use = 0;
        let (mut requeued, mut failed) = (Vec::new(), Vec::new());
        for (id, token) in held {
            let Some(task) = self.tasks.get_mut(&id) else {
                debug_assert!(false, "agent {agent_id} held unknown task {id}");
                continue;
            };
            if task.state.holder() != Some((&agent_id.to_string(), token)) {
                debug_assert!(
                    false,
                    "agent {agent_id} held {id} but the task says otherwise"
                );
                continue;
            }
            let milli = gpu_milli.get(&id).copied().unwrap_or_default();
            tally(&mut self.access.usage, &task.spec, Tally::SubHeld(milli));
            // Its preemption or suspension ends with the hold.
            self.lifecycle.let_go(id);
            if self.cluster_version >= LIFECYCLE_VERSION {
                // A lost agent is a failed attempt: retried after the
                // backoff while attempts are left.
                task.error = format!("agent {agent_id} down");
                if self.retry_or_bury(id, Some(agent_id.to_string()), token, AttemptEnd::Lost, ctx)
                {
                    requeued.push(id);
                } else {
                    failed.push(id);
                }
                continue;
            }
            // The attempt is counted by the next Assign, so a task that already
            // used all its attempts fails here instead of running again.
            if task.attempt < task.spec.max_attempts {
                requeue(
                    &mut self.pending,
                    &mut self.pending_by_tenant,
                    &mut self.access,
                    &mut self.lifecycle,
                    task,
                    id,
                );
                requeued.push(id);
            } else {
                fail_exhausted(task, agent_id, token, "down");
                failed.push(id);
            }
            task.updated_ms = ctx.time_ms;
            refile(&mut self.finished, task, None);
        }
        for id in requeued.iter().chain(&failed) {
            self.report(*id, ctx);
        }
        Response::AgentDown { requeued, failed }
    }

    fn drain_agent(&mut self, agent_id: &str, deadline_ms: Option<u64>) -> Response {
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return Response::Rejected(Rejection::AgentNotFound(agent_id.to_string()));
        };
        if agent.state == AgentState::Down {
            return Response::Rejected(Rejection::AgentWrongState {
                agent: agent_id.to_string(),
                state: "down (it holds no task and takes none until it registers again)"
                    .to_string(),
            });
        }
        agent.state = AgentState::Draining { deadline_ms };
        Response::Ok
    }

    fn undrain_agent(&mut self, agent_id: &str) -> Response {
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return Response::Rejected(Rejection::AgentNotFound(agent_id.to_string()));
        };
        match agent.state {
            AgentState::Draining { .. } => agent.state = AgentState::Ready,
            AgentState::Ready => {}
            AgentState::Down => {
                return Response::Rejected(Rejection::AgentWrongState {
                    agent: agent_id.to_string(),
                    state: "down (it is Ready again once it registers)".to_string(),
                })
            }
        }
        Response::Ok
    }

    /// A task its agent stopped on the leader's order: back to Pending,
    /// its attempt given back (the next `Assign` counts it again).
    fn stopped(&mut self, id: TaskId, token: FencingToken, ctx: ApplyCtx) -> Result<(), Rejection> {
        let task = self.tasks.get_mut(&id).ok_or(Rejection::TaskNotFound(id))?;
        // Invariant 1: only the current holder's report counts.
        let agent = match task.state.holder() {
            Some((agent, current)) if current == token => agent.clone(),
            holder => {
                return Err(Rejection::StaleToken {
                    task: id,
                    presented: token,
                    current: holder.map(|(_, t)| t),
                })
            }
        };
        // A victim of a preemption: its attempt is not spent either, and
        // it counts as preempted.
        let preempted = self
            .lifecycle
            .task(id)
            .is_some_and(|l| l.preempting.is_some());
        // Invariant 3: the hold is released with the requeue.
        release(
            &mut self.agents,
            &mut self.access,
            &mut self.lifecycle,
            &mut self.placement,
            &agent,
            id,
            &task.spec,
        );
        if self.cluster_version >= LIFECYCLE_VERSION {
            let end = if preempted {
                let life = self.lifecycle.life_mut(id);
                life.preempted = life.preempted.saturating_add(1);
                AttemptEnd::Preempted
            } else {
                AttemptEnd::Stopped
            };
            self.lifecycle.end(id, token, end, "", ctx.time_ms);
        }
        task.attempt = task.attempt.saturating_sub(1);
        task.updated_ms = ctx.time_ms;
        requeue(
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

    fn regrant(
        &mut self,
        agent_id: &str,
        items: Vec<(TaskId, FencingToken)>,
        ctx: ApplyCtx,
    ) -> Response {
        let (mut granted, mut requeued, mut failed, mut rejected) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        if ctx.log_index == 0 {
            return Response::Rejected(Rejection::Invalid(
                "regrant needs a log index above 0".to_string(),
            ));
        }
        for (id, token) in items {
            let Some(task) = self.tasks.get_mut(&id) else {
                rejected.push((id, Rejection::TaskNotFound(id)));
                continue;
            };
            let started = match &task.state {
                TaskState::Assigned { agent, token: t } if agent == agent_id && *t == token => {
                    false
                }
                TaskState::Running { agent, token: t } if agent == agent_id && *t == token => true,
                _ => {
                    rejected.push((
                        id,
                        Rejection::StaleToken {
                            task: id,
                            presented: token,
                            current: task.state.holder().map(|(_, t)| t),
                        },
                    ));
                    continue;
                }
            };
            let Some(agent) = self.agents.get_mut(agent_id) else {
                rejected.push((id, Rejection::AgentNotFound(agent_id.to_string())));
                continue;
            };
            // The devices it held, which its worker may be using now.
            let had = self.placement.task(id).and_then(|e| e.held.clone());
            // Invariant 3: the hold is released before anything else happens.
            release_from(
                agent,
                &mut self.access,
                &mut self.lifecycle,
                &mut self.placement,
                id,
                &task.spec,
            );
            task.updated_ms = ctx.time_ms;
            let v4 = self.cluster_version >= LIFECYCLE_VERSION;
            if v4 {
                self.lifecycle
                    .end(id, token, AttemptEnd::Lost, "its lease lapsed", ctx.time_ms);
            }
            let base = self.lifecycle.task(id).map_or(0, |l| l.budget_base);
            if started && task.attempt.saturating_sub(base) >= task.spec.max_attempts {
                fail_exhausted(task, agent_id, token, "stopped the task (its lease lapsed)");
                if v4 {
                    self.lifecycle.life_mut(id).dead = true;
                }
                refile(&mut self.finished, task, None);
                failed.push(id);
                self.report(id, ctx);
                continue;
            }
            let bound = self.access.agent_tenant(agent_id);
            let fit = if self.cluster_version >= PLACEMENT_VERSION {
                let ask = self.placement.ask(id);
                placement_check::eligible(agent, bound, &task.spec, ask, &self.placement).map(
                    |pick| {
                        // It keeps the devices it had, and so its shape and
                        // what its tenant's quota counts for it.
                        let kept = had.as_ref().and_then(|h| {
                            let p = &self.placement;
                            placement_check::kept_devices(agent, &task.spec, ask, p, h)
                        });
                        kept.or(pick).map(|p| (p, ask.map(|a| a.shapes.clone())))
                    },
                )
            } else {
                eligibility::eligible(agent, bound, &task.spec).map(|()| None)
            };
            if let Ok(pick) = fit {
                // Invariant 1: a new token, this entry's index.
                let token = ctx.log_index;
                let pick = pick.map(|(p, shapes)| {
                    take_shape(&mut task.spec, &p, shapes.as_deref());
                    p
                });
                let gpu_milli = pick_gpu_milli(pick.as_ref(), &task.spec);
                hold(agent, &mut self.access, (task, id), token, gpu_milli);
                if self.cluster_version >= PLACEMENT_VERSION {
                    self.placement.take(&agent.spec, id, token, pick);
                }
                if started {
                    task.attempt = task.attempt.saturating_add(1);
                }
                if v4 {
                    self.lifecycle
                        .begin(id, task.attempt, agent_id, token, ctx.time_ms);
                }
                granted.push(Granted {
                    task: id,
                    agent: agent_id.to_string(),
                    token,
                    attempt: task.attempt,
                });
            } else {
                // The next Assign counts an attempt: give back the one an
                // assignment that never started had counted.
                if !started {
                    task.attempt = task.attempt.saturating_sub(1);
                }
                requeue(
                    &mut self.pending,
                    &mut self.pending_by_tenant,
                    &mut self.access,
                    &mut self.lifecycle,
                    task,
                    id,
                );
                requeued.push(id);
            }
            self.report(id, ctx);
        }
        Response::Regranted {
            granted,
            requeued,
            failed,
            rejected,
        }
    }

    fn assign(&mut self, pairs: Vec<(TaskId, AgentId)>, ctx: ApplyCtx) -> Response {
        let mut granted = Vec::new();
        let mut rejected = Vec::new();
        for (task, agent) in pairs {
            match self.assign_one(task, agent, ctx) {
                Ok(g) => granted.push(g),
                Err(r) => rejected.push((task, r)),
            }
        }
        Response::Assigned { granted, rejected }
    }

    pub(crate) fn assign_one(
        &mut self,
        id: TaskId,
        agent_id: AgentId,
        ctx: ApplyCtx,
    ) -> Result<Granted, Rejection> {
        // Invariant 1: the token is this entry's log index, so it is larger than
        // any token the task had before. Index 0 is not a log entry.
        if ctx.log_index == 0 {
            return Err(Rejection::Invalid(
                "assign needs a log index above 0".to_string(),
            ));
        }
        let v5 = self.placement_on();
        let task = self.tasks.get_mut(&id).ok_or(Rejection::TaskNotFound(id))?;
        if task.state != TaskState::Pending {
            return Err(wrong_state(id, &task.state));
        }
        if let Some(t) = self.lifecycle.task(id).and_then(|l| l.not_before_ms) {
            return Err(Rejection::WrongState {
                task: id,
                state: format!("pending in retry backoff until {t} ms"),
            });
        }
        let agent = self
            .agents
            .get_mut(&agent_id)
            .ok_or_else(|| Rejection::AgentNotFound(agent_id.clone()))?;
        // Invariant 3: the same predicate the planner used, re-checked here
        // against the state this entry actually applies to.
        let bound = self.access.agent_tenant(&agent_id);
        let fit = if v5 {
            let ask = self.placement.ask(id);
            placement_check::eligible(agent, bound, &task.spec, ask, &self.placement)
                .map(|pick| pick.map(|p| (p, ask.map(|a| a.shapes.clone()))))
        } else {
            eligibility::eligible(agent, bound, &task.spec).map(|()| None)
        };
        let pick = match fit {
            Ok(pick) => pick,
            Err(reason) => {
                return Err(Rejection::Ineligible {
                    task: id,
                    agent: agent_id,
                    reason,
                })
            }
        };
        // The tenant's running quotas, for the slots and the weighted GPUs
        // of the devices it takes; the task stays Pending if over.
        let gpu_milli = pick_gpu_milli(pick.as_ref().map(|(p, _)| p), &task.spec);
        self.access.admit_running(&task.spec, gpu_milli)?;
        let pick = pick.map(|(p, shapes)| {
            take_shape(&mut task.spec, &p, shapes.as_deref());
            p
        });
        let token: FencingToken = ctx.log_index;
        unqueue(
            &mut self.pending,
            &mut self.pending_by_tenant,
            &mut self.access,
            &mut self.lifecycle,
            task,
            id,
        );
        hold(agent, &mut self.access, (task, id), token, gpu_milli);
        if v5 {
            self.placement.take(&agent.spec, id, token, pick);
        }
        task.attempt = task.attempt.saturating_add(1);
        task.updated_ms = ctx.time_ms;
        let attempt = task.attempt;
        if self.cluster_version >= LIFECYCLE_VERSION {
            self.lifecycle
                .begin(id, attempt, &agent_id, token, ctx.time_ms);
        }
        self.report(id, ctx);
        Ok(Granted {
            task: id,
            agent: agent_id,
            token,
            attempt,
        })
    }

    fn started(&mut self, id: TaskId, token: FencingToken, ctx: ApplyCtx) -> Response {
        let Some(task) = self.tasks.get_mut(&id) else {
            return Response::Rejected(Rejection::TaskNotFound(id));
        };
        match &task.state {
            TaskState::Assigned {
                agent,
                token: current,
            } if *current == token => {
                task.state = TaskState::Running {
                    agent: agent.clone(),
                    token,
                };
                task.updated_ms = ctx.time_ms;
                if self.cluster_version >= LIFECYCLE_VERSION {
                    self.lifecycle.mark_started(id, token, ctx.time_ms);
                }
                self.report(id, ctx);
                Response::Ok
            }
            // A resent report after a reconnect.
            TaskState::Running { token: current, .. } if *current == token => Response::Ok,
            // Invariant 1: only the current holder may report.
            TaskState::Assigned { token: current, .. }
            | TaskState::Running { token: current, .. } => {
                Response::Rejected(Rejection::StaleToken {
                    task: id,
                    presented: token,
                    current: Some(*current),
                })
            }
            other => Response::Rejected(wrong_state(id, other)),
        }
    }

    fn complete(&mut self, c: Completion, ctx: ApplyCtx) -> Result<(), Rejection> {
        let end = if c.outcome.success {
            AttemptEnd::Succeeded
        } else {
            AttemptEnd::Failed {
                exit_code: c.outcome.exit_code,
            }
        };
        self.complete_as(c, end, ctx)
    }

    /// A completion, with how the attempt ended. From version 4 on a
    /// failed attempt is retried after its backoff while attempts are left
    /// ([`State::retry_or_bury`]); before, a failing exit is the task's
    /// answer.
    pub(crate) fn complete_as(
        &mut self,
        c: Completion,
        end: AttemptEnd,
        ctx: ApplyCtx,
    ) -> Result<(), Rejection> {
        let id = c.task;
        let v4 = self.cluster_version >= LIFECYCLE_VERSION;
        let task = self.tasks.get_mut(&id).ok_or(Rejection::TaskNotFound(id))?;
        match task.state.holder() {
            // Invariant 1: a completion is accepted only with the current token.
            Some((agent, current)) if current == c.token => {
                let agent = agent.clone();
                release(
                    &mut self.agents,
                    &mut self.access,
                    &mut self.lifecycle,
                    &mut self.placement,
                    &agent,
                    id,
                    &task.spec,
                );
                if v4 && !c.outcome.success {
                    task.result = c.outcome.result;
                    task.error = c.outcome.error;
                    task.exit_code = c.outcome.exit_code;
                    self.retry_or_bury(id, Some(agent), current, end, ctx);
                    self.report(id, ctx);
                    return Ok(());
                }
                if v4 {
                    self.lifecycle.end(id, current, end, "", ctx.time_ms);
                    // Done: nothing will resume from its checkpoint.
                    self.lifecycle.drop_checkpoint(id);
                }
                task.state = if c.outcome.success {
                    TaskState::Succeeded {
                        agent,
                        token: current,
                    }
                } else {
                    // No automatic retry: a failing exit code is the task's answer.
                    TaskState::Failed {
                        agent: Some(agent),
                        token: current,
                    }
                };
                task.result = c.outcome.result;
                task.error = c.outcome.error;
                task.exit_code = c.outcome.exit_code;
                task.updated_ms = ctx.time_ms;
                refile(&mut self.finished, task, None);
                self.report(id, ctx);
                Ok(())
            }
            Some((_, current)) => Err(Rejection::StaleToken {
                task: id,
                presented: c.token,
                current: Some(current),
            }),
            None => match &task.state {
                // One completion per attempt is accepted: a second one (a
                // resend after a lost answer, or another outcome) is refused
                // and changes nothing, whatever its token.
                TaskState::Succeeded { .. }
                | TaskState::Failed { .. }
                | TaskState::Cancelled { .. } => Err(Rejection::Finished {
                    task: id,
                    state: task.state.kind().as_str().to_string(),
                }),
                _ => Err(Rejection::StaleToken {
                    task: id,
                    presented: c.token,
                    current: None,
                }),
            },
        }
    }

    pub(crate) fn set_queue(&mut self, name: String, weight: u32, strategy: Strategy) -> Response {
        if name.is_empty() {
            return Response::Rejected(Rejection::Invalid("queue \"\" is empty".to_string()));
        }
        if !(1..=MAX_QUEUE_WEIGHT).contains(&weight) {
            return Response::Rejected(Rejection::Invalid(format!(
                "queue weight {weight} is out of range: use 1..={MAX_QUEUE_WEIGHT}"
            )));
        }
        // A version-1 strategy replaces a version-5 one set before.
        self.placement.queues.remove(&name);
        self.upsert_queue(name, weight, strategy);
        Response::Ok
    }

    fn upsert_queue(&mut self, name: String, weight: u32, strategy: Strategy) {
        self.pending.entry(name.clone()).or_default();
        self.queues.insert(
            name.clone(),
            Queue {
                name,
                weight,
                strategy,
            },
        );
    }

    /// `Expire`: removes each named task that finished at or before
    /// `before_ms`, with its idempotency key and its cross-DC bookkeeping.
    /// What other records keep of its id stays valid: an agent holds only
    /// unfinished tasks; an outbox record, an ingest's dedup entry
    /// (`Inbound::tasks`) or a late status naming it is answered as for a
    /// task that is gone.
    fn expire(&mut self, before_ms: u64, ids: Vec<TaskId>, ctx: ApplyCtx) -> Response {
        if before_ms > ctx.time_ms {
            return Response::Rejected(Rejection::Invalid(format!(
                "expiry cut-off {before_ms} ms is after the entry's time {} ms",
                ctx.time_ms
            )));
        }
        let (mut removed, mut rejected) = (Vec::new(), Vec::new());
        for id in ids {
            let Some(task) = self.tasks.get(&id) else {
                rejected.push((id, Rejection::TaskNotFound(id)));
                continue;
            };
            if !task.state.is_terminal() {
                rejected.push((id, wrong_state(id, &task.state)));
                continue;
            }
            if task.updated_ms > before_ms {
                rejected.push((
                    id,
                    Rejection::Invalid(format!(
                        "task {id} finished at {} ms, after the cut-off {before_ms} ms",
                        task.updated_ms
                    )),
                ));
                continue;
            }
            let task = self.tasks.remove(&id).expect("present: looked up above");
            self.finished.remove(&(task.updated_ms, id));
            if let Some(key) = &task.spec.idempotency_key {
                if self.keys.get(key) == Some(&id) {
                    self.keys.remove(key);
                }
            }
            self.links.origin_of.remove(&id);
            self.links.refused.remove(&id);
            self.links.cancelled.remove(&id);
            self.access.submitted_by.remove(&id);
            self.lifecycle.tasks.remove(&id);
            self.placement.forget(id);
            removed.push(id);
        }
        Response::Expired { removed, rejected }
    }

    // ---- reads ----

    /// Up to `limit` finished tasks that finished at or before `before_ms`,
    /// oldest first: what an `Expire` may remove.
    pub fn finished_before(&self, before_ms: u64, limit: usize) -> Vec<TaskId> {
        self.finished
            .iter()
            .take_while(|(t, _)| *t <= before_ms)
            .take(limit)
            .map(|(_, id)| *id)
            .collect()
    }

    /// How many tasks have finished (and not expired yet).
    pub fn finished_count(&self) -> usize {
        self.finished.len()
    }

    /// Whether `id` was a task here that retention removed: ids are given
    /// out densely from 1 and only `Expire` removes a task, so an id below
    /// the next one that is not here expired; one at or above it never
    /// existed.
    pub fn expired(&self, id: TaskId) -> bool {
        id.0 >= 1 && id.0 < self.next_id && !self.tasks.contains_key(&id)
    }

    pub fn task(&self, id: TaskId) -> Option<&Task> {
        self.tasks.get(&id)
    }

    /// Tasks with ids above `after` (all tasks for `None`), in id order: a
    /// resumable listing.
    pub fn tasks_after(&self, after: Option<TaskId>) -> impl Iterator<Item = &Task> + '_ {
        let lower = match after {
            Some(id) => Bound::Excluded(id),
            None => Bound::Unbounded,
        };
        self.tasks.range((lower, Bound::Unbounded)).map(|(_, t)| t)
    }

    pub fn agent(&self, id: &str) -> Option<&Agent> {
        self.agents.get(id)
    }

    /// Agents in id order.
    pub fn agents(&self) -> impl Iterator<Item = &Agent> + '_ {
        self.agents.values()
    }

    /// Queues in name order.
    pub fn queues(&self) -> impl Iterator<Item = &Queue> + '_ {
        self.queues.values()
    }

    pub fn queue(&self, name: &str) -> Option<&Queue> {
        self.queues.get(name)
    }

    pub fn pending_in_queue(&self, name: &str) -> usize {
        self.pending.get(name).map_or(0, |p| p.len())
    }

    pub fn pending_total(&self) -> usize {
        self.pending.values().map(|p| p.len()).sum()
    }

    /// A queue's Pending tasks in dispatch order (priority class, then age).
    pub fn pending_in_order<'a>(&'a self, queue: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.pending
            .get(queue)
            .into_iter()
            .flatten()
            .filter_map(|(_, id)| self.tasks.get(id))
    }

    /// How many tasks are in each state (every kind present, zero included).
    pub fn counts_by_state(&self) -> BTreeMap<TaskStateKind, u64> {
        let mut counts: BTreeMap<TaskStateKind, u64> =
            TaskStateKind::ALL.iter().map(|k| (*k, 0)).collect();
        for t in self.tasks.values() {
            *counts.entry(t.state.kind()).or_default() += 1;
        }
        counts
    }

    pub fn task_by_key(&self, key: &str) -> Option<TaskId> {
        self.keys.get(key).copied()
    }

    /// The id the next submitted task will get.
    pub fn next_task_id(&self) -> TaskId {
        TaskId(self.next_id)
    }

    /// FNV-1a (64-bit) over the whole state: equal states give equal digests
    /// in any process, so replicas can be compared cheaply.
    pub fn digest(&self) -> u64 {
        let mut h = Fnv64::default();
        self.hash(&mut h);
        h.finish()
    }
}

#[cfg(test)]
#[path = "state_test.rs"]
pub(crate) mod tests;
