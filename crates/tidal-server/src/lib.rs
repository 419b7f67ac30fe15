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
//!   and the cross-DC forwarder and shippers.
//! - [`links`]: peer DCs' summaries and link health; the exchange format.
//! - [`error`]: the one mapping from errors to gRPC status codes.
//! - [`stall`]: logs when the runtime stalls (CPU starvation, a pause).
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

/// The leader's clock, written into every entry it proposes.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs a server until `shutdown` completes.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let node = Node::start(config).await?;
    tracing::info!(node_id = node.id, dc = %node.config.dc, listen = %node.config.listen, "tidal server started");
    let watcher = tokio::spawn(leader::watch_leadership(node.clone()));
    let elections = tokio::spawn(node.elections.clone().run());
    let stalls = tokio::spawn(stall::watch(
        node.id,
        std::time::Duration::from_millis(node.config.election_timeout.0 / 2),
    ));
    let mut removed = node.removed.subscribe();
    let stop = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = removed.wait_for(Option::is_some) => {}
        }
    };
    let served = grpc::serve(node.clone(), listener, stop).await;
    watcher.abort();
    elections.abort();
    stalls.abort();
    if let Some(l) = node.leadership() {
        drop(l);
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
