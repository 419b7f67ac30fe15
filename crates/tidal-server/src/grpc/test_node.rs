//! A one-node cluster in this process for calling the gRPC services directly (tests only), with requests that carry a [`Grant`].

use std::sync::Arc;
use std::time::Duration;

use tidal_core::access::{Principal, Role};
use tidal_core::command::{Command, Response};
use tokio::task::JoinHandle;
use tonic::Request;

use crate::auth::grant::Grant;
use crate::node::Node;

/// A node that initialized a cluster of its own and leads it; nothing
/// listens: tests call the services with the node.
pub struct TestNode {
    pub node: Arc<Node>,
    tasks: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestNode {
    /// Starts the node and waits until it leads at the cluster format
    /// version it supports (`max_format_version`, or the build's).
    pub async fn start(max_format_version: Option<u8>) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::RawConfig {
            id: Some(1),
            dc: Some("dc1".into()),
            listen: Some("127.0.0.1:0".into()),
            data: Some(dir.path().join("node1")),
            init: Some(true),
            max_format_version,
            auth: Some(crate::config::AuthMode::None),
            ..crate::RawConfig::default()
        }
        .validate()
        .unwrap();
        let node = Node::start(config, super::dc_link::dial).await.unwrap();
        let tasks = vec![
            tokio::spawn(crate::leader::watch_leadership(node.clone())),
            tokio::spawn(node.elections.clone().run()),
        ];
        let version = node.supported_format_version();
        let at = node.clone();
        node.raft
            .wait(Some(Duration::from_secs(20)))
            .metrics(
                move |m| {
                    m.current_leader == Some(1)
                        && at.state.read().state.cluster_version() == version
                },
                "leading at the supported format version",
            )
            .await
            .unwrap();
        // Leading is also this node's leadership being set up.
        node.linearizable().await.unwrap();
        TestNode {
            node,
            tasks,
            _dir: dir,
        }
    }

    pub async fn propose(&self, command: Command) -> Response {
        self.node.propose(command).await.unwrap().0
    }

    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(l) = self.node.take_leadership() {
            l.end();
        }
        self.node.raft.shutdown().await.unwrap();
    }
}

/// A grant of `role` named `name`, for `tenant` (`None`: every tenant),
/// from token `token`.
pub fn grant(name: &str, role: Role, tenant: Option<&str>, token: &str) -> Grant {
    Grant {
        principal: Principal {
            id: format!("token:{name}"),
            role,
        },
        token: Some(token.to_string()),
        tenant: tenant.map(str::to_string),
    }
}

/// `message` as a request of a caller with `grant` (none: a server that
/// checks no credential).
pub fn request<T>(message: T, grant: Option<&Grant>) -> Request<T> {
    let mut r = Request::new(message);
    if let Some(g) = grant {
        r.extensions_mut().insert(g.clone());
    }
    r
}
