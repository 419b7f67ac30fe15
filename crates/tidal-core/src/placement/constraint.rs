//! Label constraints: parsing, the canonical text, and matching an agent's
//! labels (Kubernetes' set-based selector semantics).
//!
//! ```text
//! constraint := ws ( '!' ws key | key | key ws op ws value
//!                  | key ws ('in' | 'notin') ws '(' ws list ws ')' ) ws
//! op    := '=' | '==' | '!='
//! list  := value (ws ',' ws value)*
//! key   := a label key (a name: 1..=128 bytes of letters, digits, . _ : / -)
//! value := 1..=128 of ALNUM | '.' | '_' | ':' | '/' | '-'
//! ```
//!
//! `key` asks that the label exists, `!key` that it does not. `=` and `in`
//! need the label with one of the values; `!=` and `notin` also match an
//! agent without the label (as in Kubernetes). A label value with other
//! characters can never be matched by `=` or `in`.

use std::collections::BTreeMap;
use std::fmt;

use crate::placement::types::{Constraint, Op, MAX_CONSTRAINT_VALUES};
use crate::placement::validate::{check_name, name_char, MAX_NAME_LEN};

/// Parses one constraint (`zone=a`, `gpu in (A100,H100)`, `rack!=r3`,
/// `ssd`, `!spot`); values come out sorted and without repeats.
pub fn parse(text: &str) -> Result<Constraint, String> {
    let fail = |why: String| format!("constraint {text:?}: {why}");
    let mut p = Cursor { s: text, at: 0 };
    p.ws();
    if p.rest().is_empty() {
        return Err(fail(
            "it is empty: write e.g. zone=a, zone!=a, gpu in (A100,H100), ssd or !ssd".into(),
        ));
    }
    if p.rest().starts_with('!') && !p.rest().starts_with("!=") {
        p.eat("!");
        p.ws();
        let key = p.key(" after \"!\"").map_err(fail)?;
        p.ws();
        if !p.rest().is_empty() {
            return Err(fail(format!(
                "unexpected {:?} after \"!{key}\": \"!\" takes a label key alone",
                p.rest()
            )));
        }
        return Ok(Constraint {
            key,
            op: Op::NotExists,
            values: vec![],
        });
    }
    let key = p.key("").map_err(fail)?;
    p.ws();
    let rest = p.rest();
    if rest.is_empty() {
        return Ok(Constraint {
            key,
            op: Op::Exists,
            values: vec![],
        });
    }
    let op = if p.eat("!=") {
        Op::Ne
    } else if p.eat("==") || p.eat("=") {
        Op::Eq
    } else if p.word("notin") {
        Op::NotIn
    } else if p.word("in") {
        Op::In
    } else {
        return Err(fail(format!(
            "unexpected {rest:?} after the label key {key:?}: expected =, ==, !=, in (..), notin (..) or the end"
        )));
    };
    let op_text = &text[text.len() - rest.len()..p.at];
    p.ws();
    let mut values = Vec::new();
    match op {
        Op::Eq | Op::Ne => {
            values.push(p.value(op_text).map_err(fail)?);
        }
        _ => {
            if !p.eat("(") {
                return Err(fail(format!(
                    "\"(\" is needed after {op_text:?}: write {key} {op_text} (a,b)"
                )));
            }
            let mut after = "(";
            loop {
                p.ws();
                if after == "(" && p.rest().starts_with(')') {
                    return Err(fail(format!(
                        "the list after {op_text:?} is empty: give 1 to {MAX_CONSTRAINT_VALUES} values"
                    )));
                }
                values.push(p.value(after).map_err(fail)?);
                p.ws();
                if p.eat(",") {
                    after = ",";
                } else if p.eat(")") {
                    break;
                } else if p.rest().is_empty() {
                    return Err(fail("the list is not closed: \")\" is missing".into()));
                } else {
                    return Err(fail(format!(
                        "unexpected {:?} in the list: values are separated by \",\" and the list ends with \")\"",
                        p.rest()
                    )));
                }
            }
            values.sort();
            values.dedup();
            if values.len() > MAX_CONSTRAINT_VALUES {
                return Err(fail(format!(
                    "it lists {} values, over the limit of {MAX_CONSTRAINT_VALUES}",
                    values.len()
                )));
            }
        }
    }
    p.ws();
    if !p.rest().is_empty() {
        return Err(fail(format!(
            "unexpected {:?} after the constraint's end",
            p.rest()
        )));
    }
    Ok(Constraint { key, op, values })
}

/// Whether labels meet the constraint. `Ne` and `NotIn` also hold for an
/// agent without the label.
pub fn matches(labels: &BTreeMap<String, String>, c: &Constraint) -> bool {
    let has = |v: &String| c.values.iter().any(|x| x == v);
    match c.op {
        Op::Exists => labels.contains_key(&c.key),
        Op::NotExists => !labels.contains_key(&c.key),
        Op::Eq | Op::In => labels.get(&c.key).is_some_and(has),
        Op::Ne | Op::NotIn => labels.get(&c.key).is_none_or(|v| !has(v)),
    }
}

/// Whether labels meet every constraint.
pub fn matches_all(labels: &BTreeMap<String, String>, cs: &[Constraint]) -> bool {
    cs.iter().all(|c| matches(labels, c))
}

/// The first constraint the labels do not meet.
pub fn first_unmet<'a>(
    labels: &BTreeMap<String, String>,
    cs: &'a [Constraint],
) -> Option<&'a Constraint> {
    cs.iter().find(|c| !matches(labels, c))
}

/// The canonical text, which [`parse`] reads back to the same constraint:
/// `zone=a`, `zone!=a`, `gpu in (A100,H100)`, `gpu notin (A100,H100)`,
/// `ssd`, `!ssd`.
impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        let list = self.values.join(",");
        match self.op {
            Op::Eq => write!(f, "{key}={list}"),
            Op::Ne => write!(f, "{key}!={list}"),
            Op::In => write!(f, "{key} in ({list})"),
            Op::NotIn => write!(f, "{key} notin ({list})"),
            Op::Exists => write!(f, "{key}"),
            Op::NotExists => write!(f, "!{key}"),
        }
    }
}

/// A position in the text being parsed (a byte offset on a char boundary).
struct Cursor<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.at..]
    }

    fn ws(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    /// Takes `tok` if the text goes on with it.
    fn eat(&mut self, tok: &str) -> bool {
        if self.rest().starts_with(tok) {
            self.at += tok.len();
            true
        } else {
            false
        }
    }

    /// Takes the word `w` if it is followed by whitespace, "(" or the end
    /// (not by more of a name).
    fn word(&mut self, w: &str) -> bool {
        let rest = self.rest();
        let ends = rest.strip_prefix(w).is_some_and(|after| {
            after.is_empty() || after.starts_with(|c: char| c.is_whitespace() || c == '(')
        });
        if ends {
            self.at += w.len();
        }
        ends
    }

    /// The longest run of name characters.
    fn run(&mut self) -> &'a str {
        let rest = self.rest();
        let n = rest.find(|c: char| !name_char(c)).unwrap_or(rest.len());
        self.at += n;
        &rest[..n]
    }

    /// A label key; `after` (e.g. ` after "!"`) places it for a message.
    fn key(&mut self, after: &str) -> Result<String, String> {
        let rest = self.rest();
        let key = self.run();
        if key.is_empty() {
            return Err(match rest.chars().next() {
                None => format!("a label key is needed{after}"),
                Some(c) => format!(
                    "a label key is needed{after}, not {c:?} (label keys use letters, digits and . _ : / -)"
                ),
            });
        }
        check_name("label key", key)?;
        Ok(key.to_string())
    }

    /// A value, after the token `after` (for a message).
    fn value(&mut self, after: &str) -> Result<String, String> {
        let rest = self.rest();
        let v = self.run();
        if v.is_empty() {
            return Err(match rest.chars().next() {
                None => format!("a value is needed after {after:?}"),
                Some(c) => format!(
                    "a value is needed after {after:?}, not {c:?} (values use letters, digits and . _ : / -)"
                ),
            });
        }
        if v.len() > MAX_NAME_LEN {
            let shown: String = v.chars().take(32).collect();
            return Err(format!(
                "the value \"{shown}...\" is {} bytes long, over the limit of {MAX_NAME_LEN} bytes",
                v.len()
            ));
        }
        Ok(v.to_string())
    }
}

#[cfg(test)]
#[path = "constraint_test.rs"]
mod tests;
