//! Server configuration in two stages: [`RawConfig`], every setting as a flag,
//! a `TIDAL_*` variable and a TOML field, merged from the file and the command
//! line, then validated into [`ServerConfig`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tidal_core::limits::Limits;

/// A voter that hears nothing from a leader for a random time in this range
/// (ms) asks for a pre-vote, then elects. With the pre-vote (raft/pre_vote.rs)
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

/// How much a task's models being warm on an agent count against its load
/// by default, in thousandths: 1.0 (README: Warm models).
pub const DEFAULT_WARM_WEIGHT_MILLI: u32 = 1000;

/// How the layers of settings combine, shown by `tidal server --help`.
pub const PRECEDENCE: &str = "Settings: each has a flag, a TIDAL_* variable and a field of the \
    --config FILE (TOML; --print-config writes one). A flag overrides its variable, which \
    overrides the file, field by field; [forwarding] is merged field by field too, while \
    --peer replaces the file's [[peers]].";

/// Every server setting, each optional, with its flag, its `TIDAL_*`
/// variable and its TOML field. clap reads the command line (a flag, else its
/// variable) and serde reads the `--config` file into this same struct;
/// [`RawConfig::merge`] puts the first over the second ([`PRECEDENCE`]) and
/// [`RawConfig::validate`] checks the result and fills in the defaults.
///
/// The variable of a flag `--some-name` is `TIDAL_SOME_NAME` and its field
/// `some_name` (a test keeps it so). `--peer` is given once per peer DC;
/// its variable `TIDAL_PEERS` and field `peers` hold the list. `--restore`
/// acts once, on an empty data directory: it has a variable but no field.
/// Forwarding settings sit in the file's `[forwarding]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// This node's id in the Raft group (1 or more, unique in the DC).
    #[arg(long, env = "TIDAL_ID", value_name = "N")]
    pub id: Option<u64>,
    /// This data center's name.
    #[arg(long, env = "TIDAL_DC", value_name = "NAME")]
    pub dc: Option<String>,
    /// Address to bind for clients, agents and other servers.
    #[arg(long, env = "TIDAL_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Address others use to reach this node (default: --listen).
    #[arg(long, env = "TIDAL_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// A second address to bind, for the other servers of this DC and of peer DCs (default: none).
    #[arg(long, env = "TIDAL_PEER_LISTEN", value_name = "HOST:PORT")]
    pub peer_listen: Option<String>,
    /// Address other servers use to reach --peer-listen (default: --peer-listen).
    #[arg(long, env = "TIDAL_PEER_ADVERTISE", value_name = "HOST:PORT")]
    pub peer_advertise: Option<String>,
    /// Serve Prometheus metrics over plain HTTP (GET /metrics) on this address, with no TLS and no auth: bind loopback or a private network (default: off).
    #[arg(long, env = "TIDAL_METRICS_LISTEN", value_name = "HOST:PORT")]
    pub metrics_listen: Option<String>,
    /// Directory for the Raft log, vote and snapshots.
    #[arg(long, env = "TIDAL_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Make this node the only member of a new cluster (once, on the first node; ignored when DIR has state).
    #[arg(long, env = "TIDAL_INIT", value_name = "BOOL", num_args = 0..=1,
        require_equals = true, default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new())]
    pub init: Option<bool>,
    /// Agent lease on the server, in ms (default 10000).
    #[arg(long, env = "TIDAL_AGENT_TTL_MS", value_name = "MS")]
    pub agent_ttl_ms: Option<u64>,
    /// How often agents heartbeat, in ms (default 1000; at most a third of the TTL).
    #[arg(long, env = "TIDAL_HEARTBEAT_INTERVAL_MS", value_name = "MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Remove finished tasks and their idempotency keys this long after they finish, in ms (default 86400000, 24 h).
    #[arg(long, env = "TIDAL_RETAIN_FINISHED_MS", value_name = "MS")]
    pub retain_finished_ms: Option<u64>,
    #[arg(long, env = "TIDAL_ELECTION_TIMEOUT_MIN_MS", value_name = "MS", help = format!(
        "Raft election timeout, lower bound in ms (default {})", DEFAULT_ELECTION_TIMEOUT_MS.0))]
    pub election_timeout_min_ms: Option<u64>,
    #[arg(long, env = "TIDAL_ELECTION_TIMEOUT_MAX_MS", value_name = "MS", help = format!(
        "Raft election timeout, upper bound in ms (default {})", DEFAULT_ELECTION_TIMEOUT_MS.1))]
    pub election_timeout_max_ms: Option<u64>,
    #[arg(long, env = "TIDAL_RAFT_HEARTBEAT_MS", value_name = "MS", help = format!(
        "Raft heartbeat interval in ms (default {DEFAULT_RAFT_HEARTBEAT_MS})"))]
    pub raft_heartbeat_ms: Option<u64>,
    #[arg(long, env = "TIDAL_SHUTDOWN_TIMEOUT_MS", value_name = "MS", help = format!(
        "Bound on a graceful shutdown (SIGTERM or SIGINT) in ms: leadership handed over, \
         streams closed, Raft stopped (default {DEFAULT_SHUTDOWN_TIMEOUT_MS})"))]
    pub shutdown_timeout_ms: Option<u64>,
    /// Take a snapshot after this many applied entries (default 20000).
    #[arg(long, env = "TIDAL_SNAPSHOT_EVERY", value_name = "N")]
    pub snapshot_every: Option<u64>,
    /// Log entries kept behind a snapshot for slow followers (default 1000).
    #[arg(long, env = "TIDAL_KEEP_LOG_ENTRIES", value_name = "N")]
    pub keep_log_entries: Option<u64>,
    /// Start a new single-node cluster from a backup (`tidal cluster snapshot save FILE`); needs an empty --data.
    #[arg(long, env = "TIDAL_RESTORE", value_name = "FILE")]
    #[serde(skip)]
    pub restore: Option<PathBuf>,
    /// A token (`tidal token generate`) that becomes the cluster's first admin token once it holds tokens and none was ever created (README: Tokens; default under --auth tokens: --init on a new DIR writes DIR/bootstrap.token).
    #[arg(long, env = "TIDAL_BOOTSTRAP_TOKEN_FILE", value_name = "FILE")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// Largest task payload in bytes (default 1048576).
    #[arg(long, env = "TIDAL_MAX_PAYLOAD_BYTES", value_name = "BYTES")]
    pub max_payload_bytes: Option<usize>,
    /// Most tasks in one submit batch (default 10000).
    #[arg(long, env = "TIDAL_MAX_BATCH", value_name = "N")]
    pub max_batch: Option<usize>,
    /// Benchmarks only: delay every durable flush by this many microseconds, to imitate a slow disk.
    #[arg(long, env = "TIDAL_FLUSH_DELAY_US", value_name = "US")]
    pub flush_delay_us: Option<u64>,
    /// Tests only: claim to support cluster format versions up to N only
    /// (below this build's), to imitate an older build (README: Rolling upgrade).
    #[arg(long, env = "TIDAL_MAX_FORMAT_VERSION", value_name = "N", hide = true)]
    pub max_format_version: Option<u8>,
    /// Local IP to open connections to other servers from (default: chosen by the OS).
    #[arg(long, env = "TIDAL_SOURCE_IP", value_name = "IP")]
    pub source_ip: Option<String>,
    /// Serve mutual TLS on every listener and dial other servers with it:
    /// DIR holds ca.pem, cert.pem (this server's, `tidal cert issue --role
    /// server --dc DC --name ID`) and key.pem (default: plaintext).
    #[arg(long, env = "TIDAL_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Serve plaintext, without TLS, on an address that is not loopback
    /// (needs --peer-listen there); not with --tls-dir. Without TLS and
    /// without this flag every listener must be a loopback address.
    /// `--insecure` alone means true (the shape of the agent's and the
    /// clients' flag).
    #[arg(long, env = "TIDAL_INSECURE", value_name = "BOOL", num_args = 0..=1,
        require_equals = true, default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: Option<bool>,
    /// How callers of the public API are checked: tokens (every call
    /// needs a token whose role may make it; README: Tokens) or none (no
    /// token asked for: only on a network you trust). Default tokens.
    #[arg(long, env = "TIDAL_AUTH", value_enum, value_name = "MODE")]
    pub auth: Option<AuthMode>,
    /// A peer DC to forward work to, in preference order (repeat the flag):
    /// `DC=HOST:PORT[,HOST:PORT...]` (any servers of that DC). Replaces the
    /// config file's [[peers]]; TIDAL_PEERS separates peers with `;`.
    #[arg(
        long = "peer",
        env = "TIDAL_PEERS",
        value_name = "DC=ADDRS",
        value_delimiter = ';'
    )]
    pub peers: Option<Vec<RawPeer>>,
    /// Cross-DC forwarding policy (`[forwarding]` in the file).
    #[command(flatten)]
    #[serde(default, skip_serializing_if = "RawForwarding::is_empty")]
    pub forwarding: RawForwarding,
    /// Placement settings (`[placement]` in the file).
    #[command(flatten)]
    #[serde(default, skip_serializing_if = "RawPlacement::is_empty")]
    pub placement: RawPlacement,
}

/// How a server checks the callers of its public API (`--auth`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    // No token is asked for (with TLS, the certificate names the caller).
    // Plain comments: documented values would turn `tidal server --help`
    // into its long, one-line-per-part form.
    None,
    // Every public call needs a token whose role may make it.
    #[default]
    Tokens,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::None => "none",
            AuthMode::Tokens => "tokens",
        }
    }
}

/// One peer DC: its name and the addresses of its servers (any of them; the
/// shipper follows the way to the leader).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
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

/// The `[forwarding]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawForwarding {
    /// A pending task may go to a peer with room after this wait, in ms (default 30000; per queue in the config file).
    #[arg(long, env = "TIDAL_FORWARD_AFTER_MS", value_name = "MS")]
    pub forward_after_ms: Option<u64>,
    /// Unacknowledged records per peer past which tasks stay local (default 10000).
    #[arg(long, env = "TIDAL_OUTBOX_LIMIT", value_name = "N")]
    pub outbox_limit: Option<usize>,
    /// Per queue overrides (`[forwarding.queues.NAME]`, file only).
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub queues: BTreeMap<String, RawQueueForwarding>,
}

impl RawForwarding {
    fn is_empty(&self) -> bool {
        *self == RawForwarding::default()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueueForwarding {
    /// Whether this queue's tasks may leave the DC (default true).
    pub allow: Option<bool>,
    pub forward_after_ms: Option<u64>,
}

/// The `[placement]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlacement {
    /// How much a task's models being warm on an agent count against the agent's load, in tasks per unit of weight (default 1.0; 0.001..=100).
    #[arg(long, env = "TIDAL_WARM_WEIGHT", value_name = "W")]
    pub warm_weight: Option<Weight>,
    /// GPU model -> weight (`[placement.gpu_weights]` or `gpu_weights = { A100 = 1.0 }`, file only).
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gpu_weights: BTreeMap<String, Weight>,
}

impl RawPlacement {
    fn is_empty(&self) -> bool {
        *self == RawPlacement::default()
    }
}

/// A weight written as a decimal number (`1.0`, `0.5`, `2`), kept exactly in
/// thousandths; more than three decimals are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Weight(pub u64);

impl Weight {
    /// A weight from a number of the file: thousandths, exactly.
    fn from_f64(v: f64) -> Result<Weight, String> {
        let milli = v * 1000.0;
        if !v.is_finite() || v < 0.0 || milli > u64::MAX as f64 / 2.0 {
            return Err(format!(
                "weight {v} is not a number of 0 or more (e.g. 0.5)"
            ));
        }
        let rounded = milli.round();
        if (milli - rounded).abs() > 1e-6 {
            return Err(format!(
                "weight {v} has more than three decimals: weights are kept in thousandths"
            ));
        }
        Ok(Weight(rounded as u64))
    }
}

impl std::fmt::Display for Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

impl std::str::FromStr for Weight {
    type Err = String;

    fn from_str(s: &str) -> Result<Weight, String> {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("weight {s:?} is not a decimal number (e.g. 0.5)"))?;
        Weight::from_f64(v)
    }
}

impl Serialize for Weight {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0 as f64 / 1000.0)
    }
}

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Weight, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Weight;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a weight, a number such as 1.0 or 0.5")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Weight, E> {
                Weight::from_f64(v).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Weight, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Weight, E> {
                self.visit_f64(v as f64)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Weight, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// The range a placement weight must be in, in thousandths: 0.001..=100.
pub const WEIGHT_MILLI_RANGE: std::ops::RangeInclusive<u64> =
    1..=tidal_core::placement::types::MAX_GPU_WEIGHT_MILLI as u64;

/// The `[placement]` settings checked: the GPU weights the leader keeps the
/// cluster's at (the built-in ones with the file's over them) and the warm
/// weight, both in thousandths.
fn placement_settings(raw: RawPlacement, limits: &Limits) -> anyhow::Result<PlacementConfig> {
    let in_range = |what: String, w: Weight| -> anyhow::Result<u32> {
        if !WEIGHT_MILLI_RANGE.contains(&w.0) {
            bail!("{what} {w} is out of range: use 0.001..=100");
        }
        Ok(w.0 as u32)
    };
    let warm_weight_milli = match raw.warm_weight {
        Some(w) => in_range("warm_weight".into(), w)?,
        None => DEFAULT_WARM_WEIGHT_MILLI,
    };
    let mut gpu_weights_milli: BTreeMap<String, u32> =
        tidal_core::placement::types::BUILTIN_GPU_WEIGHTS
            .iter()
            .map(|(m, w)| (m.to_string(), *w))
            .collect();
    for (model, w) in raw.gpu_weights {
        tidal_core::limits::validate_name("GPU model", &model, limits)
            .map_err(|e| anyhow::anyhow!("[placement] gpu_weights: {e}"))?;
        let w = in_range(format!("[placement] gpu_weights.{model}"), w)?;
        gpu_weights_milli.insert(model, w);
    }
    Ok(PlacementConfig {
        gpu_weights_milli,
        warm_weight_milli,
    })
}

impl RawConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> anyhow::Result<RawConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// `over` on top of `self`: every field `over` sets wins, tables
    /// (`[forwarding]`) merge field by field, lists (`peers`) are replaced.
    pub fn merge(self, over: RawConfig) -> anyhow::Result<RawConfig> {
        fn table(raw: &RawConfig) -> anyhow::Result<toml::Table> {
            toml::Table::try_from(raw).context("a setting cannot be written as TOML")
        }
        fn merge_tables(base: &mut toml::Table, over: toml::Table) {
            for (key, value) in over {
                match (base.get_mut(&key), value) {
                    (Some(toml::Value::Table(base)), toml::Value::Table(over)) => {
                        merge_tables(base, over)
                    }
                    (_, value) => {
                        base.insert(key, value);
                    }
                }
            }
        }
        let mut merged = table(&self)?;
        merge_tables(&mut merged, table(&over)?);
        let mut merged: RawConfig = merged.try_into().context("merging settings")?;
        // Not a TOML field, so carried over by hand.
        merged.restore = over.restore.or(self.restore);
        Ok(merged)
    }

    /// A configuration's every setting, defaults included, as `--config`
    /// reads it (`--restore` left out: it is not a lasting setting).
    pub fn from_config(c: &ServerConfig) -> RawConfig {
        RawConfig {
            id: Some(c.node_id),
            dc: Some(c.dc.clone()),
            listen: Some(c.listen.to_string()),
            advertise: Some(c.advertise.clone()),
            peer_listen: c.peer_listen.map(|a| a.to_string()),
            peer_advertise: c.peer_advertise.clone(),
            metrics_listen: c.metrics_listen.map(|a| a.to_string()),
            data: Some(c.data_dir.clone()),
            init: Some(c.init),
            agent_ttl_ms: Some(c.agent_ttl.as_millis() as u64),
            heartbeat_interval_ms: Some(c.heartbeat_interval.as_millis() as u64),
            retain_finished_ms: Some(c.retain_finished.as_millis() as u64),
            election_timeout_min_ms: Some(c.election_timeout.0),
            election_timeout_max_ms: Some(c.election_timeout.1),
            raft_heartbeat_ms: Some(c.raft_heartbeat_ms),
            shutdown_timeout_ms: Some(c.shutdown_timeout.as_millis() as u64),
            snapshot_every: Some(c.snapshot_every),
            keep_log_entries: Some(c.keep_log_entries),
            restore: None,
            bootstrap_token_file: c.bootstrap_token_file.clone(),
            max_payload_bytes: Some(c.limits.max_payload_bytes),
            max_batch: Some(c.limits.max_batch),
            flush_delay_us: c.flush_delay.map(|d| d.as_micros() as u64),
            max_format_version: c.max_format_version,
            source_ip: c.source_ip.map(|ip| ip.to_string()),
            tls_dir: c.tls_dir.clone(),
            // Written only when set, so a plaintext server's settings read as before.
            insecure: c.insecure.then_some(true),
            auth: Some(c.auth),
            peers: Some(
                c.peers
                    .iter()
                    .map(|p| RawPeer {
                        dc: p.dc.clone(),
                        endpoints: p.endpoints.clone(),
                    })
                    .collect(),
            ),
            forwarding: RawForwarding {
                forward_after_ms: Some(c.forwarding.forward_after_ms),
                outbox_limit: Some(c.forwarding.outbox_limit),
                queues: c
                    .forwarding
                    .queues
                    .iter()
                    .map(|(q, p)| {
                        (
                            q.clone(),
                            RawQueueForwarding {
                                allow: Some(p.allow),
                                forward_after_ms: Some(p.forward_after_ms),
                            },
                        )
                    })
                    .collect(),
            },
            placement: RawPlacement {
                warm_weight: Some(Weight(u64::from(c.placement.warm_weight_milli))),
                gpu_weights: c
                    .placement
                    .gpu_weights_milli
                    .iter()
                    .map(|(m, w)| (m.clone(), Weight(u64::from(*w))))
                    .collect(),
            },
        }
    }

    /// These settings as a TOML document.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string(self).context("a setting cannot be written as TOML")
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
        if advertises_port_0(listen, &advertise) {
            bail!(
                "--advertise {advertise:?} names port 0: give the port others reach this \
                 node on (with --listen HOST:0, leave --advertise out to advertise the \
                 port bound)"
            );
        }
        // The membership stores `CLIENT|PEER` (raft::member_addr).
        if advertise.contains(crate::raft::member_addr::SEPARATOR) {
            bail!("--advertise {advertise:?} contains '|': give one HOST:PORT");
        }
        let (peer_listen, peer_advertise) =
            peer_addresses(listen, self.peer_listen.as_deref(), self.peer_advertise)?;
        let metrics_listen = metrics_address(listen, peer_listen, self.metrics_listen.as_deref())?;
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
        let raw_fwd = self.forwarding;
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
        let tls_dir =
            tidal_tls::tls_or_plaintext(self.tls_dir.as_deref(), self.insecure == Some(true))?;
        if tls_dir.is_none() {
            plaintext_allowed(listen, peer_listen, self.insecure == Some(true))?;
            let named = std::iter::once(("--advertise", advertise.as_str()))
                .chain(peer_advertise.as_deref().map(|a| ("--peer-advertise", a)))
                .chain(
                    peers
                        .iter()
                        .flat_map(|p| p.endpoints.iter().map(|e| ("--peer", e.as_str()))),
                );
            plaintext_named(named, self.insecure == Some(true))?;
        }
        let placement = placement_settings(self.placement, &limits)?;
        if self.init == Some(true) && self.restore.is_some() {
            bail!("--init and --restore both start a new cluster: give one of them");
        }
        Ok(ServerConfig {
            node_id,
            dc,
            listen,
            advertise,
            peer_listen,
            peer_advertise,
            metrics_listen,
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
            bootstrap_token_file: self.bootstrap_token_file,
            limits,
            flush_delay: self.flush_delay_us.map(Duration::from_micros),
            max_format_version,
            source_ip,
            tls_dir: self.tls_dir,
            insecure: self.insecure.unwrap_or(false),
            auth: self.auth.unwrap_or_default(),
            peers: peers
                .into_iter()
                .map(|p| Peer {
                    dc: p.dc,
                    endpoints: p.endpoints,
                })
                .collect(),
            forwarding,
            placement,
            shutdown_timeout,
        })
    }
}

/// Whether `advertise` names port 0 while it is not `listen` itself (with
/// port 0 there, the server advertises the port bound, `crate::run`): any
/// other port 0 would be what other nodes, agents and clients dial.
fn advertises_port_0(listen: SocketAddr, advertise: &str) -> bool {
    advertise != listen.to_string()
        && advertise
            .rsplit_once(':')
            .is_some_and(|(_, port)| port == "0")
}

/// A setting the server refuses as a usage error (`tidal server` exits 2):
/// plaintext where [`plaintext_allowed`] does not allow it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Whether `addr` is a loopback address (127.0.0.0/8, ::1, or an IPv4
/// loopback written as an IPv4-mapped IPv6 address): reachable from this
/// machine only.
pub fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// The plaintext rule (no `--tls-dir`): every listener on a loopback
/// address (the local development mode), or `--insecure`; and with
/// `--insecure` on any other address, a `--peer-listen` of its own, since
/// without TLS the peer plane is checked against the membership only there.
fn plaintext_allowed(
    listen: SocketAddr,
    peer_listen: Option<SocketAddr>,
    insecure: bool,
) -> Result<(), Refused> {
    let Some(open) = std::iter::once(listen)
        .chain(peer_listen)
        .find(|a| !is_loopback(*a))
    else {
        return Ok(());
    };
    if !insecure {
        return Err(Refused(format!(
            "refusing to serve plaintext on {open} (not a loopback address): give --tls-dir DIR \
             (see `tidal cert`) or --insecure"
        )));
    }
    if peer_listen.is_none() {
        return Err(Refused(format!(
            "--insecure on {open} (not a loopback address) needs --peer-listen HOST:PORT: \
             without TLS the peer plane is checked against the membership only on a listener \
             of its own (or give --tls-dir DIR)"
        )));
    }
    Ok(())
}

/// The plaintext rule for the addresses a server without TLS gives others
/// to dial (`--advertise`, `--peer-advertise`) and dials itself (a peer
/// DC's endpoints): loopback, or `--insecure`, as for its listeners.
fn plaintext_named<'a>(
    mut named: impl Iterator<Item = (&'a str, &'a str)>,
    insecure: bool,
) -> Result<(), Refused> {
    if insecure {
        return Ok(());
    }
    match named
        .find(|(_, addr)| !tidal_tls::is_loopback_host(tidal_tls::plaintext::endpoint_host(addr)))
    {
        Some((flag, addr)) => Err(Refused(format!(
            "refusing plaintext to {addr} ({flag}; not a loopback address): give --tls-dir DIR \
             (see `tidal cert`) or --insecure"
        ))),
        None => Ok(()),
    }
}

/// `--peer-listen` and `--peer-advertise` checked: the peer listener's
/// address and the one advertised for it (by default the same), or neither.
fn peer_addresses(
    listen: SocketAddr,
    peer_listen: Option<&str>,
    peer_advertise: Option<String>,
) -> anyhow::Result<(Option<SocketAddr>, Option<String>)> {
    let Some(peer_listen) = peer_listen else {
        if let Some(a) = peer_advertise {
            bail!("--peer-advertise {a:?} needs --peer-listen HOST:PORT");
        }
        return Ok((None, None));
    };
    let peer_listen: SocketAddr = peer_listen.parse().with_context(|| {
        format!("--peer-listen {peer_listen:?} is not HOST:PORT with a numeric host")
    })?;
    if peer_listen.port() != 0 && peer_listen == listen {
        bail!("--peer-listen {peer_listen} is --listen itself: give another port or address");
    }
    let peer_advertise = peer_advertise.unwrap_or_else(|| peer_listen.to_string());
    if advertises_port_0(peer_listen, &peer_advertise) {
        bail!(
            "--peer-advertise {peer_advertise:?} names port 0: give the port other servers \
             reach this node's peer listener on (with --peer-listen HOST:0, leave \
             --peer-advertise out to advertise the port bound)"
        );
    }
    if peer_advertise.contains(crate::raft::member_addr::SEPARATOR) {
        bail!("--peer-advertise {peer_advertise:?} contains '|': give one HOST:PORT");
    }
    Ok((Some(peer_listen), Some(peer_advertise)))
}

/// `--metrics-listen` checked: a numeric HOST:PORT that is neither of the
/// other listeners.
fn metrics_address(
    listen: SocketAddr,
    peer_listen: Option<SocketAddr>,
    metrics_listen: Option<&str>,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(asked) = metrics_listen else {
        return Ok(None);
    };
    let addr: SocketAddr = asked.parse().with_context(|| {
        format!("--metrics-listen {asked:?} is not HOST:PORT with a numeric host")
    })?;
    if addr.port() != 0 && addr == listen {
        bail!("--metrics-listen {addr} is --listen itself: give another port or address");
    }
    if addr.port() != 0 && Some(addr) == peer_listen {
        bail!("--metrics-listen {addr} is --peer-listen itself: give another port or address");
    }
    Ok(Some(addr))
}

/// A checked configuration; everything the server needs to start.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    pub node_id: u64,
    pub dc: String,
    pub listen: SocketAddr,
    pub advertise: String,
    /// The peer listener's address (`--peer-listen`), when there is one.
    pub peer_listen: Option<SocketAddr>,
    /// The address other servers reach the peer listener on: set exactly
    /// when `peer_listen` is.
    pub peer_advertise: Option<String>,
    /// The metrics listener's address (`--metrics-listen`), when metrics are on.
    pub metrics_listen: Option<SocketAddr>,
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
    /// The file of the token that becomes the first admin token (read at start).
    pub bootstrap_token_file: Option<PathBuf>,
    pub limits: Limits,
    pub flush_delay: Option<Duration>,
    /// Tests only: the highest cluster format version this node claims to
    /// support (None: the build's, [`tidal_core::FORMAT_VERSION_MAX`]).
    pub max_format_version: Option<u8>,
    /// Local IP for connections to other servers (None: the OS chooses).
    pub source_ip: Option<IpAddr>,
    /// This server's TLS directory (`--tls-dir`): with it, every listener
    /// serves mutual TLS and every dial to another server uses it ([`crate::tls`]).
    pub tls_dir: Option<PathBuf>,
    /// `--insecure`: plaintext asked for explicitly (needed on an address
    /// that is not loopback); never together with `tls_dir`.
    pub insecure: bool,
    /// How callers of the public API are checked (`--auth`).
    pub auth: AuthMode,
    /// Peer DCs in preference order.
    pub peers: Vec<Peer>,
    pub forwarding: Forwarding,
    /// Placement settings for this node's leaderships (`[placement]`).
    pub placement: PlacementConfig,
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

/// The `[placement]` settings (README: Placement), for the leader's engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementConfig {
    /// GPU model -> weight in thousandths: the built-in ones (A100 1000, A40
    /// 500) with the file's `gpu_weights` over them. The leader proposes
    /// them when the cluster's differ (the leader's configuration wins).
    pub gpu_weights_milli: BTreeMap<String, u32>,
    /// How much a task's models being warm on an agent count against its
    /// load, in thousandths (planning only).
    pub warm_weight_milli: u32,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig {
            gpu_weights_milli: tidal_core::placement::types::BUILTIN_GPU_WEIGHTS
                .iter()
                .map(|(m, w)| (m.to_string(), *w))
                .collect(),
            warm_weight_milli: DEFAULT_WARM_WEIGHT_MILLI,
        }
    }
}

impl ServerConfig {
    /// This node's address as the membership stores it: `advertise`, or
    /// `advertise|peer_advertise` with a peer listener (raft::member_addr).
    pub fn member_addr(&self) -> String {
        crate::raft::member_addr::MemberAddr {
            client: self.advertise.clone(),
            peer: self.peer_advertise.clone(),
        }
        .to_string()
    }
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
#[path = "config_test.rs"]
mod tests;
