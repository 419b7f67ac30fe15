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
//!   majority accepts its entries again. Unless a majority answered a
//!   `LeaderAlive` within that bound, saying they follow it (a disk that
//!   stalls delays the answers to AppendEntries, not to those:
//!   [`crate::raft::alive`]); that keeps it leading, never in its lease.
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
#[path = "quorum_test.rs"]
mod tests;
