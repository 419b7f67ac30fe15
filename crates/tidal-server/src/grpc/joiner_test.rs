//! Tests of the joiner check: the verdict on what a joiner said, and the
//! fallback to Cluster.Status on a server that does not know Hello.

use std::net::SocketAddr;

use tidal_proto::v1::{self, cluster_server};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use super::{ask, refusal, Joiner};
use crate::channels::Channels;
use crate::raft::member_addr::MemberAddr;

fn said(node_id: u64, dc: &str, max: u32) -> Joiner {
    Joiner {
        node_id,
        dc: dc.into(),
        max_format_version: max,
        at: "127.0.0.1:7104".into(),
    }
}

#[test]
fn the_node_the_leader_expects_of_its_dc_and_version_may_join() {
    assert_eq!(refusal(&said(4, "dc1", 2), 4, "dc1", 2), None);
    // A cluster at the lowest version takes any build.
    assert_eq!(refusal(&said(4, "dc1", 1), 4, "dc1", 1), None);
}

#[test]
fn another_node_another_dc_or_an_older_build_is_refused() {
    let other = refusal(&said(5, "dc1", 2), 4, "dc1", 2).unwrap();
    assert!(
        other.contains("the server at 127.0.0.1:7104 is node 5, not node 4"),
        "{other}"
    );
    let dc = refusal(&said(4, "dc2", 2), 4, "dc1", 2).unwrap();
    assert!(dc.contains("DC \"dc2\", not of this DC \"dc1\""), "{dc}");
    let old = refusal(&said(4, "dc1", 1), 4, "dc1", 2).unwrap();
    assert!(
        old.contains("supports cluster format versions 1 to 1; the cluster is at version 2"),
        "{old}"
    );
}

/// A server of a build without Raft.Hello: it serves Cluster.Status only.
#[derive(Clone)]
struct OlderBuild {
    node_id: u64,
}

fn not_here<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in the fake"))
}

#[tonic::async_trait]
impl cluster_server::Cluster for OlderBuild {
    async fn add_learner(
        &self,
        _r: Request<v1::AddLearnerRequest>,
    ) -> Result<Response<v1::MembersResponse>, Status> {
        not_here()
    }
    async fn promote(
        &self,
        _r: Request<v1::PromoteRequest>,
    ) -> Result<Response<v1::MembersResponse>, Status> {
        not_here()
    }
    async fn transfer_leader(
        &self,
        _r: Request<v1::TransferLeaderRequest>,
    ) -> Result<Response<v1::MembersResponse>, Status> {
        not_here()
    }
    async fn demote(
        &self,
        _r: Request<v1::ChangeRequest>,
    ) -> Result<Response<v1::MembersResponse>, Status> {
        not_here()
    }
    async fn remove(
        &self,
        _r: Request<v1::ChangeRequest>,
    ) -> Result<Response<v1::MembersResponse>, Status> {
        not_here()
    }
    async fn snapshot(
        &self,
        _r: Request<v1::SnapshotRequest>,
    ) -> Result<Response<v1::SnapshotResponse>, Status> {
        not_here()
    }
    type BackupStream = tokio_stream::Empty<Result<v1::BackupChunk, Status>>;
    async fn backup(
        &self,
        _r: Request<v1::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        not_here()
    }
    async fn members(
        &self,
        _r: Request<v1::MembersRequest>,
    ) -> Result<Response<v1::MembersResponse>, Status> {
        not_here()
    }
    async fn status(
        &self,
        _r: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        // Servers from before format versions leave the versions at 0.
        Ok(Response::new(v1::StatusResponse {
            node_id: self.node_id,
            dc: "dc1".into(),
            ..Default::default()
        }))
    }
}

/// Serves `fake` on 127.0.0.1:0 until the returned sender is dropped.
async fn serve(fake: OlderBuild) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(cluster_server::ClusterServer::new(fake))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );
    (addr, stop)
}

/// Hello answered UNIMPLEMENTED at the peer address: the leader reads
/// Status at the joiner's client address, and takes a version of 0 as 1.
#[tokio::test]
async fn an_older_build_is_asked_for_its_status_at_its_client_address() {
    let (client, _stop_client) = serve(OlderBuild { node_id: 4 }).await;
    let (peer, _stop_peer) = serve(OlderBuild { node_id: 99 }).await;
    let addr = MemberAddr {
        client: client.to_string(),
        peer: Some(peer.to_string()),
    };
    let got = ask(&Channels::default(), &addr, 4, "dc1").await;
    assert_eq!(
        got,
        Ok(Some(Joiner {
            node_id: 4,
            dc: "dc1".into(),
            max_format_version: 1,
            at: client.to_string(),
        }))
    );
}

/// A server that is not there yet says nothing, and the check lets it in.
#[tokio::test]
async fn a_server_that_does_not_answer_says_nothing() {
    let nowhere = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let addr = MemberAddr::client_only(nowhere.to_string());
    assert_eq!(ask(&Channels::default(), &addr, 4, "dc1").await, Ok(None));
}
