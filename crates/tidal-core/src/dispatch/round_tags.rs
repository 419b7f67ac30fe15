//! The version-5 parts of a round: building the pool's device view, the
//! static check (constraints, GPU shapes possible) cached per task shape,
//! the per-pick checks (slots and free devices, then tag rules with the tags
//! the round booked): together exactly what
//! [`crate::placement::check::eligible`] accepts, so a plan made from the
//! current state is granted in full.

use std::collections::BTreeMap;

use super::eligibility::{self, Candidate};
use crate::model::{Agent, AgentSpec, TaskSpec};
use crate::placement::devices::{self, Pick};
use crate::placement::types::{GpuShape, PlaceAsk, Placement};
use crate::placement::{constraint, rules};

/// Group -> tag -> count, as `Placement::tags` keys them.
type Groups = BTreeMap<(Option<String>, String), BTreeMap<String, u32>>;

/// Tagged tasks the round booked, per scope group and in all: added to the
/// placement state's counts when a task's tag rules are checked. Touched
/// only by tasks that carry tags or rules.
#[derive(Default)]
pub(crate) struct RoundTags {
    groups: Groups,
    total: BTreeMap<String, u32>,
}

impl RoundTags {
    fn count(&self, placement: &Placement, group: &(Option<String>, String), tag: &str) -> u32 {
        let booked = self
            .groups
            .get(group)
            .and_then(|m| m.get(tag))
            .copied()
            .unwrap_or(0);
        placement.tag_count(group, tag).saturating_add(booked)
    }

    fn total(&self, placement: &Placement, tag: &str) -> u32 {
        let booked = self.total.get(tag).copied().unwrap_or(0);
        placement.tag_total(tag).saturating_add(booked)
    }

    /// The task with `tags` is booked on `agent`: it counts in every group
    /// the agent is in (as `Placement::take` counts it at apply).
    pub(crate) fn book(&mut self, agent: &AgentSpec, tags: &[String]) {
        if tags.is_empty() {
            return;
        }
        for group in rules::groups_of(&agent.id, &agent.labels) {
            let counts = self.groups.entry(group).or_default();
            for t in tags {
                *counts.entry(t.clone()).or_default() += 1;
            }
        }
        for t in tags {
            *self.total.entry(t.clone()).or_default() += 1;
        }
    }
}

/// The device view of an agent at version 5: its free device indexes (not
/// held by any task, per the placement state), and its GPUs' weights summed,
/// all and free.
pub(crate) fn devices_of(agent: &Agent, placement: &Placement) -> (Vec<u16>, u64, u64) {
    if agent.spec.gpus.is_empty() {
        return (Vec::new(), 0, 0);
    }
    let busy = placement.busy(&agent.spec.id);
    let mut free = Vec::new();
    let (mut total, mut free_milli) = (0u64, 0u64);
    for (i, g) in agent.spec.gpus.iter().enumerate() {
        let Ok(i) = u16::try_from(i) else { break };
        let w = u64::from(placement.gpu_weight(&g.model));
        total += w;
        if busy.is_none_or(|b| !b.contains_key(&i)) {
            free.push(i);
            free_milli += w;
        }
    }
    (free, total, free_milli)
}

/// The static part of the version-5 predicate for one task shape: does the
/// work, serves the tenant, meets the constraints, and could hold one of the
/// GPU shapes were all its devices free.
pub(crate) fn takes(
    c: &Candidate<'_>,
    spec: &TaskSpec,
    ask: Option<&PlaceAsk>,
    shapes: &[GpuShape],
) -> bool {
    eligibility::capable_work(&c.agent.spec, spec).is_ok()
        && eligibility::serves(c.bound, spec).is_ok()
        && ask.is_none_or(|a| {
            a.constraints
                .iter()
                .all(|k| constraint::matches(&c.agent.spec.labels, k))
        })
        && (needs_no_gpus(shapes) || devices::possible(&c.agent.spec.gpus, shapes))
}

/// Whether the shapes take no GPU (as `check::pick_devices` reads them).
pub(crate) fn needs_no_gpus(shapes: &[GpuShape]) -> bool {
    shapes.iter().all(|s| s.count == 0)
}

/// The capacity part for one candidate: free slots and free devices for
/// one of the shapes (`Ok(None)`: the task takes none). `Err(())`: it does
/// not fit now, nor will in this round (capacity only shrinks).
pub(crate) fn room(
    c: &Candidate<'_>,
    spec: &TaskSpec,
    shapes: &[GpuShape],
    placement: &Placement,
) -> Result<Option<Pick>, ()> {
    if c.free_slots < spec.slots {
        return Err(());
    }
    if needs_no_gpus(shapes) {
        return Ok(None);
    }
    let p = devices::pick(
        &c.agent.spec.gpus,
        |d| c.free_devices.binary_search(&d).is_ok(),
        shapes,
        |m| placement.gpu_weight(m),
    )
    .ok_or(())?;
    // Tasks assigned before version 5 hold GPUs by count only.
    if p.devices.len() as u64 > u64::from(c.free_gpus) {
        return Err(());
    }
    Ok(Some(p))
}

/// Whether the candidate keeps the ask's tag rules, counting the tagged
/// tasks the round booked. Affinity may come to hold later in the round.
pub(crate) fn keeps_rules(
    c: &Candidate<'_>,
    ask: Option<&PlaceAsk>,
    placement: &Placement,
    tags: &RoundTags,
) -> bool {
    let Some(ask) = ask.filter(|a| !a.rules.is_empty()) else {
        return true;
    };
    rules::first_broken(
        ask,
        &c.agent.spec.id,
        &c.agent.spec.labels,
        |g, t| tags.count(placement, g, t),
        |t| tags.total(placement, t),
    )
    .is_none()
}

/// Books a pick's devices on the candidate.
pub(crate) fn take_devices(c: &mut Candidate<'_>, pick: &Pick) {
    c.free_devices.retain(|d| !pick.devices.contains(d));
    c.gpu_free_milli = c.gpu_free_milli.saturating_sub(u64::from(pick.gpu_milli));
}
