//! Conversions between the public API's messages and tidal-core's domain types.

use tidal_core::lifecycle::{
    AttemptEnd, Headroom, Notice, OnDeadline, TaskLife, TaskOptions, LIFECYCLE_VERSION,
};
use tidal_core::model::{
    Agent, AgentSpec, AgentState, Gpu, Priority, Queue, Task, TaskId, TaskSpec, TaskState,
    TaskStateKind,
};
use tidal_core::State;
use tidal_proto::v1;

use super::convert_placement;
use crate::error::ServerError;
use crate::leader::engine::ToAgent;

pub fn task_id(s: &str) -> Result<TaskId, ServerError> {
    s.parse().map_err(ServerError::InvalidArgument)
}

/// A priority from the API: unspecified is nearline; a value outside the
/// enum is refused, naming the field.
pub fn priority_from(p: i32) -> Result<Priority, ServerError> {
    match v1::Priority::try_from(p) {
        Ok(v1::Priority::Online) => Ok(Priority::Online),
        Ok(v1::Priority::Offline) => Ok(Priority::Offline),
        Ok(v1::Priority::Nearline | v1::Priority::Unspecified) => Ok(Priority::Nearline),
        Err(_) => Err(out_of_range(
            "priority",
            p,
            "0 (unspecified), 1 (online), 2 (nearline) or 3 (offline)",
        )),
    }
}

/// The INVALID_ARGUMENT for an enum field whose value the API does not define.
fn out_of_range(field: &str, value: i32, valid: &str) -> ServerError {
    ServerError::InvalidArgument(format!("{field} {value} is not a valid value: use {valid}"))
}

pub fn priority_to(p: Priority) -> v1::Priority {
    match p {
        Priority::Online => v1::Priority::Online,
        Priority::Nearline => v1::Priority::Nearline,
        Priority::Offline => v1::Priority::Offline,
    }
}

pub fn spec_from(s: v1::TaskSpec) -> Result<TaskSpec, ServerError> {
    Ok(TaskSpec {
        task_type: s.task_type,
        pipeline: s.pipeline,
        models: s.models,
        queue: s.queue,
        idempotency_key: Some(s.idempotency_key).filter(|k| !k.is_empty()),
        payload: s.payload,
        max_attempts: s.max_attempts,
        priority: priority_from(s.priority)?,
        slots: s.slots,
        gpus: s.gpus,
        gpu_memory_mb: s.gpu_memory_mb,
        tenant: s.tenant,
    })
}

/// A task's lifecycle options from its wire spec (README: Task
/// lifecycle): an enum value outside the API is refused naming the field,
/// and the options are checked ([`tidal_core::lifecycle::validate_options`]).
pub fn options_from(s: &v1::TaskSpec) -> Result<TaskOptions, ServerError> {
    let on_deadline = match v1::OnDeadline::try_from(s.on_deadline) {
        Ok(v1::OnDeadline::Unspecified | v1::OnDeadline::Report) => OnDeadline::Report,
        Ok(v1::OnDeadline::Fail) => OnDeadline::Fail,
        Err(_) => {
            return Err(out_of_range(
                "on_deadline",
                s.on_deadline,
                "0 (unspecified), 1 (report) or 2 (fail)",
            ))
        }
    };
    let notice = match v1::PreemptNotice::try_from(s.preempt_notice) {
        Ok(v1::PreemptNotice::Unspecified | v1::PreemptNotice::Signal) => Notice::Signal,
        Ok(v1::PreemptNotice::File) => Notice::File,
        Err(_) => {
            return Err(out_of_range(
                "preempt_notice",
                s.preempt_notice,
                "0 (unspecified), 1 (signal) or 2 (file)",
            ))
        }
    };
    let opts = TaskOptions {
        deadline_ms: Some(s.deadline_ms).filter(|d| *d != 0),
        on_deadline,
        max_run_ms: Some(s.max_run_ms).filter(|m| *m != 0),
        backoff_base_ms: s.retry_backoff_base_ms,
        backoff_max_ms: s.retry_backoff_max_ms,
        preemptible: s.preemptible.unwrap_or(true),
        suspendable: s.suspendable,
        notice,
        preempt_grace_ms: s.preempt_grace_ms,
    };
    tidal_core::lifecycle::validate_options(&opts).map_err(ServerError::InvalidArgument)?;
    Ok(opts)
}

/// Options other than the defaults need cluster format version 4; below
/// it they are refused (FAILED_PRECONDITION) rather than dropped.
pub fn check_options_version(opts: &TaskOptions, version: u8) -> Result<(), ServerError> {
    if version >= LIFECYCLE_VERSION || *opts == TaskOptions::default() {
        return Ok(());
    }
    Err(ServerError::FailedPrecondition(format!(
        "deadline, on-deadline, max-run, retry backoff and preemption options need cluster \
         format version {LIFECYCLE_VERSION}; the cluster is at version {version} (README: \
         Rolling upgrade)"
    )))
}

/// Writes a task's options into its wire spec.
pub fn options_into(o: &TaskOptions, s: &mut v1::TaskSpec) {
    s.deadline_ms = o.deadline_ms.unwrap_or(0);
    s.on_deadline = match o.on_deadline {
        OnDeadline::Report => v1::OnDeadline::Report,
        OnDeadline::Fail => v1::OnDeadline::Fail,
    } as i32;
    s.max_run_ms = o.max_run_ms.unwrap_or(0);
    s.retry_backoff_base_ms = o.backoff_base_ms;
    s.retry_backoff_max_ms = o.backoff_max_ms;
    s.preemptible = Some(o.preemptible);
    s.suspendable = o.suspendable;
    s.preempt_notice = notice_to(o.notice) as i32;
    s.preempt_grace_ms = o.preempt_grace_ms;
}

/// Fills a wire task's lifecycle fields from what the state keeps of it.
fn life_into(t: &Task, life: Option<&TaskLife>, out: &mut v1::Task) {
    let base = life.map_or(0, |l| l.budget_base);
    out.attempts_left = t
        .spec
        .max_attempts
        .saturating_sub(t.attempt.saturating_sub(base));
    let Some(l) = life else {
        return;
    };
    if let Some(spec) = out.spec.as_mut() {
        options_into(&l.opts, spec);
    }
    out.attempts = l
        .attempts
        .iter()
        .map(|a| v1::Attempt {
            attempt: a.attempt,
            agent: a.agent.clone(),
            token: a.token,
            assigned_ms: a.assigned_ms,
            started_ms: a.started_ms.unwrap_or(0),
            ended_ms: a.ended_ms.unwrap_or(0),
            end: a.end.as_ref().map_or("", AttemptEnd::as_str).to_string(),
            error: a.error.clone(),
            exit_code: match a.end {
                Some(AttemptEnd::Failed { exit_code }) => exit_code,
                _ => 0,
            },
        })
        .collect();
    out.preempted = l.preempted;
    out.not_before_ms = l.not_before_ms.unwrap_or(0);
    out.dead = l.dead;
    out.deadline_missed = l.deadline_missed;
    out.suspended = l.suspended.is_some();
    out.suspended_by = l
        .suspended
        .as_ref()
        .map(|s| s.by.to_string())
        .unwrap_or_default();
    if let Some(c) = &l.checkpoint {
        out.checkpoint_ms = c.at_ms;
        out.checkpoint_bytes = c.data.len() as u64;
    }
}

/// The headroom set per class, for the API.
pub fn headroom_to(state: &State) -> Vec<v1::Headroom> {
    state
        .lifecycle()
        .headrooms()
        .map(|(class, h): (Priority, Headroom)| v1::Headroom {
            class: priority_to(class) as i32,
            slots: h.slots,
            gpus: h.gpus,
        })
        .collect()
}

pub fn spec_to(s: &TaskSpec, with_payload: bool) -> v1::TaskSpec {
    v1::TaskSpec {
        task_type: s.task_type.clone(),
        pipeline: s.pipeline.clone(),
        models: s.models.clone(),
        queue: s.queue.clone(),
        idempotency_key: s.idempotency_key.clone().unwrap_or_default(),
        payload: if with_payload {
            s.payload.clone()
        } else {
            Vec::new()
        },
        max_attempts: s.max_attempts,
        priority: priority_to(s.priority) as i32,
        slots: s.slots,
        gpus: s.gpus,
        gpu_memory_mb: s.gpu_memory_mb,
        tenant: s.tenant.clone(),
        // The lifecycle options live apart from the spec ([`options_into`]).
        ..Default::default()
    }
}

pub fn state_kind_to(k: TaskStateKind) -> v1::TaskState {
    match k {
        TaskStateKind::Pending => v1::TaskState::Pending,
        TaskStateKind::Assigned => v1::TaskState::Assigned,
        TaskStateKind::Running => v1::TaskState::Running,
        TaskStateKind::Succeeded => v1::TaskState::Succeeded,
        TaskStateKind::Failed => v1::TaskState::Failed,
        TaskStateKind::Cancelled => v1::TaskState::Cancelled,
        TaskStateKind::Forwarded => v1::TaskState::Forwarded,
    }
}

/// A state filter from the API: unspecified is no filter; a value outside
/// the enum is refused, naming the field.
pub fn state_kind_from(s: i32) -> Result<Option<TaskStateKind>, ServerError> {
    let state = v1::TaskState::try_from(s).map_err(|_| {
        out_of_range(
            "state",
            s,
            "0 (any) or 1..=7 (pending, assigned, running, succeeded, failed, cancelled, forwarded)",
        )
    })?;
    Ok(match state {
        v1::TaskState::Unspecified => None,
        v1::TaskState::Pending => Some(TaskStateKind::Pending),
        v1::TaskState::Assigned => Some(TaskStateKind::Assigned),
        v1::TaskState::Running => Some(TaskStateKind::Running),
        v1::TaskState::Succeeded => Some(TaskStateKind::Succeeded),
        v1::TaskState::Failed => Some(TaskStateKind::Failed),
        v1::TaskState::Cancelled => Some(TaskStateKind::Cancelled),
        v1::TaskState::Forwarded => Some(TaskStateKind::Forwarded),
    })
}

/// The state a client sees: a forwarded task shows what the DC that runs it
/// reported last (FORWARDED until it reported).
pub fn effective_kind(t: &Task) -> TaskStateKind {
    match &t.state {
        TaskState::Forwarded {
            remote: Some(r), ..
        } => r.state,
        other => other.kind(),
    }
}

/// A task for the API; `state` is the state it lives in, for its origin.
pub fn task_to(state: &State, t: &Task, with_payload: bool, read_index: u64) -> v1::Task {
    let (agent, token) = t.state.last_holder();
    let mut agent = agent.cloned().unwrap_or_default();
    let mut attempt = t.attempt;
    let (mut forwarded_to, mut remote_id) = (String::new(), String::new());
    if let TaskState::Forwarded { dc, remote } = &t.state {
        forwarded_to = dc.clone();
        if let Some(r) = remote {
            remote_id = r.task.to_string();
            agent = r.agent.clone().unwrap_or_default();
            attempt = r.attempt;
        }
    }
    let (origin_dc, origin_id) = state
        .origin_of(t.id)
        .map(|(dc, id)| (dc.clone(), id.to_string()))
        .unwrap_or_default();
    let mut out = v1::Task {
        id: t.id.to_string(),
        spec: Some(spec_to(&t.spec, with_payload)),
        state: state_kind_to(effective_kind(t)) as i32,
        agent,
        token,
        attempt,
        forwarded_to,
        remote_id,
        origin_dc,
        origin_id,
        result: t.result.clone(),
        error: t.error.clone(),
        exit_code: t.exit_code,
        created_ms: t.created_ms,
        updated_ms: t.updated_ms,
        payload_bytes: t.spec.payload.len() as u64,
        read_index,
        submitted_by: state.access().submitted_by(t.id).map(|p| v1::UserInfo {
            id: p.id.clone(),
            role: p.role.as_str().to_string(),
        }),
        ..Default::default()
    };
    life_into(t, state.lifecycle().task(t.id), &mut out);
    if let Some(place) = state.placement().task(t.id) {
        if let Some(spec) = out.spec.as_mut() {
            convert_placement::ask_into(&place.ask, spec);
        }
        out.gpu_devices = convert_placement::taken_devices(place);
        out.gpu_shape = convert_placement::taken_shape(&t.spec, place);
    }
    out
}

pub fn agent_spec_from(s: v1::AgentSpec) -> AgentSpec {
    AgentSpec {
        id: s.id,
        dc: s.dc,
        task_types: s.task_types.into_iter().collect(),
        pipelines: s.pipelines.into_iter().collect(),
        models: s.models.into_iter().collect(),
        slots: s.slots,
        weight: s.weight,
        gpus: s
            .gpus
            .into_iter()
            .map(|g| Gpu {
                model: g.model,
                memory_mb: g.memory_mb,
            })
            .collect(),
        labels: s.labels.into_iter().collect(),
    }
}

pub fn agent_spec_to(s: &AgentSpec) -> v1::AgentSpec {
    v1::AgentSpec {
        id: s.id.clone(),
        dc: s.dc.clone(),
        task_types: s.task_types.iter().cloned().collect(),
        pipelines: s.pipelines.iter().cloned().collect(),
        models: s.models.iter().cloned().collect(),
        slots: s.slots,
        weight: s.weight,
        gpus: s
            .gpus
            .iter()
            .map(|g| v1::Gpu {
                model: g.model.clone(),
                memory_mb: g.memory_mb,
            })
            .collect(),
        labels: s.labels.clone().into_iter().collect(),
    }
}

pub fn agent_to(a: &Agent, connected: bool) -> v1::AgentInfo {
    v1::AgentInfo {
        spec: Some(agent_spec_to(&a.spec)),
        state: match a.state {
            AgentState::Ready => v1::AgentState::Ready,
            AgentState::Draining { .. } if a.tasks.is_empty() => v1::AgentState::Drained,
            AgentState::Draining { .. } => v1::AgentState::Draining,
            AgentState::Down => v1::AgentState::Down,
        } as i32,
        slots_in_use: a.slots_in_use,
        gpus_in_use: a.gpus_in_use,
        in_flight: a.tasks.len() as u32,
        connected,
        registered_ms: a.registered_ms,
        drain_deadline_ms: a.drain_deadline().unwrap_or(0),
        warm_models: Vec::new(),
        gpus_busy: Vec::new(),
    }
}

/// A queue for the API, with the strategy it is placed by (`state`'s
/// version-5 one when set).
pub fn queue_to(state: &State, q: &Queue, pending: usize) -> v1::Queue {
    let (strategy, spread_key) = match state.placement().queue(&q.name) {
        Some(p) => {
            let (s, k) = convert_placement::strategy_to(&p.strategy);
            (s.to_string(), k)
        }
        None => (q.strategy.as_str().to_string(), String::new()),
    };
    v1::Queue {
        name: q.name.clone(),
        weight: q.weight,
        strategy,
        pending: pending as u64,
        spread_key,
    }
}

/// The wire form of a message for an agent's session; `None` for an
/// assignment of a task the state no longer has.
pub fn to_agent(state: &State, msg: ToAgent) -> Option<v1::ServerMessage> {
    use v1::server_message::Msg;
    let msg = match msg {
        ToAgent::Assign { task, token } => {
            return state.task(task).map(|t| {
                let mut m = assignment(t, state.lifecycle().task(task), token);
                if let Some(v1::server_message::Msg::Assignment(a)) = m.msg.as_mut() {
                    a.gpu_devices = assigned_devices(state, t, token);
                }
                m
            })
        }
        ToAgent::Cancel {
            task_id,
            token,
            reason,
        } => Msg::Cancel(v1::CancelTask {
            task_id,
            token,
            reason,
        }),
        ToAgent::Stop {
            task,
            token,
            reason,
            preempt,
        } => Msg::Stop(v1::StopTask {
            task_id: task.to_string(),
            token,
            reason,
            preempt: preempt.is_some(),
            grace_ms: preempt.map_or(0, |(_, grace_ms)| grace_ms),
            notice: preempt.map_or(v1::PreemptNotice::Unspecified, |(n, _)| notice_to(n)) as i32,
        }),
        ToAgent::Suspend { task, token } => Msg::Suspend(v1::SuspendTask {
            task_id: task.to_string(),
            token,
        }),
        ToAgent::Resume { task, token } => Msg::Resume(v1::ResumeTask {
            task_id: task.to_string(),
            token,
        }),
        ToAgent::HeartbeatAck { seq } => Msg::HeartbeatAck(v1::HeartbeatAck { seq }),
        ToAgent::CompletionAck {
            task_id,
            token,
            accepted,
            reason,
        } => Msg::CompletionAck(v1::CompletionAck {
            task_id,
            token,
            accepted,
            reason,
        }),
        ToAgent::CheckpointAck {
            task_id,
            token,
            seq,
            accepted,
            reason,
        } => Msg::CheckpointAck(v1::CheckpointAck {
            task_id,
            token,
            seq,
            accepted,
            reason,
        }),
    };
    Some(v1::ServerMessage { msg: Some(msg) })
}

/// The GPU devices an assignment holds, for its agent (proto:
/// Assignment.gpu_devices): the devices the state holds for the task under
/// `token`; none at all (absent) below version 5, and for an assignment of
/// a task that takes GPUs but holds no devices (made before version 5: it
/// holds GPUs by count, and the agent must leave CUDA_VISIBLE_DEVICES
/// unset).
pub fn assigned_devices(state: &State, t: &Task, token: u64) -> Option<v1::GpuDevices> {
    use tidal_core::placement::types::PLACEMENT_VERSION;
    if state.cluster_version() < PLACEMENT_VERSION {
        return None;
    }
    let place = state.placement().task(t.id);
    if let Some(held) = place
        .and_then(|p| p.held.as_ref())
        .filter(|h| h.token == token)
    {
        return Some(v1::GpuDevices {
            index: held.devices.iter().map(|d| u32::from(*d)).collect(),
        });
    }
    let takes_gpus = t.spec.gpus > 0 || place.is_some_and(|p| !p.ask.shapes.is_empty());
    if takes_gpus {
        None
    } else {
        Some(v1::GpuDevices::default())
    }
}

/// How a preempted worker is told, on the wire.
pub fn notice_to(n: Notice) -> v1::PreemptNotice {
    match n {
        Notice::Signal => v1::PreemptNotice::Signal,
        Notice::File => v1::PreemptNotice::File,
    }
}

/// The message that hands a task to its agent, with what its lifecycle
/// state says of its attempts (`life`: none for a task submitted before
/// cluster format version 4): its max-run time, how a preemption is
/// noticed and its grace (default filled in), and the last checkpoint
/// committed, which the agent writes to the worker's checkpoint file before
/// it starts.
pub fn assignment(task: &Task, life: Option<&TaskLife>, token: u64) -> v1::ServerMessage {
    let mut a = v1::Assignment {
        task_id: task.id.to_string(),
        token,
        attempt: task.attempt,
        spec: Some(spec_to(&task.spec, true)),
        ..Default::default()
    };
    if let Some(life) = life {
        a.max_run_ms = life.opts.max_run_ms.unwrap_or(0);
        a.preempt_notice = notice_to(life.opts.notice) as i32;
        a.preempt_grace_ms = life.opts.grace_ms();
        a.checkpoint = life
            .checkpoint
            .as_ref()
            .map(|c| c.data.clone())
            .unwrap_or_default();
    }
    v1::ServerMessage {
        msg: Some(v1::server_message::Msg::Assignment(a)),
    }
}

#[cfg(test)]
#[path = "convert_test.rs"]
mod tests;
