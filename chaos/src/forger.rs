//! Forged peer traffic (S29): processes that are not members of the DC call
//! every node's Raft service (HoldElections, Campaign, Removed,
//! AppendEntries, Vote) over and over. Three present certificates of the
//! run's CA that name a client, a server of another DC or a server that is
//! no member: each call must be refused (PERMISSION_DENIED). Two present
//! none: one speaks TLS without a client certificate, one plaintext to the
//! TLS port; neither may get past the handshake, so no call is answered at
//! all. The counts go into the history.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidal_client::tidal_tls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tidal_client::tidal_tls::rustls::crypto::{ring, CryptoProvider};
use tidal_client::tidal_tls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tidal_client::tidal_tls::rustls::{self, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tidal_client::tidal_tls::{client_config, Expect, TlsDir};
use tidal_proto::raft::raft_client::RaftClient;
use tidal_proto::raft::{CampaignRequest, HoldElectionsRequest, RaftPayload, RemovedNotice};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use crate::cluster::Layout;

/// The node id the "no member" forger's certificate names.
pub const STRANGER_ID: u64 = 99;
/// The DC the "other DC" forger's certificate names.
pub const OTHER_DC: &str = "elsewhere";

/// The pause between two rounds of a forger with a certificate (about 20
/// rounds a second).
const CERT_ROUND: Duration = Duration::from_millis(50);
/// ... and of one without: each of its calls costs the node a refused
/// handshake, so it calls less often (about 5 rounds a second).
const HANDSHAKE_ROUND: Duration = Duration::from_millis(200);

/// How a forger reaches the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Approach {
    /// Mutual TLS with a certificate of the run's CA: the handshake
    /// succeeds and the peer plane's policy must refuse every call.
    Certificate,
    /// TLS without a client certificate, or plaintext to the TLS port: the
    /// node must refuse the handshake, so no call is answered.
    NoCertificate,
}

/// What one forger's calls got back.
#[derive(Clone, Debug)]
pub struct Tally {
    pub approach: Approach,
    /// Calls refused with PERMISSION_DENIED.
    pub denied: u64,
    /// Calls that failed otherwise (a refused handshake, a node down, a
    /// timeout).
    pub failed: u64,
    /// Calls a node accepted: each one is a hole.
    pub accepted: u64,
    /// The first accepted call, for the report.
    pub first_accepted: Option<String>,
    /// The first answer other than a refusal expected of the approach.
    pub first_unexpected: Option<String>,
    /// The first failure other than PERMISSION_DENIED, for the report.
    pub first_failed: Option<String>,
}

impl Tally {
    fn new(approach: Approach) -> Tally {
        Tally {
            approach,
            denied: 0,
            failed: 0,
            accepted: 0,
            first_accepted: None,
            first_unexpected: None,
            first_failed: None,
        }
    }

    /// Whether the forger got nothing through: with a certificate every
    /// call reached the policy and some were refused by it; without, no
    /// call was answered (not even refused) and some failed.
    pub fn held(&self) -> bool {
        match self.approach {
            Approach::Certificate => self.accepted == 0 && self.denied > 0,
            Approach::NoCertificate => self.accepted == 0 && self.denied == 0 && self.failed > 0,
        }
    }
}

/// The running forgers; [`Forgers::stop`] ends them and returns their tallies.
pub struct Forgers {
    stop: Arc<AtomicBool>,
    tasks: Vec<(String, JoinHandle<()>, Arc<Mutex<Tally>>)>,
}

impl Forgers {
    /// One forger per identity, each calling every node in `nodes` (id,
    /// address) in turn. Needs the layout's TLS.
    pub fn start(layout: &Layout, nodes: Vec<(u64, SocketAddr)>) -> anyhow::Result<Forgers> {
        let Some(pki) = &layout.tls else {
            anyhow::bail!("forged peer traffic needs TLS (the run's CA)");
        };
        let with_cert = |dir: std::path::PathBuf| -> anyhow::Result<Option<Arc<ClientConfig>>> {
            Ok(Some(client_config(
                &TlsDir::load(&dir)?,
                Expect::AnyServer,
            )?))
        };
        let forgers: Vec<(String, Approach, Option<Arc<ClientConfig>>)> = vec![
            (
                "client 'forger'".into(),
                Approach::Certificate,
                with_cert(pki.client("forger")?)?,
            ),
            (
                format!("server 1 of dc '{OTHER_DC}'"),
                Approach::Certificate,
                with_cert(pki.server(OTHER_DC, 1)?)?,
            ),
            (
                format!("server {STRANGER_ID} of dc '{}' (no member)", layout.dc),
                Approach::Certificate,
                with_cert(pki.server(&layout.dc, STRANGER_ID)?)?,
            ),
            (
                "TLS without a client certificate".into(),
                Approach::NoCertificate,
                Some(without_certificate()?),
            ),
            (
                "plaintext to the TLS port".into(),
                Approach::NoCertificate,
                None,
            ),
        ];
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (who, approach, config) in forgers {
            let tally = Arc::new(Mutex::new(Tally::new(approach)));
            let task = tokio::spawn(forge(config, nodes.clone(), stop.clone(), tally.clone()));
            tasks.push((who, task, tally));
        }
        Ok(Forgers { stop, tasks })
    }

    /// Stops every forger; each one's identity and tally.
    pub async fn stop(self) -> Vec<(String, Tally)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for (who, task, tally) in self.tasks {
            let _ = task.await;
            let t = tally.lock().expect("tally lock").clone();
            out.push((who, t));
        }
        out
    }
}

/// A TLS client that presents no certificate and believes any server (an
/// outsider who found the port: what it sends never reaches a handler).
fn without_certificate() -> anyhow::Result<Arc<ClientConfig>> {
    let provider = Arc::new(ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts any server certificate (signatures still checked).
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A Raft client of `addr`: over TLS with `config`, else plaintext.
fn raft(addr: SocketAddr, config: Option<Arc<ClientConfig>>) -> RaftClient<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).expect("a socket address");
    let channel = tidal_client::dial::connect_lazy(
        endpoint.timeout(Duration::from_millis(500)),
        None,
        Duration::from_millis(300),
        config,
    );
    RaftClient::new(channel)
}

/// Calls every node, every RPC, until `stop`, one round every
/// [`CERT_ROUND`] or [`HANDSHAKE_ROUND`].
async fn forge(
    config: Option<Arc<ClientConfig>>,
    nodes: Vec<(u64, SocketAddr)>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    let mut clients: Vec<(u64, RaftClient<Channel>)> = nodes
        .iter()
        .map(|(id, addr)| (*id, raft(*addr, config.clone())))
        .collect();
    let approach = tally.lock().expect("tally lock").approach;
    let count = |what: String, r: Result<(), tonic::Status>| {
        let mut t = tally.lock().expect("tally lock");
        match r {
            Ok(()) => {
                t.accepted += 1;
                t.first_accepted.get_or_insert(what);
            }
            Err(s) if s.code() == tonic::Code::PermissionDenied => {
                t.denied += 1;
                if approach == Approach::NoCertificate {
                    t.first_unexpected.get_or_insert(format!(
                        "{what}: {:?} {}",
                        s.code(),
                        s.message()
                    ));
                }
            }
            Err(s) => {
                t.failed += 1;
                t.first_failed
                    .get_or_insert(format!("{what}: {:?} {}", s.code(), s.message()));
            }
        }
    };
    let payload = || RaftPayload {
        data: vec![0; 16],
        format: 2,
        max_format_version: 0,
    };
    let pause = match approach {
        Approach::Certificate => CERT_ROUND,
        Approach::NoCertificate => HANDSHAKE_ROUND,
    };
    let mut round: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        for (id, c) in clients.iter_mut() {
            let other = if *id == 1 { 2 } else { 1 };
            let r = c
                .hold_elections(HoldElectionsRequest { millis: 60_000 })
                .await;
            count(format!("HoldElections at node {id}"), r.map(|_| ()));
            let r = c.campaign(CampaignRequest { node_id: *id }).await;
            count(format!("Campaign at node {id}"), r.map(|_| ()));
            let r = c
                .removed(RemovedNotice {
                    node_id: *id,
                    leader_id: other,
                    membership_index: u64::MAX / 2 + round,
                })
                .await;
            count(format!("Removed at node {id}"), r.map(|_| ()));
            let r = c.append_entries(payload()).await;
            count(format!("AppendEntries at node {id}"), r.map(|_| ()));
            let r = c.vote(payload()).await;
            count(format!("Vote at node {id}"), r.map(|_| ()));
        }
        tokio::time::sleep(pause).await;
    }
}
