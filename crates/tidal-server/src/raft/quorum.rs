//! Check-quorum and the leader's lease, in the terms of etcd/raft.
//!
//! openraft 0.9 keeps a leader a leader for as long as nothing with a higher
//! vote reaches it: a leader cut off from its peers stays leader of its term
//! forever. It cannot commit, but tidal's leader-only memory (agent sessions,
//! heartbeat acknowledgements) would go on answering from memory. So tidal
//! measures the leader's contact with a majority itself:
//!
//! - The Raft transport records, per peer and term, when this node *sent*
//!   the latest AppendEntries the peer accepted ([`Contacts::accepted`]).
//! - The quorum contact is the latest instant `s` such that, in every voter
//!   configuration (two during a joint change), a majority accepted an
//!   AppendEntries sent at or after `s` (this node counts as now).
//! - Each such voter received it after `s` and, from then, refuses every
//!   pre-vote and vote for the election timeout's minimum `min` (the
//!   pre-vote's quiet period and openraft's leader lease there; a voter that
//!   restarts refuses them for `min` after its start). Every election needs
//!   one of them, so no other leader can exist before `s + min`. While
//!   `now < s + min` this node is the only leader: [`Verdict::Lease`].
//! - When the quorum contact is older than the election timeout's maximum,
//!   the others may have elected already: the node steps down from acting
//!   as leader ([`Verdict::StepDown`]) and acknowledges nothing until a
//!   majority accepts its entries again.
//!
//! [`Contacts::accepted`]: crate::raft::network::Contacts::accepted

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The latest instant by which every configuration's majority had accepted
/// this node's entries (`me` counts as `now`), or `None` if some
/// configuration has no majority that accepted any entry of this term.
pub fn quorum_contact(
    configs: &[BTreeSet<u64>],
    me: u64,
    now: Instant,
    accepted_at: impl Fn(u64) -> Option<Instant>,
) -> Option<Instant> {
    let mut contact: Option<Instant> = None;
    for config in configs {
        if config.is_empty() {
            continue;
        }
        let mut times: Vec<Instant> = config
            .iter()
            .filter_map(|&v| if v == me { Some(now) } else { accepted_at(v) })
            .collect();
        let majority = config.len() / 2 + 1;
        if times.len() < majority {
            return None;
        }
        // The majority-th latest time: that many voters heard at or after it.
        times.sort_unstable_by(|a, b| b.cmp(a));
        let t = times[majority - 1];
        contact = Some(contact.map_or(t, |c| c.min(t)));
    }
    contact
}

/// What the leader may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A majority heard it within the lease: it is the only leader; it may
    /// acknowledge heartbeats (renew agents' leases).
    Lease,
    /// It leads but cannot prove it is the only leader right now: it
    /// acknowledges nothing, and waits.
    Unproven,
    /// No majority heard it for longer than an election timeout: it stops
    /// acting as leader.
    StepDown,
}

/// The bounds of check-quorum.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// The leader's lease: the election timeout's minimum.
    pub lease: Duration,
    /// How long without a majority before stepping down: the election
    /// timeout's maximum.
    pub step_down: Duration,
}

/// The verdict at `now` for a leadership of this term that began (openraft
/// made this node leader) at `since`, whose quorum contact is `contact`.
pub fn verdict(bounds: Bounds, now: Instant, since: Instant, contact: Option<Instant>) -> Verdict {
    match contact {
        Some(s) if now.saturating_duration_since(s) < bounds.lease => Verdict::Lease,
        Some(s) if now.saturating_duration_since(s) <= bounds.step_down => Verdict::Unproven,
        // A new leader has not heard its peers yet: give it one timeout.
        None if now.saturating_duration_since(since) <= bounds.step_down => Verdict::Unproven,
        _ => Verdict::StepDown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn the_majority_th_latest_acceptance_counts() {
        let t0 = Instant::now();
        let now = t0 + 1000 * MS;
        let acks = |v: u64| match v {
            2 => Some(t0 + 900 * MS),
            3 => Some(t0 + 500 * MS),
            _ => None,
        };
        // 3 voters: me (now) and node 2 (900) make a majority.
        assert_eq!(
            quorum_contact(&[set(&[1, 2, 3])], 1, now, acks),
            Some(t0 + 900 * MS)
        );
        // 5 voters: me, 2 and 3: the third latest is node 3's.
        assert_eq!(
            quorum_contact(&[set(&[1, 2, 3, 4, 5])], 1, now, acks),
            Some(t0 + 500 * MS)
        );
        // Only me and node 4 (never accepted): no majority of 3.
        assert_eq!(quorum_contact(&[set(&[1, 4, 5])], 1, now, acks), None);
        // A single voter is its own majority.
        assert_eq!(quorum_contact(&[set(&[1])], 1, now, acks), Some(now));
    }

    #[test]
    fn a_joint_configuration_needs_both_majorities() {
        let t0 = Instant::now();
        let now = t0 + 1000 * MS;
        let acks = |v: u64| match v {
            2 => Some(t0 + 900 * MS),
            4 => Some(t0 + 300 * MS),
            5 => Some(t0 + 200 * MS),
            _ => None,
        };
        let joint = [set(&[1, 2, 3]), set(&[3, 4, 5])];
        // Old config: 900; new config (without me): 4 and 5 -> 200.
        assert_eq!(quorum_contact(&joint, 1, now, acks), Some(t0 + 200 * MS));
        let cut = [set(&[1, 2, 3]), set(&[3, 5, 6])];
        assert_eq!(quorum_contact(&cut, 1, now, acks), None);
    }

    #[test]
    fn verdicts_follow_the_lease_and_the_step_down_bound() {
        let b = Bounds {
            lease: 150 * MS,
            step_down: 300 * MS,
        };
        let t0 = Instant::now();
        let since = t0;
        let at = |ms: u64| t0 + ms as u32 * MS;
        assert_eq!(verdict(b, at(1000), since, Some(at(900))), Verdict::Lease);
        assert_eq!(
            verdict(b, at(1000), since, Some(at(850))),
            Verdict::Unproven
        );
        assert_eq!(
            verdict(b, at(1000), since, Some(at(700))),
            Verdict::Unproven
        );
        assert_eq!(
            verdict(b, at(1000), since, Some(at(699))),
            Verdict::StepDown
        );
        // A leader elected just now that has heard nobody yet waits a timeout.
        assert_eq!(verdict(b, at(200), since, None), Verdict::Unproven);
        assert_eq!(verdict(b, at(301), since, None), Verdict::StepDown);
    }
}
