//! Placement in the random sequences (format version 5): tasks submitted
//! with random asks (label constraints, tags and tag rules, GPU shapes, a
//! hash key) among all the other commands. Besides the invariants checked
//! after every apply (no agent over capacity, no device held twice, the tag
//! index in step), every task that comes to be held is checked against its
//! ask: its agent's labels meet every constraint, and it holds exactly the
//! devices of one of its shapes, each of that shape's model and memory.

use proptest::collection::vec;
use proptest::prelude::*;

use super::{agent_id, spec_of, Item, Sim, AGENTS};
use crate::command::Command;
use crate::model::{TaskId, TaskSpec};
use crate::placement::types::PlaceAsk;
use crate::placement::{constraint, devices, rules, validate};
use crate::state::State;

/// Constraints over the agents' labels (`zone` a/b by index parity, `rack`
/// r0-r3, `ssd` on a2 only): each met by some agents and not others.
const CONSTRAINTS: [&str; 7] = [
    "zone=a",
    "zone!=a",
    "zone in (a,b)",
    "rack notin (r1,r2)",
    "ssd",
    "!ssd",
    "rack=r9",
];
const TAGS: [&str; 2] = ["web", "db"];
const RULES: [&str; 5] = [
    "affinity tag=db",
    "anti-affinity tag=web",
    "max-per tag=web:1",
    "anti-affinity tag=web@zone",
    "max-per tag=db:2@zone",
];
/// Agents' GPUs are A40s of 16000 and 32000 MB (a1: one, a2: two).
const SHAPES: [&str; 4] = ["1xA40:32000", "2xA40|1xA40", "1xA100|1xA40", "1xA100"];

/// A random ask, by selectors.
#[derive(Clone, Debug)]
pub(super) struct AskSel {
    constraints: u8,
    tags: u8,
    rules: u8,
    shape: Option<u8>,
    hash: Option<u8>,
}

fn ask_sel() -> impl Strategy<Value = AskSel> {
    (
        any::<u8>(),
        0u8..4,
        any::<u8>(),
        proptest::option::weighted(0.4, 0u8..4),
        proptest::option::weighted(0.2, 0u8..4),
    )
        .prop_map(|(constraints, tags, rules, shape, hash)| AskSel {
            constraints,
            tags,
            rules,
            shape,
            hash,
        })
}

/// A submit of 1-4 items with asks, eagerly placed over the agents in the
/// mask (as the leader would, when its planner places them).
pub(super) fn submit_asking() -> impl Strategy<Value = super::Op> {
    (vec((super::item(), ask_sel()), 1..5), any::<u8>())
        .prop_map(|(items, connected)| super::Op::SubmitAsking { items, connected })
}

fn shape_of(text: &str) -> Vec<crate::placement::types::GpuShape> {
    text.split('|')
        .map(|s| {
            let (count, rest) = s.split_once('x').unwrap();
            let (model, mem) = rest.split_once(':').unwrap_or((rest, "0"));
            crate::placement::types::GpuShape {
                count: count.parse().unwrap(),
                model: Some(model.to_string()),
                min_memory_mb: mem.parse().unwrap(),
            }
        })
        .collect()
}

pub(super) fn ask_of(sel: &AskSel) -> PlaceAsk {
    let pick = |mask: u8, all: &[&str]| -> Vec<String> {
        (0..all.len())
            .filter(|b| mask & (1 << b) != 0)
            .map(|b| all[b].to_string())
            .collect()
    };
    // At most two constraints and one rule, so most tasks can be placed.
    let constraints = pick(sel.constraints, &CONSTRAINTS)
        .iter()
        .take(2)
        .map(|c| constraint::parse(c).unwrap())
        .collect();
    let rules = pick(sel.rules, &RULES)
        .iter()
        .take(1)
        .map(|r| rules::parse_rule_text(r).unwrap())
        .collect();
    validate::normalize(PlaceAsk {
        constraints,
        tags: pick(sel.tags, &TAGS),
        rules,
        shapes: sel
            .shape
            .map(|s| shape_of(SHAPES[usize::from(s)]))
            .unwrap_or_default(),
        hash_key: sel.hash.map(|h| format!("key-{h}")),
    })
}

impl Sim {
    pub(super) fn submit_asking(&mut self, items: &[(Item, AskSel)], connected: u8) -> Command {
        let specs: Vec<TaskSpec> = items
            .iter()
            .map(|(it, _)| {
                let mut s = spec_of(it);
                crate::state::normalize(&mut s);
                s
            })
            .collect();
        let asks: Vec<PlaceAsk> = items.iter().map(|(_, a)| ask_of(a)).collect();
        let connected: std::collections::BTreeSet<_> = (0..AGENTS)
            .filter(|i| connected & (1 << i) != 0)
            .map(agent_id)
            .collect();
        let live = crate::dispatch::Live {
            connected: &connected,
            warm: &Default::default(),
            warm_weight_milli: 1000,
        };
        let place = crate::dispatch::place_new_with(
            &self.a,
            &live,
            &specs,
            &asks,
            &crate::dispatch::InFlight::default(),
            &mut self.cursor,
        );
        Command::SubmitWithPlacement {
            opts: vec![Default::default(); specs.len()],
            by: vec![],
            specs,
            place,
            asks,
        }
    }
}

/// Every task held in `after` under a token it did not hold in `before`
/// meets its ask on its agent (see the module).
pub(super) fn check_new_holds(before: &State, after: &State) -> Result<(), TestCaseError> {
    for task in after.tasks_after(None) {
        let Some((agent, token)) = task.state.holder() else {
            continue;
        };
        let held_before = before
            .task(task.id)
            .and_then(|t| t.state.holder())
            .is_some_and(|(_, t)| t == token);
        if held_before {
            continue;
        }
        check_hold(after, task.id, agent, token)?;
    }
    Ok(())
}

fn check_hold(state: &State, id: TaskId, agent: &str, token: u64) -> Result<(), TestCaseError> {
    let task = state.task(id).unwrap();
    let a = state.agent(agent).unwrap();
    let ask = state.placement().ask(id);
    if let Some(ask) = ask {
        for c in &ask.constraints {
            prop_assert!(
                constraint::matches(&a.spec.labels, c),
                "task {} held on {} whose labels {:?} do not meet {}",
                id,
                agent,
                a.spec.labels,
                c
            );
        }
    }
    let shapes = devices::shapes_of(
        ask.map_or(&[][..], |a| &a.shapes),
        task.spec.gpus,
        task.spec.gpu_memory_mb,
    );
    let held = state.placement().task(id).and_then(|t| t.held.clone());
    if shapes.iter().all(|s| s.count == 0) {
        prop_assert!(
            held.as_ref().is_none_or(|h| h.devices.is_empty()),
            "task {} takes no GPU but holds {:?}",
            id,
            held
        );
        return Ok(());
    }
    let Some(held) = held else {
        return Err(TestCaseError::fail(format!(
            "task {id} takes GPUs {shapes:?} and holds no device on {agent}"
        )));
    };
    prop_assert_eq!(held.token, token);
    let shape = &shapes[usize::from(held.shape)];
    prop_assert_eq!(held.devices.len() as u32, shape.count);
    for d in &held.devices {
        let g = a.spec.gpus.get(usize::from(*d));
        prop_assert!(
            g.is_some_and(|g| devices::matches(g, shape)),
            "task {} holds device {} of {} ({:?}), not of shape {:?}",
            id,
            d,
            agent,
            g,
            shape
        );
    }
    Ok(())
}
