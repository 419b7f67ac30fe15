//! Server configuration in two stages: a raw layer (file, then `TIDAL_*`
//! environment, then flags, merged in that order) validated into [`ServerConfig`].

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use tidal_core::limits::Limits;

/// A voter that hears nothing from a leader for a random time in this range
/// (ms) asks for a pre-vote, then elects. With the pre-vote (elections.rs)
/// a node with a slow link or back from a pause cannot depose a healthy
/// leader, so the range can be short: a dead leader is replaced within
/// about 150-300 ms of its last heartbeat.
pub const DEFAULT_ELECTION_TIMEOUT_MS: (u64, u64) = (150, 300);
/// How long finished tasks are kept by default: 24 h.
pub const DEFAULT_RETAIN_FINISHED_MS: u64 = 24 * 60 * 60 * 1000;
/// How often a leader sends AppendEntries when it has nothing new.
pub const DEFAULT_RAFT_HEARTBEAT_MS: u64 = 50;
/// How long a SIGTERM or SIGINT may take to hand leadership over, close
/// streams and stop Raft before the server exits anyway.
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 2_000;

/// Every setting optional, as read from one source. Later sources override
/// earlier ones field by field ([`RawConfig::merge`]).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub id: Option<u64>,
    pub dc: Option<String>,
    /// Address to bind, `HOST:PORT`.
    pub listen: Option<String>,
    /// Address other nodes and clients use to reach this node; defaults to `listen`.
    pub advertise: Option<String>,
    pub data: Option<PathBuf>,
    pub init: Option<bool>,
    /// Agent lease on the server, in milliseconds (default 10000).
    pub agent_ttl_ms: Option<u64>,
    /// How often agents heartbeat, in milliseconds (default 1000).
    pub heartbeat_interval_ms: Option<u64>,
    /// Finished tasks and their idempotency keys are removed this long
    /// after they finish, in milliseconds (default 86400000, 24 h).
    pub retain_finished_ms: Option<u64>,
    pub election_timeout_min_ms: Option<u64>,
    pub election_timeout_max_ms: Option<u64>,
    pub raft_heartbeat_ms: Option<u64>,
    /// Take a snapshot after this many applied entries (default 20000).
    pub snapshot_every: Option<u64>,
    /// Log entries kept behind a snapshot, so a slow follower can catch up
    /// from the log instead of a snapshot (default 1000).
    pub keep_log_entries: Option<u64>,
    /// Start a new single-node cluster from this backup (flag only).
    #[serde(skip)]
    pub restore: Option<PathBuf>,
    pub max_payload_bytes: Option<usize>,
    pub max_batch: Option<usize>,
    /// Benchmarks only: delay every durable flush by this many microseconds.
    pub flush_delay_us: Option<u64>,
    /// Tests only: claim to support cluster format versions up to this one
    /// (below the build's), to imitate an older build in an upgrade test.
    pub max_format_version: Option<u8>,
    /// Local IP that connections to other servers are made from (default: any).
    pub source_ip: Option<String>,
    /// Peer DCs in preference order (`[[peers]]` tables, or `--peer`).
    pub peers: Option<Vec<RawPeer>>,
    /// Cross-DC forwarding policy (`[forwarding]`).
    pub forwarding: Option<RawForwarding>,
    /// Bound on a graceful shutdown, in milliseconds (default 2000).
    pub shutdown_timeout_ms: Option<u64>,
}

/// One peer DC: its name and the addresses of its servers (any of them; the
/// shipper follows the way to the leader).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawPeer {
    pub dc: String,
    pub endpoints: Vec<String>,
}

impl std::str::FromStr for RawPeer {
    type Err = String;
    /// `DC=HOST:PORT[,HOST:PORT...]`, as `--peer` takes it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (dc, addrs) = s
            .split_once('=')
            .ok_or_else(|| format!("--peer {s:?}: expected DC=HOST:PORT[,HOST:PORT...]"))?;
        Ok(RawPeer {
            dc: dc.trim().to_string(),
            endpoints: addrs
                .split(',')
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect(),
        })
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForwarding {
    /// Default for every queue: a task pending this long may go to a peer
    /// with room (default 30000).
    pub forward_after_ms: Option<u64>,
    /// Unacknowledged records per peer past which no more tasks are
    /// forwarded to it (default 10000).
    pub outbox_limit: Option<usize>,
    /// Per queue overrides.
    #[serde(default)]
    pub queues: std::collections::BTreeMap<String, RawQueueForwarding>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueueForwarding {
    /// Whether this queue's tasks may leave the DC (default true).
    pub allow: Option<bool>,
    pub forward_after_ms: Option<u64>,
}

macro_rules! merge_fields {
    ($self:ident, $other:ident, $($f:ident),*) => { $( if $other.$f.is_some() { $self.$f = $other.$f; } )* };
}

impl RawConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> anyhow::Result<RawConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// Reads `TIDAL_ID`, `TIDAL_DC`, `TIDAL_LISTEN`, `TIDAL_ADVERTISE`, `TIDAL_DATA`,
    /// `TIDAL_AGENT_TTL_MS`, `TIDAL_HEARTBEAT_INTERVAL_MS` and `TIDAL_SHUTDOWN_TIMEOUT_MS`.
    pub fn from_env() -> anyhow::Result<RawConfig> {
        fn var(name: &str) -> Option<String> {
            std::env::var(name).ok().filter(|v| !v.is_empty())
        }
        fn num(name: &str) -> anyhow::Result<Option<u64>> {
            var(name)
                .map(|v| {
                    v.parse::<u64>()
                        .with_context(|| format!("{name}={v:?} is not a number"))
                })
                .transpose()
        }
        Ok(RawConfig {
            id: num("TIDAL_ID")?,
            dc: var("TIDAL_DC"),
            listen: var("TIDAL_LISTEN"),
            advertise: var("TIDAL_ADVERTISE"),
            data: var("TIDAL_DATA").map(PathBuf::from),
            agent_ttl_ms: num("TIDAL_AGENT_TTL_MS")?,
            heartbeat_interval_ms: num("TIDAL_HEARTBEAT_INTERVAL_MS")?,
            shutdown_timeout_ms: num("TIDAL_SHUTDOWN_TIMEOUT_MS")?,
            retain_finished_ms: num("TIDAL_RETAIN_FINISHED_MS")?,
            ..RawConfig::default()
        })
    }

    /// Overrides the fields that `other` sets.
    pub fn merge(mut self, other: RawConfig) -> RawConfig {
        merge_fields!(
            self,
            other,
            id,
            dc,
            listen,
            advertise,
            data,
            init,
            agent_ttl_ms,
            heartbeat_interval_ms,
            retain_finished_ms,
            election_timeout_min_ms,
            election_timeout_max_ms,
            raft_heartbeat_ms,
            snapshot_every,
            keep_log_entries,
            restore,
            max_payload_bytes,
            max_batch,
            flush_delay_us,
            max_format_version,
            source_ip,
            peers,
            forwarding,
            shutdown_timeout_ms
        );
        self
    }

    /// Checks every setting and fills defaults.
    pub fn validate(self) -> anyhow::Result<ServerConfig> {
        let Some(node_id) = self.id else {
            bail!("--id is required (a node id, 1 or more)")
        };
        if node_id == 0 {
            bail!("--id must be 1 or more");
        }
        let Some(dc) = self.dc else {
            bail!("--dc is required (this data center's name)")
        };
        let limits = Limits {
            max_payload_bytes: self
                .max_payload_bytes
                .unwrap_or(Limits::default().max_payload_bytes),
            max_batch: self.max_batch.unwrap_or(Limits::default().max_batch),
            ..Limits::default()
        };
        tidal_core::limits::validate_name("dc", &dc, &limits)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let Some(listen) = self.listen else {
            bail!("--listen HOST:PORT is required")
        };
        let listen: SocketAddr = listen
            .parse()
            .with_context(|| format!("--listen {listen:?} is not HOST:PORT with a numeric host"))?;
        let advertise = self.advertise.unwrap_or_else(|| listen.to_string());
        let Some(data_dir) = self.data else {
            bail!("--data DIR is required")
        };
        let source_ip = self
            .source_ip
            .map(|ip| {
                ip.parse::<IpAddr>()
                    .with_context(|| format!("--source-ip {ip:?} is not an IP address"))
            })
            .transpose()?;
        let agent_ttl = Duration::from_millis(self.agent_ttl_ms.unwrap_or(10_000));
        let heartbeat_interval = Duration::from_millis(self.heartbeat_interval_ms.unwrap_or(1_000));
        if heartbeat_interval * 3 > agent_ttl {
            bail!(
                "heartbeat_interval_ms ({}) must be at most a third of agent_ttl_ms ({})",
                heartbeat_interval.as_millis(),
                agent_ttl.as_millis()
            );
        }
        let election_min = self
            .election_timeout_min_ms
            .unwrap_or(DEFAULT_ELECTION_TIMEOUT_MS.0);
        let election_max = self
            .election_timeout_max_ms
            .unwrap_or(DEFAULT_ELECTION_TIMEOUT_MS.1);
        let raft_heartbeat = self.raft_heartbeat_ms.unwrap_or(DEFAULT_RAFT_HEARTBEAT_MS);
        if !(raft_heartbeat > 0
            && 2 * raft_heartbeat <= election_min
            && election_min < election_max)
        {
            bail!(
                "need 0 < 2 x raft_heartbeat_ms <= election_timeout_min_ms < election_timeout_max_ms \
                 (got {raft_heartbeat}, {election_min}, {election_max})"
            );
        }
        let peers = self.peers.unwrap_or_default();
        let mut seen = std::collections::BTreeSet::new();
        for p in &peers {
            tidal_core::limits::validate_name("peer dc", &p.dc, &limits)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if p.dc == dc {
                bail!("peer {:?} is this DC itself", p.dc);
            }
            if !seen.insert(p.dc.clone()) {
                bail!("peer {:?} is listed twice", p.dc);
            }
            if p.endpoints.is_empty() {
                bail!("peer {:?} has no endpoints", p.dc);
            }
            for e in &p.endpoints {
                if e.parse::<SocketAddr>().is_err() {
                    bail!(
                        "peer {:?}: endpoint {e:?} is not HOST:PORT with a numeric host",
                        p.dc
                    );
                }
            }
        }
        let raw_fwd = self.forwarding.unwrap_or_default();
        let forward_after_ms = raw_fwd.forward_after_ms.unwrap_or(30_000);
        let forwarding = Forwarding {
            forward_after_ms,
            outbox_limit: raw_fwd.outbox_limit.unwrap_or(10_000),
            queues: raw_fwd
                .queues
                .into_iter()
                .map(|(q, r)| {
                    (
                        q,
                        tidal_core::forwarding::QueuePolicy {
                            allow: r.allow.unwrap_or(true),
                            forward_after_ms: r.forward_after_ms.unwrap_or(forward_after_ms),
                        },
                    )
                })
                .collect(),
        };
        let shutdown_timeout = Duration::from_millis(
            self.shutdown_timeout_ms
                .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_MS),
        );
        if shutdown_timeout.is_zero() {
            bail!("shutdown_timeout_ms must be 1 or more");
        }
        let max_format_version = match self.max_format_version {
            Some(v)
                if !(tidal_core::FORMAT_VERSION_MIN..=tidal_core::FORMAT_VERSION_MAX)
                    .contains(&v) =>
            {
                bail!(
                    "max format version {v} is out of range: this build knows versions {} to {}",
                    tidal_core::FORMAT_VERSION_MIN,
                    tidal_core::FORMAT_VERSION_MAX
                )
            }
            v => v,
        };
        if self.init == Some(true) && self.restore.is_some() {
            bail!("--init and --restore both start a new cluster: give one of them");
        }
        Ok(ServerConfig {
            node_id,
            dc,
            listen,
            advertise,
            data_dir,
            init: self.init.unwrap_or(false),
            agent_ttl,
            heartbeat_interval,
            retain_finished: Duration::from_millis(
                self.retain_finished_ms
                    .unwrap_or(DEFAULT_RETAIN_FINISHED_MS),
            ),
            election_timeout: (election_min, election_max),
            raft_heartbeat_ms: raft_heartbeat,
            snapshot_every: self.snapshot_every.unwrap_or(20_000),
            keep_log_entries: self.keep_log_entries.unwrap_or(1_000),
            restore: self.restore,
            limits,
            flush_delay: self.flush_delay_us.map(Duration::from_micros),
            max_format_version,
            source_ip,
            peers: peers
                .into_iter()
                .map(|p| Peer {
                    dc: p.dc,
                    endpoints: p.endpoints,
                })
                .collect(),
            forwarding,
            shutdown_timeout,
        })
    }
}

/// A checked configuration; everything the server needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub node_id: u64,
    pub dc: String,
    pub listen: SocketAddr,
    pub advertise: String,
    pub data_dir: PathBuf,
    /// Make this node the only member of a new cluster (ignored if it already has state).
    pub init: bool,
    pub agent_ttl: Duration,
    pub heartbeat_interval: Duration,
    /// How long a finished task is kept after it finished (retention).
    pub retain_finished: Duration,
    pub election_timeout: (u64, u64),
    pub raft_heartbeat_ms: u64,
    pub snapshot_every: u64,
    pub keep_log_entries: u64,
    /// A backup to start a new single-node cluster from (`--restore`).
    pub restore: Option<PathBuf>,
    pub limits: Limits,
    pub flush_delay: Option<Duration>,
    /// Tests only: the highest cluster format version this node claims to
    /// support (None: the build's, [`tidal_core::FORMAT_VERSION_MAX`]).
    pub max_format_version: Option<u8>,
    /// Local IP for connections to other servers (None: the OS chooses).
    pub source_ip: Option<IpAddr>,
    /// Peer DCs in preference order.
    pub peers: Vec<Peer>,
    pub forwarding: Forwarding,
    /// Bound on a graceful shutdown (SIGTERM, SIGINT): leadership handed
    /// over, streams closed, Raft stopped.
    pub shutdown_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub dc: String,
    pub endpoints: Vec<String>,
}

/// The forwarding policy of this DC (used by its leader).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarding {
    pub forward_after_ms: u64,
    pub outbox_limit: usize,
    pub queues: std::collections::BTreeMap<String, tidal_core::forwarding::QueuePolicy>,
}

impl Forwarding {
    /// A queue's policy: its own section, or allowed after the default wait.
    pub fn policy(&self, queue: &str) -> tidal_core::forwarding::QueuePolicy {
        self.queues
            .get(queue)
            .copied()
            .unwrap_or(tidal_core::forwarding::QueuePolicy {
                allow: true,
                forward_after_ms: self.forward_after_ms,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> RawConfig {
        RawConfig {
            id: Some(1),
            dc: Some("dc-a".into()),
            listen: Some("127.0.0.1:7001".into()),
            data: Some("/tmp/tidal-config-test".into()),
            ..RawConfig::default()
        }
    }

    fn err(raw: RawConfig) -> String {
        raw.validate().unwrap_err().to_string()
    }

    #[test]
    fn peers_and_forwarding_from_toml() {
        let file: RawConfig = toml::from_str(
            r#"
            [[peers]]
            dc = "dc-b"
            endpoints = ["127.0.0.1:7101", "127.0.0.1:7102"]
            [[peers]]
            dc = "dc-c"
            endpoints = ["127.0.0.1:7201"]
            [forwarding]
            forward_after_ms = 5000
            outbox_limit = 100
            [forwarding.queues.local]
            allow = false
            [forwarding.queues.vip]
            forward_after_ms = 1000
            "#,
        )
        .unwrap();
        let c = base().merge(file).validate().unwrap();
        let names: Vec<&str> = c.peers.iter().map(|p| p.dc.as_str()).collect();
        assert_eq!(names, ["dc-b", "dc-c"], "preference order is kept");
        assert_eq!(c.peers[0].endpoints.len(), 2);
        let f = &c.forwarding;
        assert_eq!(f.outbox_limit, 100);
        assert!(!f.policy("local").allow);
        assert_eq!(f.policy("vip").forward_after_ms, 1000);
        assert!(f.policy("vip").allow);
        assert_eq!(f.policy("other").forward_after_ms, 5000);
    }

    #[test]
    fn defaults_without_peers() {
        let c = base().validate().unwrap();
        assert!(c.peers.is_empty());
        assert_eq!(c.forwarding.outbox_limit, 10_000);
        assert_eq!(c.forwarding.policy("default").forward_after_ms, 30_000);
    }

    #[test]
    fn election_timeouts_default_and_are_checked_against_the_heartbeat() {
        let c = base().validate().unwrap();
        assert_eq!(c.election_timeout, (150, 300));
        assert_eq!(c.raft_heartbeat_ms, 50);
        let with = |hb, min, max| RawConfig {
            raft_heartbeat_ms: Some(hb),
            election_timeout_min_ms: Some(min),
            election_timeout_max_ms: Some(max),
            ..base()
        };
        assert!(with(25, 80, 140).validate().is_ok());
        assert!(with(40, 80, 140).validate().is_ok());
        for (hb, min, max) in [(41, 80, 140), (0, 80, 140), (25, 140, 140), (25, 150, 100)] {
            let e = err(with(hb, min, max));
            assert!(e.contains("2 x raft_heartbeat_ms"), "{hb} {min} {max}: {e}");
        }
    }

    #[test]
    fn bad_peers_are_refused_with_a_reason() {
        let with = |p: &str| RawConfig {
            peers: Some(p.split(' ').map(|p| p.parse().unwrap()).collect()),
            ..base()
        };
        assert!(err(with("dc-a=127.0.0.1:7101")).contains("this DC itself"));
        assert!(err(with("dc-b=127.0.0.1:1 dc-b=127.0.0.1:2")).contains("listed twice"));
        assert!(err(with("dc-b=")).contains("no endpoints"));
        assert!(err(with("dc-b=localhost:7101")).contains("not HOST:PORT"));
        assert!(err(with("bad!name=127.0.0.1:1")).contains("peer dc"));
        assert!("dc-b".parse::<RawPeer>().is_err());
        let unknown = toml::from_str::<RawConfig>("[forwarding]\nforward_after = 1\n");
        assert!(unknown.is_err(), "unknown fields are refused");
    }
}
