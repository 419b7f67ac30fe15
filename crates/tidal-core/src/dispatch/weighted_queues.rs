//! Which queue picks next: smooth weighted round-robin across the queues that still have placeable work.
//!
//! Smooth WRR (nginx's): every step each active queue's credit grows by its
//! weight, the queue with the most credit picks (ties: name order) and pays the
//! total weight of the active queues. Over any `sum(weights)` consecutive steps
//! of a fixed active set, a queue of weight `w` picks exactly `w` times, and the
//! picks are interleaved rather than bunched. Credits persist in the
//! [`super::DispatchCursor`] between rounds, so small rounds are fair too (a
//! fresh start every round would let the heaviest queue win every 1-task round).
//!
//! Work-conserving: a queue with nothing placeable leaves the active set for
//! the rest of the round and its share flows to the others.

use std::collections::BTreeMap;

/// The queue half of one dispatch round.
pub(crate) struct QueueRotation<'a> {
    names: Vec<&'a str>,
    weights: Vec<i64>,
    credit: Vec<i64>,
    active: Vec<bool>,
    /// The total active weight of the last step, to retract it exactly.
    last_total: i64,
}

impl<'a> QueueRotation<'a> {
    /// Starts a round over `queues` (name, weight) in name order, with the
    /// credits saved in `saved` (absent: 0).
    pub(crate) fn new(queues: Vec<(&'a str, u32)>, saved: &BTreeMap<String, i64>) -> Self {
        let credit = queues
            .iter()
            .map(|(n, _)| saved.get(*n).copied().unwrap_or(0))
            .collect();
        QueueRotation {
            weights: queues.iter().map(|(_, w)| i64::from((*w).max(1))).collect(),
            active: vec![true; queues.len()],
            names: queues.into_iter().map(|(n, _)| n).collect(),
            credit,
            last_total: 0,
        }
    }

    pub(crate) fn name(&self, i: usize) -> &'a str {
        self.names[i]
    }

    /// Marks a queue as having nothing to offer from the start of the round.
    pub(crate) fn deactivate(&mut self, i: usize) {
        self.active[i] = false;
    }

    /// One smooth-WRR step: the index of the queue that picks next, or None
    /// when no queue is active.
    pub(crate) fn next(&mut self) -> Option<usize> {
        let total: i64 = (0..self.names.len())
            .filter(|&i| self.active[i])
            .map(|i| self.weights[i])
            .sum();
        if total == 0 {
            return None;
        }
        let mut best: Option<usize> = None;
        for i in 0..self.names.len() {
            if !self.active[i] {
                continue;
            }
            self.credit[i] += self.weights[i];
            // Strictly greater: on a tie the earlier name wins.
            if best.is_none_or(|b| self.credit[i] > self.credit[b]) {
                best = Some(i);
            }
        }
        let best = best.expect("total > 0 means some queue is active");
        self.credit[best] -= total;
        self.last_total = total;
        Some(best)
    }

    /// The queue chosen by the last `next` had nothing placeable: undo that
    /// step, so the others' proportions are unaffected, and drop the queue
    /// for the rest of the round (work-conserving).
    pub(crate) fn retract(&mut self, chosen: usize) {
        self.credit[chosen] += self.last_total;
        for i in 0..self.names.len() {
            if self.active[i] {
                self.credit[i] -= self.weights[i];
            }
        }
        self.active[chosen] = false;
    }

    /// Saves credits for the next round. A queue that ran out of placeable
    /// work restarts at 0, so idling does not bank a burst for later.
    pub(crate) fn save(self, saved: &mut BTreeMap<String, i64>) {
        saved.clear();
        for (i, name) in self.names.iter().enumerate() {
            let credit = if self.active[i] { self.credit[i] } else { 0 };
            if credit != 0 {
                saved.insert((*name).to_string(), credit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picks(r: &mut QueueRotation<'_>, n: usize) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let i = r.next().expect("an active queue");
            *counts.entry(r.name(i).to_string()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn one_period_is_exact() {
        let saved = BTreeMap::new();
        let mut r = QueueRotation::new(vec![("normal", 2), ("vip", 8)], &saved);
        let c = picks(&mut r, 10);
        assert_eq!(c["vip"], 8);
        assert_eq!(c["normal"], 2);
    }

    #[test]
    fn credits_carry_over_between_rounds() {
        // Ten rounds of one pick each must still split 8/2.
        let mut saved = BTreeMap::new();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..10 {
            let mut r = QueueRotation::new(vec![("normal", 2), ("vip", 8)], &saved);
            for (k, v) in picks(&mut r, 1) {
                *counts.entry(k).or_default() += v;
            }
            r.save(&mut saved);
        }
        assert_eq!(counts["vip"], 8);
        assert_eq!(counts["normal"], 2);
    }

    #[test]
    fn retract_gives_the_share_away() {
        let saved = BTreeMap::new();
        let mut r = QueueRotation::new(vec![("normal", 2), ("vip", 8)], &saved);
        let first = r.next().unwrap();
        assert_eq!(r.name(first), "vip");
        r.retract(first);
        let c = picks(&mut r, 5);
        assert_eq!(c.get("normal"), Some(&5));
        assert_eq!(r.next().map(|i| r.name(i)), Some("normal"));
    }
}
