//! The TLS acceptor with real sockets on 127.0.0.1: a tonic server behind it and clients through `tidal_client::dial`.

use std::sync::Mutex;

use tidal_proto::v1::queues_client::QueuesClient;
use tidal_proto::v1::queues_server::{Queues, QueuesServer};
use tidal_proto::v1::{ListQueuesRequest, ListQueuesResponse, Queue, SetQueueRequest};
use tidal_tls::issue::{issue, new_ca, Request, Validity};
use tidal_tls::{client_config, server_config, CertIdentity, Expect, Role, TlsDir};
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;
use tonic::transport::Endpoint;

use super::*;

/// Two CAs, "a" and "b", and certificates from them, in a temporary directory.
struct Pki {
    tmp: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let tmp = tempfile::tempdir().unwrap();
        for ca in ["a", "b"] {
            new_ca(&tmp.path().join(ca), ca, Validity::days(30)).unwrap();
        }
        Pki { tmp }
    }

    fn dir(&self, ca: &str, role: Role, dc: Option<&str>, name: &str) -> TlsDir {
        let out = self.tmp.path().join(format!("{ca}-{role}-{name}"));
        let req = Request {
            identity: CertIdentity::new(role, dc, name).unwrap(),
            hosts: Vec::new(),
            validity: Validity::days(10),
        };
        issue(&self.tmp.path().join(ca), &req, &out).unwrap()
    }
}

/// Answers List with one queue named after the caller's certificate
/// identity ("plaintext" without one) and the listener that accepted it.
struct WhoAmI;

#[tonic::async_trait]
impl Queues for WhoAmI {
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
        request: tonic::Request<ListQueuesRequest>,
    ) -> Result<tonic::Response<ListQueuesResponse>, tonic::Status> {
        let caller = caller(&request).expect("the server sets the caller");
        let name = caller
            .cert
            .as_ref()
            .map_or("plaintext".to_string(), |c| c.to_uri());
        Ok(tonic::Response::new(ListQueuesResponse {
            queues: vec![Queue {
                name,
                strategy: caller.listener.to_string(),
                ..Queue::default()
            }],
            ..ListQueuesResponse::default()
        }))
    }
}

/// Everything logged while it is installed, and a wake-up per line.
#[derive(Clone, Default)]
struct Logs {
    text: Arc<Mutex<String>>,
    written: Arc<Notify>,
}

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.text
            .lock()
            .unwrap()
            .push_str(&String::from_utf8_lossy(buf));
        self.written.notify_waiters();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Waits (up to `within`) until the log holds a line with every one of `parts`.
    async fn wait_for(&self, parts: &[&str], within: Duration) -> String {
        let found = || {
            let text = self.text.lock().unwrap();
            text.lines()
                .find(|l| parts.iter().all(|p| l.contains(p)))
                .map(str::to_string)
        };
        tokio::time::timeout(within, async {
            loop {
                let written = self.written.notified();
                if let Some(line) = found() {
                    return line;
                }
                written.await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no log line with {parts:?} within {within:?}; the log:\n{}",
                self.text.lock().unwrap()
            )
        })
    }
}

/// A tonic server behind the TLS acceptor on 127.0.0.1, serving [`WhoAmI`]
/// with a server certificate of CA "a"; stopped by [`Server::stop`].
struct Server {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(pki: &Pki) -> Server {
        let config = server_config(&pki.dir("a", Role::Server, Some("dc-a"), "1")).unwrap();
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(QueuesServer::new(WhoAmI))
                .serve_with_incoming_shutdown(
                    incoming(Listeners::from(socket), Some(config)),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .unwrap();
        });
        Server { addr, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

/// A client of `addr` through `tidal_client::dial` with the certificate `dir`.
fn client(addr: SocketAddr, dir: &TlsDir) -> QueuesClient<tonic::transport::Channel> {
    let expect = Expect::Node {
        dc: "dc-a".into(),
        id: 1,
    };
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let channel = tidal_client::dial::connect_lazy(
        endpoint,
        None,
        Duration::from_secs(5),
        Some(client_config(dir, expect).unwrap()),
    );
    QueuesClient::new(channel)
}

async fn whoami(
    client: &mut QueuesClient<tonic::transport::Channel>,
) -> Result<Queue, tonic::Status> {
    let mut queues = client.list(ListQueuesRequest {}).await?.into_inner().queues;
    Ok(queues.remove(0))
}

/// Installs a subscriber that writes to the returned [`Logs`] on this
/// thread (the tests run on a current-thread runtime).
fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    (logs, guard)
}

#[tokio::test]
async fn a_call_over_tls_sees_the_callers_certificate_identity() {
    let pki = Pki::new();
    let server = Server::start(&pki).await;
    let alice = pki.dir("a", Role::Client, None, "alice");
    let agent = pki.dir("a", Role::Agent, Some("dc-a"), "gpu-7");

    let got = whoami(&mut client(server.addr, &alice)).await.unwrap();
    assert_eq!(got.name, alice.identity().to_uri());
    assert_eq!(got.strategy, "public");
    let got = whoami(&mut client(server.addr, &agent)).await.unwrap();
    assert_eq!(got.name, "tidal://agent/dc-a/gpu-7");
    server.stop().await;
}

#[tokio::test]
async fn a_client_of_another_ca_fails_the_handshake_and_the_server_logs_it() {
    let (logs, _guard) = capture_logs();
    let pki = Pki::new();
    let server = Server::start(&pki).await;
    let stranger = pki.dir("b", Role::Client, None, "mallory");

    let err = whoami(&mut client(server.addr, &stranger))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let line = logs
        .wait_for(
            &["WARN", "TLS handshake failed", "remote=127.0.0.1:"],
            Duration::from_secs(10),
        )
        .await;
    assert!(line.contains("error="), "{line}");
    server.stop().await;
}

#[tokio::test]
async fn a_silent_client_holds_up_no_other_and_is_dropped_after_the_timeout() {
    let (logs, _guard) = capture_logs();
    let pki = Pki::new();
    let server = Server::start(&pki).await;
    let alice = pki.dir("a", Role::Client, None, "alice");

    let started = Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let got = whoami(&mut client(server.addr, &alice)).await.unwrap();
    assert_eq!(got.name, alice.identity().to_uri());
    assert!(
        started.elapsed() < HANDSHAKE_TIMEOUT,
        "{:?}",
        started.elapsed()
    );

    // The silent connection is closed once its handshake times out.
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(HANDSHAKE_TIMEOUT * 2, silent.read(&mut buf))
        .await
        .expect("the server closes a connection that sends no handshake");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() >= HANDSHAKE_TIMEOUT);
    logs.wait_for(
        &["TLS handshake failed", "no TLS handshake within 5 s"],
        Duration::from_secs(5),
    )
    .await;
    server.stop().await;
}

#[test]
fn failures_from_one_ip_are_logged_first_then_summed_up_every_interval() {
    let mut log = FailureLog::default();
    let a: IpAddr = "127.0.0.2".parse().unwrap();
    let b: IpAddr = "127.0.0.3".parse().unwrap();
    let t0 = Instant::now();
    assert_eq!(log.note(a, t0), Some(0));
    assert_eq!(log.note(a, t0 + Duration::from_secs(1)), None);
    assert_eq!(log.note(a, t0 + Duration::from_secs(9)), None);
    assert_eq!(log.note(b, t0 + Duration::from_secs(9)), Some(0));
    assert_eq!(log.note(a, t0 + FAILURE_LOG_INTERVAL), Some(2));
    assert_eq!(log.note(a, t0 + FAILURE_LOG_INTERVAL), None);
    assert_eq!(log.note(a, t0 + 2 * FAILURE_LOG_INTERVAL), Some(1));
}
