//! Cross-DC forwarding in the replicated state (DESIGN.md, Cross-DC forwarding).
//!
//! Each DC keeps, per peer DC, an *outbox*: an ordered log of [`Record`]s
//! numbered by a per-link sequence, from which the leader's shipper sends. The
//! outbox holds exactly the records the peer has not acknowledged, so the
//! committed state is the shipping cursor and a new leader resumes from it.
//! The receiving DC commits `Ingest`, deduplicated by (origin DC, sequence)
//! against a per-origin high-water mark and by (origin DC, origin task id),
//! so delivery is at-least-once on the wire and exactly once in state
//! (invariant 5). The origin then commits `ForwardAck` with the verdicts.
//!
//! Three kinds of record travel: a task handed over ([`Record::Task`]), a
//! cancel of a task handed over earlier ([`Record::Cancel`]), and, the other
//! way, the state changes of an ingested task ([`Record::Status`]), so a
//! client can follow a task from the DC where it submitted it.
//!
//! [`plan_forwards`] is the leader's forwarding policy, a pure function like
//! the dispatcher; [`CapabilitySummary`] is what peers tell each other about
//! the agents they have.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::{ApplyCtx, Rejection, Response};
use crate::dispatch::eligibility;
use crate::model::{
    AgentId, AgentSpec, AgentState, Gpu, RemoteView, TaskId, TaskSpec, TaskState, TaskStateKind,
};
use crate::state::State;

pub mod types;
pub use types::{DcName, Inbound, Links, Outbox, Record, RemoteStatus, Verdict};

/// Agents of one kind that a DC offers, as a peer sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CapabilityGroup {
    pub task_types: BTreeSet<String>,
    pub pipelines: BTreeSet<String>,
    pub models: BTreeSet<String>,
    /// The most GPUs one agent of the group has, and their smallest memory.
    pub max_gpus: u32,
    pub gpu_memory_mb: u64,
    pub agents: u32,
    pub slots: u32,
    pub free_slots: u32,
}

/// What a DC can run: its Ready agents grouped by capabilities.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CapabilitySummary {
    pub groups: Vec<CapabilityGroup>,
}

impl CapabilitySummary {
    /// Summarizes the Ready agents of a state.
    pub fn of(state: &State) -> CapabilitySummary {
        type Key = (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>);
        let mut groups: BTreeMap<Key, CapabilityGroup> = BTreeMap::new();
        for agent in state.agents().filter(|a| a.state == AgentState::Ready) {
            let s = &agent.spec;
            let key = (s.task_types.clone(), s.pipelines.clone(), s.models.clone());
            let g = groups.entry(key).or_insert_with(|| CapabilityGroup {
                task_types: s.task_types.clone(),
                pipelines: s.pipelines.clone(),
                models: s.models.clone(),
                gpu_memory_mb: u64::MAX,
                ..CapabilityGroup::default()
            });
            let gpus = s.gpus.len() as u32;
            if gpus >= g.max_gpus {
                let least = s.gpus.iter().map(|g| g.memory_mb).min().unwrap_or(0);
                g.gpu_memory_mb = if gpus > g.max_gpus {
                    least
                } else {
                    g.gpu_memory_mb.min(least)
                };
                g.max_gpus = gpus;
            }
            g.agents += 1;
            g.slots = g.slots.saturating_add(s.slots);
            g.free_slots = g.free_slots.saturating_add(eligibility::free_slots(agent));
        }
        CapabilitySummary {
            groups: groups
                .into_values()
                .map(|mut g| {
                    if g.max_gpus == 0 {
                        g.gpu_memory_mb = 0;
                    }
                    g
                })
                .collect(),
        }
    }

    /// Whether some agent of the summary could run the task at all.
    pub fn can_run(&self, task: &TaskSpec) -> bool {
        self.groups.iter().any(|g| {
            let spec = AgentSpec {
                task_types: g.task_types.clone(),
                pipelines: g.pipelines.clone(),
                models: g.models.clone(),
                gpus: vec![
                    Gpu {
                        model: String::new(),
                        memory_mb: g.gpu_memory_mb,
                    };
                    g.max_gpus as usize
                ],
                slots: g.slots,
                ..AgentSpec::default()
            };
            eligibility::capable(&spec, task).is_ok()
        })
    }

    pub fn free_slots(&self) -> u32 {
        self.groups
            .iter()
            .fold(0u32, |n, g| n.saturating_add(g.free_slots))
    }
}

/// Whether any registered agent of this DC that is not Down could run the
/// task (ignoring what is free now).
pub fn runs_locally(state: &State, task: &TaskSpec) -> bool {
    state
        .agents()
        .filter(|a| a.state != AgentState::Down)
        .any(|a| eligibility::capable(&a.spec, task).is_ok())
}

/// What decides which agents can run a task (its capability needs).
type Shape<'a> = (&'a str, &'a str, &'a [String], u32, u64);

fn shape(s: &TaskSpec) -> Shape<'_> {
    (
        &s.task_type,
        &s.pipeline,
        &s.models,
        s.gpus,
        s.gpu_memory_mb,
    )
}

/// Whether some Ready agent of this DC could run the task.
fn ready_agent_runs(state: &State, task: &TaskSpec) -> bool {
    state
        .agents()
        .any(|a| a.state == AgentState::Ready && eligibility::capable(&a.spec, task).is_ok())
}

/// Whether a task may leave the DC: not if it asks for placement
/// (constraints, tags and tag rules, GPU shapes or a hash key), which a
/// forwarded record does not carry; it waits for a local agent.
pub fn forwardable(state: &State, id: TaskId) -> bool {
    state.placement().ask(id).is_none_or(|a| a.is_plain())
}

/// A peer as the forwarding policy sees it.
#[derive(Clone, Debug)]
pub struct PeerView {
    pub dc: DcName,
    /// Its last capability summary; `None` until one arrived.
    pub summary: Option<CapabilitySummary>,
    /// Free slots it is believed to have, less what was sent since its summary.
    pub room: u32,
    /// Records its outbox may still take before the configured limit.
    pub outbox_room: usize,
}

/// How many pending tasks of a queue one forwarding round examines, per
/// task it may forward: the round stays cheap with a million pending tasks.
/// The front of a queue (highest priority, oldest) is examined first, which
/// is where `forward_after` matters; tasks no local agent can run deeper
/// than this are seen once the ones ahead of them move.
pub const SCAN_FACTOR: usize = 16;

/// A queue's forwarding settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuePolicy {
    pub allow: bool,
    /// Pending longer than this, a task may go to a peer with room.
    pub forward_after_ms: u64,
}

/// Picks up to `max` pending tasks to hand to peers (in preference order):
/// a task that no local agent can run goes to the first peer that can, one
/// with room first; a task that waited longer than its queue's
/// `forward_after` goes to the first capable peer with room, if any. Ingested
/// tasks are never forwarded again, nor are tasks that ask for placement
/// ([`forwardable`]), and a peer that refused a task is not
/// asked again, nor is a peer whose outbox is full. Reduces each chosen
/// peer's `room` and `outbox_room`.
pub fn plan_forwards(
    state: &State,
    peers: &mut [PeerView],
    policy: impl Fn(&str) -> QueuePolicy,
    now_ms: u64,
    max: usize,
) -> Vec<(TaskId, DcName)> {
    let mut out = Vec::new();
    if peers
        .iter()
        .all(|p| p.summary.is_none() || p.outbox_room == 0)
    {
        return out;
    }
    // Whether a task shape runs here, computed once per shape.
    let mut local: BTreeMap<Shape<'_>, bool> = BTreeMap::new();
    for queue in state.queues() {
        let p = policy(&queue.name);
        if !p.allow {
            continue;
        }
        for task in state
            .pending_in_order(&queue.name)
            .take(max.saturating_mul(SCAN_FACTOR))
        {
            if out.len() >= max {
                return out;
            }
            if state.links.origin_of.contains_key(&task.id) || !forwardable(state, task.id) {
                continue;
            }
            let waited = now_ms.saturating_sub(task.updated_ms) >= p.forward_after_ms;
            let s = &task.spec;
            let here = *local
                .entry(shape(s))
                .or_insert_with(|| runs_locally(state, s));
            if here && !waited {
                continue;
            }
            let refused = state.links.refused.get(&task.id);
            let capable: Vec<usize> = (0..peers.len())
                .filter(|&i| {
                    let p = &peers[i];
                    p.outbox_room > 0
                        && !refused.is_some_and(|r| r.contains(&p.dc))
                        && p.summary.as_ref().is_some_and(|s| s.can_run(&task.spec))
                })
                .collect();
            let with_room = capable
                .iter()
                .copied()
                .find(|&i| peers[i].room >= task.spec.slots);
            let chosen = match with_room {
                Some(i) => Some(i),
                None if !here => capable.first().copied(),
                None => None,
            };
            if let Some(i) = chosen {
                peers[i].room = peers[i].room.saturating_sub(task.spec.slots);
                peers[i].outbox_room -= 1;
                out.push((task.id, peers[i].dc.clone()));
            }
        }
    }
    out
}

impl State {
    /// The outbox towards a peer, if anything was ever sent to it.
    pub fn outbox(&self, peer: &str) -> Option<&Outbox> {
        self.links.outbox.get(peer)
    }

    /// Every peer with an outbox, and the outboxes.
    pub fn outboxes(&self) -> impl Iterator<Item = (&DcName, &Outbox)> + '_ {
        self.links.outbox.iter()
    }

    /// What this DC took from an origin.
    pub fn inbound(&self, origin: &str) -> Option<&Inbound> {
        self.links.inbound.get(origin)
    }

    /// The origin DC and origin id of a task ingested here.
    pub fn origin_of(&self, id: TaskId) -> Option<&(DcName, TaskId)> {
        self.links.origin_of.get(&id)
    }

    /// Up to `max` unacknowledged records for a peer, in order, from `from`.
    pub fn unshipped(&self, peer: &str, from: u64, max: usize) -> Vec<(u64, Record)> {
        self.links
            .outbox
            .get(peer)
            .map(|o| {
                o.records
                    .range(from..)
                    .take(max)
                    .map(|(s, (_, r))| (*s, r.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[path = "forwarding_test.rs"]
mod tests;

// ---- apply ----

impl State {
    /// `Forward`: each task must be Pending here and not ingested from another
    /// DC (a task has one owner; it is never forwarded twice).
    pub(crate) fn forward(
        &mut self,
        id: TaskId,
        dc: DcName,
        ctx: ApplyCtx,
    ) -> Result<u64, Rejection> {
        if dc.is_empty() {
            return Err(Rejection::Invalid(
                "forward to an empty DC name".to_string(),
            ));
        }
        if let Some((origin, _)) = self.links.origin_of.get(&id) {
            return Err(Rejection::Invalid(format!(
                "task {id} came from DC {origin:?} and is not forwarded again"
            )));
        }
        if self.placement.ask(id).is_some_and(|a| !a.is_plain()) {
            // A peer would get the spec without the ask: its constraints,
            // tag rules and GPU shapes would not hold there.
            return Err(Rejection::Invalid(format!(
                "task {id} asks for placement (constraints, tags, GPU shapes or a hash key) and is not forwarded"
            )));
        }
        let task = self.tasks.get_mut(&id).ok_or(Rejection::TaskNotFound(id))?;
        if task.state != TaskState::Pending {
            return Err(Rejection::WrongState {
                task: id,
                state: task.state.kind().as_str().to_string(),
            });
        }
        crate::state::unqueue(
            &mut self.pending,
            &mut self.pending_by_tenant,
            &mut self.access,
            &mut self.lifecycle,
            task,
            id,
        );
        task.state = TaskState::Forwarded {
            dc: dc.clone(),
            remote: None,
        };
        task.updated_ms = ctx.time_ms;
        let record = Record::Task {
            origin_task: id,
            spec: task.spec.clone(),
        };
        Ok(self
            .links
            .outbox
            .entry(dc)
            .or_default()
            .push(ctx.time_ms, record))
    }

    /// `Ingest`: takes records in sequence order; a record at or below the
    /// origin's high-water mark is a duplicate: it changes nothing and is
    /// answered as the first time (accepted with the same id, or refused).
    pub(crate) fn ingest(
        &mut self,
        origin: DcName,
        records: Vec<(u64, Record)>,
        ctx: ApplyCtx,
    ) -> Response {
        let mut verdicts = Vec::with_capacity(records.len());
        let mut cancelled = Vec::new();
        // Which task records a Ready agent here could run, once per shape:
        // ingest changes no agent's state or capabilities, so this holds for
        // the whole entry.
        let runnable: Vec<bool> = {
            let mut memo: BTreeMap<Shape<'_>, bool> = BTreeMap::new();
            records
                .iter()
                .map(|(_, r)| match r {
                    Record::Task { spec, .. } => *memo
                        .entry(shape(spec))
                        .or_insert_with(|| ready_agent_runs(self, spec)),
                    _ => true,
                })
                .collect()
        };
        for ((seq, record), runnable) in records.into_iter().zip(runnable) {
            let hwm = self.links.inbound.get(&origin).map_or(0, |i| i.hwm);
            if seq <= hwm {
                verdicts.push((seq, self.verdict_again(&origin, &record)));
                continue;
            }
            if seq != hwm + 1 {
                // A gap: the origin resends from hwm + 1.
                break;
            }
            let verdict = self.ingest_one(&origin, record, runnable, ctx, &mut cancelled);
            self.links.inbound.entry(origin.clone()).or_default().hwm = seq;
            verdicts.push((seq, verdict));
        }
        let hwm = self.links.inbound.get(&origin).map_or(0, |i| i.hwm);
        Response::Ingested {
            verdicts,
            hwm,
            cancelled,
        }
    }

    fn verdict_again(&self, origin: &str, record: &Record) -> Verdict {
        match record {
            Record::Task { origin_task, .. } => {
                match self
                    .links
                    .inbound
                    .get(origin)
                    .and_then(|i| i.tasks.get(origin_task))
                {
                    Some(local) => Verdict::Accepted {
                        remote_task: Some(*local),
                    },
                    None => Verdict::Rejected {
                        reason: "refused when it first arrived".to_string(),
                    },
                }
            }
            Record::Cancel { .. } | Record::Status(_) => Verdict::Accepted { remote_task: None },
        }
    }

    fn ingest_one(
        &mut self,
        origin: &str,
        record: Record,
        runnable: bool,
        ctx: ApplyCtx,
        cancelled: &mut Vec<(TaskId, AgentId, u64)>,
    ) -> Verdict {
        match record {
            Record::Task {
                origin_task,
                mut spec,
            } => {
                if let Some(local) = self
                    .links
                    .inbound
                    .get(origin)
                    .and_then(|i| i.tasks.get(&origin_task))
                {
                    return Verdict::Accepted {
                        remote_task: Some(*local),
                    };
                }
                if !runnable {
                    return Verdict::Rejected {
                        reason: format!(
                            "no agent here can run task type {:?} with models {:?}",
                            spec.task_type, spec.models
                        ),
                    };
                }
                // Keys are the origin's business; dedup is by origin task id.
                spec.idempotency_key = None;
                if self.queue(&spec.queue).is_none() {
                    spec.queue = crate::state::DEFAULT_QUEUE.to_string();
                }
                match self.submit(spec, ctx) {
                    Ok(s) => {
                        self.links
                            .inbound
                            .entry(origin.to_string())
                            .or_default()
                            .tasks
                            .insert(origin_task, s.id);
                        self.links
                            .origin_of
                            .insert(s.id, (origin.to_string(), origin_task));
                        Verdict::Accepted {
                            remote_task: Some(s.id),
                        }
                    }
                    Err(r) => Verdict::Rejected {
                        reason: r.to_string(),
                    },
                }
            }
            Record::Cancel { origin_task } => {
                let local = self
                    .links
                    .inbound
                    .get(origin)
                    .and_then(|i| i.tasks.get(&origin_task))
                    .copied();
                if let Some(local) = local {
                    // Already ended is fine: the origin learns the end state.
                    if let Response::Cancelled {
                        holder: Some((agent, token)),
                        ..
                    } = self.cancel(local, ctx)
                    {
                        cancelled.push((local, agent, token));
                    }
                }
                Verdict::Accepted { remote_task: None }
            }
            Record::Status(status) => {
                // A status for a task that is not forwarded there (a stale
                // one after a refusal, say) is taken without effect, so a
                // duplicate is answered the same way.
                let Some(task) = self.tasks.get_mut(&status.origin_task) else {
                    return Verdict::Accepted { remote_task: None };
                };
                let before = task.state.is_terminal().then_some(task.updated_ms);
                if let TaskState::Forwarded { dc, remote } = &mut task.state {
                    if dc == origin {
                        *remote = Some(RemoteView {
                            task: status.remote_task,
                            state: status.state,
                            agent: status.agent,
                            attempt: status.attempt,
                        });
                        task.result = status.result;
                        task.error = status.error;
                        task.exit_code = status.exit_code;
                        task.updated_ms = ctx.time_ms;
                        crate::state::refile(&mut self.finished, task, before);
                        if status.state.is_terminal() {
                            self.links.cancelled.remove(&status.origin_task);
                            self.links.refused.remove(&status.origin_task);
                        }
                    }
                }
                Verdict::Accepted { remote_task: None }
            }
        }
    }

    /// `ForwardAck`: records the peer answered leave the outbox; a task it
    /// refused comes back to Pending here (or ends, if it was cancelled while
    /// in flight), and is not offered to that peer again.
    pub(crate) fn forward_ack(
        &mut self,
        peer: DcName,
        verdicts: Vec<(u64, Verdict)>,
        ctx: ApplyCtx,
    ) -> Response {
        for (seq, verdict) in verdicts {
            let Some(outbox) = self.links.outbox.get_mut(&peer) else {
                break;
            };
            // Acked before: a duplicate answer changes nothing.
            let Some((_, record)) = outbox.records.remove(&seq) else {
                continue;
            };
            outbox.acked = outbox.acked.max(seq);
            let Record::Task {
                origin_task: id, ..
            } = record
            else {
                continue;
            };
            let Some(task) = self.tasks.get_mut(&id) else {
                continue;
            };
            if !matches!(&task.state, TaskState::Forwarded { dc, .. } if *dc == peer) {
                continue;
            }
            match verdict {
                Verdict::Accepted {
                    remote_task: Some(remote),
                } => {
                    if let TaskState::Forwarded {
                        remote: view @ None,
                        ..
                    } = &mut task.state
                    {
                        *view = Some(RemoteView {
                            task: remote,
                            state: TaskStateKind::Pending,
                            agent: None,
                            attempt: 0,
                        });
                        task.updated_ms = ctx.time_ms;
                    }
                }
                Verdict::Accepted { remote_task: None } => {}
                Verdict::Rejected { reason } => {
                    let before = task.state.is_terminal().then_some(task.updated_ms);
                    self.links
                        .refused
                        .entry(id)
                        .or_default()
                        .insert(peer.clone());
                    task.updated_ms = ctx.time_ms;
                    if self.links.cancelled.remove(&id) {
                        task.state = TaskState::Cancelled {
                            agent: None,
                            token: 0,
                        };
                        self.links.refused.remove(&id);
                    } else {
                        task.error = format!("DC {peer:?} refused it: {reason}");
                        crate::state::requeue(
                            &mut self.pending,
                            &mut self.pending_by_tenant,
                            &mut self.access,
                            &mut self.lifecycle,
                            task,
                            id,
                        );
                    }
                    crate::state::refile(&mut self.finished, task, before);
                }
            }
        }
        Response::Ok
    }

    /// A cancel of a task owned by another DC: sent there; the end state
    /// comes back as a status.
    pub(crate) fn cancel_forwarded(&mut self, id: TaskId, dc: DcName, ctx: ApplyCtx) -> Response {
        self.links.cancelled.insert(id);
        self.links
            .outbox
            .entry(dc)
            .or_default()
            .push(ctx.time_ms, Record::Cancel { origin_task: id });
        Response::Cancelled {
            task: id,
            holder: None,
        }
    }

    /// After a state change of a task ingested from another DC: appends its
    /// new state to the origin's outbox.
    pub(crate) fn report(&mut self, id: TaskId, ctx: ApplyCtx) {
        let Some((origin, origin_task)) = self.links.origin_of.get(&id) else {
            return;
        };
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        let (agent, _) = task.state.last_holder();
        let status = RemoteStatus {
            origin_task: *origin_task,
            remote_task: id,
            state: task.state.kind(),
            agent: agent.cloned(),
            attempt: task.attempt,
            result: task.result.clone(),
            error: task.error.clone(),
            exit_code: task.exit_code,
        };
        self.links
            .outbox
            .entry(origin.clone())
            .or_default()
            .push(ctx.time_ms, Record::Status(status));
    }
}
