//! The gRPC services: the public API and the Raft transport, on one port or, with `--peer-listen`, on two ([`conn`]); with them gRPC's standard health service and server reflection ([`health`]).

pub mod agent_checkpoints;
pub mod agent_service;
pub mod auth_layer;
pub mod cluster_service;
pub mod conn;
pub mod convert;
pub mod convert_placement;
pub mod dc_link;
pub mod dc_service;
pub mod framing;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz;
pub mod health;
pub mod joiner;
pub mod peer_names;
pub mod queue_service;
pub mod raft_service;
pub mod status;
pub mod submit_rate;
pub mod task_explain;
pub mod task_service;
pub mod tenant_service;
#[cfg(test)]
pub(crate) mod test_node;
pub mod token_service;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tidal_proto::raft::raft_server::RaftServer;
use tidal_proto::v1::agents_server::AgentsServer;
use tidal_proto::v1::cluster_server::ClusterServer;
use tidal_proto::v1::dcs_server::DcsServer;
use tidal_proto::v1::queues_server::QueuesServer;
use tidal_proto::v1::tasks_server::TasksServer;
use tidal_proto::v1::tenants_server::TenantsServer;
use tidal_proto::v1::tokens_server::TokensServer;

use crate::node::Node;
use conn::Listeners;
use framing::Framed;

/// Headroom over the payload limit for the rest of a request.
const MESSAGE_OVERHEAD: usize = 64 * 1024;

/// Serves every service on `listeners` until `shutdown`: plain TCP, or
/// with `tls` mutual TLS with that configuration ([`conn::incoming`]).
/// `draining` completes when the node begins to shut down (before
/// `shutdown`, which completes once it is ready to stop serving): from then
/// on the health service reports NOT_SERVING ([`health`]).
pub async fn serve(
    node: Arc<Node>,
    listeners: Listeners,
    tls: Option<Arc<tidal_tls::rustls::ServerConfig>>,
    draining: impl Future<Output = ()> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // A batch may carry many payloads; the per-task limit is checked per item.
    let max_message = (node.config.limits.max_payload_bytes + MESSAGE_OVERHEAD).max(64 << 20);
    let tasks = TasksServer::new(task_service::TaskService {
        node: node.clone(),
        rates: Default::default(),
    })
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(max_message);
    let agents = AgentsServer::new(agent_service::AgentService { node: node.clone() })
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let queues = QueuesServer::new(queue_service::QueueService { node: node.clone() });
    let tenants = TenantsServer::new(tenant_service::TenantService { node: node.clone() });
    let cluster = ClusterServer::new(cluster_service::ClusterService { node: node.clone() });
    let tokens = TokensServer::new(token_service::TokenService { node: node.clone() });
    let plane = auth_layer::PeerPlane::new(node.clone());
    let dcs = DcsServer::new(dc_service::DcService::new(node.clone(), plane.clone()))
        .max_decoding_message_size(crate::links::MAX_EXCHANGE_MESSAGE)
        .max_encoding_message_size(crate::links::MAX_EXCHANGE_MESSAGE);
    let raft = RaftServer::new(raft_service::RaftService {
        raft: node.raft.clone(),
        node_id: node.id,
        removed: node.removed.clone(),
        vote_gate: node.vote_gate.clone(),
        contact: node.leader_contact.clone(),
        elections: node.elections.clone(),
        max_format_version: node.supported_format_version(),
        dc: node.config.dc.clone(),
        max_hold: std::time::Duration::from_millis(node.config.election_timeout.1)
            * crate::raft::transfer::HOLD_ELECTION_TIMEOUTS,
        plane: plane.clone(),
    })
    .max_decoding_message_size(usize::MAX)
    .max_encoding_message_size(usize::MAX);
    // Not serving until the node's metrics say otherwise; when serving
    // ends, every health Watch stream ends with it.
    let (reporter, health) = tonic_health::server::health_reporter();
    let reporter = health::Reporter::start(node.clone(), reporter, draining).await;
    let shutdown = async move {
        shutdown.await;
        reporter.close().await;
    };
    let reflection_v1 = health::reflection_v1().context("server reflection")?;
    let reflection_v1alpha = health::reflection_v1alpha().context("server reflection")?;
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // A client or agent that went silent (dropped packets, a paused or
        // dead machine) has its streams failed within interval + timeout.
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(1)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(2)))
        // With --peer-listen, the peer plane's rules before any service.
        .layer(auth_layer::AuthLayer(plane))
        .add_service(Framed(tasks))
        .add_service(Framed(agents))
        .add_service(Framed(queues))
        .add_service(Framed(tenants))
        .add_service(Framed(cluster))
        .add_service(Framed(tokens))
        .add_service(Framed(dcs))
        .add_service(Framed(raft))
        .add_service(Framed(health))
        .add_service(Framed(reflection_v1))
        .add_service(Framed(reflection_v1alpha))
        .serve_with_incoming_shutdown(conn::incoming(listeners, tls), shutdown)
        .await
        .context("serving gRPC")
}
