//! The placement wire of cluster format version 5 (proto: TaskSpec 22-27,
//! Task's GPU devices and shape, queue strategies): a task's ask read from
//! its spec and written back, a queue's strategy both ways.

use tidal_core::model::{Strategy, TaskSpec};
use tidal_core::placement::constraint;
use tidal_core::placement::types::{
    GpuShape, PlaceAsk, PlaceStrategy, QueuePlacement, RuleKind, Scope, TagRule, TaskPlace,
    MAX_CONSTRAINTS, MAX_CONSTRAINT_VALUES, MAX_SHAPES, MAX_TAGS, MAX_TAG_RULES,
};
use tidal_core::placement::types::{Op, PLACEMENT_VERSION};
use tidal_core::placement::{rules, validate};
use tidal_proto::v1;

use crate::error::ServerError;

/// Whether the wire spec sets any placement field (each needs version 5).
pub fn has_placement(s: &v1::TaskSpec) -> bool {
    !s.constraints.is_empty()
        || !s.tags.is_empty()
        || !s.tag_rules.is_empty()
        || !s.gpu_model.is_empty()
        || !s.gpu_shapes.is_empty()
        || !s.hash_key.is_empty()
}

/// The FAILED_PRECONDITION of a placement field below version 5.
pub fn needs_version(version: u8) -> ServerError {
    ServerError::FailedPrecondition(format!(
        "constraints, tags, tag rules, gpu_model, gpu_shapes and hash_key: this needs cluster \
         format version {PLACEMENT_VERSION}; the cluster is at version {version} (README: Rolling \
         upgrade)"
    ))
}

fn invalid(field: &str, why: impl std::fmt::Display) -> ServerError {
    ServerError::InvalidArgument(format!("{field}: {why}"))
}

fn too_many(field: &str, n: usize, max: usize) -> ServerError {
    ServerError::ResourceExhausted(format!(
        "{field}: the task has {n}, over the limit of {max}"
    ))
}

/// Every GPU shape of `ask` within the server's GPU limit per task (the
/// one `gpus` has, `[limits] max_slots`): INVALID_ARGUMENT naming the
/// shape otherwise, as for `gpus`.
pub fn shapes_within(ask: &PlaceAsk, max: u32) -> Result<(), ServerError> {
    match ask.shapes.iter().position(|g| g.count > max) {
        Some(i) => Err(invalid(
            &format!("gpu_shapes[{i}]"),
            format!(
                "task asks for {} GPUs, over the limit of {max}",
                ask.shapes[i].count
            ),
        )),
        None => Ok(()),
    }
}

/// A task's placement ask from its wire spec (normalised): a malformed
/// field is INVALID_ARGUMENT naming it, more entries than a limit allows
/// RESOURCE_EXHAUSTED. `gpu_model` with `gpus` becomes one shape.
pub fn ask_from(s: &v1::TaskSpec) -> Result<PlaceAsk, ServerError> {
    if s.constraints.len() > MAX_CONSTRAINTS {
        return Err(too_many(
            "constraints",
            s.constraints.len(),
            MAX_CONSTRAINTS,
        ));
    }
    if s.tags.len() > MAX_TAGS {
        return Err(too_many("tags", s.tags.len(), MAX_TAGS));
    }
    if s.tag_rules.len() > MAX_TAG_RULES {
        return Err(too_many("tag_rules", s.tag_rules.len(), MAX_TAG_RULES));
    }
    if s.gpu_shapes.len() > MAX_SHAPES {
        return Err(too_many("gpu_shapes", s.gpu_shapes.len(), MAX_SHAPES));
    }
    let mut constraints = Vec::with_capacity(s.constraints.len());
    for (i, text) in s.constraints.iter().enumerate() {
        let field = format!("constraints[{i}] {text:?}");
        let c = constraint::parse(text).map_err(|e| {
            // A list longer than the limit is a limit, not a malformed text.
            if e.contains("values, over the limit") {
                ServerError::ResourceExhausted(format!("{field}: {e}"))
            } else {
                invalid(&field, e)
            }
        })?;
        if matches!(c.op, Op::In | Op::NotIn) && c.values.len() > MAX_CONSTRAINT_VALUES {
            return Err(ServerError::ResourceExhausted(format!(
                "constraints[{i}] {text:?}: lists {} values, over the limit of \
                 {MAX_CONSTRAINT_VALUES}",
                c.values.len()
            )));
        }
        constraints.push(c);
    }
    for (i, t) in s.tags.iter().enumerate() {
        validate::check_name("tag", t).map_err(|e| invalid(&format!("tags[{i}]"), e))?;
    }
    let mut tag_rules = Vec::with_capacity(s.tag_rules.len());
    for (i, r) in s.tag_rules.iter().enumerate() {
        tag_rules.push(rule_from(r).map_err(|e| invalid(&format!("tag_rules[{i}]"), e))?);
    }
    // With shapes, gpus and gpu_memory_mb are unset, or one shape's (as
    // Get shows a task's spec, so a spec read back can be sent again).
    let echoes = |g: &v1::GpuShape| g.count == s.gpus && g.memory_mb == s.gpu_memory_mb;
    let unset = s.gpus == 0 && s.gpu_memory_mb == 0;
    if !s.gpu_shapes.is_empty()
        && (!s.gpu_model.is_empty() || !(unset || s.gpu_shapes.iter().any(echoes)))
    {
        return Err(invalid(
            "gpu_shapes",
            "with gpu_shapes leave gpus, gpu_model and gpu_memory_mb unset (or gpus and \
             gpu_memory_mb one shape's, as Get shows them): each shape gives its count, model \
             and memory",
        ));
    }
    let mut shapes = Vec::new();
    if !s.gpu_model.is_empty() {
        if s.gpus == 0 {
            return Err(invalid(
                "gpu_model",
                format!("{:?} is set with gpus 0: give gpus too", s.gpu_model),
            ));
        }
        validate::check_name("GPU model", &s.gpu_model).map_err(|e| invalid("gpu_model", e))?;
        shapes.push(GpuShape {
            count: s.gpus,
            model: Some(s.gpu_model.clone()),
            min_memory_mb: s.gpu_memory_mb,
        });
    }
    for g in &s.gpu_shapes {
        shapes.push(GpuShape {
            count: g.count,
            model: Some(g.model.clone()).filter(|m| !m.is_empty()),
            min_memory_mb: g.memory_mb,
        });
    }
    let ask = validate::normalize(PlaceAsk {
        constraints,
        tags: s.tags.clone(),
        rules: tag_rules,
        shapes,
        hash_key: Some(s.hash_key.clone()).filter(|k| !k.is_empty()),
    });
    validate::validate(&ask).map_err(|e| {
        let field = if e.contains("GPU shape") {
            "gpu_shapes"
        } else if e.contains("tag rule") || e.contains("max-per") || e.contains("anti-affinity") {
            "tag_rules"
        } else if e.contains("hash key") {
            "hash_key"
        } else if e.contains("tag") {
            "tags"
        } else {
            "constraints"
        };
        invalid(field, e)
    })?;
    Ok(ask)
}

/// A wire tag rule: its kind named, `max` only for max-per, the scope a
/// label key or empty (the agent).
fn rule_from(r: &v1::TagRule) -> Result<TagRule, String> {
    let kind = match v1::TagRuleKind::try_from(r.kind) {
        Ok(v1::TagRuleKind::Affinity) => RuleKind::Affinity,
        Ok(v1::TagRuleKind::AntiAffinity) => RuleKind::AntiAffinity,
        Ok(v1::TagRuleKind::MaxPer) => {
            if r.max == 0 {
                return Err(format!(
                    "max-per rule for tag {:?} allows 0 tasks: give max at least 1",
                    r.tag
                ));
            }
            RuleKind::MaxPer(r.max)
        }
        _ => {
            return Err(format!(
                "kind {} is not valid: use 1 (affinity), 2 (anti-affinity) or 3 (max-per)",
                r.kind
            ))
        }
    };
    if r.max != 0 && !matches!(kind, RuleKind::MaxPer(_)) {
        return Err(format!(
            "max {} is set on a {} rule: only max-per takes it",
            r.max,
            rules::kind_name(kind)
        ));
    }
    validate::check_name("tag", &r.tag)?;
    let scope = if r.scope.is_empty() {
        Scope::Agent
    } else {
        validate::check_name("scope label key", &r.scope)?;
        Scope::Label(r.scope.clone())
    };
    Ok(TagRule {
        kind,
        tag: r.tag.clone(),
        scope,
    })
}

fn rule_to(r: &TagRule) -> v1::TagRule {
    let (kind, max) = match r.kind {
        RuleKind::Affinity => (v1::TagRuleKind::Affinity, 0),
        RuleKind::AntiAffinity => (v1::TagRuleKind::AntiAffinity, 0),
        RuleKind::MaxPer(n) => (v1::TagRuleKind::MaxPer, n),
    };
    v1::TagRule {
        kind: kind as i32,
        tag: r.tag.clone(),
        max,
        scope: match &r.scope {
            Scope::Agent => String::new(),
            Scope::Label(k) => k.clone(),
        },
    }
}

pub fn shape_to(s: &GpuShape) -> v1::GpuShape {
    v1::GpuShape {
        count: s.count,
        model: s.model.clone().unwrap_or_default(),
        memory_mb: s.min_memory_mb,
    }
}

/// Writes a task's ask into its wire spec: one shape with a model as
/// `gpu_model` (with the spec's gpus and memory, as submitted), otherwise
/// the shapes as `gpu_shapes` (the spec's gpus and memory are the first
/// shape's until an assignment takes one, then the shape taken, as the
/// proto says Get shows them).
pub fn ask_into(ask: &PlaceAsk, out: &mut v1::TaskSpec) {
    out.constraints = ask.constraints.iter().map(|c| c.to_string()).collect();
    out.tags = ask.tags.clone();
    out.tag_rules = ask.rules.iter().map(rule_to).collect();
    match ask.shapes.as_slice() {
        [] => {}
        [one] if one.model.is_some() => out.gpu_model = one.model.clone().unwrap_or_default(),
        shapes => out.gpu_shapes = shapes.iter().map(shape_to).collect(),
    }
    out.hash_key = ask.hash_key.clone().unwrap_or_default();
}

/// The GPU shape a task's current or last assignment took: of its shapes,
/// or the one its spec implies. `None` before an assignment took GPUs.
pub fn taken_shape(spec: &TaskSpec, place: &TaskPlace) -> Option<v1::GpuShape> {
    let index = place.held.as_ref().map(|h| h.shape).or(place.last_shape)?;
    let devices = place
        .held
        .as_ref()
        .map_or(&place.last_devices, |h| &h.devices);
    if devices.is_empty() {
        return None;
    }
    match place.ask.shapes.get(index as usize) {
        Some(s) => Some(shape_to(s)),
        None => Some(v1::GpuShape {
            count: spec.gpus,
            model: String::new(),
            memory_mb: spec.gpu_memory_mb,
        }),
    }
}

/// The devices of a task's current (or else last) assignment.
pub fn taken_devices(place: &TaskPlace) -> Vec<u32> {
    place
        .held
        .as_ref()
        .map_or(&place.last_devices, |h| &h.devices)
        .iter()
        .map(|d| u32::from(*d))
        .collect()
}

/// A queue's strategy from SetQueue: the version-1 ones alone, or a
/// version-5 placement (`needs_v5`). `spread` needs a key; other
/// strategies take none.
pub fn strategy_from(strategy: &str, spread_key: &str) -> Result<QueueStrategy, ServerError> {
    let placement = match strategy {
        "bin-pack" => Some(PlaceStrategy::BinPack),
        "consistent-hash" => Some(PlaceStrategy::ConsistentHash),
        "spread" => {
            if spread_key.is_empty() {
                return Err(ServerError::InvalidArgument(
                    "strategy \"spread\" needs spread_key: the label key whose values it \
                     spreads over (e.g. zone)"
                        .into(),
                ));
            }
            validate::check_name("spread_key", spread_key).map_err(ServerError::InvalidArgument)?;
            Some(PlaceStrategy::Spread {
                key: spread_key.to_string(),
            })
        }
        _ => None,
    };
    if !spread_key.is_empty() && !matches!(placement, Some(PlaceStrategy::Spread { .. })) {
        return Err(ServerError::InvalidArgument(format!(
            "spread_key {spread_key:?} is given with strategy {strategy:?}: only \"spread\" takes \
             one"
        )));
    }
    if let Some(p) = placement {
        return Ok(QueueStrategy::Placement(QueuePlacement { strategy: p }));
    }
    let v1: Strategy = strategy.parse().map_err(|_| {
        ServerError::InvalidArgument(format!(
            "unknown strategy {strategy:?}: expected least-loaded, weighted-round-robin, \
             bin-pack, spread or consistent-hash"
        ))
    })?;
    Ok(QueueStrategy::V1(v1))
}

/// What SetQueue sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueStrategy {
    V1(Strategy),
    Placement(QueuePlacement),
}

/// A strategy's wire name and spread key.
pub fn strategy_to(s: &PlaceStrategy) -> (&'static str, String) {
    match s {
        PlaceStrategy::LeastLoaded => ("least-loaded", String::new()),
        PlaceStrategy::WeightedRoundRobin => ("weighted-round-robin", String::new()),
        PlaceStrategy::BinPack => ("bin-pack", String::new()),
        PlaceStrategy::Spread { key } => ("spread", key.clone()),
        PlaceStrategy::ConsistentHash => ("consistent-hash", String::new()),
    }
}

#[cfg(test)]
#[path = "convert_placement_test.rs"]
mod tests;
