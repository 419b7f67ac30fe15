//! `tidal dev` as a user runs it. With `--dcs 2`: two DCs and their agents
//! come up, the demo's tts and sr tasks, submitted in dc-a, run in dc-b and
//! their results show in dc-a. With `--tls`: the demo runs over mutual TLS,
//! the CLI with the printed client directory works and a plaintext CLI is
//! refused; with both, the two DCs link and forward over TLS. Ctrl-C stops
//! every child.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::tidal_exe;

/// A base port from `first` on whose 3 ports and the 3 at +100 are free
/// right now (each test starts from its own `first`).
fn free_base(first: u16) -> u16 {
    (0..100)
        .map(|i| first + i * 211)
        .find(|base| {
            [0, 1, 2, 100, 101, 102]
                .iter()
                .all(|o| TcpListener::bind(("127.0.0.1", base + o)).is_ok())
        })
        .expect("a free port range")
}

/// `tidal dev ARGS --base-port BASE --dir DIR`, up to its guide's last line:
/// the child (killed on drop) and every line it printed.
struct Dev {
    child: Child,
    out: Vec<String>,
}

impl Dev {
    fn start(args: &[&str], base: u16, dir: &Path) -> Dev {
        let mut child = Command::new(tidal_exe())
            .arg("dev")
            .args(args)
            .arg("--base-port")
            .arg(base.to_string())
            .arg("--dir")
            .arg(dir)
            .env_remove("RUST_LOG")
            .env_remove("TIDAL_TLS_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut dev = Dev {
            child,
            out: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !dev.out.iter().any(|l| l.starts_with("Ctrl-C stops")) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => dev.out.push(line),
                Err(_) => panic!("tidal dev did not come up:\n{}", dev.text()),
            }
        }
        dev
    }

    fn text(&self) -> String {
        self.out.join("\n")
    }

    /// SIGINT, as Ctrl-C would; `tidal dev` must exit 0.
    fn stop(mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit {status:?}\n{}", self.text());
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn dev_with_two_dcs_runs_the_demo_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(
        &["--dcs", "2", "--agents", "1"],
        free_base(20_000),
        dir.path(),
    );
    let (text, out) = (dev.text(), dev.out.clone());
    dev.stop();
    assert!(text.contains("dc-a: linked to dc-b"), "{text}");
    assert!(
        text.contains("(no agent in dc-a runs tts: it ran in dc-b as t"),
        "{text}"
    );
    assert!(
        text.contains("(no agent in dc-a runs sr: it ran in dc-b as t"),
        "{text}"
    );
    let succeeded = out
        .iter()
        .filter(|l| l.starts_with('t') && l.contains(" succeeded "))
        .count();
    assert_eq!(succeeded, 4, "{text}");
    assert!(
        out.iter()
            .any(|l| l.contains(" tts ") && l.contains("dc-b-agent-1@dc-b")),
        "{text}"
    );
}

/// `tidal ARGS` against a dev cluster, with `TIDAL_TLS_DIR` set to `tls` or unset.
fn cli(args: &[&str], tls: Option<&Path>) -> Output {
    let mut cmd = Command::new(tidal_exe());
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("TIDAL_ENDPOINTS")
        .env_remove("TIDAL_INSECURE");
    match tls {
        Some(dir) => cmd.env("TIDAL_TLS_DIR", dir),
        None => cmd.env_remove("TIDAL_TLS_DIR"),
    };
    cmd.output().unwrap()
}

#[test]
fn dev_with_tls_runs_the_demo_and_the_cli_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let tls = root.join("tls");
    let base = free_base(26_000);
    let dev = Dev::start(&["--tls"], base, &root);
    let text = dev.text();
    for d in ["node-1", "node-2", "node-3", "agent-1", "agent-2", "client"] {
        assert!(tls.join(d).join("cert.pem").exists(), "{d}\n{text}");
    }
    assert!(tls.join("ca").join("ca.key").exists(), "{text}");
    let succeeded = dev
        .out
        .iter()
        .filter(|l| l.starts_with('t') && l.contains(" succeeded "))
        .count();
    assert_eq!(succeeded, 4, "{text}");
    assert!(
        dev.out
            .iter()
            .any(|l| l.starts_with('t') && l.contains(" failed ")),
        "{text}"
    );
    let client = tls.join("client");
    let export = format!("export TIDAL_TLS_DIR={}", client.display());
    assert!(dev.out.iter().any(|l| l.trim() == export), "{text}");
    let https = format!("--endpoints https://127.0.0.1:{base},");
    assert!(text.contains(&https), "{text}");

    // The CLI as the guide says: TIDAL_TLS_DIR and https:// endpoints.
    let eps = format!("https://127.0.0.1:{base},https://127.0.0.1:{}", base + 1);
    let submit = cli(
        &[
            "task",
            "submit",
            "--type",
            "t2i",
            "--models",
            "sdxl",
            "--payload",
            "a red fox",
            "--endpoints",
            &eps,
        ],
        Some(&client),
    );
    let stderr = String::from_utf8_lossy(&submit.stderr);
    assert!(submit.status.success(), "{stderr}");
    let id = String::from_utf8_lossy(&submit.stdout).trim().to_string();
    let watch = cli(&["task", "watch", &id, "--endpoints", &eps], Some(&client));
    let stdout = String::from_utf8_lossy(&watch.stdout);
    assert!(
        watch.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&watch.stderr)
    );
    assert!(stdout.contains("succeeded"), "{stdout}");

    // A plaintext CLI is told why, at once.
    let plain = format!("127.0.0.1:{base}");
    let started = Instant::now();
    let refused = cli(
        &["status", "--endpoints", &plain, "--timeout-ms", "10000"],
        None,
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the server speaks TLS and this client does not"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(8), "{stderr}");
    // An https:// endpoint without a TLS directory is an error too.
    let https_only = cli(
        &["status", "--endpoints", &format!("https://{plain}")],
        None,
    );
    assert!(!https_only.status.success());
    dev.stop();
}

/// `--tls --dcs 2`: both DCs come up over mutual TLS with certificates of
/// their own DC, link, and the demo's tts task forwards from dc-a to dc-b.
#[test]
fn dev_with_tls_and_two_dcs_forwards_between_them_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let tls = root.join("tls");
    let dev = Dev::start(
        &["--tls", "--dcs", "2", "--agents", "1"],
        free_base(23_000),
        &root,
    );
    let (text, out) = (dev.text(), dev.out.clone());
    for d in [
        "dc-a-node-1",
        "dc-a-node-3",
        "dc-b-node-1",
        "dc-b-node-3",
        "dc-a-agent-1",
        "dc-b-agent-1",
        "client",
    ] {
        assert!(tls.join(d).join("cert.pem").exists(), "{d}\n{text}");
    }
    assert!(text.contains("dc-a: linked to dc-b"), "{text}");
    assert!(
        text.contains("(no agent in dc-a runs tts: it ran in dc-b as t"),
        "{text}"
    );
    assert!(
        out.iter()
            .any(|l| l.contains(" tts ") && l.contains("dc-b-agent-1@dc-b")),
        "{text}"
    );
    let succeeded = out
        .iter()
        .filter(|l| l.starts_with('t') && l.contains(" succeeded "))
        .count();
    assert_eq!(succeeded, 4, "{text}");
    dev.stop();
}
