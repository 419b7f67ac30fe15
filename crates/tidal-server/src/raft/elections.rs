//! Elections with a pre-vote: a voter that has not heard from a leader for a
//! random election timeout first asks the other voters whether they would
//! elect it, and starts a real election (a new term) only when a majority of
//! every voter configuration would.
//!
//! openraft 0.9 has no pre-vote: its followers campaign on their own timer,
//! each campaign raises the term, and a higher term deposes a healthy leader
//! (a follower with a slow link, or one back from a pause or a restart, did
//! that over and over). It guards against this with a leader lease of
//! `election_timeout_max` plus a timeout, which made every failover take
//! min + max of the election timeout or more. Here openraft's own timer is
//! off (`enable_elect = false`) and this module decides when to elect:
//!
//! - A voter asks once it has heard nothing from a leader (openraft's vote
//!   was last touched: an AppendEntries, a vote it granted, its own
//!   candidacy) for a timeout drawn in `[min, max]`, redrawn every try.
//! - A voter grants a pre-vote unless it leads, it heard from a leader
//!   within `min`, the candidate's log ends before its own, or it started on
//!   an empty store and has not caught up ([`VoteGate`]). Granting changes
//!   nothing on the voter.
//! - openraft's leader lease (its `election_timeout_max`) is set to `min`:
//!   a voter that granted a pre-vote also grants the real vote that follows,
//!   and one that still hears a leader refuses a stray vote (from a
//!   candidate that skipped the pre-vote: a leadership transfer's target).
//!
//! Raft's safety does not rest on any of this: the real vote still checks
//! the term and the log. A pre-vote only keeps a candidate that cannot win
//! from raising the term.
//!
//! [`VoteGate`]: crate::raft::vote_gate::VoteGate

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use openraft::{LogId, ServerState};
use rand::Rng;
use tidal_proto::raft::raft_client::RaftClient;
use tidal_proto::raft::{PreVoteRequest, PreVoteResponse};
use tidal_store::{LogReader, Raft};
use tokio::time::Instant;

use super::network::{decode, encode};
use super::vote_gate::VoteGate;
use crate::channels::Channels;

/// The election timeouts to give openraft, whose own election timer is off:
/// its leader lease (its `election_timeout_max`) becomes `min`, and its
/// `election_timeout_min`, which only bounds each vote RPC now, lies between
/// the heartbeat and `min`. Needs `heartbeat + 2 <= min`.
pub fn openraft_timeouts(raft_heartbeat_ms: u64, election_min_ms: u64) -> (u64, u64) {
    ((raft_heartbeat_ms + election_min_ms) / 2, election_min_ms)
}

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

/// This node's election driver and its answers to pre-votes.
pub struct Elections {
    node_id: u64,
    raft: Raft,
    log: LogReader,
    vote_gate: Arc<VoteGate>,
    channels: Channels,
    min: Duration,
    max: Duration,
    heartbeat: Duration,
    /// No own election before this instant (a leadership transfer).
    hold_until: Mutex<Option<Instant>>,
    /// Wakes the driver to ask for pre-votes before its timeout: a
    /// candidate behind this node's log asked for one.
    nudge: tokio::sync::Notify,
    /// When this process made its elections driver.
    started: Instant,
}

/// What the driver reads from openraft before each decision.
struct Local {
    state: ServerState,
    /// When the vote was last touched: a leader's message, a vote granted,
    /// this node's own candidacy.
    touched: Option<Instant>,
    leader_heard: Option<Duration>,
    voter: bool,
    configs: Vec<BTreeSet<u64>>,
    /// Addresses of the other voters.
    others: Vec<(u64, String)>,
    term: u64,
}

impl Elections {
    /// The outgoing channels to other servers (shared with the Raft
    /// transport), e.g. to ask a server joining the cluster for its status.
    pub fn channels(&self) -> Channels {
        self.channels.clone()
    }

    pub fn new(
        node_id: u64,
        raft: Raft,
        log: LogReader,
        vote_gate: Arc<VoteGate>,
        channels: Channels,
        timeout_ms: (u64, u64),
        heartbeat_ms: u64,
    ) -> Elections {
        Elections {
            node_id,
            raft,
            log,
            vote_gate,
            channels,
            min: Duration::from_millis(timeout_ms.0),
            max: Duration::from_millis(timeout_ms.1),
            heartbeat: Duration::from_millis(heartbeat_ms),
            hold_until: Mutex::new(None),
            nudge: tokio::sync::Notify::new(),
            started: Instant::now(),
        }
    }

    /// Keeps this node from starting an election for `d` (a leadership
    /// transfer under way); it still answers pre-votes and votes.
    pub fn hold(&self, d: Duration) {
        *self.hold_until.lock().expect("hold lock poisoned") = Some(Instant::now() + d);
    }

    /// When a refusing voter would grant the same pre-vote, if only time
    /// stands in the way (it heard its leader under the minimum ago).
    pub fn retry_after(&self, refusal: &Refusal) -> Option<Duration> {
        refusal.retry_after(self.min)
    }

    /// Ends a hold early.
    pub fn release(&self) {
        *self.hold_until.lock().expect("hold lock poisoned") = None;
    }

    fn held(&self) -> bool {
        self.hold_until
            .lock()
            .expect("hold lock poisoned")
            .is_some_and(|t| Instant::now() < t)
    }

    /// The last log id this node holds: its log's last entry, or the last
    /// purged one when a snapshot replaced the whole log.
    fn last_log_id(&self) -> Option<LogId<u64>> {
        let purged = self.raft.metrics().borrow().purged;
        self.log.last_log_id().max(purged)
    }

    /// Whether this node may vote (and so campaign): not while it catches
    /// up after starting on an empty store ([`VoteGate`]).
    ///
    /// Nor within the election timeout's minimum after this process started:
    /// a voter forgets when it last heard its leader when it restarts, and
    /// the leader's lease counts on every voter that accepted its entries
    /// refusing other candidates for that long (raft/quorum.rs).
    pub fn may_vote(&self) -> Result<(), String> {
        let up = self.started.elapsed();
        if up < self.min {
            return Err(format!(
                "this node started {} ms ago; it votes only {} ms after its start, \
                 so the lease of the leader it may have acknowledged before holds",
                up.as_millis(),
                self.min.as_millis()
            ));
        }
        let applied = self.raft.metrics().borrow().last_applied.map(|l| l.index);
        self.vote_gate.check(applied.unwrap_or(0))
    }

    async fn local(&self) -> Option<Local> {
        let me = self.node_id;
        self.raft
            .with_raft_state(move |st| {
                let membership = st.membership_state.effective().membership();
                let vote = st.vote_ref();
                let touched = st.vote_last_modified();
                Local {
                    state: st.server_state,
                    touched,
                    leader_heard: touched.filter(|_| vote.is_committed()).map(|t| t.elapsed()),
                    voter: membership.voter_ids().any(|v| v == me),
                    configs: membership.get_joint_config().clone(),
                    others: membership
                        .voter_ids()
                        .filter(|v| *v != me)
                        .filter_map(|v| membership.get_node(&v).map(|n| (v, n.addr.clone())))
                        .collect(),
                    term: vote.leader_id().term,
                }
            })
            .await
            .ok()
    }

    /// This node's answer to a pre-vote from a candidate whose log ends at
    /// `candidate_last_log_id`. A voter that refuses only because its own
    /// log is further ahead, and has not heard from a leader either, asks
    /// for pre-votes itself at once: it is the candidate that can win, and
    /// waiting for its own timeout would only make the failover longer.
    pub async fn answer_pre_vote(
        &self,
        candidate: u64,
        candidate_last_log_id: Option<LogId<u64>>,
    ) -> Result<(), Refusal> {
        self.may_vote().map_err(Refusal::Other)?;
        let local = self
            .local()
            .await
            .ok_or_else(|| Refusal::Other("raft is stopped".into()))?;
        let view = VoterView {
            leads: local.state == ServerState::Leader,
            leader_heard: local.leader_heard,
            last_log_id: self.last_log_id(),
        };
        let verdict = answer(&view, candidate_last_log_id, self.min);
        match &verdict {
            Ok(()) => {
                tracing::info!(
                    node_id = self.node_id,
                    candidate,
                    term = local.term,
                    "granted a pre-vote"
                )
            }
            Err(why) => {
                tracing::debug!(node_id = self.node_id, candidate, term = local.term, reason = %why, "refused a pre-vote")
            }
        }
        if matches!(verdict, Err(Refusal::LogBehind { .. })) && local.voter && !self.held() {
            self.nudge.notify_one();
        }
        verdict
    }

    fn draw_timeout(&self) -> Duration {
        let (lo, hi) = (self.min.as_millis() as u64, self.max.as_millis() as u64);
        Duration::from_millis(rand::thread_rng().gen_range(lo..=hi))
    }

    /// Runs until Raft stops: waits out a random election timeout without
    /// news from a leader, asks for pre-votes, elects when they are won.
    pub async fn run(self: Arc<Self>) {
        let started = Instant::now();
        let mut last_try: Option<Instant> = None;
        let mut timeout = self.draw_timeout();
        // A lost pre-vote is logged at info once after each contact with a
        // leader (or a vote): a follower cut off for long would log one per
        // timeout.
        let mut last_touched = None;
        let mut lost_since_heard = false;
        loop {
            let Some(local) = self.local().await else {
                return; // Raft stopped.
            };
            let base = [local.touched, last_try]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(started);
            let due = base + timeout;
            let now = Instant::now();
            let local = if now < due {
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => continue,
                    _ = self.nudge.notified() => {}
                }
                // Nudged: go ahead only if no leader was heard for the minimum.
                let Some(fresh) = self.local().await else {
                    return;
                };
                let quiet = fresh.touched.map_or(started.elapsed(), |t| t.elapsed());
                if quiet < self.min {
                    continue;
                }
                fresh
            } else {
                local
            };
            let now = Instant::now();
            if local.state == ServerState::Leader || !local.voter || self.held() {
                // Look again in a while: leadership, membership and holds
                // change without touching the vote.
                last_try = Some(now);
                timeout = self.draw_timeout();
                continue;
            }
            if self.may_vote().is_err() {
                // It would lose: its log lacks entries it once acknowledged.
                last_try = Some(now);
                timeout = self.draw_timeout();
                continue;
            }
            if local.touched != last_touched {
                last_touched = local.touched;
                lost_since_heard = false;
            }
            let base_quiet = local.touched.map_or(now - started, |t| now - t);
            let (granted, refusals, retry_after) = self.canvass(&local).await;
            last_try = Some(Instant::now());
            timeout = self.draw_timeout();
            if let Some(r) = retry_after {
                // A voter would grant it that soon (it heard the leader just
                // under the minimum ago): ask again then, not a whole
                // timeout later.
                timeout = timeout.min(r + Duration::from_millis(2));
            }
            if won(&local.configs, &granted) {
                tracing::info!(
                    node_id = self.node_id,
                    term = local.term + 1,
                    granted = ?granted,
                    "won a pre-vote; starting an election"
                );
                if self.raft.trigger().elect().await.is_err() {
                    return;
                }
            } else if !lost_since_heard {
                // Once per spell without a leader; the rest at debug.
                tracing::info!(
                    node_id = self.node_id,
                    term = local.term,
                    quiet_ms = base_quiet.as_millis() as u64,
                    granted = ?granted,
                    refusals = ?refusals,
                    "heard no leader, but lost a pre-vote: no election (the others may still hear the leader)"
                );
            } else {
                tracing::debug!(
                    node_id = self.node_id,
                    term = local.term,
                    granted = ?granted,
                    refusals = ?refusals,
                    "lost a pre-vote; no election"
                );
            }
            lost_since_heard = true;
        }
    }

    /// Asks the other voters for a pre-vote; returns who granted it (this
    /// node included), why the others did not, and the soonest time a
    /// refusing voter said it would grant. Stops asking once every
    /// configuration has its majority.
    async fn canvass(
        &self,
        local: &Local,
    ) -> (BTreeSet<u64>, Vec<(u64, String)>, Option<Duration>) {
        let mut granted = BTreeSet::from([self.node_id]);
        let mut refusals = Vec::new();
        let mut retry_after: Option<Duration> = None;
        if won(&local.configs, &granted) {
            return (granted, refusals, retry_after);
        }
        let last = self.last_log_id();
        let last_log_id = match encode(&last) {
            Ok(b) => b,
            Err(e) => {
                refusals.push((self.node_id, format!("encoding the last log id: {e}")));
                return (granted, refusals, retry_after);
            }
        };
        // A pre-vote that takes longer than half the shortest timeout comes
        // from a voter too slow to make the election worth starting.
        let wait = self.min / 2;
        let mut asks: FuturesUnordered<_> = local
            .others
            .iter()
            .map(|(id, addr)| {
                let req = PreVoteRequest {
                    candidate_id: self.node_id,
                    last_log_id: last_log_id.clone(),
                    format: super::network::WIRE_FORMAT,
                };
                let channel = self.channels.get(addr);
                let id = *id;
                async move {
                    let asked = async {
                        let mut client = RaftClient::new(channel?);
                        client
                            .pre_vote(req)
                            .await
                            .map(|r| r.into_inner())
                            .map_err(|s| s.message().to_string())
                    };
                    let answer = tokio::time::timeout(wait, asked)
                        .await
                        .unwrap_or_else(|_| Err(format!("no answer in {} ms", wait.as_millis())));
                    (id, answer)
                }
            })
            .collect();
        while let Some((id, answer)) = asks.next().await {
            match answer {
                Ok(PreVoteResponse { granted: true, .. }) => {
                    granted.insert(id);
                    if won(&local.configs, &granted) {
                        break;
                    }
                }
                Ok(PreVoteResponse {
                    reason,
                    retry_after_ms,
                    ..
                }) => {
                    if retry_after_ms > 0 {
                        let r = Duration::from_millis(retry_after_ms);
                        retry_after = Some(retry_after.map_or(r, |s| s.min(r)));
                    }
                    refusals.push((id, reason));
                }
                Err(e) => refusals.push((id, e)),
            }
        }
        (granted, refusals, retry_after)
    }

    /// The pre-vote request's log id, decoded.
    pub fn decode_last_log_id(bytes: &[u8]) -> Result<Option<LogId<u64>>, String> {
        decode(bytes).map_err(|e| format!("undecodable last log id: {e}"))
    }

    /// Starts an election now, without a pre-vote (the target of a
    /// leadership transfer), once the voters' leader lease has run out: the
    /// leader stopped its heartbeats before asking, so that is `min` after
    /// this node last heard from it, plus a heartbeat's worth for the voter
    /// that heard last.
    pub async fn campaign(&self) -> Result<(), String> {
        let local = self
            .local()
            .await
            .ok_or_else(|| "raft is stopped".to_string())?;
        if let Some(touched) = local.touched {
            let until = touched + self.min + self.heartbeat;
            // Bounded: a leader that went on heartbeating would keep moving it.
            let until = until.min(Instant::now() + self.max * 2);
            tokio::time::sleep_until(until).await;
        }
        self.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| format!("raft is stopped: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn log_id(term: u64, index: u64) -> Option<LogId<u64>> {
        Some(LogId::new(CommittedLeaderId::new(term, 1), index))
    }

    fn follower(heard_ms: Option<u64>, last: Option<LogId<u64>>) -> VoterView {
        VoterView {
            leads: false,
            leader_heard: heard_ms.map(Duration::from_millis),
            last_log_id: last,
        }
    }

    const QUIET: Duration = Duration::from_millis(150);

    #[test]
    fn a_voter_that_hears_its_leader_refuses() {
        let view = follower(Some(40), log_id(2, 10));
        let why = answer(&view, log_id(2, 10), QUIET).unwrap_err();
        assert_eq!(why, Refusal::HeardLeader(Duration::from_millis(40)));
        assert_eq!(why.to_string(), "this node heard from its leader 40 ms ago");
        // Quiet for the whole minimum: granted.
        assert!(answer(&follower(Some(150), log_id(2, 10)), log_id(2, 10), QUIET).is_ok());
        // Following no leader (after a restart, or a vote granted): granted.
        assert!(answer(&follower(None, log_id(2, 10)), log_id(2, 10), QUIET).is_ok());
    }

    #[test]
    fn only_a_refusal_for_a_recent_leader_says_when_to_ask_again() {
        let ms = Duration::from_millis;
        assert_eq!(
            Refusal::HeardLeader(ms(40)).retry_after(QUIET),
            Some(ms(110))
        );
        assert_eq!(
            Refusal::HeardLeader(ms(150)).retry_after(QUIET),
            Some(ms(1))
        );
        assert_eq!(Refusal::Leads.retry_after(QUIET), None);
        let behind = Refusal::LogBehind {
            candidate: log_id(1, 1),
            voter: log_id(1, 2),
        };
        assert_eq!(behind.retry_after(QUIET), None);
    }

    #[test]
    fn the_leader_refuses() {
        let view = VoterView {
            leads: true,
            leader_heard: Some(Duration::from_secs(10)),
            last_log_id: None,
        };
        assert_eq!(answer(&view, log_id(9, 99), QUIET), Err(Refusal::Leads));
    }

    #[test]
    fn a_candidate_behind_the_voters_log_is_refused() {
        let view = follower(None, log_id(3, 20));
        // Shorter log in the same term, or an older last term.
        let why = answer(&view, log_id(3, 19), QUIET).unwrap_err();
        assert!(matches!(why, Refusal::LogBehind { .. }));
        assert!(why.to_string().contains("before this node's"), "{why}");
        assert!(answer(&view, log_id(2, 50), QUIET).is_err());
        assert!(answer(&view, None, QUIET).is_err());
        // Equal or newer: granted.
        assert!(answer(&view, log_id(3, 20), QUIET).is_ok());
        assert!(answer(&view, log_id(4, 1), QUIET).is_ok());
        assert!(answer(&follower(None, None), None, QUIET).is_ok());
    }

    #[test]
    fn a_pre_vote_is_won_by_a_majority_of_every_configuration() {
        let three = vec![BTreeSet::from([1, 2, 3])];
        assert!(!won(&three, &BTreeSet::from([1])));
        assert!(won(&three, &BTreeSet::from([1, 3])));
        let single = vec![BTreeSet::from([1])];
        assert!(won(&single, &BTreeSet::from([1])));
        // Joint: {1,2,3} -> {3,4,5}; 1 and 3 are a majority of the old only.
        let joint = vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([3, 4, 5])];
        assert!(!won(&joint, &BTreeSet::from([1, 3])));
        assert!(won(&joint, &BTreeSet::from([1, 3, 4])));
        assert!(!won(&[], &BTreeSet::from([1])));
    }

    #[test]
    fn openraft_gets_a_lease_of_the_minimum_and_a_shorter_vote_timeout() {
        assert_eq!(openraft_timeouts(50, 150), (100, 150));
        let (lo, hi) = openraft_timeouts(25, 52);
        assert!(25 < lo && lo < hi, "{lo} {hi}");
    }
}
