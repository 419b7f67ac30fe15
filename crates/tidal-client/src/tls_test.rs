//! Calls over mutual TLS against in-process tonic servers: they work and follow leaders, and certificate failures are final.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tidal_proto::v1::{cluster_server, tasks_server};
use tidal_tls::issue::{issue, new_ca, Request, Validity};
use tidal_tls::rustls::{ClientConfig, ServerConfig};
use tidal_tls::tokio_rustls::{server::TlsStream, TlsAcceptor};
use tidal_tls::{client_config, server_config, CertIdentity, Expect, Role, TlsDir};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::Code;

use crate::client_test::{dead_addr, serve, Fake, Mode};
use crate::{Client, ClientOptions, Error};

/// CAs "a" and "b", and certificates signed by them, in a temporary directory.
struct Pki {
    tmp: tempfile::TempDir,
    issued: std::cell::Cell<usize>,
}

impl Pki {
    fn new() -> Pki {
        let tmp = tempfile::tempdir().unwrap();
        for ca in ["a", "b"] {
            new_ca(&tmp.path().join(ca), ca, Validity::days(30)).unwrap();
        }
        // Another CA with a's name: its certificates fail on their
        // signature, not on an unknown issuer.
        new_ca(&tmp.path().join("a-twin"), "a", Validity::days(30)).unwrap();
        Pki {
            tmp,
            issued: std::cell::Cell::new(0),
        }
    }

    /// A TLS directory of `role`/`dc`/`name` from CA `ca`.
    fn issue(&self, ca: &str, role: Role, dc: Option<&str>, name: &str) -> PathBuf {
        self.issued.set(self.issued.get() + 1);
        let out = self.tmp.path().join(format!("{}", self.issued.get()));
        let req = Request {
            identity: CertIdentity::new(role, dc, name).unwrap(),
            hosts: Vec::new(),
            validity: Validity::days(10),
        };
        issue(&self.tmp.path().join(ca), &req, &out).unwrap();
        out
    }

    fn dir(&self, ca: &str, role: Role, dc: Option<&str>, name: &str) -> TlsDir {
        TlsDir::load(self.issue(ca, role, dc, name)).unwrap()
    }

    fn server(&self, ca: &str, dc: &str, id: u64) -> Arc<ServerConfig> {
        server_config(&self.dir(ca, Role::Server, Some(dc), &id.to_string())).unwrap()
    }

    fn client(&self, ca: &str, expect: Expect) -> Arc<ClientConfig> {
        client_config(&self.dir(ca, Role::Client, None, "alice"), expect).unwrap()
    }
}

/// A server-side TLS connection as tonic's server takes it.
struct TlsConn(TlsStream<TcpStream>);

impl Connected for TlsConn {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Serves `fake` over TLS on 127.0.0.1:0 as tidal's server does: each
/// connection's handshake in its own task, a failed one dropped (after
/// rustls' alert); returns its address.
async fn serve_tls(fake: Fake, config: Arc<ServerConfig>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<TlsConn>>(16);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = tx.send(Ok(TlsConn(tls))).await;
                }
            });
        }
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(tasks_server::TasksServer::new(fake.clone()))
            .add_service(cluster_server::ClusterServer::new(fake))
            .serve_with_incoming(ReceiverStream::new(rx)),
    );
    addr
}

fn client(endpoints: Vec<String>, tls: Option<Arc<ClientConfig>>) -> Client {
    Client::with_options(
        endpoints,
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(5),
            connect_timeout: Duration::from_millis(500),
            tls,
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

/// A call through `client` fails at once (well within its 5 s budget) with
/// `Unauthenticated` and a message that contains `why`.
async fn assert_refused_at_once(client: &Client, why: &str) {
    let started = Instant::now();
    let e = client.get_task("t-1", false).await.unwrap_err();
    assert_eq!(e.code, Code::Unauthenticated, "{e}");
    assert!(e.message.contains(why), "expected {why:?} in: {e}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}: {e}",
        started.elapsed()
    );
}

#[tokio::test]
async fn calls_over_tls_work_and_follow_the_leader() {
    let pki = Pki::new();
    let leader = Fake::new(Mode::Lead);
    let leader_addr = serve_tls(leader.clone(), pki.server("a", "dc1", 1)).await;
    let follower = Fake::new(Mode::Redirect(leader_addr.clone()));
    let follower_addr = serve_tls(follower.clone(), pki.server("a", "dc1", 2)).await;

    for tls in [
        pki.client("a", Expect::AnyServer),
        client_config(
            &pki.dir("a", Role::Agent, Some("dc1"), "gpu-1"),
            Expect::Dc("dc1".into()),
        )
        .unwrap(),
    ] {
        let c = client(vec![format!("https://{follower_addr}")], Some(tls));
        assert_eq!(c.get_task("t-1", false).await.unwrap().id, "t-1");
        assert_eq!(c.leader().as_deref(), Some(leader_addr.as_str()));
        c.cancel_task("t-1").await.unwrap();
        assert_eq!(c.status_of(&follower_addr).await.unwrap().role, "leader");
    }
    assert_eq!((follower.calls(), leader.calls()), (4, 4));
}

#[tokio::test]
async fn a_server_certificate_of_another_ca_is_final() {
    let pki = Pki::new();
    let addr = serve_tls(Fake::new(Mode::Lead), pki.server("b", "dc1", 1)).await;
    let c = client(vec![addr.clone()], Some(pki.client("a", Expect::AnyServer)));
    assert_refused_at_once(&c, "the server's certificate is not signed by ca.pem").await;
    let e = c.status_of(&addr).await.unwrap_err();
    assert_eq!(e.code, Code::Unauthenticated, "{e}");
}

#[tokio::test]
async fn a_client_certificate_the_server_does_not_trust_is_final() {
    let pki = Pki::new();
    let addr = serve_tls(Fake::new(Mode::Lead), pki.server("a", "dc1", 1)).await;
    // The client trusts the server's CA too, but holds a certificate of
    // another CA, which the server does not trust.
    for other in ["b", "a-twin"] {
        let dir = pki.issue(other, Role::Client, None, "mallory");
        let both = [
            std::fs::read(pki.tmp.path().join("a/ca.pem")).unwrap(),
            std::fs::read(pki.tmp.path().join(other).join("ca.pem")).unwrap(),
        ]
        .concat();
        std::fs::write(dir.join("ca.pem"), both).unwrap();
        let tls = client_config(&TlsDir::load(&dir).unwrap(), Expect::AnyServer).unwrap();
        let c = client(vec![addr.clone()], Some(tls));
        assert_refused_at_once(&c, "the server refused this client's certificate").await;
    }
}

#[tokio::test]
async fn a_server_of_another_dc_or_role_is_final() {
    let pki = Pki::new();
    let addr = serve_tls(Fake::new(Mode::Lead), pki.server("a", "dc1", 1)).await;
    let agent = pki.dir("a", Role::Agent, Some("dc2"), "gpu-1");
    let c = client(
        vec![addr],
        Some(client_config(&agent, Expect::Dc("dc2".into())).unwrap()),
    );
    assert_refused_at_once(
        &c,
        "the server's certificate names server '1' of dc 'dc1', not a server of dc 'dc2'",
    )
    .await;

    // An agent's certificate cannot serve.
    let posing = server_config(&pki.dir("a", Role::Agent, Some("dc1"), "1")).unwrap();
    let addr = serve_tls(Fake::new(Mode::Lead), posing).await;
    let c = client(vec![addr], Some(pki.client("a", Expect::AnyServer)));
    assert_refused_at_once(&c, "the server's certificate is not a server's").await;
}

#[tokio::test]
async fn a_plaintext_server_is_final_for_a_tls_client_of_it_alone() {
    let pki = Pki::new();
    let addr = serve(Fake::new(Mode::Lead)).await;
    let c = client(vec![addr], Some(pki.client("a", Expect::AnyServer)));
    assert_refused_at_once(&c, "the server does not speak TLS").await;
}

#[tokio::test]
async fn an_endpoint_that_refuses_tls_is_passed_over_for_the_next() {
    let pki = Pki::new();
    let plaintext = serve(Fake::new(Mode::Lead)).await;
    let other_ca = serve_tls(Fake::new(Mode::Lead), pki.server("b", "dc1", 2)).await;
    let leader = Fake::new(Mode::Lead);
    let leader_addr = serve_tls(leader.clone(), pki.server("a", "dc1", 3)).await;
    let c = client(
        vec![plaintext.clone(), other_ca, leader_addr.clone()],
        Some(pki.client("a", Expect::AnyServer)),
    );
    let started = Instant::now();
    assert_eq!(c.get_task("t-1", false).await.unwrap().id, "t-1");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(c.leader().as_deref(), Some(leader_addr.as_str()));
    assert_eq!(leader.calls(), 1);

    // The same for a plaintext client whose first endpoint speaks TLS.
    let tls_first = serve_tls(Fake::new(Mode::Lead), pki.server("a", "dc1", 4)).await;
    let c = client(vec![tls_first, plaintext.clone()], None);
    assert_eq!(c.get_task("t-1", false).await.unwrap().id, "t-1");
    assert_eq!(c.leader().as_deref(), Some(plaintext.as_str()));
}

#[tokio::test]
async fn a_refusal_is_final_when_every_endpoint_refused() {
    let pki = Pki::new();
    let plaintext = serve(Fake::new(Mode::Lead)).await;
    let other_ca = serve_tls(Fake::new(Mode::Lead), pki.server("b", "dc1", 2)).await;
    let c = client(
        vec![plaintext.clone(), other_ca.clone()],
        Some(pki.client("a", Expect::AnyServer)),
    );
    assert_refused_at_once(
        &c,
        &format!("TLS with {plaintext} failed: the server does not speak TLS"),
    )
    .await;
    let e = c.get_task("t-1", false).await.unwrap_err();
    assert!(e.is_tls_refusal(), "{e}");
    assert!(
        e.message.contains(&format!(
            "TLS with {other_ca} failed: the server's certificate is not signed by ca.pem"
        )),
        "{e}"
    );

    // A leader that refused is final too, though the follower naming it did not.
    let follower = serve_tls(
        Fake::new(Mode::Redirect(plaintext.clone())),
        pki.server("a", "dc1", 3),
    )
    .await;
    let c = client(vec![follower], Some(pki.client("a", Expect::AnyServer)));
    assert_refused_at_once(
        &c,
        &format!("TLS with {plaintext} failed: the server does not speak TLS"),
    )
    .await;
}

#[tokio::test]
async fn a_plaintext_client_of_a_tls_server_is_told_so() {
    let pki = Pki::new();
    let addr = serve_tls(Fake::new(Mode::Lead), pki.server("a", "dc1", 1)).await;
    let c = client(vec![addr.clone()], None);
    assert_refused_at_once(&c, "the server speaks TLS and this client does not").await;
    let e = c.status_of(&addr).await.unwrap_err();
    assert!(e.is_tls_refusal(), "{e}");
}

#[tokio::test]
async fn https_needs_a_tls_configuration() {
    let addr = dead_addr().await;
    let e = Client::new(vec![addr.clone(), format!("https://{addr}")]).unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument);
    assert!(
        e.message.contains("asks for TLS (https://)") && e.message.contains("--tls-dir"),
        "{e}"
    );
    assert!(Client::new(vec![format!("http://{addr}")]).is_ok());
    let _: Error = e;
}

#[tokio::test]
async fn probes_tell_tls_servers_and_their_refusals() {
    let pki = Pki::new();
    let tls_addr = serve_tls(Fake::new(Mode::Lead), pki.server("a", "dc1", 1)).await;
    let plain_addr = serve(Fake::new(Mode::Lead)).await;
    let t = Duration::from_secs(2);
    assert!(crate::dial::speaks_tls(&tls_addr, None, t).await);
    assert!(!crate::dial::speaks_tls(&plain_addr, None, t).await);
    assert!(!crate::dial::speaks_tls(&dead_addr().await, None, t).await);

    let alice = pki.client("a", Expect::AnyServer);
    assert_eq!(
        crate::dial::tls_refusal(&tls_addr, None, t, alice).await,
        None
    );
    let twin = client_config(
        &pki.dir("a-twin", Role::Client, None, "mallory"),
        Expect::AnyServer,
    )
    .unwrap();
    // The twin's client refuses the server first (its own CA only).
    let refusal = crate::dial::tls_refusal(&tls_addr, None, t, twin).await;
    assert!(
        matches!(
            refusal,
            Some(tidal_tls::rustls::Error::InvalidCertificate(_))
        ),
        "{refusal:?}"
    );
    // Trusting both CAs, it is refused by the server, which tells it
    // after the client's side of the handshake is done.
    let dir = pki.issue("a-twin", Role::Client, None, "mallory");
    let both = [
        std::fs::read(pki.tmp.path().join("a/ca.pem")).unwrap(),
        std::fs::read(pki.tmp.path().join("a-twin/ca.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(dir.join("ca.pem"), both).unwrap();
    let twin = client_config(&TlsDir::load(&dir).unwrap(), Expect::AnyServer).unwrap();
    assert_eq!(
        crate::dial::tls_refusal(&tls_addr, None, t, twin).await,
        Some(tidal_tls::rustls::Error::AlertReceived(
            tidal_tls::rustls::AlertDescription::DecryptError
        ))
    );
}
