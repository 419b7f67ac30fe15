//! `tidal.v1.Tasks`: submit (group-committed), get, list, cancel, replay, scoped to the caller's tenant when its [`Grant`] names one.

use std::collections::BTreeMap;
use std::sync::Arc;

use tidal_core::access::{tenant_of, SubmitRate};

use tidal_core::command::{spec_bytes, Command, Rejection, Response as CoreResponse};
use tidal_core::lifecycle::{TaskOptions, LIFECYCLE_VERSION};
use tidal_core::limits::validate_task_spec;
use tidal_core::model::{Task, TaskSpec};
use tidal_core::model::{TaskId, TaskStateKind};
use tidal_core::placement::types::{PlaceAsk, PLACEMENT_VERSION};
use tidal_proto::v1::{self, tasks_server::Tasks};
use tonic::{Request, Response, Status};

use super::convert;
use super::convert_placement;
use super::submit_rate::{over_rate, SubmitRates};
use super::task_explain;
use crate::auth::grant::Grant;
use crate::batcher::MAX_ENTRY_BYTES;
use crate::error::{rejection_code, ServerError};
use crate::leader::engine::{Event, Work};
use crate::node::Node;

pub struct TaskService {
    pub node: Arc<Node>,
    /// Tenants' submit-rate buckets, while this node leads.
    pub rates: SubmitRates,
}

/// A spec to submit, who submits it (if the caller was established) and
/// its lifecycle options.
type Item = crate::leader::eager::SubmitItem;

/// Splits items into runs of about `batcher::MAX_ENTRY_BYTES` each (a spec
/// larger than that alone), keeping their order.
fn chunk_by_bytes(items: Vec<Item>) -> Vec<Vec<Item>> {
    let mut chunks = vec![Vec::new()];
    let mut bytes = 0;
    for item in items {
        let size = spec_bytes(&item.0) + tidal_core::command::ask_bytes(&item.3);
        let last = chunks.last_mut().expect("one chunk at least");
        if !last.is_empty() && bytes + size > MAX_ENTRY_BYTES {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        chunks.last_mut().expect("one chunk at least").push(item);
    }
    chunks
}

/// Whether a caller with `grant` (none: a server that checks no
/// credential) may see and act on `task`.
fn sees(grant: Option<&Grant>, task: &Task) -> bool {
    grant.is_none_or(|g| g.covers(tenant_of(&task.spec)))
}

/// A spec's tenant under `grant`: a grant bound to one tenant sets it to
/// that tenant; a spec that names another (non-empty) tenant is refused
/// with the reason. A grant for every tenant keeps the spec's.
fn scope_tenant(grant: &Grant, spec: &mut TaskSpec) -> Result<(), String> {
    let Some(tenant) = &grant.tenant else {
        return Ok(());
    };
    if !spec.tenant.is_empty() && spec.tenant != *tenant {
        return Err(format!(
            "tenant {:?} is not this credential's: {} submits for tenant {tenant:?} only \
             (leave the task's tenant empty or set it to {tenant:?})",
            spec.tenant, grant.principal.id
        ));
    }
    spec.tenant = tenant.clone();
    Ok(())
}

/// The message of a task that does not exist, also given for one the
/// caller may not see.
fn not_found(id: TaskId) -> ServerError {
    ServerError::Rejected(Rejection::TaskNotFound(id))
}

const DEFAULT_LIST_LIMIT: usize = 1_000;
const MAX_LIST_LIMIT: usize = 10_000;
/// The most tasks one Replay call takes (ids given, or dead letters of a
/// queue).
pub const MAX_REPLAY: usize = 1_000;

fn item_error(code: tonic::Code, message: String) -> v1::SubmitResult {
    v1::SubmitResult {
        error: Some(v1::Error {
            code: code as i32,
            message,
        }),
        ..Default::default()
    }
}

impl TaskService {
    /// Tenants' submit rates: of the items in `valid` (whose result slots
    /// are the `None`s of `results`, in order), those past their tenant's
    /// bucket get RESOURCE_EXHAUSTED in their slot; returns the rest.
    fn admit_by_rate(
        &self,
        term: u64,
        valid: Vec<Item>,
        results: &mut [Option<v1::SubmitResult>],
    ) -> Vec<Item> {
        let rates: BTreeMap<String, SubmitRate> = {
            let applied = self.node.state.read();
            let access = applied.state.access();
            if access.tenants().all(|(_, l)| l.submit_rate.is_none()) {
                return valid;
            }
            valid
                .iter()
                .filter_map(|(s, _, _, _)| {
                    let t = tenant_of(s);
                    let rate = access.tenant(t)?.submit_rate?;
                    Some((t.to_string(), rate))
                })
                .collect()
        };
        let mut wanted: BTreeMap<&str, u64> = BTreeMap::new();
        for (s, _, _, _) in &valid {
            if rates.contains_key(tenant_of(s)) {
                *wanted.entry(tenant_of(s)).or_default() += 1;
            }
        }
        let mut granted: BTreeMap<String, (u64, Option<u64>)> = wanted
            .into_iter()
            .map(|(t, n)| (t.to_string(), self.rates.take(term, t, n, rates[t])))
            .collect();
        let mut admitted = Vec::with_capacity(valid.len());
        let mut slots = results.iter_mut().filter(|r| r.is_none());
        for item in valid {
            let slot = slots.next().expect("one empty slot per valid item");
            let tenant = tenant_of(&item.0);
            match granted.get_mut(tenant) {
                Some((left, _)) if *left > 0 => {
                    *left -= 1;
                    admitted.push(item);
                }
                Some((_, retry)) => {
                    *slot = Some(item_error(
                        tonic::Code::ResourceExhausted,
                        over_rate(tenant, rates[tenant], retry.unwrap_or(1)),
                    ));
                }
                None => admitted.push(item),
            }
        }
        admitted
    }

    /// Items with lifecycle options other than the defaults need cluster
    /// format version 4, items with placement fields version 5: below it
    /// they get FAILED_PRECONDITION in their slot (the `None`s of
    /// `results`, in order). A new cluster raises its version right after
    /// it starts: this waits for that as a proposal would. Returns the rest.
    async fn admit_by_version(
        &self,
        valid: Vec<Item>,
        results: &mut [Option<v1::SubmitResult>],
    ) -> Vec<Item> {
        let needed = |(_, _, o, a): &Item| {
            if !a.is_plain() {
                PLACEMENT_VERSION
            } else if *o != TaskOptions::default() {
                LIFECYCLE_VERSION
            } else {
                0
            }
        };
        let most = valid.iter().map(needed).max().unwrap_or(0);
        if most == 0 || self.node.state.read().state.cluster_version() >= most {
            return valid;
        }
        let probe = if most >= PLACEMENT_VERSION {
            Command::SetGpuWeights(Default::default())
        } else {
            Command::Replay(Vec::new())
        };
        // Its refusal is answered per item below.
        let _ = self.node.await_format_version(&probe).await;
        let version = self.node.state.read().state.cluster_version();
        let mut admitted = Vec::with_capacity(valid.len());
        let mut slots = results.iter_mut().filter(|r| r.is_none());
        for item in valid {
            let slot = slots.next().expect("one empty slot per valid item");
            let checked = if !item.3.is_plain() && version < PLACEMENT_VERSION {
                Err(convert_placement::needs_version(version))
            } else {
                convert::check_options_version(&item.2, version)
            };
            match checked {
                Ok(()) => admitted.push(item),
                Err(e) => *slot = Some(item_error(e.code(), e.to_string())),
            }
        }
        admitted
    }

    /// A rejected item's result. A key conflict with a task the caller may
    /// not see does not name that task.
    fn rejected_item(&self, grant: Option<&Grant>, r: Rejection) -> v1::SubmitResult {
        if let Rejection::KeyConflict { key, existing } = &r {
            let hidden = {
                let applied = self.node.state.read();
                applied
                    .state
                    .task(*existing)
                    .is_some_and(|t| !sees(grant, t))
            };
            if hidden {
                return item_error(
                    rejection_code(&r),
                    format!(
                        "idempotency key {key:?} is already used by another task: use a new key"
                    ),
                );
            }
        }
        item_error(rejection_code(&r), r.to_string())
    }

    /// NOT_FOUND for a task that retention removed.
    fn expired(&self, id: TaskId) -> ServerError {
        ServerError::NotFound(format!(
            "task {id} expired: finished tasks are removed {} ms after they finish \
             (--retain-finished-ms)",
            self.node.config.retain_finished.as_millis()
        ))
    }

    /// Serves a read at a linearizable point unless the caller accepts stale state.
    async fn read_index(&self, stale: bool) -> Result<u64, ServerError> {
        if stale {
            Ok(self.node.applied_index())
        } else {
            self.node.linearizable().await
        }
    }
}

#[tonic::async_trait]
impl Tasks for TaskService {
    #[tracing::instrument(skip_all, fields(node_id = self.node.id))]
    async fn submit(
        &self,
        request: Request<v1::SubmitRequest>,
    ) -> Result<Response<v1::SubmitResponse>, Status> {
        let grant = request.extensions().get::<Grant>().cloned();
        let specs = request.into_inner().tasks;
        let limits = &self.node.config.limits;
        if specs.is_empty() {
            return Err(ServerError::InvalidArgument("submit carries no tasks".into()).into());
        }
        if specs.len() > limits.max_batch {
            return Err(ServerError::ResourceExhausted(format!(
                "submit carries {} tasks, over the batch limit of {}",
                specs.len(),
                limits.max_batch
            ))
            .into());
        }
        // Items that fail validation are answered here and never proposed.
        let mut results: Vec<Option<v1::SubmitResult>> = Vec::with_capacity(specs.len());
        let mut valid = Vec::with_capacity(specs.len());
        for spec in specs {
            let opts = match convert::options_from(&spec) {
                Ok(opts) => opts,
                Err(e) => {
                    results.push(Some(item_error(e.code(), e.to_string())));
                    continue;
                }
            };
            let ask = if convert_placement::has_placement(&spec) {
                let ask = convert_placement::ask_from(&spec).and_then(|ask| {
                    convert_placement::shapes_within(&ask, limits.max_slots).map(|()| ask)
                });
                match ask {
                    Ok(ask) => ask,
                    Err(e) => {
                        results.push(Some(item_error(e.code(), e.to_string())));
                        continue;
                    }
                }
            } else {
                PlaceAsk::default()
            };
            let mut spec = match convert::spec_from(spec) {
                Ok(spec) => spec,
                Err(e) => {
                    results.push(Some(item_error(e.code(), e.to_string())));
                    continue;
                }
            };
            // The tenant comes from the credential, not from the body.
            if let Some(Err(denied)) = grant.as_ref().map(|g| scope_tenant(g, &mut spec)) {
                results.push(Some(item_error(tonic::Code::PermissionDenied, denied)));
                continue;
            }
            // Apply fills in the same defaults; planning (leader/eager) reads them.
            tidal_core::state::normalize(&mut spec);
            // A task with GPU shapes reads as its first shape's GPUs until an
            // assignment takes one (as apply sets them).
            if let Some(first) = ask.shapes.first() {
                spec.gpus = first.count;
                spec.gpu_memory_mb = first.min_memory_mb;
            }
            match validate_task_spec(&spec, limits) {
                Ok(()) => {
                    results.push(None);
                    valid.push((spec, grant.as_ref().map(|g| g.principal.clone()), opts, ask));
                }
                Err(r) => results.push(Some(item_error(rejection_code(&r), r.to_string()))),
            }
        }
        let leadership = if valid.is_empty() {
            None
        } else {
            Some(self.node.await_leader().await?)
        };
        if leadership.is_some() {
            valid = self.admit_by_version(valid, &mut results).await;
        }
        if let Some(l) = &leadership {
            valid = self.admit_by_rate(l.term, valid, &mut results);
        }
        if let (false, Some(leadership)) = (valid.is_empty(), leadership) {
            // A request over about a megabyte becomes several entries (see
            // batcher::MAX_ENTRY_BYTES), committed concurrently, in order.
            let chunks = chunk_by_bytes(valid);
            let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
            let committing =
                futures::future::join_all(chunks.into_iter().map(|c| self.node.submits.call(c)));
            // A leader that steps down (check-quorum, a higher vote) may
            // never learn whether its entries commit: answer at once, so
            // the client retries elsewhere with the same idempotency keys.
            let committed = tokio::select! {
                c = committing => c,
                _ = leadership.ended() => {
                    return Err(ServerError::Unavailable(
                        "this server stopped leading before the submit committed; it may or may not \
                         have been applied: retry with the same idempotency keys".into(),
                    )
                    .into())
                }
            };
            if committed.iter().all(|c| c.is_err()) {
                if let Some(Err(e)) = committed.into_iter().next() {
                    return Err(e.into());
                }
                return Err(ServerError::Internal("an empty submit".into()).into());
            }
            let mut outcomes = Vec::new();
            for (size, c) in sizes.into_iter().zip(committed) {
                match c {
                    Ok((items, index)) => {
                        outcomes.extend(items.into_iter().map(|o| Ok((o, index))))
                    }
                    // Part of the request committed: the rest is answered
                    // item by item, so nothing accepted goes unreported.
                    Err(e) => outcomes.extend((0..size).map(|_| Err((e.code(), e.to_string())))),
                }
            }
            let mut outcomes = outcomes.into_iter();
            for slot in results.iter_mut().filter(|r| r.is_none()) {
                *slot = Some(match outcomes.next() {
                    Some(Ok((Ok(s), index))) => v1::SubmitResult {
                        id: s.id.to_string(),
                        existed: s.existed,
                        log_index: index,
                        error: None,
                    },
                    Some(Ok((Err(r), _))) => self.rejected_item(grant.as_ref(), r),
                    Some(Err((code, message))) => item_error(code, message),
                    None => item_error(tonic::Code::Internal, "no result for this item".into()),
                });
            }
            if let Some(l) = self.node.leadership() {
                l.notify(Event::Work(Work::Submitted));
            }
        }
        Ok(Response::new(v1::SubmitResponse {
            results: results.into_iter().flatten().collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(node_id = self.node.id))]
    async fn get(
        &self,
        request: Request<v1::GetTaskRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        let grant = request.extensions().get::<Grant>().cloned();
        let req = request.into_inner();
        let id = convert::task_id(&req.id)?;
        let index = self.read_index(req.stale).await?;
        let applied = self.node.state.read();
        let Some(task) = applied.state.task(id) else {
            if applied.state.expired(id) {
                return Err(self.expired(id).into());
            }
            return Err(not_found(id).into());
        };
        if !sees(grant.as_ref(), task) {
            return Err(not_found(id).into());
        }
        let mut out = convert::task_to(&applied.state, task, true, index);
        if !req.stale {
            let view = self.node.leadership().map(|l| l.view());
            let leader = view.as_ref().map(|v| (v, &self.node.config));
            out.waiting = task_explain::waiting(&applied.state, task, leader);
        }
        Ok(Response::new(out))
    }

    #[tracing::instrument(skip_all, fields(node_id = self.node.id))]
    async fn list(
        &self,
        request: Request<v1::ListTasksRequest>,
    ) -> Result<Response<v1::ListTasksResponse>, Status> {
        let grant = request.extensions().get::<Grant>().cloned();
        let req = request.into_inner();
        let limit = match req.limit as usize {
            0 => DEFAULT_LIST_LIMIT,
            n if n > MAX_LIST_LIMIT => {
                return Err(ServerError::InvalidArgument(format!(
                    "limit {n} is over the maximum of {MAX_LIST_LIMIT}"
                ))
                .into())
            }
            n => n,
        };
        let after = if req.after_id.is_empty() {
            None
        } else {
            Some(convert::task_id(&req.after_id)?)
        };
        let state_filter = convert::state_kind_from(req.state)?;
        if req.dead && state_filter.is_some_and(|k| k != TaskStateKind::Failed) {
            return Err(ServerError::InvalidArgument(
                "dead letters are failed tasks: a dead listing takes no other state".into(),
            )
            .into());
        }
        let index = self.read_index(req.stale).await?;
        let applied = self.node.state.read();
        let mut tasks = Vec::new();
        let mut last: Option<TaskId> = None;
        let mut more = false;
        let listed: Box<dyn Iterator<Item = &Task>> = if req.dead {
            let state = &applied.state;
            Box::new(
                state
                    .lifecycle()
                    .dead_after(after)
                    .filter_map(|id| state.task(id)),
            )
        } else {
            Box::new(applied.state.tasks_after(after))
        };
        for t in listed {
            if state_filter.is_some_and(|k| convert::effective_kind(t) != k) {
                continue;
            }
            if !req.queue.is_empty() && t.spec.queue != req.queue {
                continue;
            }
            if !sees(grant.as_ref(), t) {
                continue;
            }
            if tasks.len() == limit {
                more = true;
                break;
            }
            last = Some(t.id);
            tasks.push(convert::task_to(&applied.state, t, false, index));
        }
        let next_after_id = if more {
            last.map(|l| l.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(v1::ListTasksResponse {
            tasks,
            next_after_id,
        }))
    }

    #[tracing::instrument(skip_all, fields(node_id = self.node.id))]
    async fn cancel(
        &self,
        request: Request<v1::CancelTaskRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        let grant = request.extensions().get::<Grant>().cloned();
        let id = convert::task_id(&request.into_inner().id)?;
        if grant.as_ref().is_some_and(|g| g.tenant.is_some()) {
            // Decided on the leader's state as of now: a task this caller
            // may not see, or one it cannot know of yet (its submit has not
            // applied), is never proposed for cancelling. A task keeps its
            // tenant for life, so the answer holds at the commit.
            self.node.linearizable().await?;
            let applied = self.node.state.read();
            match applied.state.task(id) {
                Some(t) if sees(grant.as_ref(), t) => {}
                Some(_) => return Err(not_found(id).into()),
                None if applied.state.expired(id) => return Err(self.expired(id).into()),
                None => return Err(not_found(id).into()),
            }
        }
        let (resp, index) = self.node.propose(Command::Cancel { task: id }).await?;
        match resp {
            CoreResponse::Cancelled { holder, .. } => {
                if let (Some((agent, token)), Some(l)) = (holder, self.node.leadership()) {
                    l.notify(Event::Cancelled {
                        agent,
                        task: id,
                        token,
                        reason: "cancelled by a user".into(),
                    });
                    l.notify(Event::Work(Work::Freed));
                }
            }
            CoreResponse::Rejected(Rejection::TaskNotFound(t))
                if self.node.state.read().state.expired(t) =>
            {
                return Err(self.expired(t).into())
            }
            CoreResponse::Rejected(r) => return Err(ServerError::Rejected(r).into()),
            other => {
                return Err(ServerError::Internal(format!("unexpected response {other:?}")).into())
            }
        }
        let applied = self.node.state.read();
        let task = applied.state.task(id).ok_or_else(|| not_found(id))?;
        Ok(Response::new(convert::task_to(
            &applied.state,
            task,
            false,
            index,
        )))
    }

    #[tracing::instrument(skip_all, fields(node_id = self.node.id))]
    async fn replay(
        &self,
        request: Request<v1::ReplayRequest>,
    ) -> Result<Response<v1::ReplayResponse>, Status> {
        let grant = request.extensions().get::<Grant>().cloned();
        Ok(Response::new(
            self.replay_tasks(grant, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(node_id = self.node.id))]
    async fn explain(
        &self,
        request: Request<v1::ExplainRequest>,
    ) -> Result<Response<v1::TaskExplanation>, Status> {
        let grant = request.extensions().get::<Grant>().cloned();
        let req = request.into_inner();
        let id = convert::task_id(&req.id)?;
        self.read_index(req.stale).await?;
        // The leader's memory only at a linearizable read (this node leads).
        let leadership = if req.stale {
            None
        } else {
            self.node.leadership()
        };
        let view = leadership.map(|l| l.view());
        let applied = self.node.state.read();
        let Some(task) = applied.state.task(id) else {
            if applied.state.expired(id) {
                return Err(self.expired(id).into());
            }
            return Err(not_found(id).into());
        };
        if !sees(grant.as_ref(), task) {
            return Err(not_found(id).into());
        }
        let leader = view.as_ref().map(|v| (v, &self.node.config));
        Ok(Response::new(task_explain::explanation(
            &applied.state,
            task,
            leader,
            crate::clock::now_ms(),
        )))
    }
}

impl TaskService {
    /// The ids a Replay names: the given ones (visibility is checked
    /// against the leader's state), or a queue's dead letters that finished
    /// at or after `since_ms` and that the caller may see, at most
    /// [`MAX_REPLAY`] (and whether more matched). Items refused here get
    /// their result in `results` at their position; the ids to propose are
    /// returned with their position.
    fn replay_ids(
        &self,
        grant: Option<&Grant>,
        req: &v1::ReplayRequest,
        results: &mut Vec<Option<v1::SubmitResult>>,
    ) -> Result<(Vec<(usize, TaskId)>, bool), ServerError> {
        let applied = self.node.state.read();
        let state = &applied.state;
        if req.dead {
            if state.queue(&req.queue).is_none() {
                return Err(ServerError::NotFound(format!(
                    "queue {:?} does not exist (`tidal queue list` lists them)",
                    req.queue
                )));
            }
            let mut ids = Vec::new();
            let mut more = false;
            for id in state.lifecycle().dead_after(None) {
                let Some(t) = state.task(id) else { continue };
                if t.spec.queue != req.queue || t.updated_ms < req.since_ms || !sees(grant, t) {
                    continue;
                }
                if ids.len() == MAX_REPLAY {
                    more = true;
                    break;
                }
                results.push(None);
                ids.push((ids.len(), id));
            }
            return Ok((ids, more));
        }
        let mut ids = Vec::with_capacity(req.ids.len());
        for (i, raw) in req.ids.iter().enumerate() {
            let id = convert::task_id(raw)?;
            let refused = match state.task(id) {
                Some(t) if sees(grant, t) => None,
                Some(_) => Some(not_found(id)),
                None if state.expired(id) => Some(self.expired(id)),
                None => Some(not_found(id)),
            };
            match refused {
                Some(e) => results.push(Some(v1::SubmitResult {
                    id: raw.clone(),
                    ..item_error(e.code(), e.to_string())
                })),
                None => {
                    results.push(None);
                    ids.push((i, id));
                }
            }
        }
        Ok((ids, false))
    }

    /// `tidal.v1.Tasks/Replay` (proto: limits and codes).
    pub async fn replay_tasks(
        &self,
        grant: Option<Grant>,
        req: v1::ReplayRequest,
    ) -> Result<v1::ReplayResponse, ServerError> {
        match (req.ids.is_empty(), req.dead) {
            (true, false) => {
                return Err(ServerError::InvalidArgument(
                    "replay names no task: give ids, or dead with a queue".into(),
                ))
            }
            (false, true) => {
                return Err(ServerError::InvalidArgument(
                    "replay takes ids or dead with a queue, not both".into(),
                ))
            }
            _ => {}
        }
        if req.dead && req.queue.is_empty() {
            return Err(ServerError::InvalidArgument(
                "replay of dead letters needs the queue they are in".into(),
            ));
        }
        if !req.dead && req.since_ms != 0 {
            return Err(ServerError::InvalidArgument(
                "since_ms applies to a replay of dead letters (dead with a queue) only".into(),
            ));
        }
        if req.ids.len() > MAX_REPLAY {
            return Err(ServerError::InvalidArgument(format!(
                "replay names {} tasks, over the limit of {MAX_REPLAY} per call",
                req.ids.len()
            )));
        }
        for raw in &req.ids {
            convert::task_id(raw)?;
        }
        // FAILED_PRECONDITION below version 4 (a new cluster that is about
        // to raise it is waited for).
        self.node
            .await_format_version(&Command::Replay(Vec::new()))
            .await?;
        // Read on the leader's state as of now, as for a cancel: a task
        // keeps its tenant for life, so what the caller may see holds at
        // the commit.
        self.node.linearizable().await?;
        let mut results: Vec<Option<v1::SubmitResult>> = Vec::new();
        let (ids, more) = self.replay_ids(grant.as_ref(), &req, &mut results)?;
        if !ids.is_empty() {
            let (resp, index) = self
                .node
                .propose(Command::Replay(ids.iter().map(|(_, id)| *id).collect()))
                .await?;
            let items = match resp {
                CoreResponse::Items(items) if items.len() == ids.len() => items,
                CoreResponse::Rejected(r) => return Err(ServerError::Rejected(r)),
                other => {
                    return Err(ServerError::Internal(format!(
                        "unexpected response {other:?}"
                    )))
                }
            };
            let mut replayed = false;
            let mut slots = results.iter_mut().filter(|r| r.is_none());
            for ((_, id), item) in ids.iter().zip(items) {
                let slot = slots.next().expect("one empty slot per proposed id");
                *slot = Some(match item {
                    Ok(()) => {
                        replayed = true;
                        v1::SubmitResult {
                            id: id.to_string(),
                            log_index: index,
                            ..Default::default()
                        }
                    }
                    Err(r) => v1::SubmitResult {
                        id: id.to_string(),
                        ..item_error(rejection_code(&r), r.to_string())
                    },
                });
            }
            if let (true, Some(l)) = (replayed, self.node.leadership()) {
                l.notify(Event::Work(Work::Submitted));
            }
        }
        Ok(v1::ReplayResponse {
            results: results.into_iter().flatten().collect(),
            more,
        })
    }
}

#[cfg(test)]
#[path = "task_service_test.rs"]
mod tests;
