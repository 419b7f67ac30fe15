//! tidal server: one member of a data center's Raft group.
//!
//! Module map:
//! - [`config`]: raw settings (file, env, flags) validated into [`ServerConfig`].
//! - [`node`]: the Raft node, its applied state and proposers.
//! - [`batcher`]: group commit of concurrent submits and completions.
//! - [`channels`]: cached outgoing channels to other servers.
//! - [`raft_network`] and [`grpc::raft_service`]: openraft over tonic.
//! - [`elections`]: when to elect: a pre-vote first, then openraft's election.
//! - [`grpc`]: the public API (tasks, agents, queues, cluster).
//! - [`leader`]: leader-only memory: sessions, leases, dispatch loop, reaper,
//!   the drain driver (stop orders at a drain's deadline), and the cross-DC
//!   forwarder and shippers.
//! - [`links`]: peer DCs' summaries and link health; the exchange format.
//! - [`error`]: the one mapping from errors to gRPC status codes.
//! - [`stall`]: logs when the runtime stalls (CPU starvation, a pause).
//! - [`fatal`]: stopping, with the reason, when the store cannot write.
//!
//! Depends on tidal-core (the state machine), tidal-store (storage) and
//! tidal-proto; the agent and client crates never depend on this one.

// gRPC handlers return `tonic::Status`, which is large by design.
#![allow(clippy::result_large_err)]

pub mod batcher;
pub mod channels;
pub mod config;
pub mod elections;
pub mod error;
pub mod fatal;
pub mod grpc;
pub mod leader;
pub mod links;
pub mod node;
pub mod raft_network;
pub mod stall;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
pub use config::{RawConfig, ServerConfig};
use node::Node;
pub use tidal_store::crash::init_from_env as init_crash_points;
/// Simulated power loss (failpoints builds): drop every unsynced write, abort.
#[cfg(feature = "failpoints")]
pub use tidal_store::crash::power_loss;

/// Log filter directives a server adds to `RUST_LOG` (or the default level)
/// unless `RUST_LOG` names their target itself. openraft logs every failed
/// replication attempt (a warning, an error and two more warnings every Raft
/// heartbeat per unreachable peer: thousands of lines a minute); the
/// transport logs a peer that does not answer instead, once and then every
/// few seconds ([`raft_network::Outages`]). A storage error on the leader's
/// replication still stops the Raft core, which openraft logs and
/// [`fatal`] reports.
pub const LOG_DEFAULTS: &[&str] = &[
    "openraft::replication=off",
    "openraft::engine::handler::replication_handler=error",
];

/// The leader's clock, written into every entry it proposes.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How long open connections may take to close once the store failed.
const FAILED_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs a server until `shutdown` completes, the node is removed, or its
/// store cannot write ([`fatal::StorageFailed`]: an error, never a clean exit).
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let node = Node::start(config).await?;
    tracing::info!(node_id = node.id, dc = %node.config.dc, listen = %node.config.listen, "tidal server started");
    let (node_id, raft_metrics, failures) =
        (node.id, node.raft.metrics(), node.store_failures.clone());
    let watcher = tokio::spawn(leader::watch_leadership(node.clone()));
    let elections = tokio::spawn(node.elections.clone().run());
    let stalls = tokio::spawn(stall::watch(
        node.id,
        std::time::Duration::from_millis(node.config.election_timeout.0 / 2),
    ));
    let mut removed = node.removed.subscribe();
    // Set once the Raft core stopped on its own (the store cannot write).
    let (failed_tx, mut failed) = tokio::sync::watch::channel(None::<String>);
    let failure_watch = tokio::spawn(async move {
        let why = fatal::core_stopped(raft_metrics, failures).await;
        tracing::error!(node_id, error = %why, "stopping: the store failed");
        failed_tx.send_replace(Some(why.0));
    });
    let mut failed_stop = failed.clone();
    let stop = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = removed.wait_for(Option::is_some) => {}
            _ = failed_stop.wait_for(Option::is_some) => {}
        }
    };
    let served = grpc::serve(node.clone(), listener, stop);
    tokio::pin!(served);
    // After a store failure, open streams (agent sessions, watches) get a
    // short grace to close, not as long as they like: the process must end.
    let served = tokio::select! {
        r = &mut served => r,
        _ = async {
            let _ = failed.wait_for(Option::is_some).await;
            tokio::time::sleep(FAILED_DRAIN).await;
        } => Ok(()),
    };
    failure_watch.abort();
    watcher.abort();
    elections.abort();
    stalls.abort();
    if let Some(l) = node.leadership() {
        drop(l);
    }
    // Whatever stopped serving (even a SIGTERM that came later), a core
    // that stopped on a storage error makes this an error exit.
    let core_failed = node
        .raft
        .metrics()
        .borrow()
        .running_state
        .as_ref()
        .is_err_and(|e| !matches!(e, openraft::error::Fatal::Stopped));
    if core_failed {
        let why = failed.borrow().clone();
        let why = match why {
            Some(why) => fatal::StorageFailed(why),
            None => fatal::core_stopped(node.raft.metrics(), node.store_failures.clone()).await,
        };
        let _ = node.raft.shutdown().await;
        return Err(why.into());
    }
    let stopped = node.raft.shutdown().await;
    served?;
    stopped.map_err(|e| anyhow::anyhow!("raft did not stop cleanly: {e}"))?;
    if let Some(why) = node.removed.borrow().clone() {
        anyhow::bail!("{why}");
    }
    tracing::info!(node_id = node.id, "tidal server stopped");
    Ok(())
}

/// Keeps `Arc<Node>` nameable by integration tests.
pub type SharedNode = Arc<Node>;
