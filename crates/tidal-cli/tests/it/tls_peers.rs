//! Servers with `--tls-dir` (certificates from `tidal cert ca|issue`): three real processes form a DC over mutual TLS, replicate and fail over; a server whose certificate names another node or DC, or comes from another CA, can neither join nor vote; raw Raft calls with a client certificate are PERMISSION_DENIED and without one fail the handshake; two DCs exchange over TLS and refuse an exchange from a server of another origin.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tidal_proto::raft::raft_client::RaftClient;
use tidal_proto::v1;
use tidal_testkit::ports::{wait_listen_addr, Port};
use tidal_tls::rustls::ClientConfig;
use tidal_tls::{client_config, Expect, TlsDir};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::harness::{tidal_exe, Cluster, ClusterOpts};

const WAIT: Duration = Duration::from_secs(30);

/// Runs `tidal ARGS`; fails with its stderr unless it exits 0.
fn tidal(args: &[&str]) -> anyhow::Result<()> {
    let o = std::process::Command::new(tidal_exe())
        .args(args)
        .env_remove("RUST_LOG")
        .output()?;
    anyhow::ensure!(
        o.status.success(),
        "tidal {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}

/// Two CAs ("ca", "other-ca") and the certificates the test uses, in `dir`.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> anyhow::Result<Pki> {
        let pki = Pki {
            dir: dir.join("pki"),
        };
        for ca in ["ca", "other-ca"] {
            let out = pki.path(ca);
            tidal(&["cert", "ca", "--out", &out, "--name", ca, "--days", "2"])?;
        }
        Ok(pki)
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// A server certificate of node `id` of `dc` from `ca`, in a directory of its own.
    fn server(&self, ca: &str, dc: &str, id: u64) -> anyhow::Result<String> {
        let out = self.path(&format!("{ca}-{dc}-{id}"));
        let id = id.to_string();
        tidal(&[
            "cert",
            "issue",
            "--ca",
            &self.path(ca),
            "--role",
            "server",
            "--dc",
            dc,
            "--name",
            &id,
            "--days",
            "1",
            "--out",
            &out,
        ])?;
        Ok(out)
    }

    /// A client certificate (any DC) from "ca".
    fn client(&self, name: &str) -> anyhow::Result<String> {
        let out = self.path(&format!("client-{name}"));
        tidal(&[
            "cert",
            "issue",
            "--ca",
            &self.path("ca"),
            "--role",
            "client",
            "--name",
            name,
            "--days",
            "1",
            "--out",
            &out,
        ])?;
        Ok(out)
    }
}

/// A client configuration from the TLS directory `dir` that accepts `expect`.
fn tls(dir: &str, expect: Expect) -> anyhow::Result<Arc<ClientConfig>> {
    Ok(client_config(&TlsDir::load(dir)?, expect)?)
}

fn node_1() -> Expect {
    Expect::Node {
        dc: "dc1".into(),
        id: 1,
    }
}

/// A Raft client of `addr` over `config`.
fn raft(addr: &str, config: Arc<ClientConfig>) -> anyhow::Result<RaftClient<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
    Ok(RaftClient::new(tidal_client::dial::connect_lazy(
        endpoint,
        None,
        Duration::from_secs(5),
        Some(config),
    )))
}

/// Vote, Removed and HoldElections at `addr` over `config`: each call's status.
async fn forged(
    addr: &str,
    config: Arc<ClientConfig>,
    leader: u64,
) -> anyhow::Result<Vec<tonic::Status>> {
    let mut c = raft(addr, config)?;
    let vote = tidal_proto::raft::RaftPayload {
        data: vec![1, 2, 3],
        format: 2,
        max_format_version: 0,
    };
    let removed = tidal_proto::raft::RemovedNotice {
        node_id: 1,
        leader_id: leader,
        membership_index: 1,
    };
    let hold = tidal_proto::raft::HoldElectionsRequest { millis: 40_000 };
    Ok(vec![
        c.vote(vote).await.map(|_| ()).unwrap_err(),
        c.removed(removed).await.map(|_| ()).unwrap_err(),
        c.hold_elections(hold).await.map(|_| ()).unwrap_err(),
    ])
}

/// A rustls client that trusts "ca" and presents no certificate.
fn no_cert(pki: &Pki) -> anyhow::Result<Arc<ClientConfig>> {
    use tidal_tls::rustls::pki_types::pem::PemObject;
    use tidal_tls::rustls::pki_types::CertificateDer;
    let mut roots = tidal_tls::rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(Path::new(&pki.path("ca")).join("ca.pem"))? {
        roots.add(c?)?;
    }
    let provider = Arc::new(tidal_tls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A `tidal server` that is no member: `--id id --dc dc` with the TLS
/// directory `dir`, listening on a port of its own; returns once it listens.
async fn stranger(
    c: &Cluster,
    name: &str,
    id: u64,
    dc: &str,
    dir: &str,
) -> anyhow::Result<(tidal_testkit::Proc, Port)> {
    let port = Port::local()?;
    let data = c.dir.path().join(name);
    let args = [
        "server",
        "--id",
        &id.to_string(),
        "--dc",
        dc,
        "--listen",
        &port.addr().to_string(),
        "--data",
        &data.to_string_lossy(),
        "--tls-dir",
        dir,
    ]
    .map(String::from)
    .to_vec();
    let p = c.spawn(name, args, &c.dir.path().join(format!("{name}.log")))?;
    wait_listen_addr(&data, WAIT).await?;
    Ok((p, port))
}

/// Members, leader and term as the leader reports them.
async fn view(c: &Cluster) -> anyhow::Result<(Vec<(u64, bool)>, u64, u64)> {
    let m = c.client.members().await?;
    let mut members: Vec<(u64, bool)> = m.members.iter().map(|m| (m.id, m.voter)).collect();
    members.sort();
    Ok((members, m.leader_id, m.term))
}

fn task(payload: &str) -> v1::TaskSpec {
    v1::TaskSpec {
        task_type: "t2i".into(),
        payload: payload.as_bytes().to_vec(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_with_tls_form_a_dc_and_let_in_no_one_else() -> anyhow::Result<()> {
    // Certificates of the test's own CAs, not the kit's.
    let mut c = Cluster::new_spec(
        ClusterOpts {
            nodes: 3,
            join: false,
            ..ClusterOpts::default()
        },
        |s| s.tls = false,
    )?;
    let pki = Pki::new(c.dir.path())?;
    let alice = pki.client("alice")?;
    let mut opts = c.spec.client.clone();
    opts.tls = Some(tls(&alice, Expect::Dc("dc1".into()))?);
    c.spec.client = opts.clone();
    c.client = tidal_client::Client::with_options(c.endpoints(), opts)?;

    // Three servers with certificates of their own form the DC.
    let own = |id: u64| -> anyhow::Result<Vec<String>> {
        Ok(vec!["--tls-dir".into(), pki.server("ca", "dc1", id)?])
    };
    c.start_node_with(1, true, &own(1)?)?;
    c.wait_leader(WAIT).await?;
    for id in 2..=3 {
        c.start_node_with(id, false, &own(id)?)?;
        let addr = c.node(id).addr.clone();
        c.client.add_learner_with_peer(id, &addr, None).await?;
        c.wait_caught_up(id, WAIT).await?;
        c.client.promote(id).await?;
    }
    c.client.submit_one(task("before")).await?;
    for id in 1..=3 {
        c.wait_caught_up(id, WAIT).await?;
    }
    let (members, leader, term) = view(&c).await?;
    assert_eq!(members, [(1, true), (2, true), (3, true)]);
    let node1 = c.node(1).addr.clone();

    // Servers that are not what add-learner names cannot join.
    let (mut as_5, _p5) = stranger(&c, "as-5", 5, "dc1", &pki.server("ca", "dc1", 5)?).await?;
    let (mut dc2, _p2) = stranger(&c, "dc2-4", 4, "dc2", &pki.server("ca", "dc2", 4)?).await?;
    let (mut other, _po) = stranger(
        &c,
        "other-ca-4",
        4,
        "dc1",
        &pki.server("other-ca", "dc1", 4)?,
    )
    .await?;
    for (p, why) in [
        (
            &as_5,
            "names server '5' of dc 'dc1', not server '4' of dc 'dc1'",
        ),
        (
            &dc2,
            "names server '4' of dc 'dc2', not server '4' of dc 'dc1'",
        ),
        (&other, "not signed by this server's CA"),
    ] {
        let addr = p.args[p.args.iter().position(|a| a == "--listen").unwrap() + 1].clone();
        let e = c
            .client
            .add_learner_with_peer(4, &addr, None)
            .await
            .unwrap_err();
        assert_eq!(e.code, Code::FailedPrecondition, "{e}");
        assert!(e.message.contains(why), "{}: {e}", p.name);
    }

    // Nor can they vote or make any other Raft call.
    let as_5_cert = tls(&pki.path("ca-dc1-5"), node_1())?;
    for s in forged(&node1, as_5_cert, leader).await? {
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        assert!(
            s.message().contains("server '5', which is not a member"),
            "{s:?}"
        );
    }
    let dc2_cert = tls(&pki.path("ca-dc2-4"), node_1())?;
    for s in forged(&node1, dc2_cert, leader).await? {
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        assert!(
            s.message()
                .contains("names server '4' of dc 'dc2', not a server of dc 'dc1'"),
            "{s:?}"
        );
    }
    let other_cert = tls(&pki.path("other-ca-dc1-4"), node_1())?;
    for s in forged(&node1, other_cert, leader).await? {
        assert_ne!(s.code(), Code::Ok, "{s:?}");
        assert_ne!(
            s.code(),
            Code::PermissionDenied,
            "a handshake failure: {s:?}"
        );
    }
    // A client certificate is refused by the peer plane; no certificate
    // fails the handshake.
    for s in forged(&node1, tls(&alice, node_1())?, leader).await? {
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        assert!(
            s.message()
                .contains("client 'alice' of any dc, not a server of dc 'dc1'"),
            "{s:?}"
        );
    }
    for s in forged(&node1, no_cert(&pki)?, leader).await? {
        assert_ne!(s.code(), Code::Ok, "{s:?}");
        assert_ne!(
            s.code(),
            Code::PermissionDenied,
            "a handshake failure: {s:?}"
        );
    }
    // A member cannot speak for another: node 2's certificate naming node 3.
    let mut as_2 = raft(&node1, tls(&pki.path("ca-dc1-2"), node_1())?)?;
    let s = as_2
        .removed(tidal_proto::raft::RemovedNotice {
            node_id: 1,
            leader_id: 3,
            membership_index: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(
        s.message()
            .contains("names node 3, but the caller's certificate names node 2"),
        "{s:?}"
    );

    // Nothing changed: the same members, leader and term; node 1 runs on and
    // logged the refusals and the failed handshakes with the address.
    assert_eq!(view(&c).await?, (members.clone(), leader, term));
    assert!(
        c.node_mut(1).proc.as_mut().unwrap().running(),
        "{}",
        c.logs_tail(20)
    );
    let log = std::fs::read_to_string(c.dir.path().join("node1.log"))?;
    assert!(log.contains("refused a call"), "{log}");
    assert!(log.contains("TLS handshake failed"), "{log}");
    // Its certificate is valid for a day: a warning at start.
    assert!(log.contains("certificate expires soon"), "{log}");
    assert!(!log.contains("was removed from the cluster"), "{log}");
    for p in [&mut as_5, &mut dc2, &mut other] {
        p.kill();
    }

    // The DC fails over over TLS and replicates on.
    c.kill_node(leader);
    let deadline = tokio::time::Instant::now() + WAIT;
    let new = loop {
        if let Some(l) = c.leader().await.filter(|l| *l != leader) {
            break l;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no new leader\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    c.client.submit_one(task("after")).await?;
    for id in (1..=3).filter(|id| *id != leader) {
        c.wait_caught_up(id, WAIT).await?;
    }
    let (_, now_leader, now_term) = view(&c).await?;
    assert_eq!(now_leader, new);
    assert!(now_term > term);
    Ok(())
}

/// A server refuses to start on a certificate that is not its own, naming
/// the file and what the certificate says (exit 1, as other setting errors).
#[test]
fn a_server_starts_only_on_a_certificate_that_names_it() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let pki = Pki::new(tmp.path())?;
    let data = tmp.path().join("data");
    for (dir, why) in [
        (
            pki.server("ca", "dc1", 5)?,
            "the certificate names server '5' of dc 'dc1', not server '4' of dc 'dc1'",
        ),
        (
            pki.client("bob")?,
            "the certificate names client 'bob' of any dc, not server '4' of dc 'dc1'",
        ),
    ] {
        let o = std::process::Command::new(tidal_exe())
            .args([
                "server",
                "--id",
                "4",
                "--dc",
                "dc1",
                "--listen",
                "127.0.0.1:0",
            ])
            .arg("--data")
            .arg(&data)
            .args(["--tls-dir", &dir])
            .env_remove("RUST_LOG")
            .output()?;
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(&format!("{dir}/cert.pem: {why}")), "{err}");
    }
    Ok(())
}

/// Two DCs of one server each, over TLS, naming each other as peers: each
/// link comes up (an exchange with the other DC's servers, expected by DC);
/// an exchange from a server of this DC claiming another origin, or from a
/// client, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dcs_exchange_over_tls() -> anyhow::Result<()> {
    let one = |dc: &str| ClusterOpts {
        nodes: 1,
        dc: dc.into(),
        join: false,
        ..ClusterOpts::default()
    };
    let own_certs = |s: &mut tidal_testkit::ClusterSpec| s.tls = false;
    let mut dcs = [
        Cluster::new_spec(one("dc1"), own_certs)?,
        Cluster::new_spec(one("dc2"), own_certs)?,
    ];
    let pki = Pki::new(dcs[0].dir.path())?;
    let alice = pki.client("alice")?;
    let addrs = [dcs[0].node(1).addr.clone(), dcs[1].node(1).addr.clone()];
    for (i, c) in dcs.iter_mut().enumerate() {
        let (me, other) = (format!("dc{}", i + 1), format!("dc{}", 2 - i));
        let mut opts = c.spec.client.clone();
        opts.tls = Some(tls(&alice, Expect::Dc(me.clone()))?);
        c.client = tidal_client::Client::with_options(c.endpoints(), opts)?;
        let own = [
            "--tls-dir".to_string(),
            pki.server("ca", &me, 1)?,
            "--peer".into(),
            format!("{other}={}", addrs[1 - i]),
        ];
        c.start_node_with(1, true, &own)?;
    }
    for c in &dcs {
        c.wait_leader(WAIT).await?;
    }
    for c in &dcs {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let s = c.client.dc_status().await?;
            if s.peers
                .iter()
                .all(|p| p.link == "up" && p.summary.is_some())
            {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{}: the link is not up: {s:?}\n{}",
                s.dc,
                c.logs_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let exchange = |config: Arc<ClientConfig>| {
        let addr = addrs[0].clone();
        async move {
            let endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
            let channel = tidal_client::dial::connect_lazy(
                endpoint,
                None,
                Duration::from_secs(5),
                Some(config),
            );
            let request = v1::ExchangeRequest {
                origin_dc: "dc2".into(),
                target_dc: "dc1".into(),
                body: Vec::new(),
            };
            let s = v1::dcs_client::DcsClient::new(channel)
                .exchange(request)
                .await
                .map(|_| ())
                .unwrap_err();
            anyhow::Ok(s)
        }
    };
    let dc1 = Expect::Dc("dc1".into());
    let s = exchange(tls(&pki.path("ca-dc1-1"), dc1.clone())?).await?;
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(
        s.message()
            .contains("names server '1' of dc 'dc1', not a server of dc 'dc2'"),
        "{s:?}"
    );
    let s = exchange(tls(&alice, dc1)?).await?;
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(s.message().contains("client 'alice'"), "{s:?}");
    Ok(())
}
