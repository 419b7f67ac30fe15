//! Mutual TLS end to end: a 3-node DC with `--tls-dir` (certificates from `tidal cert`), the CLI and an agent over TLS, and what is refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tidal_testkit::{Cluster, ClusterSpec};
use tidal_tls::{Expect, TlsDir};

use crate::harness::{recording_worker, tidal_exe, AgentOpts};

/// Runs `tidal cert ARGS`; panics with its stderr unless it exits 0.
fn cert(args: &[&str]) {
    let o = Command::new(tidal_exe())
        .arg("cert")
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "tidal cert {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// CAs and certificates in one directory: `DIR/<ca>` is a CA, every
/// other directory a TLS directory (`--tls-dir`).
struct Pki(PathBuf);

impl Pki {
    fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        Pki(dir.to_path_buf())
    }

    fn ca(&self, name: &str) {
        cert(&["ca", "--out", &self.0.join(name).display().to_string()]);
    }

    /// `tidal cert issue --ca DIR/ca --role ROLE [--dc DC] --name NAME --out DIR/out`.
    fn issue(&self, ca: &str, role: &str, dc: Option<&str>, name: &str, out: &str) -> PathBuf {
        let dir = self.0.join(out);
        let (ca, out_arg) = (
            self.0.join(ca).display().to_string(),
            dir.display().to_string(),
        );
        let mut args = vec![
            "issue", "--ca", &ca, "--role", role, "--name", name, "--out", &out_arg,
        ];
        if let Some(dc) = dc {
            args.extend(["--dc", dc]);
        }
        cert(&args);
        dir
    }
}

/// The CLI against `c` with `env` (TIDAL_ENDPOINTS names every node).
fn cli(c: &Cluster, env: &[(&str, &Path)], args: &[&str]) -> (Output, Duration) {
    let mut cmd = Command::new(tidal_exe());
    cmd.args(args)
        .env("TIDAL_ENDPOINTS", c.endpoints_arg())
        .env_remove("TIDAL_TLS_DIR")
        .env_remove("TIDAL_INSECURE")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let o = cmd.output().unwrap();
    (o, started.elapsed())
}

/// [`cli`] that must exit 0; its stdout.
fn cli_ok(c: &Cluster, env: &[(&str, &Path)], args: &[&str]) -> String {
    let (o, _) = cli(c, env, args);
    assert!(
        o.status.success(),
        "tidal {args:?} exited {:?}: {}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr),
        c.logs_tail(20)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// [`cli`] that must exit 1 within 5 s (its budget is 15 s) saying `why`.
fn cli_refused(c: &Cluster, env: &[(&str, &Path)], args: &[&str], why: &str) {
    let (o, took) = cli(c, env, args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "tidal {args:?}: {stderr}");
    assert!(stderr.contains(why), "tidal {args:?}: {stderr}");
    assert!(
        took < Duration::from_secs(5),
        "tidal {args:?} took {took:?}: {stderr}"
    );
}

/// Polls `tidal task get ID` until the task is finished; returns it.
async fn finished(c: &Cluster, env: &[(&str, &Path)], id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t: serde_json::Value =
            serde_json::from_str(&cli_ok(c, env, &["task", "get", id, "-o", "json"])).unwrap();
        if ["succeeded", "failed", "cancelled"].contains(&t["state"].as_str().unwrap_or("")) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "task not done: {t}\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_dc_serves_the_cli_and_an_agent_and_refuses_strangers() {
    let pki_dir = tempfile::Builder::new()
        .prefix("tidal-it-pki-")
        .tempdir()
        .unwrap();
    let pki = Pki::new(pki_dir.path());
    pki.ca("ca");
    pki.ca("other-ca");
    let nodes: Vec<PathBuf> = (1..=3)
        .map(|i| {
            pki.issue(
                "ca",
                "server",
                Some("dc1"),
                &i.to_string(),
                &format!("node-{i}"),
            )
        })
        .collect();
    let alice = pki.issue("ca", "client", None, "alice", "alice");
    let gpu = pki.issue("ca", "agent", Some("dc1"), "gpu-1", "gpu-1");

    // Certificates of its own (not the kit's), and no tokens: the test is
    // about what TLS alone lets in.
    let mut spec = ClusterSpec::new(tidal_exe());
    spec.tls = false;
    spec.tokens = false;
    spec.join = false;
    spec.prefix = "tidal-it-".into();
    spec.keep_var = Some("TIDAL_IT_KEEP".into());
    spec.rust_log = Some(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
    spec.client.tls =
        Some(tidal_tls::client_config(&TlsDir::load(&alice).unwrap(), Expect::AnyServer).unwrap());
    let mut c = Cluster::new(spec).unwrap();
    let tls = |dir: &Path| vec!["--tls-dir".to_string(), dir.display().to_string()];
    c.start_node_with(1, true, &tls(&nodes[0])).unwrap();
    c.wait_leader(Duration::from_secs(20)).await.unwrap();
    for id in 2..=3 {
        c.start_node_with(id, false, &tls(&nodes[id as usize - 1]))
            .unwrap();
    }

    // Membership through the CLI, with TIDAL_TLS_DIR.
    let as_alice: &[(&str, &Path)] = &[("TIDAL_TLS_DIR", &alice)];
    for id in 2..=3u64 {
        let addr = c.node(id).addr.clone();
        let id = id.to_string();
        cli_ok(
            &c,
            as_alice,
            &[
                "cluster",
                "add-learner",
                "--id",
                &id,
                "--addr",
                &addr,
                "--wait",
            ],
        );
        cli_ok(&c, as_alice, &["cluster", "promote", &id]);
    }
    let members: serde_json::Value =
        serde_json::from_str(&cli_ok(&c, as_alice, &["cluster", "members", "-o", "json"])).unwrap();
    let voters = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["voter"] == true)
        .count();
    assert_eq!(voters, 3, "{members}");

    // An agent with an agent certificate of its DC runs real tasks.
    let runs = c.dir.path().join("runs.log");
    let worker = recording_worker(&runs);
    let worker: Vec<&str> = worker.iter().map(String::as_str).collect();
    let mut agent = AgentOpts::new("gpu-1", &["t2i"]).command(&worker);
    agent.extra_args = tls(&gpu);
    c.start_agent(agent).unwrap();
    c.wait_agents(1, Duration::from_secs(30)).await.unwrap();
    let https: Vec<String> = c
        .endpoints()
        .iter()
        .map(|e| format!("https://{e}"))
        .collect();
    let alice_arg = alice.display().to_string();
    for (n, endpoints) in [c.endpoints_arg(), https.join(",")].iter().enumerate() {
        let payload = format!("over tls {n}");
        let id = cli_ok(
            &c,
            &[],
            &[
                "task",
                "submit",
                "--type",
                "t2i",
                "--payload",
                &payload,
                "--endpoints",
                endpoints,
                "--tls-dir",
                &alice_arg,
            ],
        )
        .trim()
        .to_string();
        let t = finished(&c, as_alice, &id).await;
        assert_eq!(t["state"], "succeeded", "{t}\n{}", c.logs_tail(30));
        assert_eq!(t["agent"], "gpu-1");
        assert_eq!(t["result"], payload.as_str());
    }
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap().lines().count(),
        2,
        "each task ran once"
    );

    // A client whose certificate and CA are another CA's: it refuses the
    // servers' certificates at once.
    let mallory = pki.issue("other-ca", "client", None, "mallory", "mallory");
    cli_refused(
        &c,
        &[("TIDAL_TLS_DIR", &mallory)],
        &["status"],
        "the server's certificate is not signed by ca.pem",
    );
    // One that trusts both CAs but holds the other CA's certificate: the
    // servers refuse it at once.
    let both = [
        std::fs::read(pki_dir.path().join("ca/ca.pem")).unwrap(),
        std::fs::read(pki_dir.path().join("other-ca/ca.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(mallory.join("ca.pem"), both).unwrap();
    cli_refused(
        &c,
        &[("TIDAL_TLS_DIR", &mallory)],
        &["task", "list"],
        "the server refused this client's certificate",
    );
    // A plaintext client, and an https:// endpoint without a TLS directory.
    cli_refused(
        &c,
        &[],
        &["status"],
        "the server speaks TLS and this client does not",
    );
    let one_https = https[0].clone();
    cli_refused(
        &c,
        &[],
        &["status", "--endpoints", &one_https],
        "asks for TLS (https://)",
    );

    // An agent certificate of another DC: refused by the agent itself for
    // --dc dc1, and by its own check of the servers for --dc dc2.
    let dc2 = pki.issue("ca", "agent", Some("dc2"), "gpu-9", "gpu-9");
    let endpoints = c.endpoints_arg();
    let dc2_arg = dc2.display().to_string();
    for (dc, why) in [
        (
            "dc1",
            "names agent 'gpu-9' of dc 'dc2', not an agent of dc 'dc1'",
        ),
        ("dc2", "not a server of dc 'dc2'"),
    ] {
        let (o, took) = cli(
            &c,
            &[],
            &[
                "agent",
                "--id",
                "gpu-9",
                "--dc",
                dc,
                "--task-types",
                "t2i",
                "--endpoints",
                &endpoints,
                "--tls-dir",
                &dc2_arg,
                "--",
                "true",
            ],
        );
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "--dc {dc}: {stderr}");
        assert!(stderr.contains(why), "--dc {dc}: {stderr}");
        assert!(took < Duration::from_secs(5), "--dc {dc}: took {took:?}");
    }

    // The DC kept serving through all that.
    let members: serde_json::Value =
        serde_json::from_str(&cli_ok(&c, as_alice, &["cluster", "members", "-o", "json"])).unwrap();
    assert_eq!(members["members"].as_array().unwrap().len(), 3);
}
