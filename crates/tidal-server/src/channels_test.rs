//! Channels over mutual TLS with real sockets on 127.0.0.1: each dial accepts only the server it expects, and a refusal says why.

use tidal_proto::v1::queues_client::QueuesClient;
use tidal_proto::v1::queues_server::{Queues, QueuesServer};
use tidal_proto::v1::{ListQueuesRequest, ListQueuesResponse, Queue, SetQueueRequest};
use tidal_tls::issue::{issue, new_ca, Request, Validity};
use tidal_tls::{CertIdentity, Role};
use tokio::net::TcpListener;

use super::*;
use crate::grpc::conn::{incoming, Listeners};

/// Answers List with nothing.
struct Empty;

#[tonic::async_trait]
impl Queues for Empty {
    async fn set(
        &self,
        _: tonic::Request<SetQueueRequest>,
    ) -> Result<tonic::Response<Queue>, tonic::Status> {
        Err(tonic::Status::unimplemented("set"))
    }

    async fn set_headroom(
        &self,
        _: tonic::Request<tidal_proto::v1::SetHeadroomRequest>,
    ) -> Result<tonic::Response<tidal_proto::v1::ListHeadroomResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("set_headroom"))
    }

    async fn list(
        &self,
        _: tonic::Request<ListQueuesRequest>,
    ) -> Result<tonic::Response<ListQueuesResponse>, tonic::Status> {
        Ok(tonic::Response::new(ListQueuesResponse::default()))
    }
}

/// A certificate of server `id` of `dc` from CA `ca` ("a" or "b") in `tmp`.
fn server_dir(tmp: &std::path::Path, ca: &str, dc: &str, id: u64) -> TlsDir {
    let ca_dir = tmp.join(ca);
    if !ca_dir.exists() {
        new_ca(&ca_dir, ca, Validity::days(30)).unwrap();
    }
    let req = Request {
        identity: CertIdentity::new(Role::Server, Some(dc), &id.to_string()).unwrap(),
        hosts: Vec::new(),
        validity: Validity::days(10),
    };
    issue(&ca_dir, &req, &tmp.join(format!("{ca}-{dc}-{id}"))).unwrap()
}

/// Serves [`Empty`] over TLS with `dir` on 127.0.0.1 until the sender is dropped.
async fn serve(dir: &TlsDir) -> (String, tokio::sync::oneshot::Sender<()>) {
    let config = tidal_tls::server_config(dir).unwrap();
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(QueuesServer::new(Empty))
            .serve_with_incoming_shutdown(incoming(Listeners::from(socket), Some(config)), async {
                let _ = stopped.await;
            }),
    );
    (addr, stop)
}

async fn list(channel: Channel) -> Result<(), tonic::Status> {
    QueuesClient::new(channel)
        .list(ListQueuesRequest {})
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_member_is_reached_only_under_the_node_id_its_certificate_names() {
    let tmp = tempfile::tempdir().unwrap();
    let (addr, _stop) = serve(&server_dir(tmp.path(), "a", "dc1", 5)).await;
    let me = server_dir(tmp.path(), "a", "dc1", 1);
    let channels = Channels::default().with_tls("dc1", Some(me));
    assert!(channels.tls());

    list(channels.member(&addr, 5).unwrap()).await.unwrap();
    let err = list(channels.member(&addr, 4).unwrap()).await.unwrap_err();
    assert_eq!(
        tls_failure(&err).as_deref(),
        Some("the server's certificate names server '5' of dc 'dc1', not server '4' of dc 'dc1'"),
        "{err:?}"
    );
    assert_eq!(why(&err), tls_failure(&err).unwrap());
    let err = list(channels.get(&addr, Expect::Dc("dc2".into())).unwrap())
        .await
        .unwrap_err();
    assert!(
        tls_failure(&err)
            .unwrap()
            .contains("not a server of dc 'dc2'"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_server_of_another_ca_is_refused_and_the_refusal_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let (addr, _stop) = serve(&server_dir(tmp.path(), "b", "dc1", 5)).await;
    let channels = Channels::default().with_tls("dc1", Some(server_dir(tmp.path(), "a", "dc1", 1)));
    let err = list(channels.member(&addr, 5).unwrap()).await.unwrap_err();
    assert_eq!(
        tls_failure(&err).as_deref(),
        Some("the server's certificate is not signed by this server's CA (ca.pem)"),
        "{err:?}"
    );
}

#[tokio::test]
async fn without_tls_a_failed_call_is_no_tls_failure() {
    let nowhere = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let channels = Channels::default();
    assert!(!channels.tls());
    let err = list(channels.member(&nowhere, 1).unwrap())
        .await
        .unwrap_err();
    assert_eq!(tls_failure(&err), None, "{err:?}");
    assert_eq!(why(&err), err.message());
}
