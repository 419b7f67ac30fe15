//! gRPC's standard health service (`grpc.health.v1.Health`) and server reflection (`grpc.reflection.v1` and `v1alpha`), for probes, load balancers and grpcurl.
//!
//! Health: the server as a whole (`""`) and each public service
//! ([`SERVICES`]) are SERVING while this node is a member (voter or
//! learner) of its DC's Raft group that knows a current leader, and
//! NOT_SERVING otherwise: no leader known (or none heard from within an
//! election timeout), not (or no longer) a member, a leader that
//! check-quorum deposed, a Raft core that stopped, a node the
//! leader removed, or one shutting down (from the moment SIGTERM or SIGINT
//! arrives, while it still hands its leadership over). [`Reporter`] drives
//! the statuses from openraft's metrics watch, so a `Watch` stream hears of
//! a change as soon as the metrics show it; when the server stops serving,
//! every `Watch` stream ends (after NOT_SERVING). The Raft transport
//! (`tidal.raft.v1.Raft`) has no status: a `Check` of it is NOT_FOUND.
//!
//! Reflection serves the descriptors of `proto/tidal.proto`
//! ([`tidal_proto::FILE_DESCRIPTOR_SET`], comments included) and of the
//! health and reflection protocols themselves; not `raft.proto`.
//!
//! Both go through the same listeners, TLS and [`super::auth_layer`] as
//! the public API; under `--auth tokens` health needs no token, reflection
//! a token of any role ([`crate::auth::policy::tokenless`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, RaftMetrics};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::node::Node;

/// The services whose health is reported: the server as a whole (`""`)
/// and every service of the public API.
pub const SERVICES: [&str; 8] = [
    "",
    tidal_proto::v1::tasks_server::SERVICE_NAME,
    tidal_proto::v1::agents_server::SERVICE_NAME,
    tidal_proto::v1::queues_server::SERVICE_NAME,
    tidal_proto::v1::tenants_server::SERVICE_NAME,
    tidal_proto::v1::tokens_server::SERVICE_NAME,
    tidal_proto::v1::cluster_server::SERVICE_NAME,
    tidal_proto::v1::dcs_server::SERVICE_NAME,
];

/// Why node `id` does not serve, with these metrics (None: it serves).
/// `deposed`: check-quorum made it step down while openraft still has it
/// lead ([`Node::deposed`]). `heard`: a follower heard from a leader
/// within an election timeout ([`Node::leader_contact`]); openraft keeps
/// naming a leader that went quiet until another is elected, which on the
/// minority side of a partition is never.
pub fn not_serving(
    id: u64,
    metrics: &RaftMetrics<u64, BasicNode>,
    deposed: bool,
    heard: bool,
) -> Option<&'static str> {
    if metrics.running_state.is_err() {
        return Some("its raft core stopped");
    }
    let member = metrics
        .membership_config
        .membership()
        .nodes()
        .any(|(n, _)| *n == id);
    if !member {
        return Some("not a member of its DC's raft group");
    }
    match metrics.current_leader {
        None => Some("no leader known"),
        Some(leader) if leader == id && deposed => {
            Some("a leader no majority has heard within its lease")
        }
        Some(leader) if leader != id && !heard => {
            Some("no word from its leader within an election timeout")
        }
        Some(_) => None,
    }
}

/// The reflection service, v1.
pub fn reflection_v1() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tidal_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
}

/// The reflection service, v1alpha (what older grpcurl releases ask).
pub fn reflection_v1alpha() -> Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tidal_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
}

/// The task that keeps the health statuses; [`Reporter::close`] ends it.
/// Dropped without `close`, it stops the task.
pub struct Reporter {
    close: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Reporter {
    /// Sets the statuses of [`SERVICES`] for what `node` shows now, and
    /// starts the task that follows its changes. `draining` completes when
    /// the node begins to shut down: from then on it does not serve.
    pub async fn start(
        node: Arc<Node>,
        mut reporter: HealthReporter,
        draining: impl Future<Output = ()> + Send + 'static,
    ) -> Reporter {
        let mut state = State {
            node,
            last: None,
            draining: false,
            raft_stopped: false,
        };
        let mut metrics = state.node.raft.metrics();
        state.publish(&mut reporter, &mut metrics).await;
        let (close, closing) = oneshot::channel();
        let task = tokio::spawn(state.follow(reporter, metrics, draining, closing));
        Reporter {
            close: Some(close),
            task,
        }
    }

    /// Sets every status to NOT_SERVING and then forgets them, which ends
    /// every `Watch` stream; returns once done.
    pub async fn close(mut self) {
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the reporting task knows.
struct State {
    node: Arc<Node>,
    /// What was published last (None: nothing yet).
    last: Option<bool>,
    /// The node began to shut down.
    draining: bool,
    /// The metrics watch closed: Raft stopped.
    raft_stopped: bool,
}

impl State {
    /// Why the node does not serve now (None: it serves).
    fn why_not(
        &self,
        metrics: &mut tokio::sync::watch::Receiver<RaftMetrics<u64, BasicNode>>,
    ) -> Option<&'static str> {
        if self.draining {
            return Some("shutting down");
        }
        if self.raft_stopped {
            return Some("its raft stopped");
        }
        if self.node.removed.borrow().is_some() {
            return Some("removed from the cluster");
        }
        let deposed = self.node.deposed.load(std::sync::atomic::Ordering::Relaxed);
        let quiet = Duration::from_millis(self.node.config.election_timeout.1);
        let heard = self.node.leader_contact.since().is_some_and(|d| d < quiet);
        not_serving(self.node.id, &metrics.borrow_and_update(), deposed, heard)
    }

    /// Sets every status for what the node shows now, if it changed.
    async fn publish(
        &mut self,
        reporter: &mut HealthReporter,
        metrics: &mut tokio::sync::watch::Receiver<RaftMetrics<u64, BasicNode>>,
    ) {
        let why = self.why_not(metrics);
        let serving = why.is_none();
        if self.last == Some(serving) {
            return;
        }
        let node_id = self.node.id;
        match why {
            None => tracing::info!(node_id, "health: SERVING"),
            Some(why) => tracing::info!(node_id, why, "health: NOT_SERVING"),
        }
        set_all(reporter, serving).await;
        self.last = Some(serving);
    }

    /// Follows the metrics, the removal and the shutdown, and every half
    /// minimum election timeout what the metrics do not show (check-quorum's
    /// verdict, a follower's last word from its leader), until `closing`
    /// completes.
    async fn follow(
        mut self,
        mut reporter: HealthReporter,
        mut metrics: tokio::sync::watch::Receiver<RaftMetrics<u64, BasicNode>>,
        draining: impl Future<Output = ()>,
        mut closing: oneshot::Receiver<()>,
    ) {
        tokio::pin!(draining);
        let mut removed = self.node.removed.subscribe();
        let mut removed_open = true;
        let period = Duration::from_millis((self.node.config.election_timeout.0 / 2).max(10));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.publish(&mut reporter, &mut metrics).await;
            let live = !self.raft_stopped && !self.draining;
            tokio::select! {
                biased;
                _ = &mut closing => break,
                _ = &mut draining, if !self.draining => self.draining = true,
                changed = metrics.changed(), if !self.raft_stopped => {
                    self.raft_stopped = changed.is_err();
                }
                changed = removed.changed(), if removed_open => removed_open = changed.is_ok(),
                _ = tick.tick(), if live => {}
            }
        }
        if self.last != Some(false) {
            tracing::info!(
                node_id = self.node.id,
                why = "stopping",
                "health: NOT_SERVING"
            );
            set_all(&mut reporter, false).await;
        }
        for service in SERVICES {
            reporter.clear_service_status(service).await;
        }
    }
}

/// Sets every service of [`SERVICES`] SERVING or NOT_SERVING.
async fn set_all(reporter: &mut HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

#[cfg(test)]
#[path = "health_test.rs"]
mod tests;
