//! Apply while a snapshot is built: the probe's round trips by window and the `apply_pause_max_ms` servers log.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::stats::{histogram, summary};

/// The message of the line a server logs when it has built a snapshot.
pub const SNAPSHOT_BUILT: &str = "snapshot built";

/// One probe request: when it was sent, how long until its answer (or its
/// error), and whether it succeeded.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    pub sent: Instant,
    pub took: Duration,
    pub ok: bool,
}

/// The `apply_pause_max_ms` of a "snapshot built" line, in the text
/// (`apply_pause_max_ms=1.5`) or JSON (`"apply_pause_max_ms":1.5`) log
/// format; `None` for any other line.
pub fn apply_pause_ms(line: &str) -> Option<f64> {
    const FIELD: &str = "apply_pause_max_ms";
    if !line.contains(SNAPSHOT_BUILT) {
        return None;
    }
    let rest = &line[line.find(FIELD)? + FIELD.len()..];
    let rest = rest.trim_start_matches('"').trim_start_matches([':', '=']);
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The pauses of the "snapshot built" lines among `lines` after the first
/// `skip` of them (those logged before the snapshot in question).
pub fn pauses_after(lines: &[String], skip: usize) -> Vec<f64> {
    lines
        .iter()
        .filter_map(|l| apply_pause_ms(l))
        .skip(skip)
        .collect()
}

/// The probes whose request was in flight at some time in `[from, to)`
/// (sent before `to`, answered after `from`): a request sent just before a
/// pause and answered after it waited for it too. Their round trips
/// (`stats::summary`, failed requests included) and how many failed.
pub fn window(probes: &[Probe], from: Instant, to: Instant) -> Value {
    let mut h = histogram();
    let mut failed = 0u64;
    for p in probes
        .iter()
        .filter(|p| p.sent < to && p.sent + p.took > from)
    {
        h.saturating_record(u64::try_from(p.took.as_micros()).unwrap_or(u64::MAX).max(1));
        failed += u64::from(!p.ok);
    }
    let mut s = summary(&h);
    s["seconds"] = json!(to.saturating_duration_since(from).as_secs_f64());
    s["failed"] = json!(failed);
    s
}

#[cfg(test)]
#[path = "snapshot_apply_test.rs"]
mod tests;
