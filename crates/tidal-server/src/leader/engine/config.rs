//! The settings the engine decides by, and its handlers.

use std::collections::{BTreeMap, BTreeSet};

use tidal_core::forwarding::{DcName, QueuePolicy};
use tidal_core::placement::types::BUILTIN_GPU_WEIGHTS;

/// The warm-model weight when the configuration sets none: a task's models
/// all warm on an agent count as much as one task less in flight there.
pub const DEFAULT_WARM_WEIGHT_MILLI: u32 = 1000;

/// One handler of the engine; only the enabled ones act (the driver enables
/// the handlers whose loop has moved here; a scenario file names those it
/// tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Handler {
    // One variant per handler file: engine/<name>.rs.
    /// Retention's expirer (`expiry.rs`).
    Expiry,
    /// The format-version raiser (`upgrade.rs`).
    Upgrade,
    /// The cross-DC forwarder (`forward.rs`).
    Forward,
    /// The shippers, one per peer DC (`ship.rs`).
    Ship,
    /// Agent sessions, leases and the reaper (`leases.rs`), with the
    /// sessions' regrants (`regrant.rs`) and stop reports (`stop.rs`).
    Leases,
    /// Drain deadlines' stop orders (`drain.rs`).
    Drain,
    /// Dispatch rounds (`dispatch.rs`).
    Dispatch,
    /// The bootstrap token (`bootstrap.rs`).
    Bootstrap,
    /// Retry backoffs' ends and missed deadlines (`lifecycle.rs`).
    Lifecycle,
    /// Preemptions, suspensions and resumptions (`preempt.rs`).
    Preempt,
    /// The GPU models' weights from the configuration (`gpu_weights.rs`).
    GpuWeights,
}

impl Handler {
    /// Every handler, in order.
    pub const ALL: &'static [Handler] = &[
        Handler::Expiry,
        Handler::Upgrade,
        Handler::Forward,
        Handler::Ship,
        Handler::Leases,
        Handler::Drain,
        Handler::Dispatch,
        Handler::Bootstrap,
        Handler::Lifecycle,
        Handler::Preempt,
        Handler::GpuWeights,
    ];

    /// The handler's name in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            Handler::Expiry => "expiry",
            Handler::Upgrade => "upgrade",
            Handler::Forward => "forward",
            Handler::Ship => "ship",
            Handler::Leases => "leases",
            Handler::Drain => "drain",
            Handler::Dispatch => "dispatch",
            Handler::Bootstrap => "bootstrap",
            Handler::Lifecycle => "lifecycle",
            Handler::Preempt => "preempt",
            Handler::GpuWeights => "gpu-weights",
        }
    }
}

impl std::str::FromStr for Handler {
    type Err = String;

    fn from_str(s: &str) -> Result<Handler, String> {
        Handler::ALL
            .iter()
            .copied()
            .find(|h| h.name() == s)
            .ok_or_else(|| format!("no handler {s:?}"))
    }
}

/// The settings the engine decides by (from the server's configuration).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub node_id: u64,
    /// The handlers that act.
    pub handlers: BTreeSet<Handler>,
    /// Seeds any random choice a handler makes (none does yet).
    pub seed: u64,
    pub agent_ttl_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub retain_finished_ms: u64,
    pub raft_heartbeat_ms: u64,
    pub election_timeout_max_ms: u64,
    /// The highest cluster format version this node supports.
    pub supported_format: u8,
    /// The peer DCs, in preference order.
    pub peers: Vec<DcName>,
    pub forwarding: ForwardPolicy,
    /// Payload bytes per exchange (a batch stops early past this), so the
    /// receiver's ingest entry stays about this size.
    pub ship_bytes: usize,
    /// The id and hash of the token to make the first admin token
    /// (`--bootstrap-token-file`), if any.
    pub bootstrap: Option<(String, [u8; 32])>,
    /// GPU model -> weight in thousandths (`[placement] gpu_weights`): the
    /// leader proposes them when the cluster's differ (format version 5).
    pub gpu_weights_milli: BTreeMap<String, u32>,
    /// How much a task's models being warm on an agent counts against the
    /// agent's load, in thousandths (`[placement] warm_weight`; planning only).
    pub warm_weight_milli: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            node_id: 1,
            handlers: BTreeSet::new(),
            seed: 0,
            agent_ttl_ms: 10_000,
            heartbeat_interval_ms: 2_000,
            retain_finished_ms: 24 * 3600 * 1000,
            raft_heartbeat_ms: 100,
            election_timeout_max_ms: 600,
            supported_format: tidal_core::FORMAT_VERSION_MAX,
            peers: Vec::new(),
            forwarding: ForwardPolicy::default(),
            ship_bytes: 1 << 20,
            bootstrap: None,
            gpu_weights_milli: BUILTIN_GPU_WEIGHTS
                .iter()
                .map(|(m, w)| (m.to_string(), *w))
                .collect(),
            warm_weight_milli: DEFAULT_WARM_WEIGHT_MILLI,
        }
    }
}

/// How pending tasks may leave for peers: per queue, or the defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardPolicy {
    pub forward_after_ms: u64,
    /// Records an outbox may hold before nothing more goes to that peer.
    pub outbox_limit: usize,
    pub queues: BTreeMap<String, QueuePolicy>,
}

impl ForwardPolicy {
    /// A queue's policy: its own, or allowed after the default wait.
    pub fn policy(&self, queue: &str) -> QueuePolicy {
        self.queues.get(queue).copied().unwrap_or(QueuePolicy {
            allow: true,
            forward_after_ms: self.forward_after_ms,
        })
    }
}
