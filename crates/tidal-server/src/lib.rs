//! tidal server: one member of a data center's Raft group.
//!
//! Module map:
//! - [`config`]: raw settings (file, env, flags) validated into [`ServerConfig`].
//! - [`node`]: the Raft node, its applied state and proposers.
//! - [`auth`]: who may call what (the peer plane's rules).
//! - [`batcher`]: group commit of concurrent submits and completions.
//! - [`channels`]: cached outgoing channels to other servers.
//! - [`clock`]: the leader's wall clock, written into every entry.
//! - [`raft`]: openraft over tonic ([`raft::network`], and
//!   [`grpc::raft_service`] on the server side), elections with a pre-vote,
//!   leadership transfer, check-quorum and the leader's lease.
//! - [`grpc`]: the public API (tasks, agents, queues, cluster), served
//!   with the Raft transport on the listeners of [`grpc::conn`].
//! - [`leader`]: leader-only memory: the leader engine (agent sessions and
//!   leases, the reaper, drains' stop orders, retention, format upgrades)
//!   and its driver, the dispatch loop, and the cross-DC forwarder and
//!   shippers.
//! - [`links`]: peer DCs' summaries and link health; the exchange format.
//! - [`error`]: the one mapping from errors to gRPC status codes.
//! - [`stall`]: logs when the runtime stalls (CPU starvation, a pause).
//! - [`tls`]: this server's certificate (`--tls-dir`), checked at start.
//! - [`fatal`]: stopping, with the reason, when the store cannot write.
//! - [`metrics`]: Prometheus metrics over HTTP on `--metrics-listen`.
//! - `fuzz` (tests and the `fuzzing` feature only): the fuzz targets of the
//!   decoders of what peers, clients and config files send (fuzz/README.md).
//!
//! Depends on tidal-core (the state machine), tidal-store (storage),
//! tidal-proto and tidal-client (its dialer, for channels to other servers);
//! the agent and client crates never depend on this one.

// gRPC handlers return `tonic::Status`, which is large by design.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod batcher;
pub mod bootstrap_file;
pub mod channels;
pub mod clock;
pub mod config;
pub mod error;
pub mod fatal;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz;
pub mod grpc;
pub mod leader;
pub mod links;
pub mod metrics;
pub mod node;
pub mod raft;
pub mod stall;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
pub use config::{RawConfig, ServerConfig};
pub use grpc::conn::Listeners;
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
/// few seconds ([`raft::network::Outages`]). A storage error on the leader's
/// replication still stops the Raft core, which openraft logs and
/// [`fatal`] reports.
pub const LOG_DEFAULTS: &[&str] = &[
    "openraft::replication=off",
    "openraft::engine::handler::replication_handler=error",
];

/// How long open connections may take to close once the store failed.
const FAILED_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Shares of `--shutdown-timeout-ms` by the end of which each step of a
/// graceful shutdown is given up on (in tenths): handing leadership over,
/// then closing connections, then stopping Raft; the rest is for the
/// process to end.
const HAND_OVER_BY: u32 = 6;
const CLOSE_BY: u32 = 8;
const STOP_RAFT_BY: u32 = 9;

/// The file in a server's data directory that holds the address it
/// listens on (one line, `HOST:PORT`), written once the node has started.
pub const LISTEN_ADDR_FILE: &str = "listen.addr";
/// The same for the peer listener (`--peer-listen`), when there is one.
pub const PEER_LISTEN_ADDR_FILE: &str = "peer_listen.addr";

/// Runs a server on `listeners` (the public one, and the peer one when
/// `config.peer_listen` is set; a bare `TcpListener` is the public one
/// alone) until `shutdown` completes, the node is removed, or its store
/// cannot write ([`fatal::StorageFailed`]: an error, never a clean exit).
///
/// The listeners' addresses are the ones the server listens on; when
/// `config.advertise` is `config.listen` and that names port 0, the server
/// advertises the address bound instead, and so for `peer_advertise` and
/// `peer_listen`. Once the node has started, the addresses are written to
/// [`LISTEN_ADDR_FILE`] and [`PEER_LISTEN_ADDR_FILE`] in the data directory
/// (each a new file renamed into place, so a reader never sees half of it).
///
/// When `shutdown` completes (SIGTERM, SIGINT) the server stops within
/// `shutdown_timeout`: it takes no new request or session (each is answered
/// NotLeader, naming the leader it knows); a leader with another reachable
/// voter hands leadership to the most up-to-date one ([`raft::transfer`]); its
/// leadership ends, so agent sessions end with NotLeader naming the new
/// leader; open connections close; Raft stops; `Ok(())`.
pub async fn run(
    mut config: ServerConfig,
    listeners: impl Into<Listeners>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listeners = listeners.into();
    let bound = listeners
        .public
        .local_addr()
        .context("reading the listener's address")?;
    if config.listen.port() == 0 && config.advertise == config.listen.to_string() {
        config.advertise = bound.to_string();
    }
    config.listen = bound;
    let peer_bound = match (&listeners.peer, config.peer_listen) {
        (None, None) => None,
        (Some(peer), Some(asked)) => {
            let bound = peer
                .local_addr()
                .context("reading the peer listener's address")?;
            if asked.port() == 0 && config.peer_advertise == Some(asked.to_string()) {
                config.peer_advertise = Some(bound.to_string());
            }
            config.peer_listen = Some(bound);
            Some(bound)
        }
        (None, Some(asked)) => {
            anyhow::bail!("--peer-listen {asked} is set but no peer listener was bound")
        }
        (Some(_), None) => anyhow::bail!("a peer listener was bound without --peer-listen"),
    };
    // Bound before the node starts, so a taken port stops nothing.
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --metrics-listen {addr}"))?,
        ),
        None => None,
    };
    let node = Node::start(config, grpc::dc_link::dial).await?;
    write_addr(&node.config.data_dir, LISTEN_ADDR_FILE, bound)?;
    let metrics = match metrics_listener {
        Some(listener) => {
            let addr = listener
                .local_addr()
                .context("reading the metrics listener's address")?;
            write_addr(
                &node.config.data_dir,
                metrics::METRICS_LISTEN_ADDR_FILE,
                addr,
            )?;
            tracing::info!(node_id = node.id, metrics_listen = %addr, "serving metrics at /metrics");
            let mut sources = metrics::Sources::new(node.id, node.raft.clone(), node.state.clone());
            sources.peers = Some(node.peers.clone());
            // From here on the store tells what it applies and appends.
            node.state
                .set_events(std::sync::Arc::new(sources.events.clone()));
            Some((
                tokio::spawn(metrics::serve(listener, sources.clone())),
                tokio::spawn(metrics::watch_terms(sources)),
            ))
        }
        None => None,
    };
    match peer_bound {
        Some(peer) => {
            write_addr(&node.config.data_dir, PEER_LISTEN_ADDR_FILE, peer)?;
            tracing::info!(node_id = node.id, dc = %node.config.dc, listen = %node.config.listen,
                peer_listen = %peer, "tidal server started");
        }
        None => {
            tracing::info!(node_id = node.id, dc = %node.config.dc, listen = %node.config.listen, "tidal server started")
        }
    }
    let (node_id, raft_metrics, failures) =
        (node.id, node.raft.metrics(), node.store_failures.clone());
    let watcher = tokio::spawn(leader::watch_leadership(node.clone()));
    let elections = tokio::spawn(node.elections.clone().run());
    let alive = tokio::spawn(raft::alive::run(node.clone()));
    let stalls = tokio::spawn(stall::watch(
        node.id,
        std::time::Duration::from_millis(node.config.election_timeout.0 / 2),
    ));
    let mut removed = node.removed.subscribe();
    // Set once the Raft core stopped on its own (the store cannot write).
    let (failed_tx, mut failed) = tokio::sync::watch::channel(None::<String>);
    let failure_watch = tokio::spawn(async move {
        let why = fatal::core_stopped(raft_metrics, failures.clone()).await;
        match failures.halted() {
            Some(halt) => {
                tracing::error!(node_id, error = %fatal::NeedsVersion::from(halt), "stopping: an unsupported format version")
            }
            None => tracing::error!(node_id, error = %why, "stopping: the store failed"),
        }
        failed_tx.send_replace(Some(why.0));
    });
    // Set when a graceful shutdown began: its start.
    let (began_tx, mut began) = tokio::sync::watch::channel(None::<tokio::time::Instant>);
    let mut failed_stop = failed.clone();
    let (watcher_stop, elections_stop) = (watcher.abort_handle(), elections.abort_handle());
    let leaving = node.clone();
    let stop = async move {
        let graceful = tokio::select! {
            _ = shutdown => true,
            _ = async { let _ = removed.wait_for(Option::is_some).await; } => false,
            _ = async { let _ = failed_stop.wait_for(Option::is_some).await; } => false,
        };
        if graceful {
            let start = tokio::time::Instant::now();
            began_tx.send_replace(Some(start));
            leave(&leaving, start, watcher_stop, elections_stop).await;
        }
    };
    let tls = match &node.tls {
        Some(dir) => {
            tracing::info!(node_id = node.id, cert = %dir.identity().to_uri(),
                dir = %dir.dir().display(), "serving mutual TLS");
            Some(tidal_tls::server_config(dir).context("--tls-dir")?)
        }
        None => None,
    };
    // The health service's NOT_SERVING starts with the graceful shutdown.
    let mut leaving = began.clone();
    let draining = async move {
        let _ = leaving.wait_for(Option::is_some).await;
    };
    let served = grpc::serve(node.clone(), listeners, tls, draining, stop);
    tokio::pin!(served);
    let timeout = node.config.shutdown_timeout;
    let share = move |start: tokio::time::Instant, tenths: u32| start + timeout * tenths / 10;
    // After a store failure, open streams (agent sessions, watches) get a
    // short grace to close, not as long as they like: the process must end.
    // A graceful shutdown gives them what is left of its timeout.
    let served = tokio::select! {
        r = &mut served => r,
        _ = async {
            let _ = failed.wait_for(Option::is_some).await;
            tokio::time::sleep(FAILED_DRAIN).await;
        } => Ok(()),
        _ = async {
            let start = began.wait_for(Option::is_some).await.ok().and_then(|s| *s);
            let Some(start) = start else {
                return std::future::pending().await;
            };
            tokio::time::sleep_until(share(start, CLOSE_BY)).await;
        } => {
            tracing::warn!(node_id = node.id, "connections still open at the shutdown timeout: closing them");
            Ok(())
        }
    };
    failure_watch.abort();
    if let Some((served, terms)) = &metrics {
        served.abort();
        terms.abort();
    }
    watcher.abort();
    elections.abort();
    stalls.abort();
    alive.abort();
    if let Some(l) = node.take_leadership() {
        l.end();
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
        if let Some(halt) = node.store_failures.halted() {
            let _ = node.raft.shutdown().await;
            return Err(fatal::NeedsVersion::from(halt).into());
        }
        let why = failed.borrow().clone();
        let why = match why {
            Some(why) => fatal::StorageFailed(why),
            None => fatal::core_stopped(node.raft.metrics(), node.store_failures.clone()).await,
        };
        let _ = node.raft.shutdown().await;
        return Err(why.into());
    }
    let graceful = *began.borrow();
    let stopped = match graceful {
        Some(start) => {
            let bound = share(start, STOP_RAFT_BY)
                .saturating_duration_since(tokio::time::Instant::now())
                .max(std::time::Duration::from_millis(50));
            match tokio::time::timeout(bound, node.raft.shutdown()).await {
                Ok(r) => r,
                Err(_) => {
                    // Every acknowledged entry is on disk already: exiting
                    // without Raft's own stop loses nothing.
                    tracing::warn!(
                        node_id = node.id,
                        "raft did not stop within the shutdown timeout; exiting anyway"
                    );
                    Ok(())
                }
            }
        }
        None => node.raft.shutdown().await,
    };
    served?;
    stopped.map_err(|e| anyhow::anyhow!("raft did not stop cleanly: {e}"))?;
    if let Some(why) = node.removed.borrow().clone() {
        anyhow::bail!("{why}");
    }
    match graceful {
        Some(start) => tracing::info!(
            node_id = node.id,
            took_ms = start.elapsed().as_millis() as u64,
            "tidal server stopped"
        ),
        None => tracing::info!(node_id = node.id, "tidal server stopped"),
    }
    Ok(())
}

/// The address to bind for `config`: its `listen`, except that a node told
/// to listen on port 0 whose data directory holds the address of an earlier
/// start on the same IP ([`LISTEN_ADDR_FILE`]) takes that address again: the
/// membership and the other members know the node by it, so a restart keeps
/// it reachable. Binding it fails if another process took the port meanwhile.
pub fn listen_address(config: &ServerConfig) -> std::net::SocketAddr {
    earlier_address(config.listen, &config.data_dir, LISTEN_ADDR_FILE)
}

/// The address to bind for `config`'s `peer_listen`, if it has one, as
/// [`listen_address`] finds it (the earlier start's is in
/// [`PEER_LISTEN_ADDR_FILE`]).
pub fn peer_listen_address(config: &ServerConfig) -> Option<std::net::SocketAddr> {
    config
        .peer_listen
        .map(|asked| earlier_address(asked, &config.data_dir, PEER_LISTEN_ADDR_FILE))
}

/// `asked`, or for port 0 the address in `<data>/<file>` when it names the same IP.
fn earlier_address(
    asked: std::net::SocketAddr,
    data: &std::path::Path,
    file: &str,
) -> std::net::SocketAddr {
    if asked.port() != 0 {
        return asked;
    }
    let earlier = std::fs::read_to_string(data.join(file))
        .ok()
        .and_then(|text| text.trim().parse::<std::net::SocketAddr>().ok());
    match earlier {
        Some(addr) if addr.ip() == asked.ip() && addr.port() != 0 => addr,
        _ => asked,
    }
}

/// Binds the sockets `config` names ([`listen_address`],
/// [`peer_listen_address`]); an error names the address and, for an
/// earlier start's, the file it came from.
pub async fn bind(config: &ServerConfig) -> anyhow::Result<Listeners> {
    async fn one(
        addr: std::net::SocketAddr,
        asked: std::net::SocketAddr,
        data: &std::path::Path,
        file: &str,
    ) -> anyhow::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind(addr).await.with_context(|| {
            if addr == asked {
                format!("binding {addr}")
            } else {
                format!(
                    "binding {addr}, the address this node listened on before ({}): the other \
                     members know it by this address",
                    data.join(file).display()
                )
            }
        })
    }
    let public = one(
        listen_address(config),
        config.listen,
        &config.data_dir,
        LISTEN_ADDR_FILE,
    )
    .await?;
    let peer = match (peer_listen_address(config), config.peer_listen) {
        (Some(addr), Some(asked)) => {
            Some(one(addr, asked, &config.data_dir, PEER_LISTEN_ADDR_FILE).await?)
        }
        _ => None,
    };
    Ok(Listeners { public, peer })
}

/// Writes `addr` to `<data>/<file>` through a temporary file and a rename.
fn write_addr(
    data: &std::path::Path,
    file: &str,
    addr: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let path = data.join(file);
    let tmp = data.join(format!("{file}.tmp"));
    std::fs::write(&tmp, format!("{addr}\n"))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("writing {}", path.display()))
}

/// The first steps of a graceful shutdown, before connections close: no
/// new work, leadership handed over if this node leads, leadership ended.
async fn leave(
    node: &Arc<Node>,
    start: tokio::time::Instant,
    watcher: tokio::task::AbortHandle,
    elections: tokio::task::AbortHandle,
) {
    node.shutting_down
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // A node on its way out starts no election.
    elections.abort();
    let timeout = node.config.shutdown_timeout;
    let leads = node.raft.metrics().borrow().current_leader == Some(node.id);
    if leads {
        let candidates = raft::transfer::candidates(node);
        match raft::transfer::best_target(node.id, &candidates) {
            Some(target) => {
                tracing::info!(
                    node_id = node.id,
                    target,
                    "shutting down: handing leadership over"
                );
                let by = start + timeout * HAND_OVER_BY / 10;
                if let Err(e) =
                    raft::transfer::transfer(node, target, by, raft::transfer::Handover::Leaving)
                        .await
                {
                    tracing::warn!(node_id = node.id, target, error = %e,
                        "shutting down without handing leadership over: the others elect once this node is gone");
                }
            }
            None if candidates.is_empty() => {
                tracing::info!(node_id = node.id, "shutting down: the only voter");
            }
            None => {
                tracing::warn!(node_id = node.id,
                "shutting down without handing leadership over: no other voter answered recently")
            }
        }
        // Whatever happened above, no more heartbeats from here: a leader
        // that did not hand over is not heard from, so the other voters
        // elect one election timeout from now instead of once its Raft has
        // stopped (up to 90% of the shutdown timeout).
        node.raft.runtime_config().heartbeat(false);
    } else {
        tracing::info!(node_id = node.id, "shutting down: not the leader");
    }
    // No leadership starts again here; the one there is ends, and with it
    // every agent session (NotLeader, naming the new leader).
    watcher.abort();
    if let Some(l) = node.take_leadership() {
        l.end();
    }
}

/// Keeps `Arc<Node>` nameable by integration tests.
pub type SharedNode = Arc<Node>;
