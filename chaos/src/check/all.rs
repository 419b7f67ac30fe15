//! Runs every checker over one history.

use super::{
    convergence, durability, exclusivity, forwarding, leaders, linearizability, overlap,
    preemption, revocation, runs, Facts, Verdict,
};
use crate::history::Event;

/// Runs every checker.
pub fn run_all(events: &[Event], facts: &Facts) -> Vec<Verdict> {
    vec![
        durability::check(events),
        linearizability::check(events),
        exclusivity::check(events, facts),
        runs::check(events),
        overlap::check(events, facts),
        leaders::check(events),
        convergence::check(events),
        forwarding::check(events),
        revocation::check(events),
        preemption::check(events),
    ]
}
