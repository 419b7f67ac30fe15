//! Tag rules (affinity, anti-affinity, max-per) over the tags of the tasks
//! an agent, or a group of agents sharing a label value, holds.
//!
//! The count `C(group, tag)` is over held tasks (assigned or running,
//! suspended ones included). Only the new task's rules count (they are not
//! symmetric):
//! - `Affinity(t)`: C > 0; or, as in Kubernetes, the task carries `t` itself
//!   and no task with `t` is held anywhere (the first one may start). An
//!   agent without the scope's label meets no affinity.
//! - `AntiAffinity(t)`: C == 0.
//! - `MaxPer(t, n)`: C + (1 if the task carries `t`) <= n.
//!
//! For anti-affinity and max-per, an agent without the scope's label is a
//! group of its own (its agent group, see [`group_of`]).
//!
//! The text forms (CLI flags, server fields, scenario files): `tag=web` for
//! affinity and anti-affinity, `tag=web:2` for max-per, either optionally
//! ending `@KEY` (or `@agent`) to give the rule its own scope.

use std::collections::BTreeMap;
use std::fmt;

use crate::placement::types::{PlaceAsk, RuleKind, Scope, TagRule};
use crate::placement::validate::check_name;

/// The group an agent is in for a scope: `(Some(key), value)` for a label
/// the agent has; `(None, agent id)` for the agent scope, and for a label it
/// does not have (an agent without the label is a group of its own).
pub fn group_of(
    scope: &Scope,
    agent: &str,
    labels: &BTreeMap<String, String>,
) -> (Option<String>, String) {
    match scope {
        Scope::Label(k) if labels.contains_key(k) => (Some(k.clone()), labels[k].clone()),
        _ => (None, agent.to_string()),
    }
}

/// Every group an agent is in: its own, and one per label.
pub fn groups_of(agent: &str, labels: &BTreeMap<String, String>) -> Vec<(Option<String>, String)> {
    std::iter::once((None, agent.to_string()))
        .chain(labels.iter().map(|(k, v)| (Some(k.clone()), v.clone())))
        .collect()
}

/// The first of the ask's rules that the agent breaks, given `count(group,
/// tag)` (held tasks with the tag in the group) and `total(tag)` (held tasks
/// with the tag anywhere).
pub fn first_broken<'a>(
    ask: &'a PlaceAsk,
    agent: &str,
    labels: &BTreeMap<String, String>,
    count: impl Fn(&(Option<String>, String), &str) -> u32,
    total: impl Fn(&str) -> u32,
) -> Option<&'a TagRule> {
    let carries = |t: &str| ask.tags.iter().any(|x| x == t);
    ask.rules.iter().find(|r| {
        let held = || count(&group_of(&r.scope, agent, labels), &r.tag);
        let holds = match r.kind {
            RuleKind::Affinity => {
                let labelled = match &r.scope {
                    Scope::Agent => true,
                    Scope::Label(k) => labels.contains_key(k),
                };
                labelled && (held() > 0 || (carries(&r.tag) && total(&r.tag) == 0))
            }
            RuleKind::AntiAffinity => held() == 0,
            RuleKind::MaxPer(n) => u64::from(held()) + u64::from(carries(&r.tag)) <= u64::from(n),
        };
        !holds
    })
}

/// Reads a scope: `agent` (or "") is the agent itself; anything else is a
/// label key.
pub fn parse_scope(text: &str) -> Result<Scope, String> {
    let t = text.trim();
    if t.is_empty() || t == "agent" {
        return Ok(Scope::Agent);
    }
    check_name("scope label key", t).map_err(|w| format!("scope {text:?}: {w}"))?;
    Ok(Scope::Label(t.to_string()))
}

/// Reads a rule's kind: `affinity`, `anti-affinity` or `max-per` (also
/// with `_` for `-`, and `anti`, `maxper`); the max-per limit comes from the
/// rule's text, so it is 0 here.
fn parse_kind(text: &str) -> Result<RuleKind, String> {
    match text.trim() {
        "affinity" => Ok(RuleKind::Affinity),
        "anti-affinity" | "anti_affinity" | "antiaffinity" | "anti" => Ok(RuleKind::AntiAffinity),
        "max-per" | "max_per" | "maxper" => Ok(RuleKind::MaxPer(0)),
        other => Err(format!(
            "tag rule kind {other:?} is unknown: use affinity, anti-affinity or max-per"
        )),
    }
}

/// Reads one rule in its text form: `kind_text` is `affinity`,
/// `anti-affinity` or `max-per`; `text` is `tag=web` (affinity and
/// anti-affinity) or `tag=web:2` (max-per, at most 2), optionally ending
/// `@KEY` or `@agent` to override `default_scope`.
pub fn parse_rule(kind_text: &str, text: &str, default_scope: &Scope) -> Result<TagRule, String> {
    let kind = parse_kind(kind_text)?;
    let name = kind_name(kind);
    let fail = |why: String| format!("{name} {text:?}: {why}");
    let example = match kind {
        RuleKind::MaxPer(_) => "tag=web:2 or tag=web:2@zone",
        _ => "tag=web or tag=web@zone",
    };
    let t = text.trim();
    let (body, scope) = match t.split_once('@') {
        None => (t, default_scope.clone()),
        Some((body, s)) => {
            if s.trim().is_empty() {
                return Err(fail(format!(
                    "a scope (agent or a label key) is needed after \"@\": write {example}"
                )));
            }
            (body, parse_scope(s).map_err(fail)?)
        }
    };
    let Some(tag) = body.trim().strip_prefix("tag=") else {
        return Err(fail(format!("write {example}")));
    };
    let (tag, kind) = match kind {
        RuleKind::MaxPer(_) => {
            let Some((tag, n)) = tag.rsplit_once(':') else {
                return Err(fail(format!(
                    "the most tasks per scope is missing: write {example}"
                )));
            };
            let n: u32 = n.trim().parse().map_err(|_| {
                fail(format!(
                    "{n:?} is not a count of tasks (a whole number from 1): write {example}"
                ))
            })?;
            if n == 0 {
                return Err(fail("the most tasks per scope must be at least 1".into()));
            }
            (tag, RuleKind::MaxPer(n))
        }
        k => (tag, k),
    };
    let tag = tag.trim();
    check_name("tag", tag).map_err(fail)?;
    Ok(TagRule {
        kind,
        tag: tag.to_string(),
        scope,
    })
}

/// Reads a rule's [`Display`](fmt::Display) text (`affinity tag=db`,
/// `anti-affinity tag=web@zone`, `max-per tag=web:2`); without `@` its scope
/// is the agent.
pub fn parse_rule_text(text: &str) -> Result<TagRule, String> {
    let t = text.trim();
    let Some((kind, rest)) = t.split_once(char::is_whitespace) else {
        return Err(format!(
            "tag rule {text:?}: write e.g. affinity tag=db, anti-affinity tag=web@zone or max-per tag=web:2"
        ));
    };
    parse_rule(kind, rest, &Scope::Agent)
}

/// The kind's name in the text forms.
pub fn kind_name(kind: RuleKind) -> &'static str {
    match kind {
        RuleKind::Affinity => "affinity",
        RuleKind::AntiAffinity => "anti-affinity",
        RuleKind::MaxPer(_) => "max-per",
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Agent => f.write_str("agent"),
            Scope::Label(k) => f.write_str(k),
        }
    }
}

/// `affinity tag=db`, `anti-affinity tag=web@zone`, `max-per tag=web:2`: the
/// agent scope is left out; [`parse_rule_text`] reads it back.
impl fmt::Display for TagRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} tag={}", kind_name(self.kind), self.tag)?;
        if let RuleKind::MaxPer(n) = self.kind {
            write!(f, ":{n}")?;
        }
        if let Scope::Label(k) = &self.scope {
            write!(f, "@{k}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "rules_test.rs"]
mod tests;
