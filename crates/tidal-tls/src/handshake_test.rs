//! Handshakes between an in-process tokio-rustls server and client on 127.0.0.1: who is let in, who is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::identity::Role;
use crate::issue::{issue, new_ca, Request, Validity};
use crate::server::{peer_identity, server_config};

const DAY: Duration = Duration::from_secs(86_400);

/// Two CAs and certificates from them, in a temporary directory.
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
        Pki {
            tmp,
            issued: std::cell::Cell::new(0),
        }
    }

    /// Issues `role`/`dc`/`name` from CA `ca`, valid for `validity`.
    fn issue_with(
        &self,
        ca: &str,
        role: Role,
        dc: Option<&str>,
        name: &str,
        validity: Validity,
    ) -> PathBuf {
        self.issued.set(self.issued.get() + 1);
        let out = self.tmp.path().join(format!("{}", self.issued.get()));
        let req = Request {
            identity: CertIdentity::new(role, dc, name).unwrap(),
            hosts: Vec::new(),
            validity,
        };
        issue(&self.tmp.path().join(ca), &req, &out).unwrap();
        out
    }

    fn dir(&self, ca: &str, role: Role, dc: Option<&str>, name: &str) -> TlsDir {
        TlsDir::load(self.issue_with(ca, role, dc, name, Validity::days(10))).unwrap()
    }

    /// A directory whose certificate expired yesterday (loaded as of two days ago).
    fn expired(&self, role: Role, dc: Option<&str>, name: &str) -> TlsDir {
        let now = SystemTime::now();
        let v = Validity {
            not_before: now - 3 * DAY,
            not_after: now - DAY,
        };
        let dir: &Path = &self.issue_with("a", role, dc, name, v);
        TlsDir::load_at(dir, now - 2 * DAY).unwrap()
    }
}

/// What each side of one connection saw: the server the client's identity
/// (or its error), the client Ok once a ping got its pong.
async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> (Result<CertIdentity, String>, Result<(), String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|e| format!("accept: {e}"))?;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let id = peer_identity(tls.get_ref().1).map_err(|e| e.to_string())?;
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping)
            .await
            .map_err(|e| format!("read: {e}"))?;
        tls.write_all(b"pong")
            .await
            .map_err(|e| format!("write: {e}"))?;
        tls.shutdown().await.ok();
        Ok(id)
    });
    let dial = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("tidal.invalid").unwrap();
        let mut tls = TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tls.write_all(b"ping")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut pong = [0u8; 4];
        tls.read_exact(&mut pong)
            .await
            .map_err(|e| format!("read: {e}"))?;
        assert_eq!(&pong, b"pong");
        Ok(())
    };
    let client_saw = tokio::time::timeout(Duration::from_secs(10), dial)
        .await
        .unwrap();
    let server_saw = tokio::time::timeout(Duration::from_secs(10), serve)
        .await
        .unwrap()
        .unwrap();
    (server_saw, client_saw)
}

fn server(dir: &TlsDir) -> Arc<ServerConfig> {
    server_config(dir).unwrap()
}

fn client(dir: &TlsDir, expect: Expect) -> Arc<ClientConfig> {
    client_config(dir, expect).unwrap()
}

fn node(dc: &str, id: u64) -> Expect {
    Expect::Node { dc: dc.into(), id }
}

/// The handshake was refused: both sides fail, and the side that refused
/// says `why`.
fn assert_refused(
    saw: (Result<CertIdentity, String>, Result<(), String>),
    by_server: bool,
    why: &str,
) {
    let (server, client) = saw;
    let (server, client) = (server.unwrap_err(), client.unwrap_err());
    let refuser = if by_server { &server } else { &client };
    assert!(
        refuser.contains(why),
        "expected {why:?}; server: {server}; client: {client}"
    );
}

#[tokio::test]
async fn a_server_and_clients_of_one_ca_connect_and_see_each_other() {
    let pki = Pki::new();
    let s1 = pki.dir("a", Role::Server, Some("dc1"), "1");
    let s2 = pki.dir("a", Role::Server, Some("dc1"), "2");
    let alice = pki.dir("a", Role::Client, None, "alice");
    let agent = pki.dir("a", Role::Agent, Some("dc1"), "gpu:1");
    for (dialer, expect) in [
        (&alice, Expect::AnyServer),
        (&alice, Expect::Dc("dc1".into())),
        (&agent, Expect::Dc("dc1".into())),
        (&s2, node("dc1", 1)),
    ] {
        let (server_saw, client_saw) = handshake(server(&s1), client(dialer, expect)).await;
        assert_eq!(client_saw, Ok(()));
        assert_eq!(server_saw.as_ref(), Ok(dialer.identity()));
    }
}

#[tokio::test]
async fn tls_1_2_works_too() {
    let pki = Pki::new();
    let s1 = pki.dir("a", Role::Server, Some("dc1"), "1");
    let alice = pki.dir("a", Role::Client, None, "alice");
    let provider = crate::files::provider();
    let verifier = ServerVerifier {
        roots: alice.roots.clone(),
        provider: provider.clone(),
        expect: node("dc1", 1),
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(alice.chain.clone(), alice.key())
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let (server_saw, client_saw) = handshake(server(&s1), Arc::new(config)).await;
    assert_eq!(client_saw, Ok(()));
    assert_eq!(server_saw.as_ref(), Ok(alice.identity()));
}

#[tokio::test]
async fn a_server_certificate_of_another_ca_is_refused() {
    let pki = Pki::new();
    let stranger = pki.dir("b", Role::Server, Some("dc1"), "1");
    let alice = pki.dir("a", Role::Client, None, "alice");
    let saw = handshake(server(&stranger), client(&alice, node("dc1", 1))).await;
    assert_refused(saw, false, "UnknownIssuer");
}

#[tokio::test]
async fn a_client_certificate_of_another_ca_is_refused() {
    let pki = Pki::new();
    let s1 = pki.dir("a", Role::Server, Some("dc1"), "1");
    let stranger = pki.dir("b", Role::Client, None, "mallory");
    let saw = handshake(server(&s1), client(&stranger, Expect::AnyServer)).await;
    // The stranger's own verifier refuses s1 as well; the server refuses
    // the stranger's certificate either way.
    let (server_saw, client_saw) = saw;
    assert!(server_saw.is_err() && client_saw.is_err());
}

#[tokio::test]
async fn agent_and_client_certificates_cannot_pose_as_a_server() {
    let pki = Pki::new();
    let alice = pki.dir("a", Role::Client, None, "alice");
    for posing in [
        pki.dir("a", Role::Client, Some("dc1"), "1"),
        pki.dir("a", Role::Agent, Some("dc1"), "1"),
    ] {
        let saw = handshake(server(&posing), client(&alice, Expect::AnyServer)).await;
        assert_refused(saw, false, "extended key usage for server");
    }
}

#[tokio::test]
async fn a_server_of_another_dc_or_another_node_is_refused() {
    let pki = Pki::new();
    let s1 = pki.dir("a", Role::Server, Some("dc1"), "1");
    let alice = pki.dir("a", Role::Client, None, "alice");
    let saw = handshake(server(&s1), client(&alice, Expect::Dc("dc2".into()))).await;
    assert_refused(
        saw,
        false,
        "names server '1' of dc 'dc1', not a server of dc 'dc2'",
    );
    let saw = handshake(server(&s1), client(&alice, node("dc2", 1))).await;
    assert_refused(saw, false, "not server '1' of dc 'dc2'");
    let saw = handshake(server(&s1), client(&alice, node("dc1", 2))).await;
    assert_refused(
        saw,
        false,
        "names server '1' of dc 'dc1', not server '2' of dc 'dc1'",
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let pki = Pki::new();
    let s1 = pki.dir("a", Role::Server, Some("dc1"), "1");
    let provider = crate::files::provider();
    let verifier = ServerVerifier {
        roots: s1.roots.clone(),
        provider: provider.clone(),
        expect: Expect::AnyServer,
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let saw = handshake(server(&s1), Arc::new(config)).await;
    assert_refused(saw, true, "peer sent no certificates");
}

#[tokio::test]
async fn expired_certificates_are_refused_on_both_sides() {
    let pki = Pki::new();
    let s1 = pki.dir("a", Role::Server, Some("dc1"), "1");
    let alice = pki.dir("a", Role::Client, None, "alice");
    let old_server = pki.expired(Role::Server, Some("dc1"), "1");
    let old_client = pki.expired(Role::Client, None, "bob");
    let saw = handshake(server(&old_server), client(&alice, node("dc1", 1))).await;
    assert_refused(saw, false, "certificate expired");
    let saw = handshake(server(&s1), client(&old_client, node("dc1", 1))).await;
    assert_refused(saw, true, "certificate expired");
}
