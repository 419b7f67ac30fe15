//! `tidal server`: one member of a data center's Raft group.
//!
//! Settings come from the config file, then `TIDAL_*` environment variables,
//! then flags, each overriding the previous field by field.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tidal_server::config::{
    RawConfig, DEFAULT_ELECTION_TIMEOUT_MS, DEFAULT_RAFT_HEARTBEAT_MS, DEFAULT_SHUTDOWN_TIMEOUT_MS,
};

use crate::shutdown;

#[derive(Args, Debug, Default)]
#[command(
    after_help = "Precedence: --config FILE, then TIDAL_* environment variables \
    (TIDAL_ID, TIDAL_DC, TIDAL_LISTEN, TIDAL_ADVERTISE, TIDAL_DATA, TIDAL_AGENT_TTL_MS, \
    TIDAL_HEARTBEAT_INTERVAL_MS, TIDAL_SHUTDOWN_TIMEOUT_MS), then flags.\n\
    SIGTERM or SIGINT: a leader hands leadership to the most up-to-date voter, tells agents and \
    clients where it went and exits 0, all within --shutdown-timeout-ms; a follower exits at once; \
    a second signal exits at once (code 1).\n\
    Example: tidal server --id 1 --dc dc1 --listen 127.0.0.1:7001 --data ./data/node1 --init"
)]
pub struct ServerArgs {
    /// A TOML file with any of the settings below (flags and env override it).
    #[arg(long, env = "TIDAL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id in the Raft group (1 or more, unique in the DC).
    #[arg(long, value_name = "N")]
    pub id: Option<u64>,
    /// This data center's name.
    #[arg(long, value_name = "NAME")]
    pub dc: Option<String>,
    /// Address to bind for clients, agents and other servers.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Address others use to reach this node (default: --listen).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Directory for the Raft log, vote and snapshots.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Make this node the only member of a new cluster (once, on the first node; ignored when DIR has state).
    #[arg(long)]
    pub init: bool,
    /// Agent lease on the server, in ms (default 10000).
    #[arg(long, value_name = "MS")]
    pub agent_ttl_ms: Option<u64>,
    /// How often agents heartbeat, in ms (default 1000; at most a third of the TTL).
    #[arg(long, value_name = "MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Remove finished tasks and their idempotency keys this long after they finish, in ms (default 86400000, 24 h).
    #[arg(long, value_name = "MS")]
    pub retain_finished_ms: Option<u64>,
    #[arg(long, value_name = "MS", help = format!(
        "Raft election timeout, lower bound in ms (default {})", DEFAULT_ELECTION_TIMEOUT_MS.0))]
    pub election_timeout_min_ms: Option<u64>,
    #[arg(long, value_name = "MS", help = format!(
        "Raft election timeout, upper bound in ms (default {})", DEFAULT_ELECTION_TIMEOUT_MS.1))]
    pub election_timeout_max_ms: Option<u64>,
    #[arg(long, value_name = "MS", help = format!(
        "Raft heartbeat interval in ms (default {DEFAULT_RAFT_HEARTBEAT_MS})"))]
    pub raft_heartbeat_ms: Option<u64>,
    #[arg(long, value_name = "MS", help = format!(
        "Bound on a graceful shutdown (SIGTERM or SIGINT) in ms: leadership handed over, \
         streams closed, Raft stopped (default {DEFAULT_SHUTDOWN_TIMEOUT_MS})"))]
    pub shutdown_timeout_ms: Option<u64>,
    /// Take a snapshot after this many applied entries (default 20000).
    #[arg(long, value_name = "N")]
    pub snapshot_every: Option<u64>,
    /// Log entries kept behind a snapshot for slow followers (default 1000).
    #[arg(long, value_name = "N")]
    pub keep_log_entries: Option<u64>,
    /// Start a new single-node cluster from a backup (`tidal cluster snapshot save FILE`); needs an empty --data.
    #[arg(long, value_name = "FILE")]
    pub restore: Option<PathBuf>,
    /// Largest task payload in bytes (default 1048576).
    #[arg(long, value_name = "BYTES")]
    pub max_payload_bytes: Option<usize>,
    /// Most tasks in one submit batch (default 10000).
    #[arg(long, value_name = "N")]
    pub max_batch: Option<usize>,
    /// Benchmarks only: delay every durable flush by this many microseconds, to imitate a slow disk.
    #[arg(long, value_name = "US")]
    pub flush_delay_us: Option<u64>,
    /// Tests only: claim to support cluster format versions up to N only
    /// (below this build's), to imitate an older build (README: Rolling upgrade).
    #[arg(long, value_name = "N", hide = true)]
    pub max_format_version: Option<u8>,
    /// Local IP to open connections to other servers from (default: chosen by the OS).
    #[arg(long, value_name = "IP")]
    pub source_ip: Option<String>,
    /// A peer DC to forward work to, in preference order (repeat the flag):
    /// `DC=HOST:PORT[,HOST:PORT...]` (any servers of that DC). Replaces the
    /// config file's [[peers]].
    #[arg(long = "peer", value_name = "DC=ADDRS")]
    pub peers: Vec<tidal_server::config::RawPeer>,
    /// A pending task may go to a peer with room after this wait (default 30000; per queue in the config file).
    #[arg(long, value_name = "MS")]
    pub forward_after_ms: Option<u64>,
    /// Unacknowledged records per peer past which tasks stay local (default 10000).
    #[arg(long, value_name = "N")]
    pub outbox_limit: Option<usize>,
}

impl ServerArgs {
    /// The flags as a raw config layer (only what was given).
    pub fn raw(&self) -> RawConfig {
        RawConfig {
            id: self.id,
            dc: self.dc.clone(),
            listen: self.listen.clone(),
            advertise: self.advertise.clone(),
            data: self.data.clone(),
            init: self.init.then_some(true),
            agent_ttl_ms: self.agent_ttl_ms,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            retain_finished_ms: self.retain_finished_ms,
            election_timeout_min_ms: self.election_timeout_min_ms,
            election_timeout_max_ms: self.election_timeout_max_ms,
            raft_heartbeat_ms: self.raft_heartbeat_ms,
            snapshot_every: self.snapshot_every,
            keep_log_entries: self.keep_log_entries,
            restore: self.restore.clone(),
            max_payload_bytes: self.max_payload_bytes,
            max_batch: self.max_batch,
            source_ip: self.source_ip.clone(),
            flush_delay_us: self.flush_delay_us,
            max_format_version: self.max_format_version,
            peers: (!self.peers.is_empty()).then(|| self.peers.clone()),
            forwarding: None,
            shutdown_timeout_ms: self.shutdown_timeout_ms,
        }
    }

    /// File, then env, then flags.
    pub fn merged(&self) -> anyhow::Result<RawConfig> {
        let file = match &self.config {
            Some(path) => RawConfig::from_file(path)?,
            None => RawConfig::default(),
        };
        let mut merged = file.merge(RawConfig::from_env()?).merge(self.raw());
        // Forwarding flags override single settings of the file's section.
        if self.forward_after_ms.is_some() || self.outbox_limit.is_some() {
            let fwd = merged.forwarding.get_or_insert_with(Default::default);
            if self.forward_after_ms.is_some() {
                fwd.forward_after_ms = self.forward_after_ms;
            }
            if self.outbox_limit.is_some() {
                fwd.outbox_limit = self.outbox_limit;
            }
        }
        Ok(merged)
    }
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let config = args
        .merged()?
        .validate()
        .context("invalid server configuration")?;
    if tidal_server::init_crash_points() && std::env::var_os("FAILPOINTS").is_some() {
        tracing::warn!("crash points armed from FAILPOINTS: this server will abort on purpose");
    }
    #[cfg(feature = "failpoints")]
    shutdown::power_loss_on_sigusr1()?;
    let shutdown = shutdown::on_signal()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let bound = listener
        .local_addr()
        .context("reading the listener's address")?;
    // One line on stdout (logs go to stderr): the address a launcher that
    // passed port 0 connects to.
    let _ = writeln!(std::io::stdout(), "listening on {bound}");
    tidal_server::run(config, listener, shutdown).await
}
