//! Elections with a pre-vote: the driver of [`pre_vote`](super::pre_vote)'s rules.
//!
//! It reads openraft's state, keeps the time, sends and answers pre-votes
//! and starts openraft's election; the decisions are the pure state
//! machine's.
//!
//! openraft 0.9 has no pre-vote: its followers campaign on their own timer,
//! each campaign raises the term, and a higher term deposes a healthy leader
//! (a follower with a slow link, or one back from a pause or a restart).
//! It guards against this with a leader lease of `election_timeout_max`
//! plus a timeout, which makes every failover take min + max of the
//! election timeout or more. Here openraft's own timer is off
//! (`enable_elect = false`) and this module decides when to elect (see
//! [`pre_vote`](super::pre_vote) for the rules). openraft's leader lease (its
//! `election_timeout_max`) is set to `min`: a voter that granted a pre-vote
//! also grants the real vote that follows, and one that still hears a
//! leader refuses a stray vote (from a candidate that skipped the pre-vote:
//! a leadership transfer's target).
//!
//! Raft's safety does not rest on any of this: the real vote still checks
//! the term and the log. A pre-vote only keeps a candidate that cannot win
//! from raising the term.

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

use super::contact::LeaderContact;
use super::member_addr::peer_addr;
use super::network::{decode, encode};
use super::pre_vote::{
    answer, won, Canvassed, PreVote, Refusal, Seen, Step, Tick, Timeouts, VoterView,
};
use super::vote_gate::VoteGate;
use crate::channels::Channels;

/// The election timeouts to give openraft, whose own election timer is off:
/// its leader lease (its `election_timeout_max`) becomes `min`, and its
/// `election_timeout_min`, which only bounds each vote RPC, lies between
/// the heartbeat and `min`. Needs `heartbeat + 2 <= min`.
pub fn openraft_timeouts(raft_heartbeat_ms: u64, election_min_ms: u64) -> (u64, u64) {
    ((raft_heartbeat_ms + election_min_ms) / 2, election_min_ms)
}

/// This node's election driver and its answers to pre-votes.
pub struct Elections {
    node_id: u64,
    raft: Raft,
    log: LogReader,
    vote_gate: Arc<VoteGate>,
    /// When this node last heard from the leader it follows, as the Raft
    /// service saw it (an AppendEntries as it arrived, a `LeaderAlive`).
    contact: LeaderContact,
    channels: Channels,
    min: Duration,
    /// The pre-vote's rules and state: timeouts, tries, holds, nudges.
    pre_vote: Mutex<PreVote>,
    /// Wakes the driver to ask for pre-votes before its timeout: a
    /// candidate behind this node's log asked for one.
    nudge: tokio::sync::Notify,
    /// When this process made its elections driver; the pre-vote's times
    /// are ms since then.
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

    /// When this node last heard from its leader, as the Raft service
    /// records it (the elections read it too).
    pub fn contact(&self) -> LeaderContact {
        self.contact.clone()
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
        let timeouts = Timeouts {
            min_ms: timeout_ms.0,
            max_ms: timeout_ms.1,
            heartbeat_ms,
        };
        Elections {
            node_id,
            raft,
            log,
            vote_gate,
            contact: LeaderContact::default(),
            channels,
            min: Duration::from_millis(timeout_ms.0),
            pre_vote: Mutex::new(PreVote::new(timeouts, rand::thread_rng().gen(), 0)),
            nudge: tokio::sync::Notify::new(),
            started: Instant::now(),
        }
    }

    /// `t` in the pre-vote's time: ms since this driver was made (a time
    /// before that counts as then).
    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.started).as_millis() as u64
    }

    fn now_ms(&self) -> u64 {
        self.ms(Instant::now())
    }

    /// The instant of a time in the pre-vote's ms.
    fn instant(&self, ms: u64) -> Instant {
        self.started + Duration::from_millis(ms)
    }

    fn pre_vote(&self) -> std::sync::MutexGuard<'_, PreVote> {
        self.pre_vote.lock().expect("pre-vote lock poisoned")
    }

    /// Keeps this node from starting an election for `d` (a leadership
    /// transfer under way); it still answers pre-votes and votes.
    pub fn hold(&self, d: Duration) {
        let until = self.ms(Instant::now() + d);
        self.pre_vote().hold(until);
    }

    /// When a refusing voter would grant the same pre-vote, if only time
    /// stands in the way (it heard its leader under the minimum ago).
    pub fn retry_after(&self, refusal: &Refusal) -> Option<Duration> {
        refusal.retry_after(self.min)
    }

    /// Ends a hold early.
    pub fn release(&self) {
        self.pre_vote().release();
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
        // The Raft service hears the leader sooner than openraft's core
        // does when this node's (or the leader's) disk stalls: openraft
        // takes an AppendEntries only once it is written, and a leader
        // whose core waits for its disk sends a `LeaderAlive` instead.
        let contact = self.contact.at().map(Instant::from_std);
        self.raft
            .with_raft_state(move |st| {
                let membership = st.membership_state.effective().membership();
                let vote = st.vote_ref();
                let touched = match (
                    st.vote_last_modified(),
                    contact.filter(|_| vote.is_committed()),
                ) {
                    (Some(t), Some(c)) => Some(t.max(c)),
                    (t, c) => t.or(c),
                };
                Local {
                    state: st.server_state,
                    touched,
                    leader_heard: touched.filter(|_| vote.is_committed()).map(|t| t.elapsed()),
                    voter: membership.voter_ids().any(|v| v == me),
                    configs: membership.get_joint_config().clone(),
                    others: membership
                        .voter_ids()
                        .filter(|v| *v != me)
                        .filter_map(|v| membership.get_node(&v).map(|n| (v, peer_addr(n))))
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
        let now = self.now_ms();
        if self.pre_vote().answered(&verdict, local.voter, now) {
            self.nudge.notify_one();
        }
        verdict
    }

    /// Runs until Raft stops: waits out a random election timeout without
    /// news from a leader, asks for pre-votes, elects when they are won.
    pub async fn run(self: Arc<Self>) {
        self.pre_vote().start(self.now_ms());
        loop {
            let Some(local) = self.local().await else {
                return; // Raft stopped.
            };
            let seen = Seen {
                leads: local.state == ServerState::Leader,
                voter: local.voter,
                touched_ms: local.touched.map(|t| self.ms(t)),
            };
            let now = self.now_ms();
            let tick = self.pre_vote().tick(now, &seen, || self.may_vote().is_ok());
            let quiet_ms = match tick {
                Tick::WaitUntil(due) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(self.instant(due)) => {}
                        _ = self.nudge.notified() => {}
                    }
                    continue;
                }
                Tick::Canvass { quiet_ms } => quiet_ms,
            };
            let (granted, refusals, retry_after) = self.canvass(&local).await;
            let outcome = Canvassed {
                won: won(&local.configs, &granted),
                retry_after_ms: retry_after.map(|d| d.as_millis() as u64),
            };
            let now = self.now_ms();
            let step = self.pre_vote().step(now, outcome);
            match step {
                Step::Elect => {
                    tracing::info!(
                        node_id = self.node_id,
                        term = local.term + 1,
                        granted = ?granted,
                        "won a pre-vote; starting an election"
                    );
                    if self.raft.trigger().elect().await.is_err() {
                        return;
                    }
                }
                // Once per spell without a leader; the rest at debug.
                Step::Lost { first: true } => tracing::info!(
                    node_id = self.node_id,
                    term = local.term,
                    quiet_ms,
                    granted = ?granted,
                    refusals = ?refusals,
                    "heard no leader, but lost a pre-vote: no election (the others may still hear the leader)"
                ),
                Step::Lost { first: false } => tracing::debug!(
                    node_id = self.node_id,
                    term = local.term,
                    granted = ?granted,
                    refusals = ?refusals,
                    "lost a pre-vote; no election"
                ),
            }
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
                let channel = self.channels.member(addr, *id);
                let id = *id;
                async move {
                    let asked = async {
                        let mut client = RaftClient::new(channel?);
                        client
                            .pre_vote(req)
                            .await
                            .map(|r| r.into_inner())
                            .map_err(|s| crate::channels::why(&s))
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
    /// leadership transfer), once the voters' leader lease has run out
    /// (`PreVote::campaign_at`).
    pub async fn campaign(&self) -> Result<(), String> {
        let local = self
            .local()
            .await
            .ok_or_else(|| "raft is stopped".to_string())?;
        let now = self.now_ms();
        let at = self
            .pre_vote()
            .campaign_at(local.touched.map(|t| self.ms(t)), now);
        if let Some(at) = at {
            tokio::time::sleep_until(self.instant(at)).await;
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
    use super::openraft_timeouts;

    #[test]
    fn openraft_gets_a_lease_of_the_minimum_and_a_shorter_vote_timeout() {
        assert_eq!(openraft_timeouts(50, 150), (100, 150));
        let (lo, hi) = openraft_timeouts(25, 52);
        assert!(25 < lo && lo < hi, "{lo} {hi}");
    }
}
