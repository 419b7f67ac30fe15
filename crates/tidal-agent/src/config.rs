//! The agent's validated configuration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tidal_client::tidal_tls::rustls::ClientConfig;
use tidal_client::tidal_tls::{self, Expect, Role, TlsDir};
use tidal_proto::v1;

/// Default cap of a task's result (its stdout).
pub const DEFAULT_MAX_RESULT_BYTES: usize = 1024 * 1024;

/// Share of the server's lease TTL the agent uses as its own when none is
/// configured (invariant 6: the agent's TTL must be the shorter one).
pub const DEFAULT_TTL_SHARE: f64 = 0.6;

/// Default deadline of the drain a SIGTERM starts: its tasks have this long
/// to finish before the leader has them stopped.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Default time a stopped task's worker gets between SIGTERM and SIGKILL.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);

/// An agent whose certificate expires sooner than this warns at start.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// What an agent is and how it runs tasks. Built by the CLI from its file,
/// environment and flags, then checked with [`AgentConfig::validate`].
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// Unique agent id within its DC.
    pub id: String,
    /// The DC this agent is in (must match the servers').
    pub dc: String,
    /// Task types this agent can run (t2i, sr, tts, train, ...).
    pub task_types: Vec<String>,
    /// Pipelines it implements; empty: any pipeline of its task types.
    pub pipelines: Vec<String>,
    /// Models present on this machine.
    pub models: Vec<String>,
    /// Concurrent task slots (at least 1).
    pub slots: u32,
    /// Relative weight for least-loaded placement (0 means 1).
    pub weight: u32,
    /// GPUs of this machine.
    pub gpus: Vec<v1::Gpu>,
    /// Free-form labels for placement constraints.
    pub labels: BTreeMap<String, String>,
    /// Servers of this DC (`HOST:PORT`); the leader is discovered.
    pub endpoints: Vec<String>,
    /// The program and its arguments, run once per task (required).
    pub command: Vec<String>,
    /// The agent-side lease TTL. Default: 60% of the server's TTL (learned at
    /// registration). When set it must be shorter than the server's.
    pub ttl: Option<Duration>,
    /// Cap of a task's result (stdout); the rest is read and dropped.
    pub max_result_bytes: usize,
    /// Local IP that connections to the servers leave from (None: the OS chooses).
    pub source_ip: Option<std::net::IpAddr>,
    /// Mutual TLS with the servers: a directory with ca.pem, cert.pem and
    /// key.pem, whose certificate names an agent of `dc` (None: plaintext).
    pub tls_dir: Option<PathBuf>,
    /// Plaintext asked for (`--insecure`): without it and without
    /// `tls_dir`, every endpoint must be loopback.
    pub insecure: bool,
    /// The token its session (and every other request) presents as
    /// `authorization: Bearer` (`--token`/`TIDAL_TOKEN`; None: no header).
    pub token: Option<tidal_client::Token>,
    /// The deadline of the drain a shutdown signal starts.
    pub drain_timeout: Duration,
    /// Between SIGTERM and SIGKILL when a task is stopped on the leader's order.
    pub stop_grace: Duration,
    /// The file that lists the models loaded on this machine now, one per
    /// line (`--warm-models-file`): read again before every heartbeat and
    /// sent as its `warm_models`; its workers get its path as
    /// `TIDAL_WARM_MODELS_FILE` and may rewrite it. None: none is sent.
    pub warm_models_file: Option<PathBuf>,
    /// Serve Prometheus metrics over plain HTTP (`GET /metrics`) on this
    /// address (`--metrics-listen`; None: off). Port 0: the kernel's
    /// choice, logged once bound.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl Default for AgentConfig {
    fn default() -> AgentConfig {
        AgentConfig {
            id: String::new(),
            dc: String::new(),
            task_types: Vec::new(),
            pipelines: Vec::new(),
            models: Vec::new(),
            slots: 1,
            weight: 1,
            gpus: Vec::new(),
            labels: BTreeMap::new(),
            endpoints: Vec::new(),
            command: Vec::new(),
            ttl: None,
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
            source_ip: None,
            tls_dir: None,
            insecure: false,
            token: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            stop_grace: DEFAULT_STOP_GRACE,
            warm_models_file: None,
            metrics_listen: None,
        }
    }
}

/// A configuration the agent refuses to run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the agent id must not be empty")]
    MissingId,
    #[error("no task command given (the program to run for each task, then its arguments)")]
    MissingCommand,
    #[error("no server endpoints given (HOST:PORT of the DC's servers)")]
    MissingEndpoints,
    #[error("{0}")]
    BadEndpoint(String),
    /// Plaintext to a server that is not loopback, without `insecure`.
    #[error(transparent)]
    PlaintextRefused(#[from] tidal_tls::PlaintextRefused),
    #[error("slots must be at least 1")]
    NoSlots,
    #[error("max_result_bytes must be at least 1")]
    NoResultBytes,
    #[error("the agent ttl must be positive")]
    ZeroTtl,
    #[error("the warm models file path must not be empty")]
    EmptyWarmModelsFile,
    /// Invariant 6: the agent must stop its work before the server's lease
    /// on it expires, so its own TTL must be the shorter.
    #[error(
        "the agent ttl ({agent:?}) must be shorter than the server's lease ttl ({server:?}); \
         otherwise the server could reassign a task this agent still runs"
    )]
    TtlNotShorter { agent: Duration, server: Duration },
}

impl AgentConfig {
    /// Checks everything that can be checked before connecting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id.trim().is_empty() {
            return Err(ConfigError::MissingId);
        }
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(ConfigError::MissingCommand);
        }
        if self.endpoints.is_empty() {
            return Err(ConfigError::MissingEndpoints);
        }
        for e in &self.endpoints {
            tidal_client::normalize_endpoint(e).map_err(|e| ConfigError::BadEndpoint(e.message))?;
        }
        tidal_tls::check_plaintext_endpoints(
            &self.endpoints,
            self.tls_dir.is_some(),
            self.insecure,
        )?;
        if self.slots == 0 {
            return Err(ConfigError::NoSlots);
        }
        if self.max_result_bytes == 0 {
            return Err(ConfigError::NoResultBytes);
        }
        if self.ttl == Some(Duration::ZERO) {
            return Err(ConfigError::ZeroTtl);
        }
        if self
            .warm_models_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(ConfigError::EmptyWarmModelsFile);
        }
        Ok(())
    }

    /// The TLS configuration of the connections to the servers, loaded
    /// from `tls_dir` (None without it). Its certificate must name an
    /// agent of this agent's DC, and only servers of that DC are accepted.
    pub fn tls(&self) -> anyhow::Result<Option<Arc<ClientConfig>>> {
        let Some(dir) = &self.tls_dir else {
            return Ok(None);
        };
        let loaded =
            agent_tls_dir(dir, &self.dc).with_context(|| format!("--tls-dir {}", dir.display()))?;
        let left = loaded
            .not_after()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        if left < EXPIRY_WARNING {
            tracing::warn!(
                cert = %dir.join("cert.pem").display(),
                days_left = left.as_secs() / 86_400,
                "this agent's certificate expires soon: issue a new one (tidal cert issue --role agent)"
            );
        }
        let config = tidal_tls::client_config(&loaded, Expect::Dc(self.dc.clone()))
            .with_context(|| format!("--tls-dir {}", dir.display()))?;
        Ok(Some(config))
    }

    /// The spec sent in `Register`.
    pub fn spec(&self) -> v1::AgentSpec {
        v1::AgentSpec {
            id: self.id.clone(),
            dc: self.dc.clone(),
            task_types: self.task_types.clone(),
            pipelines: self.pipelines.clone(),
            models: self.models.clone(),
            slots: self.slots,
            weight: self.weight,
            gpus: self.gpus.clone(),
            labels: self.labels.clone().into_iter().collect(),
        }
    }

    /// The agent-side TTL given the server's: the configured one if shorter,
    /// else [`DEFAULT_TTL_SHARE`] of the server's.
    pub fn lease_ttl(&self, server_ttl: Duration) -> Result<Duration, ConfigError> {
        match self.ttl {
            Some(t) if t >= server_ttl => Err(ConfigError::TtlNotShorter {
                agent: t,
                server: server_ttl,
            }),
            Some(t) => Ok(t),
            None => Ok(server_ttl.mul_f64(DEFAULT_TTL_SHARE)),
        }
    }
}

/// `dir` loaded, if its certificate names an agent of `dc`.
fn agent_tls_dir(dir: &Path, dc: &str) -> anyhow::Result<TlsDir> {
    let loaded = TlsDir::load(dir)?;
    let id = loaded.identity();
    if id.role() != Role::Agent || id.dc() != Some(dc) {
        anyhow::bail!(
            "{} names {id}, not an agent of dc '{dc}' (issue one with: tidal cert issue \
             --role agent --dc {dc} --name NAME ...)",
            dir.join("cert.pem").display()
        );
    }
    Ok(loaded)
}

#[cfg(test)]
#[path = "config_test.rs"]
mod tests;
