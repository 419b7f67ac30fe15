//! The format-version raiser (README: Rolling upgrade): the leader commits
//! `SetClusterVersion` once every member of the cluster, voters and learners
//! alike, supports a higher cluster format version than the cluster's.
//!
//! Each server names the highest version it supports in its Raft replies
//! ([`crate::raft::network::Contacts::format_of`]); the leader counts a reply
//! only if it is recent (within the election timeout), so a member that is
//! down, or was just restarted with another build, holds the version where
//! it is until it answers again. Learners count because they apply the same
//! log: one that could not read an entry would stop.

use std::sync::Arc;
use std::time::Duration;

use tidal_core::command::{Command, Response};

use super::leadership::Leadership;
use crate::node::Node;

pub async fn run(node: Arc<Node>, leadership: Arc<Leadership>) {
    let mut tick = tokio::time::interval(Duration::from_millis(
        node.config.raft_heartbeat_ms.max(10) * 2,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while leadership.is_alive() {
        tick.tick().await;
        let current = node.state.read().state.cluster_version();
        let Some(version) = node.version_to_raise(current) else {
            continue;
        };
        match node.propose(Command::SetClusterVersion { version }).await {
            Ok((Response::Ok, index)) => tracing::info!(
                node_id = node.id,
                from = current,
                to = version,
                log_index = index,
                "every member supports it: the cluster format version is raised"
            ),
            Ok((other, _)) => {
                tracing::debug!(node_id = node.id, version, response = ?other, "cluster format version not raised")
            }
            Err(e) => {
                tracing::warn!(node_id = node.id, version, error = %e, "could not raise the cluster format version")
            }
        }
    }
}
