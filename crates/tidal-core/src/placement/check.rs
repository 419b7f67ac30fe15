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
use crate::placement::types::{Held, PlaceAsk, Placement};

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

/// What the devices the task would take weigh (thousandths), were the
/// agent's devices in `freed` free too: `Some(0)` for a task that takes no
/// GPUs, `None` when none of its shapes fits.
pub fn devices_fit(
    agent: &Agent,
    spec: &TaskSpec,
    ask: Option<&PlaceAsk>,
    placement: &Placement,
    freed: &std::collections::BTreeSet<u16>,
) -> Option<u64> {
    let shapes = devices::shapes_of(
        ask.map_or(&[][..], |a| &a.shapes),
        spec.gpus,
        spec.gpu_memory_mb,
    );
    if shapes.iter().all(|s| s.count == 0) {
        return Some(0);
    }
    let busy = placement.busy(&agent.spec.id);
    devices::pick(
        &agent.spec.gpus,
        |i| freed.contains(&i) || busy.is_none_or(|b| !b.contains_key(&i)),
        &shapes,
        |m| placement.gpu_weight(m),
    )
    .map(|p| u64::from(p.gpu_milli))
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

/// The least the task's GPUs could weigh (thousandths), what its tenant's
/// max-gpus is checked against before the devices are known: on `agent`,
/// its lightest devices that serve one of the task's shapes (were they all
/// free; `None` when none can); anywhere (`agent` `None`), the lightest
/// weight in force per GPU of each shape, or its model's.
pub fn gpu_milli_floor(
    agent: Option<&Agent>,
    spec: &TaskSpec,
    ask: Option<&PlaceAsk>,
    placement: &Placement,
) -> Option<u64> {
    let shapes = devices::shapes_of(
        ask.map_or(&[][..], |a| &a.shapes),
        spec.gpus,
        spec.gpu_memory_mb,
    );
    let weight = |m: &str| u64::from(placement.gpu_weight(m));
    let floor = |s: &crate::placement::types::GpuShape| -> Option<u64> {
        let count = s.count as usize;
        if count == 0 {
            return Some(0);
        }
        match agent {
            Some(a) => {
                let mut w: Vec<u64> = (a.spec.gpus.iter())
                    .filter(|g| devices::matches(g, s))
                    .map(|g| weight(&g.model))
                    .collect();
                if w.len() < count {
                    return None;
                }
                w.sort_unstable();
                Some(w[..count].iter().sum())
            }
            None => {
                let each = match &s.model {
                    Some(m) => weight(m),
                    None => u64::from(placement.lightest_gpu_weight()),
                };
                Some(each * count as u64)
            }
        }
    };
    shapes.iter().filter_map(floor).min()
}

/// The devices a regranted task keeps: the ones it held (`held`), while
/// they are free on the agent and still serve the shape they were taken
/// for. Its worker runs on them already; a fresh pick could name others,
/// and the ones it uses would then be given to another task. `None`: it
/// held none, or the agent's GPUs changed under it.
pub fn kept_devices(
    agent: &Agent,
    spec: &TaskSpec,
    ask: Option<&PlaceAsk>,
    placement: &Placement,
    held: &Held,
) -> Option<Pick> {
    if held.devices.is_empty() {
        return None;
    }
    let shapes = devices::shapes_of(
        ask.map_or(&[][..], |a| &a.shapes),
        spec.gpus,
        spec.gpu_memory_mb,
    );
    let shape = shapes.get(usize::from(held.shape))?;
    let busy = placement.busy(&agent.spec.id);
    let serves = |&d: &u16| {
        busy.is_none_or(|b| !b.contains_key(&d))
            && agent
                .spec
                .gpus
                .get(usize::from(d))
                .is_some_and(|g| devices::matches(g, shape))
    };
    (held.devices.len() as u32 == shape.count && held.devices.iter().all(serves)).then(|| Pick {
        shape: held.shape,
        devices: held.devices.clone(),
        gpu_milli: held.gpu_milli,
    })
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
