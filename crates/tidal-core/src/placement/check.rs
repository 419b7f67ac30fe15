//! The eligibility predicate from cluster format version 5 on, shared by the
//! planner and by `Assign`, `Regrant` and `Preempt` at apply: the agent is
//! ready, does the work, serves the task's tenant and has the slots (as below
//! version 5), meets the task's label constraints, has free GPU devices for
//! one of its shapes, and keeps its tag rules. Each refusal names the first
//! check that failed, in that order (what `task explain` counts).

use crate::dispatch::eligibility::{capable_work, free_gpus, free_slots, ready, serves};
use crate::model::{Agent, TaskSpec};
use crate::placement::constraint;
use crate::placement::devices::{self, Pick};
use crate::placement::rules;
use crate::placement::types::{PlaceAsk, Placement};

/// The devices the task would take on the agent (`None` when it takes no
/// GPUs), or why it cannot go there.
pub fn eligible(
    agent: &Agent,
    bound: Option<&str>,
    spec: &TaskSpec,
    ask: Option<&PlaceAsk>,
    placement: &Placement,
) -> Result<Option<Pick>, String> {
    ready(agent)?;
    capable_work(&agent.spec, spec)?;
    serves(bound, spec)?;
    let free = free_slots(agent);
    if free < spec.slots {
        return Err(format!(
            "has {free} free slots, the task needs {}",
            spec.slots
        ));
    }
    if let Some(ask) = ask {
        if let Some(c) = ask
            .constraints
            .iter()
            .find(|c| !constraint::matches(&agent.spec.labels, c))
        {
            return Err(format!("does not meet constraint {c}"));
        }
    }
    let pick = pick_devices(agent, spec, ask, placement)?;
    if let Some(ask) = ask {
        let broken = rules::first_broken(
            ask,
            &agent.spec.id,
            &agent.spec.labels,
            |group, tag| placement.tag_count(group, tag),
            |tag| placement.tag_total(tag),
        );
        if let Some(rule) = broken {
            return Err(format!("breaks rule {rule}"));
        }
    }
    Ok(pick)
}

/// Whether the task could run on the agent if the work there made room:
/// it does the work, serves the tenant, meets the constraints and has
/// GPUs of one of the task's shapes (free or not). What preemption looks
/// for from version 5 on; tag rules are left to the assignment.
pub fn could_run(
    agent: &Agent,
    bound: Option<&str>,
    spec: &TaskSpec,
    ask: Option<&PlaceAsk>,
) -> Result<(), String> {
    capable_work(&agent.spec, spec)?;
    serves(bound, spec)?;
    if let Some(ask) = ask {
        if let Some(c) = ask
            .constraints
            .iter()
            .find(|c| !constraint::matches(&agent.spec.labels, c))
        {
            return Err(format!("does not meet constraint {c}"));
        }
    }
    let shapes = devices::shapes_of(
        ask.map_or(&[][..], |a| &a.shapes),
        spec.gpus,
        spec.gpu_memory_mb,
    );
    if shapes.iter().any(|s| s.count > 0) && !devices::possible(&agent.spec.gpus, &shapes) {
        return Err(format!("has no GPUs for {}", shapes_text(&shapes)));
    }
    Ok(())
}

/// Whether the task's tag rules hold on the agent with the tags held now.
/// Preemption asks this before choosing victims, counting the victims'
/// tags too: a task kept out by a rule is not helped by stopping others
/// (victims are not chosen to lift a rule).
pub fn keeps_rules(
    agent: &Agent,
    ask: Option<&PlaceAsk>,
    placement: &Placement,
) -> Result<(), String> {
    let Some(ask) = ask else {
        return Ok(());
    };
    let broken = rules::first_broken(
        ask,
        &agent.spec.id,
        &agent.spec.labels,
        |group, tag| placement.tag_count(group, tag),
        |tag| placement.tag_total(tag),
    );
    match broken {
        Some(rule) => Err(format!("breaks rule {rule}")),
        None => Ok(()),
    }
}

/// Whether the agent's devices that are free or in `freed` hold one of
/// the task's shapes (true for a task that takes no GPUs).
pub fn devices_fit(
    agent: &Agent,
    spec: &TaskSpec,
    ask: Option<&PlaceAsk>,
    placement: &Placement,
    freed: &std::collections::BTreeSet<u16>,
) -> bool {
    let shapes = devices::shapes_of(
        ask.map_or(&[][..], |a| &a.shapes),
        spec.gpus,
        spec.gpu_memory_mb,
    );
    if shapes.iter().all(|s| s.count == 0) {
        return true;
    }
    let busy = placement.busy(&agent.spec.id);
    devices::pick(
        &agent.spec.gpus,
        |i| freed.contains(&i) || busy.is_none_or(|b| !b.contains_key(&i)),
        &shapes,
        |m| placement.gpu_weight(m),
    )
    .is_some()
}

/// The devices for the first of the task's shapes that the agent's free
/// devices can hold.
pub fn pick_devices(
    agent: &Agent,
    spec: &TaskSpec,
    ask: Option<&PlaceAsk>,
    placement: &Placement,
) -> Result<Option<Pick>, String> {
    let shapes = devices::shapes_of(
        ask.map_or(&[][..], |a| &a.shapes),
        spec.gpus,
        spec.gpu_memory_mb,
    );
    if shapes.iter().all(|s| s.count == 0) {
        return Ok(None);
    }
    if !devices::possible(&agent.spec.gpus, &shapes) {
        return Err(format!("has no GPUs for {}", shapes_text(&shapes)));
    }
    let busy = placement.busy(&agent.spec.id);
    let pick = devices::pick(
        &agent.spec.gpus,
        |i| busy.is_none_or(|b| !b.contains_key(&i)),
        &shapes,
        |m| placement.gpu_weight(m),
    );
    // Tasks assigned before version 5 hold GPUs by count, not by device.
    match pick {
        Some(p) if p.devices.len() as u32 <= free_gpus(agent) => Ok(Some(p)),
        _ => Err(format!("full: no free GPUs for {}", shapes_text(&shapes))),
    }
}

/// `2xA100 (40960 MB)|1xany`.
pub fn shapes_text(shapes: &[crate::placement::types::GpuShape]) -> String {
    shapes
        .iter()
        .map(|s| {
            let mut t = format!("{}x{}", s.count, s.model.as_deref().unwrap_or("any"));
            if s.min_memory_mb > 0 {
                t.push_str(&format!(":{}", s.min_memory_mb));
            }
            t
        })
        .collect::<Vec<_>>()
        .join("|")
}
