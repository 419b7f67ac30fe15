//! The pre-vote's rules as a pure state machine: no clock, no task and no randomness inside.
//!
//! [`elections`](super::elections) is the driver: it reads openraft's state,
//! passes it in with the time (ms since the driver's epoch), sends the
//! pre-votes [`PreVote::tick`] asks for, hands the round's outcome to
//! [`PreVote::step`] and elects when told. The random election timeout comes
//! from a generator seeded by the driver.
//!
//! - A voter asks once it has heard nothing from a leader (openraft's vote
//!   was last touched: an AppendEntries, a vote it granted, its own
//!   candidacy) for a timeout drawn in `[min, max]`, redrawn every try.
//! - A voter grants a pre-vote unless it leads, it heard from a leader
//!   within `min`, or the candidate's log ends before its own ([`answer`]);
//!   the driver also refuses while the vote gate is closed. Granting changes
//!   nothing on the voter.
//! - A voter that refuses only because the candidate's log is behind its
//!   own asks for pre-votes itself at once ([`PreVote::answered`]), if no
//!   leader was heard for `min`: it is the candidate that can win.
//! - A pre-vote is won by a majority of every voter configuration ([`won`]).
//! - A refusing voter that heard its leader under `min` ago says when it
//!   would grant ([`Refusal::retry_after`]); the candidate asks again then.
//! - A hold (a leadership transfer under way) keeps this node from asking.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::LogId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What a voter knows when asked for a pre-vote.
#[derive(Clone, Debug, PartialEq)]
pub struct VoterView {
    pub leads: bool,
    /// How long ago a leader last reached this node (its vote was last
    /// touched while committed); `None` when it follows no leader.
    pub leader_heard: Option<Duration>,
    pub last_log_id: Option<LogId<u64>>,
}

/// Why a voter refuses a pre-vote.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    Leads,
    /// It heard from a leader this long ago, under the quiet minimum.
    HeardLeader(Duration),
    /// The candidate's log ends before the voter's (the voter would be the
    /// better candidate).
    LogBehind {
        candidate: Option<LogId<u64>>,
        voter: Option<LogId<u64>>,
    },
    /// Anything else (a voter that started empty and has not caught up).
    Other(String),
}

impl Refusal {
    /// When the voter would grant the same pre-vote, if only time stands in
    /// the way: `quiet` (the election timeout's minimum) after it last heard
    /// its leader.
    pub fn retry_after(&self, quiet: Duration) -> Option<Duration> {
        match self {
            Refusal::HeardLeader(ago) => {
                Some(quiet.saturating_sub(*ago).max(Duration::from_millis(1)))
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Leads => write!(f, "this node is the leader"),
            Refusal::HeardLeader(ago) => write!(
                f,
                "this node heard from its leader {} ms ago",
                ago.as_millis()
            ),
            Refusal::LogBehind { candidate, voter } => write!(
                f,
                "the candidate's log ends at {}, before this node's {}",
                show(*candidate),
                show(*voter)
            ),
            Refusal::Other(why) => f.write_str(why),
        }
    }
}

/// A voter's answer to a pre-vote: `Ok` grants it, `Err` says why not.
/// `quiet` is how long a voter must not have heard from a leader (the
/// election timeout's minimum).
pub fn answer(
    view: &VoterView,
    candidate_last_log_id: Option<LogId<u64>>,
    quiet: Duration,
) -> Result<(), Refusal> {
    if view.leads {
        return Err(Refusal::Leads);
    }
    if let Some(heard) = view.leader_heard.filter(|h| *h < quiet) {
        return Err(Refusal::HeardLeader(heard));
    }
    // Raft's up-to-date rule, as openraft's vote applies it (LogId is only
    // partially ordered: `!(a >= b)` does not imply `a < b`).
    if candidate_last_log_id.as_ref() >= view.last_log_id.as_ref() {
        Ok(())
    } else {
        Err(Refusal::LogBehind {
            candidate: candidate_last_log_id,
            voter: view.last_log_id,
        })
    }
}

fn show(id: Option<LogId<u64>>) -> String {
    id.map_or_else(|| "(empty)".into(), |l| l.to_string())
}

/// True when `granted` (the candidate included) holds a majority of every
/// voter configuration (two during a joint membership change).
pub fn won(configs: &[BTreeSet<u64>], granted: &BTreeSet<u64>) -> bool {
    !configs.is_empty()
        && configs
            .iter()
            .all(|c| c.intersection(granted).count() * 2 > c.len())
}

/// The election timeouts, ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub min_ms: u64,
    pub max_ms: u64,
    /// openraft's heartbeat interval.
    pub heartbeat_ms: u64,
}

/// What the driver read just before a tick (times in ms since its epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// openraft has this node lead.
    pub leads: bool,
    /// This node is a voter of the effective membership.
    pub voter: bool,
    /// When openraft's vote was last touched: a leader's message, a vote
    /// granted, this node's own candidacy.
    pub touched_ms: Option<u64>,
}

/// What to do after a tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tick {
    /// Nothing before this time (unless nudged); then tick again with a
    /// fresh [`Seen`].
    WaitUntil(u64),
    /// Ask the other voters for a pre-vote now, then [`PreVote::step`] with
    /// the outcome. `quiet_ms`: how long no leader was heard.
    Canvass { quiet_ms: u64 },
}

/// How a round of pre-votes went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Canvassed {
    /// The granted votes (this node's included) hold a majority of every
    /// configuration ([`won`]).
    pub won: bool,
    /// The soonest time a refusing voter said it would grant, ms from now.
    pub retry_after_ms: Option<u64>,
}

/// What to do after a round of pre-votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Start a real election (openraft's, with a new term).
    Elect,
    /// No election. `first`: the first loss since a leader (or a vote) was
    /// last heard, which the driver logs at info; the rest at debug.
    Lost { first: bool },
}

/// The pre-vote state of one node.
pub struct PreVote {
    timeouts: Timeouts,
    rng: StdRng,
    /// When the driver started.
    started_ms: u64,
    /// When this node last asked for pre-votes, or looked and did not.
    last_try_ms: Option<u64>,
    /// The current draw in `[min, max]`.
    timeout_ms: u64,
    /// A candidate behind this node's log asked for a pre-vote.
    nudged: bool,
    /// No own election before this time (a leadership transfer).
    hold_until_ms: Option<u64>,
    /// The vote's last touch when this node last asked.
    last_touched_ms: Option<u64>,
    /// A pre-vote was lost since the vote was last touched.
    lost_since_heard: bool,
}

impl PreVote {
    /// `seed` drives the random election timeouts; `now_ms` is the start.
    pub fn new(timeouts: Timeouts, seed: u64, now_ms: u64) -> PreVote {
        let mut pv = PreVote {
            timeouts,
            rng: StdRng::seed_from_u64(seed),
            started_ms: now_ms,
            last_try_ms: None,
            timeout_ms: timeouts.min_ms,
            nudged: false,
            hold_until_ms: None,
            last_touched_ms: None,
            lost_since_heard: false,
        };
        pv.timeout_ms = pv.draw();
        pv
    }

    /// The driver starts at `now_ms`: the first timeout counts from then
    /// (or from the vote's last touch, if later).
    pub fn start(&mut self, now_ms: u64) {
        self.started_ms = now_ms;
        self.last_try_ms = None;
        self.timeout_ms = self.draw();
    }

    /// The current election timeout, drawn in `[min, max]`.
    #[cfg(test)]
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    fn draw(&mut self) -> u64 {
        self.rng
            .gen_range(self.timeouts.min_ms..=self.timeouts.max_ms)
    }

    /// Keeps this node from starting an election until `until_ms` (a
    /// leadership transfer under way); it still answers pre-votes and votes.
    pub fn hold(&mut self, until_ms: u64) {
        self.hold_until_ms = Some(until_ms);
    }

    /// Ends a hold early.
    pub fn release(&mut self) {
        self.hold_until_ms = None;
    }

    pub fn held(&self, now_ms: u64) -> bool {
        self.hold_until_ms.is_some_and(|t| now_ms < t)
    }

    /// This node answered a pre-vote with `verdict`. True when the driver
    /// must be woken to ask for pre-votes itself: it refused a candidate
    /// whose log is behind its own, it votes, and no hold is on.
    pub fn answered(&mut self, verdict: &Result<(), Refusal>, voter: bool, now_ms: u64) -> bool {
        if matches!(verdict, Err(Refusal::LogBehind { .. })) && voter && !self.held(now_ms) {
            self.nudged = true;
            return true;
        }
        false
    }

    /// How long no leader was heard at `now_ms`.
    fn quiet(&self, seen: &Seen, now_ms: u64) -> u64 {
        now_ms.saturating_sub(seen.touched_ms.unwrap_or(self.started_ms))
    }

    /// When the current timeout runs out: counted from the vote's last
    /// touch or this node's last try, whichever is later.
    fn due(&self, seen: &Seen) -> u64 {
        let base = seen
            .touched_ms
            .max(self.last_try_ms)
            .unwrap_or(self.started_ms);
        base + self.timeout_ms
    }

    /// What to do at `now_ms`, given what the driver just read. `may_vote`
    /// (asked only once the rest allows a try) says whether the vote gate is
    /// open and the node is past its start-up quiet period
    /// (`Elections::may_vote`).
    pub fn tick(&mut self, now_ms: u64, seen: &Seen, may_vote: impl FnOnce() -> bool) -> Tick {
        let due = self.due(seen);
        if now_ms < due {
            // Nudged: go ahead only if no leader was heard for the minimum.
            if !std::mem::take(&mut self.nudged) || self.quiet(seen, now_ms) < self.timeouts.min_ms
            {
                return Tick::WaitUntil(due);
            }
        }
        // Leadership, membership and holds change without touching the
        // vote: look again in a while. So does a node that may not vote: it
        // would lose, its log lacks entries it once acknowledged.
        if seen.leads || !seen.voter || self.held(now_ms) || !may_vote() {
            self.last_try_ms = Some(now_ms);
            self.timeout_ms = self.draw();
            return Tick::WaitUntil(self.due(seen));
        }
        if seen.touched_ms != self.last_touched_ms {
            self.last_touched_ms = seen.touched_ms;
            self.lost_since_heard = false;
        }
        Tick::Canvass {
            quiet_ms: self.quiet(seen, now_ms),
        }
    }

    /// The round of pre-votes that [`Tick::Canvass`] asked for ended at
    /// `now_ms` with `outcome`.
    pub fn step(&mut self, now_ms: u64, outcome: Canvassed) -> Step {
        self.last_try_ms = Some(now_ms);
        self.timeout_ms = self.draw();
        if let Some(r) = outcome.retry_after_ms {
            // A voter would grant it that soon (it heard the leader just
            // under the minimum ago): ask again then, not a whole timeout
            // later.
            self.timeout_ms = self.timeout_ms.min(r + 2);
        }
        if outcome.won {
            return Step::Elect;
        }
        let first = !self.lost_since_heard;
        self.lost_since_heard = true;
        Step::Lost { first }
    }

    /// When the target of a leadership transfer may start its election
    /// without a pre-vote: once the voters' leader lease has run out. The
    /// leader stopped its heartbeats before asking, so that is `min` after
    /// this node last heard from it (`touched_ms`), plus a heartbeat's worth
    /// for the voter that heard last; at most twice `max` from now (a leader
    /// that went on heartbeating would keep moving it). `None`: now.
    pub fn campaign_at(&self, touched_ms: Option<u64>, now_ms: u64) -> Option<u64> {
        let t = self.timeouts;
        touched_ms.map(|touched| (touched + t.min_ms + t.heartbeat_ms).min(now_ms + t.max_ms * 2))
    }
}

#[cfg(test)]
#[path = "pre_vote_test.rs"]
mod tests;
