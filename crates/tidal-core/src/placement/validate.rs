//! Checks of a task's placement ask at submit (and again at apply): sizes,
//! names, shapes and rules that contradict each other.
//!
//! Pure and stateless, like `limits.rs`, whose name rules it repeats (a name
//! is 1..=[`MAX_NAME_LEN`] bytes of letters, digits and `. _ : / -`) without
//! needing a `Limits` value: the ask's limits are fixed (see `types`), so
//! every replica checks a committed ask the same way.

use crate::placement::types::{
    Op, PlaceAsk, RuleKind, Scope, MAX_CONSTRAINTS, MAX_CONSTRAINT_VALUES, MAX_HASH_KEY_BYTES,
    MAX_SHAPES, MAX_SHAPE_GPUS, MAX_TAGS, MAX_TAG_RULES,
};

/// The longest name (label key, label value in a constraint, tag, GPU
/// model), in bytes: the default `Limits::max_name_len`.
pub const MAX_NAME_LEN: usize = 128;

/// Whether `c` may appear in a name or a constraint's value: letters,
/// digits and `. _ : / -`.
pub fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-')
}

/// Checks a name (`kind` says which, for the message): non-empty, at most
/// [`MAX_NAME_LEN`] bytes, only letters, digits and `. _ : / -`. The texts
/// are `limits::validate_name`'s.
pub fn check_name(kind: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{kind} \"\" is empty"));
    }
    if s.len() > MAX_NAME_LEN {
        let shown: String = s.chars().take(32).collect();
        return Err(format!(
            "{kind} \"{shown}...\" is {} bytes long, over the limit of {MAX_NAME_LEN} bytes",
            s.len()
        ));
    }
    if let Some(bad) = s.chars().find(|c| !name_char(*c)) {
        return Err(format!(
            "{kind} {s:?} contains {bad:?}: use only letters, digits and . _ : / -"
        ));
    }
    Ok(())
}

/// The ask in its canonical form: constraints, tags and rules sorted and
/// without repeats, each constraint's values sorted and without repeats. Two
/// asks that say the same compare equal once normalised. The shapes keep
/// their order (it is the order of preference, and `Held::shape` indexes it).
pub fn normalize(ask: PlaceAsk) -> PlaceAsk {
    let PlaceAsk {
        mut constraints,
        mut tags,
        mut rules,
        shapes,
        hash_key,
    } = ask;
    for c in &mut constraints {
        c.values.sort();
        c.values.dedup();
    }
    constraints.sort();
    constraints.dedup();
    tags.sort();
    tags.dedup();
    rules.sort();
    rules.dedup();
    PlaceAsk {
        constraints,
        tags,
        rules,
        shapes,
        hash_key,
    }
}

/// Whether the ask is well formed (see the limits in `types`): the counts,
/// every name, each constraint's number of values, each shape's GPU count,
/// max-per at least 1, no affinity and anti-affinity for one tag in one
/// scope, a hash key of 1..=[`MAX_HASH_KEY_BYTES`] bytes. The first fault
/// found is named.
pub fn validate(ask: &PlaceAsk) -> Result<(), String> {
    over("constraints", ask.constraints.len(), MAX_CONSTRAINTS)?;
    over("tags", ask.tags.len(), MAX_TAGS)?;
    over("tag rules", ask.rules.len(), MAX_TAG_RULES)?;
    over("GPU shapes", ask.shapes.len(), MAX_SHAPES)?;
    for c in &ask.constraints {
        check_name("constraint label key", &c.key)?;
        let n = c.values.len();
        let (ok, want) = match c.op {
            Op::Exists | Op::NotExists => (n == 0, "no values".to_string()),
            Op::Eq | Op::Ne => (n == 1, "exactly one value".to_string()),
            Op::In | Op::NotIn => (
                (1..=MAX_CONSTRAINT_VALUES).contains(&n),
                format!("1 to {MAX_CONSTRAINT_VALUES} values"),
            ),
        };
        if !ok {
            return Err(format!(
                "constraint {:?} {} has {n} value{}: it takes {want}",
                c.key,
                op_word(c.op),
                if n == 1 { "" } else { "s" }
            ));
        }
        for v in &c.values {
            check_name(&format!("constraint value (label {:?})", c.key), v)?;
        }
    }
    for t in &ask.tags {
        check_name("tag", t)?;
    }
    for r in &ask.rules {
        check_name("tag rule's tag", &r.tag)?;
        if let Scope::Label(k) = &r.scope {
            check_name("tag rule's scope label key", k)?;
        }
        if r.kind == RuleKind::MaxPer(0) {
            return Err(format!(
                "max-per rule for tag {:?} allows 0 tasks: give at least 1",
                r.tag
            ));
        }
        if r.kind == RuleKind::Affinity
            && ask
                .rules
                .iter()
                .any(|o| o.kind == RuleKind::AntiAffinity && o.tag == r.tag && o.scope == r.scope)
        {
            return Err(format!(
                "tag {:?} has both an affinity and an anti-affinity rule in the same scope ({}): no agent can meet both",
                r.tag,
                scope_text(&r.scope)
            ));
        }
    }
    for (i, s) in ask.shapes.iter().enumerate() {
        if s.count == 0 || s.count > MAX_SHAPE_GPUS {
            return Err(format!(
                "GPU shape {} asks for {} GPUs: use 1..={MAX_SHAPE_GPUS}",
                i + 1,
                s.count
            ));
        }
        if let Some(m) = &s.model {
            check_name("GPU model", m)?;
        }
    }
    if let Some(k) = &ask.hash_key {
        if k.is_empty() {
            return Err("hash key \"\" is empty: leave it unset or give one".to_string());
        }
        if k.len() > MAX_HASH_KEY_BYTES {
            let shown: String = k.chars().take(32).collect();
            return Err(format!(
                "hash key \"{shown}...\" is {} bytes long, over the limit of {MAX_HASH_KEY_BYTES} bytes",
                k.len()
            ));
        }
    }
    Ok(())
}

/// An operator as the message names it.
fn op_word(op: Op) -> &'static str {
    match op {
        Op::Eq => "=",
        Op::Ne => "!=",
        Op::In => "in",
        Op::NotIn => "notin",
        Op::Exists => "exists",
        Op::NotExists => "!exists",
    }
}

/// A scope as the rules' text writes it: `agent` or the label key.
fn scope_text(s: &Scope) -> &str {
    match s {
        Scope::Agent => "agent",
        Scope::Label(k) => k,
    }
}

fn over(what: &str, n: usize, max: usize) -> Result<(), String> {
    if n > max {
        Err(format!("the task has {n} {what}, over the limit of {max}"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
#[path = "validate_test.rs"]
mod tests;
