//! When a leadership starts, ends, and whether this node was removed: the
//! decisions of `super::watch_leadership`, from what it observes of Raft and
//! of the contact with a majority, with the time passed in.

use std::time::{Duration, Instant};

use crate::raft::quorum::{verdict, Bounds, Verdict};

/// What the watch sees at one step: Raft's metrics and, while this node
/// leads, its contact with a majority in that term.
#[derive(Clone, Copy, Debug)]
pub struct Observation {
    pub now: Instant,
    /// Raft's current term.
    pub term: u64,
    /// Whether openraft has this node lead (of `term`).
    pub is_leader: bool,
    /// While it leads: its quorum contact in `term`
    /// ([`crate::raft::quorum::quorum_contact`]).
    pub contact: Option<Instant>,
    /// The latest membership, once one is in the log.
    pub membership: Option<Membership>,
    /// While it leads: a majority said they follow it within the election
    /// timeout's maximum, though their answers to its entries are late
    /// (disks that stall: [`crate::raft::alive`]), so it does not step down.
    pub vouched: bool,
}

/// The latest membership, as far as removal is concerned.
#[derive(Clone, Copy, Debug)]
pub struct Membership {
    /// The log index of the entry that holds it.
    pub index: u64,
    /// Whether it names this node (as voter or learner).
    pub names_me: bool,
    /// Whether it names any node.
    pub has_nodes: bool,
}

/// What the watch does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// This node is no longer a member: it stops serving, for this reason.
    Removed(String),
    /// A leadership of `term` begins (openraft made this node leader at
    /// `since`): it commits an entry of its own before it acts ([`Barrier`]).
    /// `heard_again`: it had stepped down in this term for lack of a
    /// majority, and a majority hears it again.
    Start {
        term: u64,
        since: Instant,
        heard_again: bool,
    },
    /// Check-quorum: no majority heard this node for an election timeout;
    /// the leadership of `term` ends, and none starts in this term until a
    /// majority is heard within the lease again.
    StepDown { term: u64 },
    /// openraft no longer has this node lead (it saw a higher vote); the
    /// leadership ends. `term` is the term Raft is in now.
    End { term: u64 },
    /// A leadership of an older term ends: one of a newer term follows.
    Replace { term: u64 },
}

/// The decision part of watching leadership: which term this node leads,
/// since when, whether a leadership of it exists, and whether check-quorum
/// deposed it.
#[derive(Debug)]
pub struct LeadershipWatch {
    id: u64,
    bounds: Bounds,
    /// Set once a membership named this node: only then can it be removed.
    was_member: bool,
    /// The term openraft has this node lead, and since when.
    led: Option<(u64, Instant)>,
    /// The term of the leadership there is (establishing or acting), if any.
    current: Option<u64>,
    /// Set when check-quorum ended the leadership of `led`'s term: it starts
    /// again only once a majority is heard within the lease.
    deposed: bool,
}

impl LeadershipWatch {
    pub fn new(id: u64, bounds: Bounds) -> LeadershipWatch {
        LeadershipWatch {
            id,
            bounds,
            was_member: false,
            led: None,
            current: None,
            deposed: false,
        }
    }

    /// The decisions for what is observed now, in the order to carry them out.
    pub fn step(&mut self, seen: Observation) -> Vec<Decision> {
        let mut out = Vec::new();
        if let Some(why) = seen.membership.and_then(|m| self.removed_from(m)) {
            out.push(Decision::Removed(why));
        }
        let now = seen.now;
        if !seen.is_leader {
            self.led = None;
        } else if self.led.map(|(t, _)| t) != Some(seen.term) {
            self.led = Some((seen.term, now));
            self.deposed = false;
        }
        let verdict_now = |since| verdict(self.bounds, now, since, seen.contact);
        match (self.led, self.current) {
            (Some((term, since)), Some(current)) if current == term => {
                if verdict_now(since) == Verdict::StepDown && !seen.vouched {
                    out.push(Decision::StepDown { term });
                    self.current = None;
                    self.deposed = true;
                }
            }
            (Some((term, since)), current) => {
                if let Some(old) = current {
                    out.push(Decision::Replace { term: old });
                    self.current = None;
                }
                if !self.deposed || verdict_now(since) == Verdict::Lease {
                    out.push(Decision::Start {
                        term,
                        since,
                        heard_again: self.deposed,
                    });
                    self.deposed = false;
                    self.current = Some(term);
                }
            }
            (None, Some(_)) => {
                out.push(Decision::End { term: seen.term });
                self.current = None;
            }
            (None, None) => {}
        }
        out
    }

    /// Whether this node leads in openraft's eyes but check-quorum deposed
    /// it (it answers NotLeader at once instead of waiting for an election).
    pub fn deposed(&self) -> bool {
        self.deposed && self.led.is_some()
    }

    /// Whether this node leads in openraft's eyes: the watch then steps
    /// every Raft heartbeat, to see the contact with a majority.
    pub fn leading(&self) -> bool {
        self.led.is_some()
    }

    /// The term of the leadership there is, if any.
    pub fn current(&self) -> Option<u64> {
        self.current
    }

    /// Why this node should stop: it was a member, and its latest
    /// membership no longer names it (it was removed with `tidal cluster
    /// remove`). Only a node that has seen itself as a member can be
    /// removed: a joining learner first sees older configurations (from the
    /// log or a snapshot) without itself. The leader stops replicating to a
    /// removed node once the change commits, so the membership entry itself
    /// is the signal; a node cut off while it was removed never receives it
    /// and must be stopped by hand.
    fn removed_from(&mut self, m: Membership) -> Option<String> {
        if m.names_me {
            self.was_member = true;
            return None;
        }
        (self.was_member && m.has_nodes).then(|| {
            format!(
                "node {} was removed from the cluster (membership at log index {}); it stops serving. \
                 To bring this machine back, wipe its data directory and add it again with `tidal cluster add-learner`",
                self.id, m.index
            )
        })
    }
}

/// The retry of a leadership's first entry: 20 ms after the first failure,
/// doubling up to 500 ms.
#[derive(Debug)]
pub struct Barrier {
    backoff: Duration,
}

/// The first wait after a failed commit of the barrier.
const BARRIER_FIRST: Duration = Duration::from_millis(20);
/// The longest wait between two tries.
const BARRIER_MAX: Duration = Duration::from_millis(500);

impl Default for Barrier {
    fn default() -> Barrier {
        Barrier {
            backoff: BARRIER_FIRST,
        }
    }
}

impl Barrier {
    /// The entry did not commit: how long to wait before the next try.
    pub fn failed(&mut self) -> Duration {
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(BARRIER_MAX);
        wait
    }
}

#[cfg(test)]
#[path = "watch_test.rs"]
mod tests;
