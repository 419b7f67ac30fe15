//! Label constraints: parsing, the canonical text, and matching an agent's
//! labels (Kubernetes' set-based selector semantics).

use std::collections::BTreeMap;

use crate::placement::types::Constraint;

/// Parses one constraint (`zone=a`, `gpu in (A100,H100)`, `rack!=r3`,
/// `ssd`, `!spot`); values come out sorted and without repeats.
pub fn parse(text: &str) -> Result<Constraint, String> {
    Err(format!("constraint {text:?}: not parsed yet"))
}

/// Whether labels meet the constraint.
pub fn matches(_labels: &BTreeMap<String, String>, _c: &Constraint) -> bool {
    false
}
