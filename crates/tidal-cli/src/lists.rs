//! Parsing of list-valued flags: `--gpus MODEL:MEM_MB,...`, `--labels k=v,...`,
//! and of placement flags: `--gpu-shape 1xA100|2xA40:40960`, `--constraint`,
//! `--affinity`/`--anti-affinity`/`--max-per` (checked here with
//! tidal-core's own parsers, so a mistake is a usage error before any
//! request; the text is what is sent).
//!
//! clap splits on commas; these parse one item each.

use std::collections::BTreeMap;

use tidal_core::placement::types::{RuleKind, Scope, TagRule, MAX_SHAPES, MAX_SHAPE_GPUS};
use tidal_core::placement::validate::check_name;
use tidal_proto::v1::{self, Gpu, GpuShape};

/// One GPU, `MODEL:MEM_MB` (e.g. `A100:81920`). The model may itself contain
/// `:`; the memory is after the last one.
pub fn parse_gpu(s: &str) -> Result<Gpu, String> {
    let (model, mem) = s
        .trim()
        .rsplit_once(':')
        .ok_or_else(|| format!("GPU {s:?} is not MODEL:MEM_MB (e.g. A100:81920)"))?;
    if model.is_empty() {
        return Err(format!(
            "GPU {s:?} has no model (expected MODEL:MEM_MB, e.g. A100:81920)"
        ));
    }
    let memory_mb = mem.parse::<u64>().map_err(|_| {
        format!("GPU {s:?}: memory {mem:?} is not a number of MB (e.g. A100:81920)")
    })?;
    Ok(Gpu {
        model: model.to_string(),
        memory_mb,
    })
}

/// One label, `KEY=VALUE` (the value may be empty or contain `=`).
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("label {s:?} is not KEY=VALUE"))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("label {s:?} has an empty key"));
    }
    Ok((k.to_string(), v.trim().to_string()))
}

/// Labels into a map; a key given twice is an error rather than a silent overwrite.
pub fn labels_map(labels: Vec<(String, String)>) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for (k, v) in labels {
        if let Some(old) = map.insert(k.clone(), v) {
            return Err(format!("label {k:?} is given twice (first as {k}={old})"));
        }
    }
    Ok(map)
}

/// Drops surrounding spaces and rejects empty items (`a,,b`), naming the flag.
pub fn clean(flag: &str, items: Vec<String>) -> Result<Vec<String>, String> {
    items
        .into_iter()
        .map(|s| {
            let t = s.trim();
            if t.is_empty() {
                Err(format!(
                    "{flag} has an empty item (two commas in a row, or a trailing comma)"
                ))
            } else {
                Ok(t.to_string())
            }
        })
        .collect()
}

/// One GPU alternative of `--gpu-shape`: `NxMODEL` or `NxMODEL:MEM_MB`
/// (`any` for any model; the model may itself contain `:`, the memory is
/// after the last one when that is a number).
fn parse_one_shape(s: &str) -> Result<GpuShape, String> {
    let t = s.trim();
    let bad = |why: &str| {
        format!("GPU shape {t:?}: {why} (write COUNTxMODEL[:MEM_MB], e.g. 2xA100 or 1xA40:40960)")
    };
    let (count, rest) = t
        .split_once('x')
        .ok_or_else(|| bad("no \"x\" between the count and the model"))?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| bad(&format!("{:?} is not a count of GPUs", count.trim())))?;
    if count == 0 || count > MAX_SHAPE_GPUS {
        return Err(bad(&format!("the count must be 1..={MAX_SHAPE_GPUS}")));
    }
    let (model, memory_mb) = match rest.rsplit_once(':') {
        Some((m, mem)) if !mem.is_empty() && mem.chars().all(|c| c.is_ascii_digit()) => (
            m,
            mem.parse::<u64>()
                .map_err(|_| bad(&format!("{mem:?} is not a number of MB")))?,
        ),
        _ => (rest, 0),
    };
    let model = model.trim();
    let model = match model {
        "" => return Err(bad("no model (use \"any\" for any model)")),
        "any" | "*" => String::new(),
        m => {
            check_name("GPU model", m).map_err(|e| bad(&e))?;
            m.to_string()
        }
    };
    Ok(GpuShape {
        count,
        model,
        memory_mb,
    })
}

/// `--gpu-shape`'s alternatives, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuShapes(pub Vec<GpuShape>);

/// `--gpu-shape`: GPU alternatives in order of preference, separated by
/// `|` (`1xA100|2xA40:40960`); the first an agent can take now wins.
pub fn parse_gpu_shapes(s: &str) -> Result<GpuShapes, String> {
    let shapes = s
        .split('|')
        .map(parse_one_shape)
        .collect::<Result<Vec<_>, _>>()?;
    if shapes.len() > MAX_SHAPES {
        return Err(format!(
            "--gpu-shape {s:?} lists {} alternatives, over the limit of {MAX_SHAPES}",
            shapes.len()
        ));
    }
    Ok(GpuShapes(shapes))
}

/// `--constraint`: checked with the servers' parser; the text is sent.
pub fn parse_constraint(s: &str) -> Result<String, String> {
    tidal_core::placement::constraint::parse(s)?;
    Ok(s.trim().to_string())
}

/// `--scope`: `agent` or a label key.
pub fn parse_scope(s: &str) -> Result<String, String> {
    match tidal_core::placement::rules::parse_scope(s)? {
        Scope::Agent => Ok(String::new()),
        Scope::Label(k) => Ok(k),
    }
}

/// A tag rule flag's value as given (`tag=web`, `tag=web:2@zone`), checked
/// and kept until the default scope (`--scope`) is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleArg {
    /// `affinity`, `anti-affinity` or `max-per`.
    pub kind: &'static str,
    pub text: String,
}

impl RuleArg {
    /// The rule on the wire, its scope `default_scope` (a label key, or ""
    /// for the agent) unless its text ends `@KEY` or `@agent`.
    pub fn to_wire(&self, default_scope: &str) -> Result<v1::TagRule, String> {
        let scope = tidal_core::placement::rules::parse_scope(default_scope)?;
        let r = tidal_core::placement::rules::parse_rule(self.kind, &self.text, &scope)?;
        Ok(tag_rule_wire(&r))
    }
}

fn tag_rule_wire(r: &TagRule) -> v1::TagRule {
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

fn rule_arg(kind: &'static str, s: &str) -> Result<RuleArg, String> {
    // Checked now against the agent scope; the real scope comes later.
    tidal_core::placement::rules::parse_rule(kind, s, &Scope::Agent)?;
    Ok(RuleArg {
        kind,
        text: s.trim().to_string(),
    })
}

/// `--affinity tag=T[@KEY]`.
pub fn parse_affinity(s: &str) -> Result<RuleArg, String> {
    rule_arg("affinity", s)
}

/// `--anti-affinity tag=T[@KEY]`.
pub fn parse_anti_affinity(s: &str) -> Result<RuleArg, String> {
    rule_arg("anti-affinity", s)
}

/// `--max-per tag=T:N[@KEY]`.
pub fn parse_max_per(s: &str) -> Result<RuleArg, String> {
    rule_arg("max-per", s)
}

/// A tag rule from the wire as people read it (`affinity tag=db`,
/// `anti-affinity tag=web@zone`, `max-per tag=web:2`).
pub fn rule_text(r: &v1::TagRule) -> String {
    let kind = match v1::TagRuleKind::try_from(r.kind) {
        Ok(v1::TagRuleKind::Affinity) => "affinity".to_string(),
        Ok(v1::TagRuleKind::AntiAffinity) => "anti-affinity".to_string(),
        Ok(v1::TagRuleKind::MaxPer) => "max-per".to_string(),
        _ => format!("kind-{}", r.kind),
    };
    let mut t = format!("{kind} tag={}", r.tag);
    if r.kind == v1::TagRuleKind::MaxPer as i32 {
        t.push_str(&format!(":{}", r.max));
    }
    if !r.scope.is_empty() {
        t.push_str(&format!("@{}", r.scope));
    }
    t
}

/// A GPU shape as `--gpu-shape` writes it (`2xA100`, `1xany:40960`).
pub fn shape_text(s: &v1::GpuShape) -> String {
    let model = if s.model.is_empty() { "any" } else { &s.model };
    let mut t = format!("{}x{model}", s.count);
    if s.memory_mb > 0 {
        t.push_str(&format!(":{}", s.memory_mb));
    }
    t
}

#[cfg(test)]
#[path = "lists_test.rs"]
mod tests;
