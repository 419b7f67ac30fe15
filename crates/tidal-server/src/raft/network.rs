//! The Raft transport, client side: openraft's RPCs as bincode inside gRPC
//! bytes fields, over one cached tonic channel per peer; and [`Outages`], the
//! one rate-limited log line per peer that does not answer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tidal_proto::raft::raft_client::RaftClient;
use tidal_proto::raft::RaftPayload;
use tidal_store::TypeConfig;

use crate::channels::Channels;
use crate::raft::member_addr;
use tonic::transport::Channel;

/// The encoding of Raft payloads this build sends and accepts: the store
/// format, since both carry openraft's log ids (RaftPayload.format).
pub const WIRE_FORMAT: u32 = tidal_store::codec::FORMAT_VERSION as u32;

/// Refuses a payload (or pre-vote) of another wire format.
pub fn check_format(format: u32) -> Result<(), String> {
    if format == WIRE_FORMAT {
        return Ok(());
    }
    Err(format!(
        "the peer sends Raft wire format {format}, this server speaks {WIRE_FORMAT}: \
         every server of a data center must run a tidal of the same store format \
         (README.md, \"Upgrading from store format 1\")"
    ))
}

/// Encodes a Raft message for the wire.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
}

/// Decodes a Raft message from the wire, with a limit on what a length
/// prefix may allocate ([`tidal_core::bounded`]).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::error::DecodeError> {
    tidal_core::bounded::decode_from_slice(bytes).map(|(v, _)| v)
}

/// Hands openraft a client per peer; channels are cached by address so every
/// replication stream to a peer shares one HTTP/2 connection.
#[derive(Clone)]
pub struct Network {
    channels: Channels,
    contacts: Contacts,
    outages: Outages,
    /// How long replication to an unreachable peer waits between attempts.
    retry: Duration,
}

/// When each peer last answered a Raft RPC of this node (for `cluster
/// members` and the reachability check of membership changes), and, for the
/// leader's check-quorum, when this node *sent* the latest AppendEntries
/// each peer accepted as coming from its leader, per term.
#[derive(Clone, Default)]
pub struct Contacts(Arc<Mutex<ContactTable>>);

#[derive(Default)]
struct ContactTable {
    answered: HashMap<u64, Instant>,
    /// peer -> (term, send time of the latest accepted AppendEntries).
    accepted: HashMap<u64, (u64, Instant)>,
    /// peer -> (term, send time of the latest `LeaderAlive` of that term it
    /// answered as this node's follower: [`crate::raft::alive`]).
    vouched: HashMap<u64, (u64, Instant)>,
    /// peer -> (the highest cluster format version its latest reply named,
    /// when that reply came).
    formats: HashMap<u64, (u8, Instant)>,
}

/// Keeps `(term, at)` for `peer` if it is later than what is kept: a higher
/// term, or the same term at a later instant.
fn record_latest(map: &mut HashMap<u64, (u64, Instant)>, peer: u64, term: u64, at: Instant) {
    let newer = map.get(&peer).is_none_or(|(have_term, have_at)| {
        term > *have_term || (term == *have_term && at > *have_at)
    });
    if newer {
        map.insert(peer, (term, at));
    }
}

/// The instant kept for `peer` if it is of `term`.
fn latest_of_term(map: &HashMap<u64, (u64, Instant)>, peer: u64, term: u64) -> Option<Instant> {
    map.get(&peer)
        .filter(|(t, _)| *t == term)
        .map(|(_, at)| *at)
}

impl Contacts {
    fn lock(&self) -> std::sync::MutexGuard<'_, ContactTable> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn touch(&self, peer: u64) {
        self.lock().answered.insert(peer, Instant::now());
    }

    /// `peer` accepted an AppendEntries of `term` that was sent at `sent_at`:
    /// from its receipt (after `sent_at`) it refuses to vote for anyone else
    /// for the election timeout's minimum (openraft's leader lease there).
    pub fn accepted(&self, peer: u64, term: u64, sent_at: Instant) {
        record_latest(&mut self.lock().accepted, peer, term, sent_at);
    }

    /// When this node sent the latest AppendEntries of `term` that `peer`
    /// accepted; `None` if it accepted none of that term.
    pub fn accepted_at(&self, peer: u64, term: u64) -> Option<Instant> {
        latest_of_term(&self.lock().accepted, peer, term)
    }

    /// `peer` answered a `LeaderAlive` of `term` sent at `sent_at`: it
    /// follows this node. Never a lease: only keeps it from stepping down.
    pub fn vouched(&self, peer: u64, term: u64, sent_at: Instant) {
        record_latest(&mut self.lock().vouched, peer, term, sent_at);
    }

    /// When this node sent the latest `LeaderAlive` of `term` that `peer`
    /// answered as its follower.
    pub fn vouched_at(&self, peer: u64, term: u64) -> Option<Instant> {
        latest_of_term(&self.lock().vouched, peer, term)
    }

    /// `peer` answered, saying it supports cluster format versions up to
    /// `max` (0 from a server before format versions: version 1 only).
    fn format(&self, peer: u64, max: u32) {
        let max = u8::try_from(max.max(1)).unwrap_or(u8::MAX);
        self.lock().formats.insert(peer, (max, Instant::now()));
    }

    /// The highest cluster format version `peer` said it supports, and how
    /// long ago; `None` if it never answered.
    pub fn format_of(&self, peer: u64) -> Option<(u8, Duration)> {
        self.lock()
            .formats
            .get(&peer)
            .map(|(max, at)| (*max, at.elapsed()))
    }

    /// How long ago `peer` last answered; `None` if it never did.
    pub fn since(&self, peer: u64) -> Option<Duration> {
        self.lock().answered.get(&peer).map(Instant::elapsed)
    }
}

impl Network {
    /// A network whose connections leave from `source_ip` when given, and
    /// whose replication retries an unreachable peer every `retry` (the Raft
    /// heartbeat interval: openraft's default of 500 ms kept a restarted
    /// peer without heartbeats past its election timeout, and its election
    /// deposed a healthy leader).
    pub fn new(source_ip: Option<IpAddr>, retry: Duration) -> Network {
        Network::over(
            Channels::new(source_ip, Duration::from_millis(500), |e| e),
            retry,
        )
    }

    /// A network over `channels` (with TLS, each peer is dialed expecting
    /// its node id: [`Channels::member`]).
    pub fn over(channels: Channels, retry: Duration) -> Network {
        Network {
            channels,
            contacts: Contacts::default(),
            outages: Outages::default(),
            retry,
        }
    }

    /// The shared record of when peers last answered.
    pub fn contacts(&self) -> Contacts {
        self.contacts.clone()
    }

    /// The outgoing channels, shared with the pre-votes.
    pub fn channels(&self) -> Channels {
        self.channels.clone()
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            channel: self.channels.member(&member_addr::peer_addr(node), target),
            contacts: self.contacts.clone(),
            outages: self.outages.clone(),
            probing: true,
            held: None,
            retry: self.retry,
        }
    }
}

/// openraft makes one per replication stream, i.e. per peer per leadership.
pub struct PeerClient {
    target: u64,
    channel: Result<Channel, String>,
    contacts: Contacts,
    outages: Outages,
    /// True until a probe finds the peer without the entries it is sent:
    /// see [`PeerClient::already_held`].
    probing: bool,
    /// The last entry a probe found the peer already holding.
    held: Option<openraft::LogId<u64>>,
    retry: Duration,
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl PeerClient {
    /// One RPC; its outcome also goes to [`Outages`], which logs a peer that
    /// stops answering once, then a summary now and then, and its return.
    async fn call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result = self.try_call(rpc, req, option).await;
        match &result {
            Ok(_) => self.outages.answered(self.target, Instant::now()),
            Err(e) => self.outages.failed(self.target, Instant::now(), e),
        }
        result
    }

    async fn try_call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let channel = self
            .channel
            .clone()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e))))?;
        let data = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = RaftClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let mut request = tonic::Request::new(RaftPayload {
            data,
            format: WIRE_FORMAT,
            max_format_version: 0,
        });
        request.set_timeout(option.hard_ttl());
        let reply = match rpc {
            Rpc::Append => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::Snapshot => client.install_snapshot(request).await,
        };
        if reply.is_ok() {
            self.contacts.touch(self.target);
        }
        let reply = reply.map_err(|status| {
            // A refused connection means the peer is down: openraft backs off.
            // So does a failed TLS handshake, whose reason is kept for the log.
            if let Some(why) = crate::channels::tls_failure(&status) {
                RPCError::Unreachable(Unreachable::new(&std::io::Error::other(why)))
            } else if status.code() == tonic::Code::Unavailable {
                RPCError::Unreachable(Unreachable::new(&status))
            } else {
                RPCError::Network(NetworkError::new(&status))
            }
        })?;
        let reply = reply.into_inner();
        self.contacts.format(self.target, reply.max_format_version);
        check_format(reply.format)
            .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        let result: Result<Resp, RaftError<u64, E>> =
            decode(&reply.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
    }
}

/// How often a peer that still does not answer is logged again.
pub const OUTAGE_SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// Peers whose Raft RPCs fail, shared by every replication stream of this
/// node. openraft retries an unreachable peer every Raft heartbeat and logs
/// each attempt (a warning and an error every 50 ms per peer); tidal quiets
/// those targets (`LOG_DEFAULTS`) and logs here instead: one warning when a
/// peer stops answering, one every [`OUTAGE_SUMMARY_EVERY`] while it stays
/// down, and one line when it answers again.
#[derive(Clone, Default)]
pub struct Outages(Arc<Mutex<HashMap<u64, Outage>>>);

/// One peer's current run of failed RPCs.
#[derive(Clone, Debug, PartialEq)]
struct Outage {
    since: Instant,
    logged: Instant,
    failures: u64,
}

/// What [`Outages`] has to say after an RPC's outcome.
#[derive(Debug, PartialEq)]
enum OutageLog {
    Down,
    StillDown { for_s: u64, failures: u64 },
    Back { after_ms: u64, failures: u64 },
}

impl Outages {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Outage>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn on_failure(&self, peer: u64, now: Instant) -> Option<OutageLog> {
        let mut outages = self.lock();
        let Some(o) = outages.get_mut(&peer) else {
            outages.insert(
                peer,
                Outage {
                    since: now,
                    logged: now,
                    failures: 1,
                },
            );
            return Some(OutageLog::Down);
        };
        o.failures += 1;
        if now.saturating_duration_since(o.logged) < OUTAGE_SUMMARY_EVERY {
            return None;
        }
        o.logged = now;
        Some(OutageLog::StillDown {
            for_s: now.saturating_duration_since(o.since).as_secs(),
            failures: o.failures,
        })
    }

    fn on_answer(&self, peer: u64, now: Instant) -> Option<OutageLog> {
        let o = self.lock().remove(&peer)?;
        Some(OutageLog::Back {
            after_ms: now.saturating_duration_since(o.since).as_millis() as u64,
            failures: o.failures,
        })
    }

    fn failed(&self, peer: u64, now: Instant, error: &dyn std::fmt::Display) {
        match self.on_failure(peer, now) {
            Some(OutageLog::Down) => tracing::warn!(
                peer,
                error = %error,
                "a Raft peer does not answer; retrying every heartbeat, logging it every {}s",
                OUTAGE_SUMMARY_EVERY.as_secs()
            ),
            Some(OutageLog::StillDown { for_s, failures }) => tracing::warn!(
                peer,
                for_s,
                failures,
                error = %error,
                "a Raft peer still does not answer"
            ),
            _ => {}
        }
    }

    fn answered(&self, peer: u64, now: Instant) {
        if let Some(OutageLog::Back { after_ms, failures }) = self.on_answer(peer, now) {
            tracing::info!(peer, after_ms, failures, "a Raft peer answers again");
        }
    }
}

/// About how many bytes of entries one AppendEntries carries. openraft
/// gives each AppendEntries the Raft heartbeat interval (100 ms by default)
/// to finish and retries the same range after a timeout, so a follower far
/// behind on large entries would never catch up if a message held them all.
const APPEND_BYTES: usize = crate::batcher::MAX_ENTRY_BYTES;

/// Rough encoded size of an entry.
fn entry_bytes(e: &openraft::Entry<TypeConfig>) -> usize {
    match &e.payload {
        openraft::EntryPayload::Normal(env) => 32 + env.approx_bytes(),
        _ => 256,
    }
}

/// How many of the entries fit in one message: at least one, then up to
/// about [`APPEND_BYTES`].
fn entries_that_fit(entries: &[openraft::Entry<TypeConfig>]) -> usize {
    let mut bytes = 0;
    for (i, e) in entries.iter().enumerate() {
        bytes += entry_bytes(e);
        if i > 0 && bytes > APPEND_BYTES {
            return i;
        }
    }
    entries.len()
}

impl PeerClient {
    /// A new leader does not know how much of its log a peer holds: openraft
    /// starts its search in the middle of the log and sends everything from
    /// there, though after a restart or an election the peers usually hold
    /// all of it already (up to hundreds of megabytes when entries are large).
    /// So, until the first miss, each AppendEntries is preceded by one that
    /// carries no entries and names the last entry of the batch as its
    /// previous log id. If the peer holds that log id, it holds the whole batch
    /// (Raft's log matching: same index and term, same entry and same prefix),
    /// and accepting the probe is exactly what accepting the batch would do
    /// (the peer's accepted and committed positions both become that log id;
    /// a peer that conflicts truncates as it would for the batch). Returns the
    /// answer to give openraft for the batch, or `None` to send it.
    async fn already_held(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> Result<Option<AppendEntriesResponse<u64>>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let probe = AppendEntriesRequest::<TypeConfig> {
            vote: rpc.vote,
            prev_log_id: rpc.entries.last().map(|e| e.log_id),
            leader_commit: rpc.leader_commit,
            entries: Vec::new(),
        };
        match self.call(Rpc::Append, &probe, option).await? {
            AppendEntriesResponse::Success => {
                self.held = probe.prev_log_id;
                Ok(Some(AppendEntriesResponse::Success))
            }
            AppendEntriesResponse::HigherVote(vote) => {
                Ok(Some(AppendEntriesResponse::HigherVote(vote)))
            }
            AppendEntriesResponse::Conflict | AppendEntriesResponse::PartialSuccess(_) => {
                self.probing = false;
                if let Some(held) = self.held {
                    tracing::info!(
                        peer = self.target,
                        up_to = %held,
                        "the peer already held the log up to here; it was not sent again"
                    );
                }
                Ok(None)
            }
        }
    }
}

impl PeerClient {
    async fn send_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        if self.probing && !rpc.entries.is_empty() {
            if let Some(answer) = self.already_held(&rpc, &option).await? {
                return Ok(answer);
            }
        }
        let fit = entries_that_fit(&rpc.entries);
        if fit == rpc.entries.len() {
            return self.call(Rpc::Append, &rpc, &option).await;
        }
        rpc.entries.truncate(fit);
        let last = rpc.entries.last().map(|e| e.log_id);
        match self.call(Rpc::Append, &rpc, &option).await? {
            AppendEntriesResponse::Success => Ok(AppendEntriesResponse::PartialSuccess(last)),
            other => Ok(other),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(self.retry))
    }

    /// Sends the entries, or a prefix of about [`APPEND_BYTES`] and answers
    /// `PartialSuccess` up to its last entry (openraft sends the rest next).
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        // Taken before anything is sent: the peer received it later.
        let sent_at = Instant::now();
        let term = rpc.vote.leader_id().term;
        let answer = self.send_entries(rpc, option).await;
        if let Ok(r) = &answer {
            if !matches!(r, AppendEntriesResponse::HigherVote(_)) {
                self.contacts.accepted(self.target, term, sent_at);
            }
        }
        answer
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call(Rpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_that_does_not_answer_is_logged_once_then_now_and_then_then_back() {
        let outages = Outages::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(outages.on_failure(2, at(0)), Some(OutageLog::Down));
        // Every heartbeat for almost a summary period: quiet.
        let period = OUTAGE_SUMMARY_EVERY.as_millis() as u64;
        let quiet = (50..period)
            .step_by(50)
            .filter_map(|ms| outages.on_failure(2, at(ms)))
            .count();
        assert_eq!(quiet, 0);
        // Another peer has its own outage.
        assert_eq!(outages.on_failure(3, at(100)), Some(OutageLog::Down));
        let failures = period / 50 + 1;
        assert_eq!(
            outages.on_failure(2, at(period)),
            Some(OutageLog::StillDown {
                for_s: OUTAGE_SUMMARY_EVERY.as_secs(),
                failures
            })
        );
        assert_eq!(outages.on_failure(2, at(period + 50)), None);
        assert_eq!(
            outages.on_answer(2, at(period + 100)),
            Some(OutageLog::Back {
                after_ms: period + 100,
                failures: failures + 1
            })
        );
        assert_eq!(outages.on_answer(2, at(period + 150)), None, "once");
        assert_eq!(
            outages.on_failure(2, at(period + 200)),
            Some(OutageLog::Down)
        );
    }

    #[tokio::test]
    async fn an_unreachable_peer_is_retried_every_raft_heartbeat() {
        let mut network = Network::new(None, Duration::from_millis(25));
        let client = network.new_client(2, &BasicNode::new("127.0.0.1:1")).await;
        let waits: Vec<Duration> = client.backoff().take(3).collect();
        assert_eq!(waits, vec![Duration::from_millis(25); 3]);
    }
}
