//! `tidal.v1.Tasks/Explain` (proto: Explain; README: Why a task waits): the
//! pure explanation of `tidal_core::placement::explain`, with what only the
//! leader knows: its agents' connections, its queue's recent throughput (an
//! estimated start) and share of the last dispatch round, and forwarding.

use tidal_core::dispatch::Live;
use tidal_core::model::{Task, TaskStateKind};
use tidal_core::placement::explain::{explain, Explanation};
use tidal_core::State;
use tidal_proto::v1;

use super::convert;
use crate::config::ServerConfig as Config;
use crate::leader::engine::View;

/// The wire explanation of `task` (a task the caller may see) in `state`;
/// `leader`: the leader's view and its config when this node leads and the
/// read was linearizable, `now_ms` its clock.
pub fn explanation(
    state: &State,
    task: &Task,
    leader: Option<(&View, &Config)>,
    now_ms: u64,
) -> v1::TaskExplanation {
    let mut out = v1::TaskExplanation {
        id: task.id.to_string(),
        state: convert::state_kind_to(convert::effective_kind(task)) as i32,
        ..Default::default()
    };
    if task.state.kind() != TaskStateKind::Pending {
        return out;
    }
    let e = match leader {
        Some((view, config)) => {
            let live = Live {
                connected: &view.connected,
                warm: &view.warm,
                warm_weight_milli: config.placement.warm_weight_milli,
            };
            explain(state, task.id, Some(&live))
        }
        None => explain(state, task.id, None),
    };
    let Some(e) = e else {
        return out;
    };
    fill(&mut out, &e);
    let Some((view, config)) = leader else {
        return out;
    };
    let queue = &task.spec.queue;
    let rate_milli = view.queue_rate_milli.get(queue).copied().unwrap_or(0);
    out.queue_throughput_per_s = rate_milli as f64 / 1000.0;
    if rate_milli > 0 && e.queue_position > 0 {
        // position / (rate_milli / 1000) seconds, in ms.
        let wait_ms = e.queue_position.saturating_mul(1_000_000) / rate_milli;
        out.estimated_start_ms = now_ms.saturating_add(wait_ms);
    }
    if let Some((picked, share)) = view.last_round.get(queue) {
        out.queue_share = format!("picked {picked} of its {share}-pick share last round");
    }
    out.forwarding = forwarding(state, task, config);
    out
}

/// The pure part of the explanation, on the wire.
fn fill(out: &mut v1::TaskExplanation, e: &Explanation) {
    out.summary = e.summary.clone();
    out.agents_total = e.agents_total;
    out.agents_eligible_now = e.agents_eligible_now;
    out.reasons = e
        .reasons
        .iter()
        .map(|(reason, agents)| v1::ReasonCount {
            reason: reason.clone(),
            agents: *agents,
        })
        .collect();
    out.queue_position = e.queue_position;
    out.position_capped = e.position_capped;
    out.in_backoff = e.in_backoff;
    out.not_before_ms = e.not_before_ms.unwrap_or(0);
}

/// Whether and where the task may be forwarded: empty without peer DCs; a
/// task with placement rules, or of a queue that does not forward, stays.
fn forwarding(state: &State, task: &Task, config: &Config) -> String {
    if config.peers.is_empty() {
        return String::new();
    }
    if state
        .placement()
        .ask(task.id)
        .is_some_and(|a| !a.is_plain())
    {
        return "kept local: placement rules do not travel".to_string();
    }
    let queue = &task.spec.queue;
    let (allow, after_ms) = match config.forwarding.queues.get(queue) {
        Some(p) => (p.allow, p.forward_after_ms),
        None => (true, config.forwarding.forward_after_ms),
    };
    if !allow {
        return format!("kept local: queue {queue:?} does not forward");
    }
    let peers: Vec<&str> = config.peers.iter().map(|p| p.dc.as_str()).collect();
    format!(
        "may be forwarded to {} after {}s pending",
        peers.join(", "),
        after_ms.div_ceil(1000)
    )
}

/// The one line of Task.waiting: the explanation's summary on the leader,
/// empty elsewhere and for a task that is not pending.
pub fn waiting(state: &State, task: &Task, leader: Option<(&View, &Config)>) -> String {
    if task.state.kind() != TaskStateKind::Pending {
        return String::new();
    }
    let Some((view, config)) = leader else {
        return String::new();
    };
    let live = Live {
        connected: &view.connected,
        warm: &view.warm,
        warm_weight_milli: config.placement.warm_weight_milli,
    };
    explain(state, task.id, Some(&live))
        .map(|e| e.summary)
        .unwrap_or_default()
}

#[cfg(test)]
#[path = "task_explain_test.rs"]
mod tests;
