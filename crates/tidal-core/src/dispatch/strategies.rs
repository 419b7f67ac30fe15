//! How a queue's task chooses among the agents that fit it now (the last
//! step of the dispatch order), from cluster format version 5 on: the
//! queue's [`PlaceStrategy`](crate::placement::types::PlaceStrategy), then
//! the tie-breakers (warm models, then the agent id). Every key is an exact
//! integer (no floats), so every leader makes the same choice.
//!
//! - **least-loaded**: for a task that takes GPUs, the smallest share of the
//!   agent's weighted GPUs in use first (`used milli / total milli`); then
//!   the effective load `in_flight * 1000 / weight - warm_weight_milli *
//!   warm / models` (`warm`: how many of the task's models the agent reports
//!   loaded), compared exactly in i128; then the agent id.
//! - **weighted-round-robin**: the agents' smooth-WRR credits (unchanged
//!   from version 4; [`super::eligibility::weighted_round_robin`]).
//! - **bin-pack**: the least free capacity after the task: (free GPU milli
//!   after, free slots after) ascending, then more of the task's models
//!   warm, then the agent id. A task without GPUs thus goes first to agents
//!   with no free GPU, so GPU machines stay whole.
//! - **spread** over a label key: the group (the agents' value of the key,
//!   "" without it) holding the fewest of the queue's tasks (held plus booked
//!   in the round), ties by value; least-loaded within it.
//! - **consistent-hash**: rendezvous hashing of the task's hash key
//!   ([`crate::placement::hrw`]) over the agents that fit now; the highest
//!   score wins, so a key stays on its agent while that agent has room and
//!   moves to the next rank when it is full. A task without a key is placed
//!   least-loaded.
//!
//! All take `fit`, pool indexes in the pool's order (agent-id order in a
//! round; eager placement's window starts where the last one stopped), and
//! return one of them; ties go to the earlier index.

use std::cmp::{Ordering, Reverse};
use std::collections::BTreeSet;

use super::eligibility::Candidate;
use crate::placement::hrw;

/// What the tie-breakers know of one task: its models, and which agents of
/// the pool have which models warm.
pub(crate) struct Warmth<'r> {
    /// Per pool index, the agent's warm models (`None`: none reported).
    /// Empty when nothing is warm anywhere.
    pub(crate) sets: &'r [Option<&'r BTreeSet<String>>],
    pub(crate) models: &'r [String],
    pub(crate) weight_milli: u32,
}

impl Warmth<'_> {
    /// No warm model can change a choice.
    fn off(&self) -> bool {
        self.sets.is_empty() || self.models.is_empty() || self.weight_milli == 0
    }

    /// How many of the task's models agent `i` has warm.
    pub(crate) fn count(&self, i: usize) -> u64 {
        if self.off() {
            return 0;
        }
        match self.sets.get(i).copied().flatten() {
            Some(set) => self.models.iter().filter(|m| set.contains(*m)).count() as u64,
            None => 0,
        }
    }
}

/// Compares the effective loads of agents `a` and `b` (module doc):
/// `in * 1000 / w - W * k / m`, scaled by `w_a * w_b * m` to stay exact.
fn load_cmp(pool: &[Candidate<'_>], warm: &Warmth<'_>, a: usize, b: usize) -> Ordering {
    let (ca, cb) = (&pool[a], &pool[b]);
    let (wa, wb) = (
        i128::from(ca.agent.spec.weight.max(1)),
        i128::from(cb.agent.spec.weight.max(1)),
    );
    if warm.off() {
        let (wa, wb) = (
            u128::from(ca.agent.spec.weight.max(1)),
            u128::from(cb.agent.spec.weight.max(1)),
        );
        return (u128::from(ca.in_flight) * wb).cmp(&(u128::from(cb.in_flight) * wa));
    }
    let m = warm.models.len() as i128;
    let big_w = i128::from(warm.weight_milli);
    let la = (i128::from(ca.in_flight) * 1000 * m - big_w * i128::from(warm.count(a)) * wa) * wb;
    let lb = (i128::from(cb.in_flight) * 1000 * m - big_w * i128::from(warm.count(b)) * wb) * wa;
    la.cmp(&lb)
}

/// Compares the shares of the agents' weighted GPUs in use.
fn gpu_share_cmp(pool: &[Candidate<'_>], a: usize, b: usize) -> Ordering {
    let (ca, cb) = (&pool[a], &pool[b]);
    let used = |c: &Candidate<'_>| u128::from(c.gpu_total_milli.saturating_sub(c.gpu_free_milli));
    (used(ca) * u128::from(cb.gpu_total_milli.max(1)))
        .cmp(&(used(cb) * u128::from(ca.gpu_total_milli.max(1))))
}

/// The first of `fit` that no later one beats under `cmp` (strictly less
/// wins), i.e. the minimum with ties to the earlier index.
fn min_by(fit: &[usize], mut cmp: impl FnMut(usize, usize) -> Ordering) -> Option<usize> {
    let mut best: Option<usize> = None;
    for &i in fit {
        if best.is_none_or(|b| cmp(i, b) == Ordering::Less) {
            best = Some(i);
        }
    }
    best
}

/// Least-loaded (module doc); `gpus`: the task takes GPUs, so the GPU share
/// comes first.
pub(crate) fn least_loaded(
    pool: &[Candidate<'_>],
    fit: &[usize],
    gpus: bool,
    warm: &Warmth<'_>,
) -> Option<usize> {
    if !gpus && warm.off() {
        // Load alone: as before version 5.
        return super::eligibility::least_loaded(pool, fit);
    }
    min_by(fit, |a, b| {
        let first = if gpus {
            gpu_share_cmp(pool, a, b)
        } else {
            Ordering::Equal
        };
        first.then_with(|| load_cmp(pool, warm, a, b))
    })
}

/// Bin-pack (module doc). `slots`: what the task takes; each candidate's
/// `pick_milli` holds the weighted GPUs the task would take on it.
pub(crate) fn bin_pack(
    pool: &[Candidate<'_>],
    fit: &[usize],
    slots: u32,
    warm: &Warmth<'_>,
) -> Option<usize> {
    let key = |i: usize| {
        let c = &pool[i];
        (
            c.gpu_free_milli.saturating_sub(u64::from(c.pick_milli)),
            c.free_slots.saturating_sub(slots),
            Reverse(warm.count(i)),
        )
    };
    min_by(fit, |a, b| key(a).cmp(&key(b)))
}

/// Spread (module doc): `group(i)` is agent `i`'s group (its value of the
/// key) and that group's count of the queue's tasks.
pub(crate) fn spread<'g>(
    pool: &[Candidate<'_>],
    fit: &[usize],
    group: impl Fn(usize) -> (u64, &'g str),
    gpus: bool,
    warm: &Warmth<'_>,
) -> Option<usize> {
    let (_, value) = fit.iter().map(|&i| group(i)).min()?;
    let within: Vec<usize> = fit
        .iter()
        .copied()
        .filter(|&i| group(i).1 == value)
        .collect();
    least_loaded(pool, &within, gpus, warm)
}

/// Consistent hashing (module doc): the highest rendezvous score of `key`
/// among `fit`, whose agents' hashes are `hashes` (per pool index).
pub(crate) fn consistent_hash(fit: &[usize], hashes: &[u64], key: &str) -> Option<usize> {
    let k = hrw::hash_str(key);
    min_by(fit, |a, b| {
        hrw::score(k, hashes[b]).cmp(&hrw::score(k, hashes[a]))
    })
}
