//! Why a pending task waits: for each agent, the first check of the
//! placement order that it fails, counted over the fleet; the task's place
//! in its queue; whether it is in a retry backoff. The leader adds what only
//! it knows (its queue's recent throughput and share, forwarding).
//!
//! The checks, in the order placement makes them (`check::eligible`, with
//! the leader's connections after readiness and the tenant's running quota
//! last): ready, connected, does the work (type, pipeline, models), serves
//! the tenant, free slots, label constraints, GPU devices, tag rules, quota.
//! Each reason is a stable text, the same on every agent that fails the same
//! way, so they count.

use std::collections::BTreeMap;

use crate::dispatch::eligibility::{capable_work, free_slots, ready, serves};
use crate::dispatch::Live;
use crate::model::{Agent, TaskId, TaskSpec, TaskStateKind};
use crate::placement::check::pick_devices;
use crate::placement::constraint;
use crate::placement::rules;
use crate::placement::types::PlaceAsk;
use crate::state::State;

/// Tasks ahead in the queue are counted up to this many.
pub const POSITION_CAP: u64 = 100_000;

/// A pending task's explanation (see the module).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Explanation {
    pub state: Option<TaskStateKind>,
    /// One line: the main reason it waits ("" when it is not pending).
    pub summary: String,
    pub agents_total: u32,
    pub agents_eligible_now: u32,
    /// The first failing check per agent, counted; most agents first.
    pub reasons: Vec<(String, u32)>,
    /// 1-based among the dispatchable tasks ahead of it; 0 if unknown.
    pub queue_position: u64,
    /// The position was counted up to a cap only.
    pub position_capped: bool,
    pub in_backoff: bool,
    pub not_before_ms: Option<u64>,
}

/// Explains task `id`; `None` if there is no such task. `live`: the
/// leader's connections (`None`: unknown, no agent counts as disconnected).
pub fn explain(state: &State, id: TaskId, live: Option<&Live<'_>>) -> Option<Explanation> {
    let task = state.task(id)?;
    let kind = task.state.kind();
    let mut out = Explanation {
        state: Some(kind),
        agents_total: state.agents().count() as u32,
        ..Explanation::default()
    };
    if kind != TaskStateKind::Pending {
        return Some(out);
    }
    let ask = state.placement().ask(id);
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for agent in state.agents() {
        let bound = state.access().agent_tenant(&agent.spec.id);
        let reason = first_failing(state, agent, bound, &task.spec, ask, live).or_else(|| {
            // Last, the tenant's running quotas, for the GPUs (weighed by
            // model) it would take here.
            let pick = pick_devices(agent, &task.spec, ask, state.placement());
            let gpu_milli = match pick {
                Ok(Some(p)) if state.placement_on() => u64::from(p.gpu_milli),
                _ => u64::from(task.spec.gpus) * 1000,
            };
            let admitted = state.access().admit_running(&task.spec, gpu_milli);
            admitted.err().map(|r| format!("tenant quota: {r}"))
        });
        match reason {
            Some(reason) => *counts.entry(reason).or_default() += 1,
            None => out.agents_eligible_now += 1,
        }
    }
    let mut reasons: Vec<(String, u32)> = counts.into_iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out.reasons = reasons;
    out.not_before_ms = state.lifecycle().task(id).and_then(|l| l.not_before_ms);
    out.in_backoff = out.not_before_ms.is_some();
    let (position, capped) = queue_position(state, id, &task.spec.queue);
    out.queue_position = position;
    out.position_capped = capped;
    out.summary = summary(&out);
    Some(out)
}

/// The first check `agent` fails for the task, in placement order.
fn first_failing(
    state: &State,
    agent: &Agent,
    bound: Option<&str>,
    spec: &TaskSpec,
    ask: Option<&PlaceAsk>,
    live: Option<&Live<'_>>,
) -> Option<String> {
    if let Err(why) = ready(agent) {
        return Some(format!("agent {}", why.trim_start_matches("is ")));
    }
    if live.is_some_and(|l| !l.connected.contains(&agent.spec.id)) {
        return Some("not connected".to_string());
    }
    if let Err(why) = capable_work(&agent.spec, spec) {
        return Some(why);
    }
    if serves(bound, spec).is_err() {
        return Some("serves another tenant only".to_string());
    }
    if free_slots(agent) < spec.slots {
        return Some(format!("full: slots (no {} free)", spec.slots));
    }
    if let Some(ask) = ask {
        if let Some(c) = constraint::first_unmet(&agent.spec.labels, &ask.constraints) {
            return Some(format!("constraint {c} unmet"));
        }
    }
    if let Err(why) = pick_devices(agent, spec, ask, state.placement()) {
        return Some(why);
    }
    if let Some(ask) = ask {
        let placement = state.placement();
        let broken = rules::first_broken(
            ask,
            &agent.spec.id,
            &agent.spec.labels,
            |group, tag| placement.tag_count(group, tag),
            |tag| placement.tag_total(tag),
        );
        if let Some(rule) = broken {
            return Some(format!("tag rule {rule} broken"));
        }
    }
    None
}

/// 1-based position among the dispatchable (not in backoff) pending tasks of
/// the queue, in dispatch order; counted up to [`POSITION_CAP`].
fn queue_position(state: &State, id: TaskId, queue: &str) -> (u64, bool) {
    let mut ahead = 0u64;
    for t in state.pending_in_order(queue) {
        if t.id == id {
            return (ahead + 1, false);
        }
        if ahead == POSITION_CAP {
            return (ahead + 1, true);
        }
        let waits = state
            .lifecycle()
            .task(t.id)
            .is_some_and(|l| l.not_before_ms.is_some());
        if !waits {
            ahead += 1;
        }
    }
    (0, false)
}

/// The one line: backoff first, then no agents, then agents that could take
/// it now, else the top reason with its count.
fn summary(e: &Explanation) -> String {
    if let Some(t) = e.not_before_ms {
        return format!("in retry backoff until {t} (ms since the epoch)");
    }
    if e.agents_total == 0 {
        return "no agents are registered".to_string();
    }
    if e.agents_eligible_now > 0 {
        return format!(
            "{} of {} agents can take it now; {} ahead of it in its queue",
            e.agents_eligible_now,
            e.agents_total,
            e.queue_position.saturating_sub(1)
        );
    }
    match e.reasons.first() {
        Some((reason, n)) => format!("{reason} ({n} of {} agents)", e.agents_total),
        None => String::new(),
    }
}

#[cfg(test)]
#[path = "explain_test.rs"]
mod tests;
