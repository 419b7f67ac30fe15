//! Size and name limits, checked at the API edge before anything is proposed.
//!
//! These checks are stateless: the server runs them on every request so a bad
//! request is refused with a clear message before it costs a Raft entry. The
//! state machine re-checks only what depends on state (queue exists, agent is
//! Ready, ...), because limits are node configuration and a committed entry
//! must apply the same way on every replica whatever its configuration.

use serde::{Deserialize, Serialize};

use crate::command::Rejection;
use crate::model::{AgentSpec, TaskSpec};

/// Bounds on what one request may carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest task payload, in bytes.
    pub max_payload_bytes: usize,
    /// Longest name (task type, pipeline, queue, model, key, tenant, agent id, dc).
    pub max_name_len: usize,
    /// Most models one task may require.
    pub max_models: usize,
    /// Most items in one submit batch.
    pub max_batch: usize,
    /// Largest result an agent may report; longer results are truncated.
    pub max_result_bytes: usize,
    /// Highest `max_attempts` a task may ask for.
    pub max_attempts_cap: u32,
    /// Most slots one task may ask for or one agent may offer.
    pub max_slots: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 1 << 20,
            max_name_len: 128,
            max_models: 32,
            max_batch: 10_000,
            max_result_bytes: 1 << 20,
            max_attempts_cap: 100,
            max_slots: 1024,
        }
    }
}

fn invalid(msg: String) -> Rejection {
    Rejection::Invalid(msg)
}

/// Whether `c` may appear in a name: letters, digits and `. _ : / -`.
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-')
}

/// Checks a required name (`kind` says which, for the message): non-empty, at
/// most `max_name_len` bytes, and only letters, digits and `. _ : / -`.
pub fn validate_name(kind: &str, s: &str, limits: &Limits) -> Result<(), Rejection> {
    if s.is_empty() {
        return Err(invalid(format!("{kind} \"\" is empty")));
    }
    if s.len() > limits.max_name_len {
        let shown: String = s.chars().take(32).collect();
        return Err(invalid(format!(
            "{kind} \"{shown}...\" is {} bytes long, over the limit of {} bytes",
            s.len(),
            limits.max_name_len
        )));
    }
    if let Some(bad) = s.chars().find(|c| !name_char(*c)) {
        return Err(invalid(format!(
            "{kind} {s:?} contains {bad:?}: use only letters, digits and . _ : / -"
        )));
    }
    Ok(())
}

/// Checks a name that may be left empty (meaning "any" or "default").
fn validate_optional_name(kind: &str, s: &str, limits: &Limits) -> Result<(), Rejection> {
    if s.is_empty() {
        Ok(())
    } else {
        validate_name(kind, s, limits)
    }
}

/// Checks a task spec as the client sent it (before normalization: 0 slots,
/// 0 max_attempts and an empty queue mean the defaults).
pub fn validate_task_spec(spec: &TaskSpec, limits: &Limits) -> Result<(), Rejection> {
    validate_name("task_type", &spec.task_type, limits)?;
    validate_optional_name("pipeline", &spec.pipeline, limits)?;
    validate_optional_name("queue", &spec.queue, limits)?;
    validate_optional_name("tenant", &spec.tenant, limits)?;
    if let Some(key) = &spec.idempotency_key {
        validate_name("idempotency_key", key, limits)?;
    }
    if spec.models.len() > limits.max_models {
        return Err(Rejection::OverLimit(format!(
            "task requires {} models, over the limit of {}",
            spec.models.len(),
            limits.max_models
        )));
    }
    for model in &spec.models {
        validate_name("model", model, limits)?;
    }
    if spec.payload.len() > limits.max_payload_bytes {
        return Err(Rejection::OverLimit(format!(
            "payload is {} bytes, over the limit of {} bytes",
            spec.payload.len(),
            limits.max_payload_bytes
        )));
    }
    if spec.max_attempts > limits.max_attempts_cap {
        return Err(invalid(format!(
            "max_attempts {} is over the limit of {}",
            spec.max_attempts, limits.max_attempts_cap
        )));
    }
    if spec.slots > limits.max_slots {
        return Err(invalid(format!(
            "task asks for {} slots, over the limit of {}",
            spec.slots, limits.max_slots
        )));
    }
    if spec.gpus > limits.max_slots {
        return Err(invalid(format!(
            "task asks for {} GPUs, over the limit of {}",
            spec.gpus, limits.max_slots
        )));
    }
    Ok(())
}

/// Checks what an agent advertises when it registers.
pub fn validate_agent_spec(spec: &AgentSpec, limits: &Limits) -> Result<(), Rejection> {
    validate_name("agent id", &spec.id, limits)?;
    validate_name("dc", &spec.dc, limits)?;
    if spec.task_types.is_empty() {
        return Err(invalid(format!(
            "agent {:?} offers no task types: give at least one",
            spec.id
        )));
    }
    for t in &spec.task_types {
        validate_name("task_type", t, limits)?;
    }
    for p in &spec.pipelines {
        validate_name("pipeline", p, limits)?;
    }
    for m in &spec.models {
        validate_name("model", m, limits)?;
    }
    if spec.slots == 0 || spec.slots > limits.max_slots {
        return Err(invalid(format!(
            "agent {:?} offers {} slots: use 1..={}",
            spec.id, spec.slots, limits.max_slots
        )));
    }
    if spec.gpus.len() > limits.max_slots as usize {
        return Err(invalid(format!(
            "agent {:?} lists {} GPUs, over the limit of {}",
            spec.id,
            spec.gpus.len(),
            limits.max_slots
        )));
    }
    for (key, value) in &spec.labels {
        validate_name("label key", key, limits)?;
        if value.len() > limits.max_name_len {
            return Err(invalid(format!(
                "label {key:?} has a value of {} bytes, over the limit of {} bytes",
                value.len(),
                limits.max_name_len
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "limits_test.rs"]
mod tests;
