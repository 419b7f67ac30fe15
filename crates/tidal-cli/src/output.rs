//! What the commands print: aligned tables for people, one JSON document for
//! scripts, and the lowercase names of states and priorities.

use base64::Engine;
use serde_json::{json, Value};
use tidal_proto::v1;

/// `print!` to stdout for one-shot commands ([`write_stdout`]).
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!($($arg)*)) };
}

/// `println!` to stdout for one-shot commands ([`write_stdout`]).
macro_rules! outln {
    () => { $crate::output::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}
pub(crate) use {out, outln};

/// Writes what a one-shot command prints. SIGPIPE is ignored in this
/// process (so a server that goes away mid-call is an error the command
/// reports, never a death by signal); a reader of stdout that went away
/// (`tidal task list | head`) ends the command as SIGPIPE ends other
/// command-line tools. Any other write error ends it with exit code 1.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let Err(e) = std::io::stdout().lock().write_fmt(args) else {
        return;
    };
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        // SAFETY: restores the default action of SIGPIPE and raises it on
        // this thread, which ends the process; nothing runs after it.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::raise(libc::SIGPIPE);
        }
    }
    eprintln!("error: writing to stdout: {e}");
    std::process::exit(crate::exit::ERROR);
}

/// A table with a header row; columns are padded to their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.headers).chain(self.rows.iter()) {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = r.get(i).map(String::as_str).unwrap_or("");
                if i + 1 == cols {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(w - cell.chars().count() + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Prints one JSON document on stdout.
pub fn print_json(v: &Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// A bytes field as (text, encoding): UTF-8 text when it is valid, else base64.
pub fn encode_bytes(b: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(b) {
        Ok(s) => (s.to_string(), "utf8"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(b),
            "base64",
        ),
    }
}

pub use tidal_client::{is_terminal, task_state_name};

pub fn priority_name(p: i32) -> &'static str {
    match v1::Priority::try_from(p).unwrap_or(v1::Priority::Unspecified) {
        v1::Priority::Online => "online",
        v1::Priority::Offline => "offline",
        v1::Priority::Nearline | v1::Priority::Unspecified => "nearline",
    }
}

pub fn agent_state_name(s: i32) -> &'static str {
    match v1::AgentState::try_from(s).unwrap_or(v1::AgentState::Unspecified) {
        v1::AgentState::Unspecified => "unspecified",
        v1::AgentState::Ready => "ready",
        v1::AgentState::Draining => "draining",
        v1::AgentState::Drained => "drained",
        v1::AgentState::Down => "down",
    }
}

/// A task as one JSON object. `result` and `payload` are UTF-8 text when
/// valid, else base64; `result_encoding`/`payload_encoding` say which.
pub fn task_json(t: &v1::Task) -> Value {
    let spec = t.spec.clone().unwrap_or_default();
    let (result, result_encoding) = encode_bytes(&t.result);
    let mut v = json!({
        "id": t.id,
        "state": task_state_name(t.state),
        "type": spec.task_type,
        "pipeline": spec.pipeline,
        "models": spec.models,
        "queue": spec.queue,
        "priority": priority_name(spec.priority),
        "agent": t.agent,
        "token": t.token,
        "attempt": t.attempt,
        "max_attempts": spec.max_attempts,
        "slots": spec.slots,
        "gpus": spec.gpus,
        "gpu_memory_mb": spec.gpu_memory_mb,
        "tenant": spec.tenant,
        "idempotency_key": spec.idempotency_key,
        "result": result,
        "result_encoding": result_encoding,
        "error": t.error,
        "exit_code": t.exit_code,
        "created_ms": t.created_ms,
        "updated_ms": t.updated_ms,
        "payload_bytes": t.payload_bytes,
        "read_index": t.read_index,
        "forwarded_to": t.forwarded_to,
        "remote_id": t.remote_id,
        "origin_dc": t.origin_dc,
        "origin_id": t.origin_id,
        "submitted_by": t.submitted_by.as_ref().map(|u| json!({ "id": u.id, "role": u.role })),
    });
    // The lifecycle (cluster format version 4), apart: one json! of every
    // field is over the macro's recursion limit.
    let life = json!({
        "deadline_ms": (spec.deadline_ms > 0).then_some(spec.deadline_ms),
        "on_deadline": on_deadline_name(spec.on_deadline),
        "max_run_ms": (spec.max_run_ms > 0).then_some(spec.max_run_ms),
        "retry_backoff_base_ms": spec.retry_backoff_base_ms,
        "retry_backoff_max_ms": spec.retry_backoff_max_ms,
        "preemptible": spec.preemptible.unwrap_or(true),
        "suspendable": spec.suspendable,
        "preempt_notice": preempt_notice_name(spec.preempt_notice),
        "preempt_grace_ms": spec.preempt_grace_ms,
        "attempts": t.attempts.iter().map(attempt_json).collect::<Vec<_>>(),
        "attempts_left": t.attempts_left,
        "preempted": t.preempted,
        "not_before_ms": (t.not_before_ms > 0).then_some(t.not_before_ms),
        "dead": t.dead,
        "deadline_missed": t.deadline_missed,
        "suspended": t.suspended,
        "suspended_by": (!t.suspended_by.is_empty()).then_some(&t.suspended_by),
        "checkpoint_ms": (t.checkpoint_ms > 0).then_some(t.checkpoint_ms),
        "checkpoint_bytes": t.checkpoint_bytes,
    });
    if let (Some(v), Value::Object(life)) = (v.as_object_mut(), life) {
        v.extend(life);
    }
    // Placement (cluster format version 5).
    let place = json!({
        "constraints": spec.constraints,
        "tags": spec.tags,
        "tag_rules": spec.tag_rules.iter().map(tag_rule_json).collect::<Vec<_>>(),
        "gpu_model": (!spec.gpu_model.is_empty()).then_some(&spec.gpu_model),
        "gpu_shapes": spec.gpu_shapes.iter().map(gpu_shape_json).collect::<Vec<_>>(),
        "hash_key": (!spec.hash_key.is_empty()).then_some(&spec.hash_key),
        "gpu_devices": t.gpu_devices,
        "gpu_shape": t.gpu_shape.as_ref().map(gpu_shape_json),
        "waiting": (!t.waiting.is_empty()).then_some(&t.waiting),
    });
    if let (Some(v), Value::Object(place)) = (v.as_object_mut(), place) {
        v.extend(place);
    }
    if !spec.payload.is_empty() {
        let (payload, enc) = encode_bytes(&spec.payload);
        v["payload"] = json!(payload);
        v["payload_encoding"] = json!(enc);
    }
    v
}

/// A tag rule as JSON: `{kind, tag, max, scope, text}` (`max` only for
/// max-per; `scope` "agent" or a label key).
pub fn tag_rule_json(r: &v1::TagRule) -> Value {
    let kind = match v1::TagRuleKind::try_from(r.kind) {
        Ok(v1::TagRuleKind::Affinity) => "affinity",
        Ok(v1::TagRuleKind::AntiAffinity) => "anti-affinity",
        Ok(v1::TagRuleKind::MaxPer) => "max-per",
        _ => "unspecified",
    };
    json!({
        "kind": kind,
        "tag": r.tag,
        "max": (r.kind == v1::TagRuleKind::MaxPer as i32).then_some(r.max),
        "scope": if r.scope.is_empty() { "agent" } else { r.scope.as_str() },
        "text": crate::lists::rule_text(r),
    })
}

/// A GPU shape as JSON: `{count, model, memory_mb, text}` (model null: any).
pub fn gpu_shape_json(s: &v1::GpuShape) -> Value {
    json!({
        "count": s.count,
        "model": (!s.model.is_empty()).then_some(&s.model),
        "memory_mb": s.memory_mb,
        "text": crate::lists::shape_text(s),
    })
}

/// One attempt of a task's history as JSON (times: ms since the epoch,
/// null when not reached).
pub fn attempt_json(a: &v1::Attempt) -> Value {
    json!({
        "attempt": a.attempt,
        "agent": a.agent,
        "token": a.token,
        "assigned_ms": a.assigned_ms,
        "started_ms": (a.started_ms > 0).then_some(a.started_ms),
        "ended_ms": (a.ended_ms > 0).then_some(a.ended_ms),
        "end": (!a.end.is_empty()).then_some(&a.end),
        "exit_code": a.exit_code,
        "error": a.error,
    })
}

pub fn on_deadline_name(v: i32) -> &'static str {
    match v1::OnDeadline::try_from(v) {
        Ok(v1::OnDeadline::Fail) => "fail",
        _ => "report",
    }
}

pub fn preempt_notice_name(v: i32) -> &'static str {
    match v1::PreemptNotice::try_from(v) {
        Ok(v1::PreemptNotice::File) => "file",
        _ => "signal",
    }
}

/// A task's attempt history: one line per attempt.
pub fn attempts_table(attempts: &[v1::Attempt]) -> String {
    let mut t = Table::new(&[
        "ATTEMPT",
        "AGENT",
        "TOKEN",
        "STARTED",
        "ENDED",
        "END",
        "EXIT/ERROR",
    ]);
    for a in attempts {
        let start = if a.started_ms > 0 {
            a.started_ms
        } else {
            a.assigned_ms
        };
        let outcome = match a.end.as_str() {
            "failed" if a.error.is_empty() => format!("exit {}", a.exit_code),
            "failed" => format!("exit {}: {}", a.exit_code, a.error),
            _ => a.error.clone(),
        };
        t.row(vec![
            a.attempt.to_string(),
            dash(&a.agent),
            a.token.to_string(),
            ms_to_utc(start),
            if a.ended_ms > 0 {
                ms_to_utc(a.ended_ms)
            } else {
                "-".to_string()
            },
            if a.end.is_empty() {
                "(running)".to_string()
            } else {
                a.end.clone()
            },
            dash(&one_line(&outcome, 60)),
        ]);
    }
    t.render()
}

/// A task for people: one `field  value` line each.
pub fn task_text(t: &v1::Task) -> String {
    let spec = t.spec.clone().unwrap_or_default();
    let mut table = Table::new(&["FIELD", "VALUE"]);
    let mut kv = |k: &str, v: String| table.row(vec![k.to_string(), v]);
    kv("id", t.id.clone());
    kv("state", task_state_name(t.state).to_string());
    kv("type", spec.task_type.clone());
    if !spec.pipeline.is_empty() {
        kv("pipeline", spec.pipeline.clone());
    }
    if !spec.models.is_empty() {
        kv("models", spec.models.join(","));
    }
    if !t.forwarded_to.is_empty() {
        let remote = if t.remote_id.is_empty() {
            "not accepted yet".to_string()
        } else {
            format!("as {}", t.remote_id)
        };
        kv("runs in", format!("DC {} ({remote})", t.forwarded_to));
    }
    if !t.origin_dc.is_empty() {
        kv(
            "from",
            format!("DC {} (its id there: {})", t.origin_dc, t.origin_id),
        );
    }
    kv("queue", spec.queue.clone());
    if !spec.tenant.is_empty() {
        kv("tenant", spec.tenant.clone());
    }
    if let Some(u) = &t.submitted_by {
        kv("submitted_by", format!("{} ({})", u.id, u.role));
    }
    kv("priority", priority_name(spec.priority).to_string());
    kv("agent", dash(&t.agent));
    if t.forwarded_to.is_empty() {
        kv("token", t.token.to_string());
    }
    kv(
        "attempt",
        format!(
            "{} of {} ({} left)",
            t.attempt, spec.max_attempts, t.attempts_left
        ),
    );
    if t.not_before_ms > 0 {
        kv(
            "backoff",
            format!("retrying at {}", ms_to_utc(t.not_before_ms)),
        );
    }
    if t.dead {
        kv(
            "dead",
            "yes: its attempts are used up (tidal task replay)".to_string(),
        );
    }
    if spec.deadline_ms > 0 {
        kv(
            "deadline",
            format!(
                "{} (on deadline: {}){}",
                ms_to_utc(spec.deadline_ms),
                on_deadline_name(spec.on_deadline),
                if t.deadline_missed { ", missed" } else { "" }
            ),
        );
    }
    if spec.max_run_ms > 0 {
        kv("max_run", format!("{} ms", spec.max_run_ms));
    }
    if t.preempted > 0 {
        kv("preempted", format!("{} times", t.preempted));
    }
    if t.suspended {
        kv("suspended", format!("yes, for {}", dash(&t.suspended_by)));
    }
    if t.checkpoint_ms > 0 {
        kv(
            "checkpoint",
            format!(
                "{} bytes at {}",
                t.checkpoint_bytes,
                ms_to_utc(t.checkpoint_ms)
            ),
        );
    }
    kv("slots", spec.slots.to_string());
    if !spec.gpu_shapes.is_empty() {
        let alts: Vec<String> = spec
            .gpu_shapes
            .iter()
            .map(crate::lists::shape_text)
            .collect();
        kv("gpu_shapes", alts.join("|"));
    } else if spec.gpus > 0 {
        let model = if spec.gpu_model.is_empty() {
            String::new()
        } else {
            format!(" {}", spec.gpu_model)
        };
        kv(
            "gpus",
            format!("{}{model} (>= {} MB each)", spec.gpus, spec.gpu_memory_mb),
        );
    }
    if let Some(shape) = &t.gpu_shape {
        kv("gpu_shape", crate::lists::shape_text(shape));
    }
    if !t.gpu_devices.is_empty() {
        let d: Vec<String> = t.gpu_devices.iter().map(u32::to_string).collect();
        kv("gpu_devices", d.join(","));
    }
    if !spec.constraints.is_empty() {
        kv("constraints", spec.constraints.join("; "));
    }
    if !spec.tags.is_empty() {
        kv("tags", spec.tags.join(","));
    }
    if !spec.tag_rules.is_empty() {
        let rules: Vec<String> = spec.tag_rules.iter().map(crate::lists::rule_text).collect();
        kv("tag_rules", rules.join("; "));
    }
    if !spec.hash_key.is_empty() {
        kv("hash_key", spec.hash_key.clone());
    }
    if !t.waiting.is_empty() {
        kv("waiting", t.waiting.clone());
    }
    kv("payload", format!("{} bytes", t.payload_bytes));
    if is_terminal(t.state) {
        kv("exit_code", t.exit_code.to_string());
    }
    if !t.error.is_empty() {
        kv("error", t.error.clone());
    }
    kv("created", ms_to_utc(t.created_ms));
    kv("updated", ms_to_utc(t.updated_ms));
    let mut out = table.render();
    // The header row is noise for a key/value listing.
    if let Some(nl) = out.find('\n') {
        out.drain(..=nl);
    }
    if !t.result.is_empty() {
        let (r, enc) = encode_bytes(&t.result);
        out.push_str(&format!(
            "result ({enc}, {} bytes):\n{}\n",
            t.result.len(),
            r.trim_end()
        ));
    }
    if !t.attempts.is_empty() {
        out.push_str("attempts:\n");
        out.push_str(&attempts_table(&t.attempts));
    }
    out
}

pub fn agent_json(a: &v1::AgentInfo) -> Value {
    let spec = a.spec.clone().unwrap_or_default();
    json!({
        "id": spec.id,
        "dc": spec.dc,
        "state": agent_state_name(a.state),
        "connected": a.connected,
        "task_types": spec.task_types,
        "pipelines": spec.pipelines,
        "models": spec.models,
        "slots": spec.slots,
        "slots_in_use": a.slots_in_use,
        "gpus": spec.gpus.iter().map(|g| json!({"model": g.model, "memory_mb": g.memory_mb})).collect::<Vec<_>>(),
        "gpus_in_use": a.gpus_in_use,
        "in_flight": a.in_flight,
        "weight": spec.weight,
        "labels": spec.labels.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "registered_ms": a.registered_ms,
        "drain_deadline_ms": (a.drain_deadline_ms > 0).then_some(a.drain_deadline_ms),
        "warm_models": a.warm_models,
        "gpus_busy": a.gpus_busy,
    })
}

/// An agent for people (`agent get`): one `field  value` line each, then
/// its GPUs, busy or free.
pub fn agent_text(a: &v1::AgentInfo) -> String {
    let spec = a.spec.clone().unwrap_or_default();
    let mut table = Table::new(&["FIELD", "VALUE"]);
    let mut kv = |k: &str, v: String| table.row(vec![k.to_string(), v]);
    kv("id", spec.id.clone());
    kv("dc", spec.dc.clone());
    kv("state", agent_state_name(a.state).to_string());
    kv(
        "connected",
        if a.connected { "yes" } else { "no" }.to_string(),
    );
    kv("task_types", dash(&spec.task_types.join(",")));
    if !spec.pipelines.is_empty() {
        kv("pipelines", spec.pipelines.join(","));
    }
    kv("models", dash(&spec.models.join(",")));
    kv("warm_models", dash(&a.warm_models.join(",")));
    kv(
        "slots",
        format!("{} of {} in use", a.slots_in_use, spec.slots),
    );
    kv(
        "gpus",
        format!("{} of {} in use", a.gpus_in_use, spec.gpus.len()),
    );
    kv("in_flight", a.in_flight.to_string());
    kv("weight", spec.weight.to_string());
    let labels: Vec<String> = spec
        .labels
        .iter()
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    kv("labels", dash(&labels.join(",")));
    kv("registered", ms_to_utc(a.registered_ms));
    if a.drain_deadline_ms > 0 {
        kv("drain_deadline", ms_to_utc(a.drain_deadline_ms));
    }
    let mut out = table.render();
    if let Some(nl) = out.find('\n') {
        out.drain(..=nl);
    }
    if !spec.gpus.is_empty() {
        let mut t = Table::new(&["GPU", "MODEL", "MEMORY_MB", "BUSY"]);
        for (i, g) in spec.gpus.iter().enumerate() {
            t.row(vec![
                i.to_string(),
                g.model.clone(),
                g.memory_mb.to_string(),
                if a.gpus_busy.contains(&(i as u32)) {
                    "yes"
                } else {
                    "no"
                }
                .to_string(),
            ]);
        }
        out.push_str("gpus:\n");
        out.push_str(&t.render());
    }
    out
}

/// Device indexes as `0,1,3`; `-` for none.
pub fn devices_text(d: &[u32]) -> String {
    dash(&d.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
}

pub fn queue_json(q: &v1::Queue) -> Value {
    json!({
        "name": q.name,
        "weight": q.weight,
        "strategy": q.strategy,
        "spread_key": (!q.spread_key.is_empty()).then_some(&q.spread_key),
        "pending": q.pending,
    })
}

/// A queue's strategy as people read it: `spread:zone` for a spread.
pub fn strategy_text(q: &v1::Queue) -> String {
    if q.spread_key.is_empty() {
        q.strategy.clone()
    } else {
        format!("{}:{}", q.strategy, q.spread_key)
    }
}

/// Why a task waits (`task explain -o json`): every field of the answer;
/// times in ms since the epoch, null when unknown.
pub fn explanation_json(e: &v1::TaskExplanation) -> Value {
    json!({
        "id": e.id,
        "state": task_state_name(e.state),
        "summary": e.summary,
        "agents_total": e.agents_total,
        "agents_eligible_now": e.agents_eligible_now,
        "reasons": e.reasons.iter().map(|r| json!({ "reason": r.reason, "agents": r.agents })).collect::<Vec<_>>(),
        "queue_position": (e.queue_position > 0).then_some(e.queue_position),
        "position_capped": e.position_capped,
        "queue_throughput_per_s": e.queue_throughput_per_s,
        "estimated_start_ms": (e.estimated_start_ms > 0).then_some(e.estimated_start_ms),
        "queue_share": (!e.queue_share.is_empty()).then_some(&e.queue_share),
        "forwarding": (!e.forwarding.is_empty()).then_some(&e.forwarding),
        "in_backoff": e.in_backoff,
        "not_before_ms": (e.not_before_ms > 0).then_some(e.not_before_ms),
    })
}

/// Why a task waits, for people; `now_ms` makes the estimated start
/// relative.
pub fn explanation_text(e: &v1::TaskExplanation, now_ms: u64) -> String {
    let state = task_state_name(e.state);
    if e.state != v1::TaskState::Pending as i32 {
        return format!("task {} is {state}: it is not waiting to be placed\n", e.id);
    }
    let mut out = format!("task {} is pending: {}\n", e.id, dash(&e.summary));
    out.push_str(&format!(
        "agents: {} of {} could take it now\n",
        e.agents_eligible_now, e.agents_total
    ));
    if !e.reasons.is_empty() {
        let mut t = Table::new(&["AGENTS", "REASON"]);
        for r in &e.reasons {
            t.row(vec![r.agents.to_string(), r.reason.clone()]);
        }
        out.push_str(&t.render());
    }
    if e.in_backoff {
        out.push_str(&format!(
            "backoff: not placed before {}\n",
            ms_to_utc(e.not_before_ms)
        ));
    }
    let position = match (e.queue_position, e.position_capped) {
        (0, _) => "unknown".to_string(),
        (p, true) => format!("at least {p}"),
        (p, false) => p.to_string(),
    };
    out.push_str(&format!("queue position: {position}\n"));
    let rate = if e.queue_throughput_per_s > 0.0 {
        format!("{:.2} tasks/s over the last 60 s", e.queue_throughput_per_s)
    } else {
        "none in the last 60 s (or unknown)".to_string()
    };
    out.push_str(&format!("queue throughput: {rate}\n"));
    let start = if e.estimated_start_ms > 0 {
        let secs = e.estimated_start_ms.saturating_sub(now_ms).div_ceil(1000);
        format!("{} (in about {secs} s)", ms_to_utc(e.estimated_start_ms))
    } else {
        "unknown".to_string()
    };
    out.push_str(&format!("estimated start: {start}\n"));
    if !e.queue_share.is_empty() {
        out.push_str(&format!("queue share: {}\n", e.queue_share));
    }
    if !e.forwarding.is_empty() {
        out.push_str(&format!("forwarding: {}\n", e.forwarding));
    }
    out
}

pub fn headroom_json(h: &v1::Headroom) -> Value {
    json!({ "class": priority_name(h.class), "slots": h.slots, "gpus": h.gpus })
}

/// The headroom set per class: capacity kept free for that class and above.
pub fn headroom_table(headroom: &[v1::Headroom]) -> String {
    let mut t = Table::new(&["CLASS", "HEADROOM_SLOTS", "HEADROOM_GPUS"]);
    for h in headroom {
        t.row(vec![
            priority_name(h.class).to_string(),
            h.slots.to_string(),
            h.gpus.to_string(),
        ]);
    }
    t.render()
}

pub fn queues_table(queues: &[v1::Queue]) -> String {
    let mut t = Table::new(&["NAME", "WEIGHT", "STRATEGY", "PENDING"]);
    for q in queues {
        t.row(vec![
            q.name.clone(),
            q.weight.to_string(),
            strategy_text(q),
            q.pending.to_string(),
        ]);
    }
    t.render()
}

/// A cluster format version; 0 (from a server before format versions) is 1.
pub fn format_version(v: u32) -> String {
    v.max(1).to_string()
}

/// The format versions a server supports, `MIN-MAX`; `-` when unknown.
pub fn format_range(min: u32, max: u32) -> String {
    if max == 0 {
        "-".to_string()
    } else {
        format!("{}-{max}", min.max(1))
    }
}

pub fn members_json(m: &v1::MembersResponse) -> Value {
    json!({
        "leader_id": m.leader_id,
        "term": m.term,
        "cluster_format_version": m.cluster_format_version.max(1),
        "members": m.members.iter().map(|x| json!({
            "id": x.id,
            "addr": x.addr,
            "role": if x.voter { "voter" } else { "learner" },
            "voter": x.voter,
            "leader": x.leader,
            "matched_index": x.matched_index,
            "lag": x.lag,
            "last_contact_ms": (x.last_contact_ms >= 0).then_some(x.last_contact_ms),
            "min_format_version": (x.max_format_version > 0).then_some(x.min_format_version.max(1)),
            "max_format_version": (x.max_format_version > 0).then_some(x.max_format_version),
        })).collect::<Vec<_>>(),
        "last_log_index": m.last_log_index,
    })
}

pub fn members_table(m: &v1::MembersResponse) -> String {
    let mut t = Table::new(&[
        "ID",
        "ADDRESS",
        "ROLE",
        "LEADER",
        "MATCHED",
        "LAG",
        "SUPPORTS",
        "LAST_CONTACT",
    ]);
    for x in &m.members {
        t.row(vec![
            x.id.to_string(),
            x.addr.clone(),
            if x.voter { "voter" } else { "learner" }.to_string(),
            if x.leader { "*" } else { "" }.to_string(),
            if x.matched_index > 0 {
                x.matched_index.to_string()
            } else {
                "-".to_string()
            },
            if x.matched_index > 0 {
                x.lag.to_string()
            } else {
                "-".to_string()
            },
            format_range(x.min_format_version, x.max_format_version),
            // Only the leader reports contacts, so the leader is the node
            // that answered; others heard from it within the last
            // millisecond show 0 ms, not "self".
            match x.last_contact_ms {
                ms if ms < 0 => "-".to_string(),
                _ if x.id == m.leader_id => "self".to_string(),
                ms => format!("{ms} ms ago"),
            },
        ]);
    }
    let mut out = t.render();
    out.push_str(&format!(
        "term {}, leader {}, cluster format version {}\n",
        m.term,
        if m.leader_id == 0 {
            "unknown".to_string()
        } else {
            m.leader_id.to_string()
        },
        format_version(m.cluster_format_version)
    ));
    out
}

pub fn status_json(s: &v1::StatusResponse) -> Value {
    json!({
        "node_id": s.node_id,
        "dc": s.dc,
        "role": s.role,
        "acting": s.acting,
        "cluster_format_version": s.cluster_format_version.max(1),
        "min_format_version": (s.max_format_version > 0).then_some(s.min_format_version.max(1)),
        "max_format_version": (s.max_format_version > 0).then_some(s.max_format_version),
        "leader_id": s.leader_id,
        "leader_addr": s.leader_addr,
        "term": s.term,
        "last_log_index": s.last_log_index,
        "applied_index": s.applied_index,
        "tasks_by_state": s.tasks_by_state.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "agents": s.agents,
        "agents_connected": s.agents_connected,
        "queues": s.queues.iter().map(queue_json).collect::<Vec<_>>(),
        // Computed only when asked for (`tidal status --digest`).
        "state_digest": (s.state_digest != 0).then(|| format!("{:016x}", s.state_digest)),
        // Empty from a server without --auth (an older build).
        "auth": (!s.auth.is_empty()).then_some(&s.auth),
        "tls": s.tls,
        "deadlines_missed": s.deadlines_missed,
        // GPU model -> weight in thousandths (cluster format version 5).
        "gpu_weight_milli": s.gpu_weight_milli.iter().collect::<std::collections::BTreeMap<_, _>>(),
    })
}

/// The GPU weights in force as people read them (`A100 1.0, A40 0.5`),
/// by model; None when there are none (below cluster format version 5).
pub fn gpu_weights_text(w: &std::collections::HashMap<String, u32>) -> Option<String> {
    let by_model: std::collections::BTreeMap<_, _> = w.iter().collect();
    let parts: Vec<String> = by_model
        .into_iter()
        .map(|(m, &milli)| {
            let mut n = format!("{}.{:03}", milli / 1000, milli % 1000);
            while n.ends_with('0') && !n.ends_with(".0") {
                n.pop();
            }
            format!("{m} {n}")
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

pub fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS.mmm UTC` (no
/// time zone database needed).
pub fn ms_to_utc(ms: u64) -> String {
    if ms == 0 {
        return "-".to_string();
    }
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!(
        "{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02}.{:03} UTC",
        ms % 1000
    )
}

/// A short one-line rendering of a result or error for list views.
pub fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max.saturating_sub(3)).collect();
        format!("{cut}...")
    } else {
        flat
    }
}

#[cfg(test)]
#[path = "output_test.rs"]
mod tests;
