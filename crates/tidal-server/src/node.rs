//! One tidal server: the Raft node, its applied state, the proposers and the
//! current leadership (if any). Shared by every gRPC service.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use openraft::{BasicNode, SnapshotPolicy};
use tidal_core::command::{Command, Envelope, Response};
use tidal_store::{Raft, StateHandle, StoreOptions};

use crate::batcher::{
    Batcher, CheckpointsFold, CompletionsFold, StartsFold, WriteGate, CHECKPOINTS_PER_ENTRY,
};
use crate::clock::now_ms;
use crate::config::ServerConfig;
use crate::error::{Result, ServerError};
use crate::leader::eager::{EagerPlacement, SubmitFold};
use crate::leader::engine::{version_to_raise, MemberFormat};
use crate::leader::leadership::{Leadership, LeadershipSlot};
use crate::links::{DialPeer, PeerTable};
use crate::raft::contact::LeaderContact;
use crate::raft::network::{Contacts, Network};
use crate::raft::quorum::{quorum_contact, verdict, Bounds, Verdict};
use crate::raft::vote_gate::VoteGate;
use crate::raft::Elections;

/// How long a linearizable read waits for a new leadership's first commit.
const READ_BARRIER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Submit entries proposed and not yet applied, at most. openraft 0.9 keeps
/// one AppendEntries in flight per follower, so more entries in flight do
/// not travel sooner: they only make entries smaller and more numerous, and
/// each entry costs every node a fixed share of CPU (propose, write, send,
/// decode, apply, answer). Two let a submit that arrives while one entry is
/// being written go into the next at once; one alone makes a submit that
/// just missed an entry wait a whole write. (Measurements: benches/README.md,
/// Results item 3.)
const SUBMITS_IN_FLIGHT: usize = 2;

/// Agents' reports (starts, completions) proposed and not yet applied, at
/// most, per kind. Nobody waits on a report as on a submit, so one entry at
/// a time folds them into the fewest entries, which leaves each node's CPU
/// to submits and assignments. (Measurements: benches/README.md, Results
/// item 3.)
const REPORTS_IN_FLIGHT: usize = 1;

pub struct Node {
    pub id: u64,
    pub config: ServerConfig,
    pub raft: Raft,
    pub state: StateHandle,
    pub submits: Batcher<SubmitFold>,
    pub completions: Batcher<CompletionsFold>,
    /// Agents' start reports, batched like submits and completions.
    pub starts: Batcher<StartsFold>,
    /// Agents' checkpoints (cluster format version 4), batched likewise.
    pub checkpoints: Batcher<CheckpointsFold>,
    leadership: LeadershipSlot,
    /// When peers last answered this node's Raft RPCs.
    pub contacts: Contacts,
    /// Set (with the reason) once this node finds it was removed from the
    /// cluster; the server then stops.
    pub removed: tokio::sync::watch::Sender<Option<String>>,
    /// Keeps this node from voting while it catches up after an empty start.
    pub vote_gate: Arc<VoteGate>,
    /// Held for reading by every proposal, for writing by a leadership transfer.
    pub write_gate: WriteGate,
    /// Peer DCs: their last summaries and link health.
    pub peers: Arc<PeerTable>,
    /// Makes a leadership's links to peer DCs (the gRPC edge's client).
    pub dial_peer: DialPeer,
    /// When a leader last replicated to this node (a follower's view).
    pub leader_contact: LeaderContact,
    /// When to elect (after a pre-vote), holds and campaigns.
    pub elections: Arc<Elections>,
    /// The store's first failed write, to name in the error the server stops with.
    pub store_failures: tidal_store::Failures,
    /// When this node's Raft core waits for its disk ([`crate::raft::alive`]).
    pub disk: tidal_store::DiskWait,
    /// True while openraft has this node lead but check-quorum made it step
    /// down (no majority heard it): requests are sent on at once.
    pub deposed: std::sync::atomic::AtomicBool,
    /// Set on SIGTERM or SIGINT: this node takes no new request, session
    /// or leadership; it answers NotLeader naming the leader it knows.
    pub shutting_down: std::sync::atomic::AtomicBool,
    /// This server's certificate (`--tls-dir`): every listener serves
    /// mutual TLS and every dial to another server uses it.
    pub tls: Option<tidal_tls::TlsDir>,
    /// The id and hash of `--bootstrap-token-file`'s token (never its
    /// secret): a leader makes it the first admin token.
    pub bootstrap_token: Option<(String, [u8; 32])>,
}

/// The id and hash of the bootstrap token (`--bootstrap-token-file`, or
/// `DATA/bootstrap.token`: [`crate::bootstrap_file`]), if there is one.
/// `fresh`: the data directory holds no state yet.
fn read_bootstrap_token(
    config: &ServerConfig,
    fresh: bool,
) -> anyhow::Result<Option<(String, [u8; 32])>> {
    let source = crate::bootstrap_file::choose(config, fresh)?;
    let Some(path) = source.path() else {
        return Ok(None);
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", source.name()))?;
    let token = crate::auth::token::Token::parse(&text).with_context(|| source.name())?;
    source.announce();
    Ok(Some((token.id().to_string(), token.hash())))
}

/// Logs at warn when this server checks tokens but its cluster has state,
/// holds no token yet and this server has no bootstrap token: every public
/// call would be refused, as after an older build's cluster (which checked
/// no token by default) is restarted on this one.
fn warn_if_locked(config: &ServerConfig, state: &StateHandle, bootstrap: bool) {
    let s = state.read();
    if config.auth == crate::config::AuthMode::Tokens
        && !bootstrap
        && s.last_applied.is_some()
        && s.state.access().tokens_created() == 0
    {
        tracing::warn!(
            "--auth tokens (the default) and this cluster holds no token yet, and this server \
             has no bootstrap token: it refuses every call of the public API; give \
             --bootstrap-token-file FILE (tidal token generate) or --auth none (README: \
             Runbook, Upgrading to secure defaults)"
        );
    }
}

/// How long a command waits for a raise of the cluster format version that
/// every member already supports (see `Node::await_format_version`).
const FORMAT_RAISE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Node {
    /// Opens the store, starts Raft and, with `--init` on a new data
    /// directory, makes this node the first member of a new cluster.
    /// `dial_peer` makes each leadership's links to peer DCs.
    pub async fn start(config: ServerConfig, dial_peer: DialPeer) -> anyhow::Result<Arc<Node>> {
        // No store yet: the first start in this directory.
        let fresh = !config.data_dir.join("raft").exists();
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
        let tls = crate::tls::load_and_warn(&config)?;
        check_identity(&config.data_dir, config.node_id, &config.dc)?;
        let bootstrap_token = read_bootstrap_token(&config, fresh)?;
        if let Some(backup) = &config.restore {
            let bytes = std::fs::read(backup)
                .with_context(|| format!("reading backup {}", backup.display()))?;
            let index = tidal_store::restore(
                &config.data_dir.join("raft"),
                &bytes,
                config.node_id,
                &config.member_addr(),
            )
            .with_context(|| {
                format!(
                    "restoring {} into {}",
                    backup.display(),
                    config.data_dir.display()
                )
            })?;
            tracing::info!(node_id = config.node_id, log_index = index, backup = %backup.display(), "restored a backup as a new single-node cluster");
        }
        let (mut log_store, state_machine) = tidal_store::open(
            &config.data_dir.join("raft"),
            StoreOptions {
                flush_delay: config.flush_delay,
                max_format_version: config.max_format_version,
            },
        )
        .map_err(|e| match e {
            // A snapshot of a version this node does not support: the same
            // stop (and exit code) as meeting such an entry while running.
            tidal_store::StoreError::NeedsFormatVersion {
                what,
                needed,
                supported,
            } => anyhow::Error::new(crate::fatal::NeedsVersion {
                needed,
                supported,
                reason: format!(
                    "{what} in {} needs cluster format version {needed}; this node supports \
                     versions {} to {supported}",
                    config.data_dir.display(),
                    tidal_core::FORMAT_VERSION_MIN
                ),
            }),
            e => anyhow::Error::new(e).context(format!(
                "opening the store in {}",
                config.data_dir.display()
            )),
        })?;
        let state = state_machine.handle();
        let store_failures = log_store.failures();
        let disk = log_store.disk_wait();
        // Nothing in the log, no vote and no snapshot: a new node, or a member
        // whose disk was wiped (see VoteGate).
        let started_empty = {
            use openraft::storage::RaftLogStorage;
            let log = log_store
                .get_log_state()
                .await
                .context("reading the log state")?;
            let vote = log_store.read_vote().await.context("reading the vote")?;
            log.last_log_id.is_none()
                && vote.is_none()
                && state.read().last_applied.is_none()
                && !config.init
        };
        let log_reader = {
            use openraft::storage::RaftLogStorage;
            log_store.get_log_reader().await
        };
        let network = Network::over(
            crate::channels::Channels::new(
                config.source_ip,
                std::time::Duration::from_millis(500),
                |e| e,
            )
            .with_tls(&config.dc, tls.clone()),
            std::time::Duration::from_millis(config.raft_heartbeat_ms),
        );
        // Elections are this server's (raft/elections.rs: a pre-vote first);
        // openraft's timeouts become its leader lease and vote RPC timeout.
        let (lease_min, lease) =
            crate::raft::openraft_timeouts(config.raft_heartbeat_ms, config.election_timeout.0);
        let raft_config = openraft::Config {
            cluster_name: format!("tidal-{}", config.dc),
            election_timeout_min: lease_min,
            election_timeout_max: lease,
            enable_elect: false,
            heartbeat_interval: config.raft_heartbeat_ms,
            install_snapshot_timeout: 10_000,
            max_payload_entries: 512,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.keep_log_entries,
            ..Default::default()
        }
        .validate()
        .context("raft configuration")?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            network.clone(),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| match store_failures.halted() {
            // Re-applying the log met an entry this node cannot apply.
            Some(halt) => anyhow::Error::new(crate::fatal::NeedsVersion::from(halt)),
            None => anyhow::Error::new(e).context("starting raft"),
        })?;
        // Raft's first metrics are a placeholder (term 0, empty log) until its
        // core has loaded the store; answer no status before that.
        let mut metrics = raft.metrics();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), metrics.changed()).await;
        // The committed log is re-applied by now: the state is this node's.
        warn_if_locked(&config, &state, bootstrap_token.is_some());
        if config.init && !raft.is_initialized().await.context("reading raft state")? {
            let members = BTreeMap::from([(
                config.node_id,
                BasicNode {
                    addr: config.member_addr(),
                },
            )]);
            raft.initialize(members)
                .await
                .context("initializing a new cluster")?;
            tracing::info!(node_id = config.node_id, dc = %config.dc, "initialized a new cluster");
        }
        let max_batch = config.limits.max_batch;
        let write_gate = WriteGate::default();
        let leadership: LeadershipSlot = Arc::default();
        let eager = Arc::new(
            EagerPlacement::new(state.clone(), leadership.clone())
                .with_warm_weight(config.placement.warm_weight_milli),
        );
        let submits = Batcher::spawn(
            raft.clone(),
            write_gate.clone(),
            max_batch,
            SUBMITS_IN_FLIGHT,
            SubmitFold(eager),
        );
        let starts = Batcher::spawn(
            raft.clone(),
            write_gate.clone(),
            max_batch,
            REPORTS_IN_FLIGHT,
            StartsFold,
        );
        let completions = Batcher::spawn(
            raft.clone(),
            write_gate.clone(),
            max_batch,
            REPORTS_IN_FLIGHT,
            CompletionsFold,
        );
        let checkpoints = Batcher::spawn(
            raft.clone(),
            write_gate.clone(),
            CHECKPOINTS_PER_ENTRY.min(max_batch),
            REPORTS_IN_FLIGHT,
            CheckpointsFold,
        );
        let peers = Arc::new(PeerTable::new(config.peers.clone()));
        let vote_gate = Arc::new(VoteGate::new(started_empty));
        let elections = Arc::new(Elections::new(
            config.node_id,
            raft.clone(),
            log_reader,
            vote_gate.clone(),
            network.channels(),
            config.election_timeout,
            config.raft_heartbeat_ms,
        ));
        let leader_contact = elections.contact();
        Ok(Arc::new(Node {
            bootstrap_token,
            elections,
            peers,
            dial_peer,
            leader_contact,
            id: config.node_id,
            config,
            raft,
            state,
            submits,
            completions,
            starts,
            checkpoints,
            leadership,
            contacts: network.contacts(),
            removed: tokio::sync::watch::channel(None).0,
            vote_gate,
            write_gate,
            store_failures,
            disk,
            deposed: std::sync::atomic::AtomicBool::new(false),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            tls,
        }))
    }

    /// Commits one command and returns its response and log index. A
    /// command the cluster's format version does not include is refused
    /// with FAILED_PRECONDITION and never proposed (README: Rolling upgrade).
    pub async fn propose(&self, command: Command) -> Result<(Response, u64)> {
        self.await_format_version(&command).await?;
        let _open = self.write_gate.read().await;
        let resp = self
            .raft
            .client_write(Envelope::new(now_ms(), command))
            .await?;
        Ok((resp.data, resp.log_id.index))
    }

    /// The highest cluster format version this node supports (the build's,
    /// or less with the test-only `--max-format-version`).
    pub fn supported_format_version(&self) -> u8 {
        self.config
            .max_format_version
            .unwrap_or(tidal_core::FORMAT_VERSION_MAX)
    }

    /// What every other member of the cluster (voters and learners) last
    /// said of the format versions it supports ([`Contacts::format_of`]).
    pub fn member_formats(&self) -> Vec<MemberFormat> {
        let members: Vec<u64> = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            m.membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .collect()
        };
        members
            .into_iter()
            .filter(|id| *id != self.id)
            .map(|id| MemberFormat {
                id,
                format: self
                    .contacts
                    .format_of(id)
                    .map(|(max, age)| (max, age.as_millis() as u64)),
            })
            .collect()
    }

    /// The cluster format version every member supports now, if it is above
    /// `current` (README: Rolling upgrade; the leader engine's raiser).
    pub fn version_to_raise(&self, current: u8) -> Option<u8> {
        version_to_raise(
            self.supported_format_version(),
            current,
            &self.member_formats(),
            self.config.election_timeout.1,
        )
    }

    /// On the leader, refuses a command that needs a cluster format version
    /// above the cluster's (apply refuses it too, on every replica alike,
    /// should the version be behind at commit). When every member already
    /// supports that version the leader is about to raise it (a new cluster
    /// right after it started, the last node of an upgrade just back): the
    /// command waits for that, at most [`FORMAT_RAISE_WAIT`]. Elsewhere the
    /// write is forwarded to the leader, which decides.
    pub(crate) async fn await_format_version(&self, command: &Command) -> Result<()> {
        let needed = command.required_version();
        let current = || self.state.read().state.cluster_version();
        if needed <= current()
            || matches!(command, Command::SetClusterVersion { .. })
            || self.raft.metrics().borrow().current_leader != Some(self.id)
        {
            return Ok(());
        }
        if self
            .version_to_raise(current())
            .is_some_and(|v| v >= needed)
        {
            let _ = self
                .raft
                .wait(Some(FORMAT_RAISE_WAIT))
                .metrics(
                    |_| self.state.read().state.cluster_version() >= needed,
                    "the cluster format version is raised",
                )
                .await;
        }
        self.check_format_version(command)
    }

    /// Refuses a command that needs a cluster format version above the
    /// cluster's, as this node has applied it.
    pub fn check_format_version(&self, command: &Command) -> Result<()> {
        let needed = command.required_version();
        let current = self.state.read().state.cluster_version();
        if needed <= current || matches!(command, Command::SetClusterVersion { .. }) {
            return Ok(());
        }
        Err(ServerError::FailedPrecondition(format!(
            "this needs cluster format version {needed}; the cluster is at version {current} \
             until every member supports {needed} (`tidal status` shows each node's versions; \
             README: Rolling upgrade)"
        )))
    }

    /// Waits until this node may answer a linearizable read (it is the leader
    /// of a quorum and has applied everything committed before the read began).
    /// Returns the applied index the read is served at.
    pub async fn linearizable(&self) -> Result<u64> {
        let leadership = self.await_leader().await?;
        if !leadership.reads_ready(READ_BARRIER_WAIT).await {
            return Err(ServerError::Unavailable(
                "this leader has not committed its first entry yet; retry".into(),
            ));
        }
        self.raft.ensure_linearizable().await?;
        Ok(self.applied_index())
    }

    pub fn applied_index(&self) -> u64 {
        self.state.read().last_applied.map(|l| l.index).unwrap_or(0)
    }

    /// The leadership this node acts under, if any (see [`Leadership`]).
    pub fn leadership(&self) -> Option<Arc<Leadership>> {
        self.leadership
            .lock()
            .expect("leadership lock poisoned")
            .clone()
            .filter(|l| l.is_alive())
    }

    /// Check-quorum for this node as leader of `term` since `since`
    /// ([`crate::raft::quorum`]).
    pub fn quorum_verdict(&self, term: u64, since: std::time::Instant) -> Verdict {
        let configs = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_joint_config()
            .clone();
        let now = std::time::Instant::now();
        let contact = self.quorum_contact(&configs, term, now);
        let (min, max) = self.config.election_timeout;
        let bounds = Bounds {
            lease: std::time::Duration::from_millis(min),
            step_down: std::time::Duration::from_millis(max),
        };
        verdict(bounds, now, since, contact)
    }

    /// Whether a majority of every voter configuration answered a
    /// `LeaderAlive` of `term` sent within the election timeout's maximum
    /// of `now`, saying they follow this node ([`crate::raft::alive`]): its
    /// peers' silence is their disks', not a lost majority. Never a lease.
    pub fn vouched(
        &self,
        configs: &[std::collections::BTreeSet<u64>],
        term: u64,
        now: std::time::Instant,
    ) -> bool {
        let max = std::time::Duration::from_millis(self.config.election_timeout.1);
        quorum_contact(configs, self.id, now, |peer| {
            self.contacts.vouched_at(peer, term)
        })
        .is_some_and(|at| now.saturating_duration_since(at) <= max)
    }

    /// This node's quorum contact in `term` over the voter `configs`, at `now`
    /// ([`quorum_contact`]).
    pub fn quorum_contact(
        &self,
        configs: &[std::collections::BTreeSet<u64>],
        term: u64,
        now: std::time::Instant,
    ) -> Option<std::time::Instant> {
        quorum_contact(configs, self.id, now, |peer| {
            self.contacts.accepted_at(peer, term)
        })
    }

    /// Whether `leadership` may renew an agent's lease now: it is alive and
    /// a majority heard this node within the leader lease, so no other
    /// leader can exist yet (README, guarantee 6).
    pub fn lease_holds(&self, leadership: &Leadership) -> bool {
        leadership.is_alive()
            && self.quorum_verdict(leadership.term, leadership.since) == Verdict::Lease
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The leadership in the slot, alive or not (shutdown ends it).
    pub(crate) fn take_leadership(&self) -> Option<Arc<Leadership>> {
        self.leadership
            .lock()
            .expect("leadership lock poisoned")
            .take()
    }

    pub(crate) fn set_leadership(&self, l: Option<Arc<Leadership>>) {
        *self.leadership.lock().expect("leadership lock poisoned") = l;
    }

    /// Makes `l` the leadership this node acts under and opens it to
    /// linearizable reads, unless it has ended: checked under the slot's
    /// lock, so a leadership that ends is never installed after its end
    /// emptied the slot.
    pub(crate) fn install_leadership(&self, l: &Arc<Leadership>) -> bool {
        let mut slot = self.leadership.lock().expect("leadership lock poisoned");
        if !l.is_alive() {
            return false;
        }
        l.open_reads();
        *slot = Some(l.clone());
        true
    }

    /// This node's leadership; or NotLeader naming the leader. When the
    /// leader this node knows has gone quiet (no AppendEntries for three Raft
    /// heartbeats: it may have died), waits for the election to settle (at
    /// most two election timeouts and two heartbeats), so the answer names
    /// the new leader (or this node serves, if it won). Clients then reach the new leader
    /// as soon as there is one, instead of backing off against a dead one.
    pub async fn await_leader(&self) -> Result<Arc<Leadership>> {
        if self.is_shutting_down() {
            // While this node hands leadership over, wait (an election
            // timeout or two) for the answer to name the new leader: a
            // client told "no leader known" would back off instead.
            let within = std::time::Duration::from_millis(2 * self.config.election_timeout.1);
            let _ = self
                .raft
                .wait(Some(within))
                .metrics(
                    |m| m.current_leader.is_some_and(|l| l != self.id),
                    "another leader is known",
                )
                .await;
            return Err(self.not_leader());
        }
        if let Some(l) = self.leadership() {
            return Ok(l);
        }
        // A leader without a majority: the others may have elected already.
        if self.deposed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(self.not_leader());
        }
        let quiet = std::time::Duration::from_millis(self.config.raft_heartbeat_ms * 3);
        let heard = |c: &LeaderContact| c.since().is_some_and(|d| d < quiet);
        let mut metrics = self.raft.metrics();
        let known = metrics.borrow().current_leader;
        if known.is_some() && known != Some(self.id) && heard(&self.leader_contact) {
            return Err(self.not_leader());
        }
        // A voter elects after at most election_timeout_max of quiet (then
        // a pre-vote and a vote); a lost round costs another timeout: wait
        // for two and a little more.
        let (max, hb) = (
            self.config.election_timeout.1,
            self.config.raft_heartbeat_ms,
        );
        let deadline =
            tokio::time::Instant::now() + std::time::Duration::from_millis(2 * max + 2 * hb);
        loop {
            if let Some(l) = self.leadership() {
                return Ok(l);
            }
            let now = metrics.borrow_and_update().current_leader;
            let moved_on = now.is_some() && now != known && now != Some(self.id);
            if moved_on || (now.is_some() && now != Some(self.id) && heard(&self.leader_contact)) {
                return Err(self.not_leader());
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(self.not_leader());
            }
            // Contact is not in the metrics: look again every few ms.
            let tick = left.min(std::time::Duration::from_millis(20));
            let _ = tokio::time::timeout(tick, metrics.changed()).await;
        }
    }

    /// The leadership of this node, or NotLeader naming the leader if known.
    pub fn require_leader(&self) -> Result<Arc<Leadership>> {
        if self.is_shutting_down() {
            return Err(self.not_leader());
        }
        if let Some(l) = self.leadership() {
            return Ok(l);
        }
        Err(self.not_leader())
    }

    /// Ok when openraft has this node lead, acting or not: membership
    /// changes need only that (they commit through Raft, and a leader that
    /// lost its majority answers their refusals as well as any).
    pub fn require_raft_leader(&self) -> Result<()> {
        let m = self.raft.metrics().borrow().clone();
        if m.state.is_leader() && m.current_leader == Some(self.id) && !self.is_shutting_down() {
            return Ok(());
        }
        Err(self.not_leader())
    }

    /// Where this node reaches the leader's Raft and peer services (its
    /// peer address, else its client address) and its id, when another node leads.
    pub fn leader_peer_addr(&self) -> Option<(u64, String)> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader.filter(|l| *l != self.id)?;
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| (leader, crate::raft::member_addr::peer_addr(n)))
    }

    pub fn not_leader(&self) -> ServerError {
        let m = self.raft.metrics().borrow().clone();
        let leader_id = m.current_leader.filter(|l| *l != self.id);
        let leader_addr = leader_id.and_then(|l| {
            m.membership_config
                .membership()
                .get_node(&l)
                .map(crate::raft::member_addr::client_addr)
        });
        ServerError::NotLeader {
            leader_id,
            leader_addr,
            before_proposal: true,
        }
    }
}

/// Records the node id and DC in the data directory on first start, and
/// refuses to start a data directory under another identity.
fn check_identity(dir: &Path, id: u64, dc: &str) -> anyhow::Result<()> {
    let path = dir.join("identity");
    let want = format!("node_id = {id}\ndc = \"{dc}\"\n");
    match std::fs::read_to_string(&path) {
        Ok(have) if have == want => Ok(()),
        Ok(have) => bail!(
            "data directory {} belongs to another node ({}); use that node's id and dc or a new directory",
            dir.display(),
            have.trim().replace('\n', ", ")
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, want).with_context(|| format!("writing {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
