//! `tidal dev` as a user runs it. By default over mutual TLS with tokens:
//! the demo runs, the CLI works after `. DIR/env` and is refused without the
//! token (exit 8) or without TLS, and a restart keeps the tokens. With
//! `--dcs 2`: two DCs and their agents come up, the demo's tts and sr tasks,
//! submitted in dc-a, run in dc-b and their results show in dc-a, over TLS
//! with tokens, or in plaintext with `--insecure`. Ctrl-C stops every child.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
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
            // A shell that sourced DIR/env holds these; the dev must not need them gone.
            .env("TIDAL_TLS_DIR", dir.join("tls").join("client"))
            .env("TIDAL_TOKEN", "tdl_0123456789abcdef_not-the-token")
            .env("TIDAL_ENDPOINTS", "127.0.0.1:1")
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

/// The CLI's variables, none set.
const CLIENT_VARS: [&str; 5] = [
    "RUST_LOG",
    "TIDAL_ENDPOINTS",
    "TIDAL_TLS_DIR",
    "TIDAL_TOKEN",
    "TIDAL_INSECURE",
];

/// `tidal ARGS` with none of the CLI's variables but `vars`.
fn cli(args: &[&str], vars: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(tidal_exe());
    cmd.args(args);
    for k in CLIENT_VARS {
        cmd.env_remove(k);
    }
    cmd.envs(vars.iter().copied()).output().unwrap()
}

/// `tidal ARGS` in a shell that ran `. ENV` first, as the guide says.
fn cli_sourcing(env: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", r#"env="$1"; shift; . "$env" && exec "$@""#, "sh"])
        .arg(env)
        .arg(tidal_exe())
        .args(args);
    for k in CLIENT_VARS {
        cmd.env_remove(k);
    }
    cmd.output().unwrap()
}

/// Stdout of a command that must succeed.
fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Submits a task through `. ENV` and waits for it to succeed.
fn run_task(env: &Path, task_type: &str, model: &str) {
    let args = [
        "task",
        "submit",
        "--type",
        task_type,
        "--models",
        model,
        "--payload",
        "a red fox",
    ];
    let id = ok(cli_sourcing(env, &args)).trim().to_string();
    let watched = ok(cli_sourcing(env, &["task", "watch", &id]));
    assert!(watched.contains("succeeded"), "{watched}");
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Each node's AUTH and TLS, as `tidal status -o json` through `. ENV` shows them.
fn security(env: &Path) -> Vec<(String, bool)> {
    let doc: serde_json::Value =
        serde_json::from_str(&ok(cli_sourcing(env, &["status", "-o", "json"]))).unwrap();
    doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let s = &n["status"];
            (
                s["auth"].as_str().unwrap_or("").to_string(),
                s["tls"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn demo_outcomes(out: &[String]) -> (usize, usize) {
    let count = |what: &str| {
        out.iter()
            .filter(|l| l.starts_with('t') && l.contains(what))
            .count()
    };
    (count(" succeeded "), count(" failed "))
}

/// The default: mutual TLS and tokens. The demo runs; DIR holds the
/// certificates, the tokens and env (0600); the CLI works after `. DIR/env`
/// and is refused without the token (exit 8) or in plaintext; a restart
/// keeps both tokens (no new bootstrap token, no new agent token) and its
/// agents run tasks under the kept one.
#[test]
fn dev_runs_over_tls_with_tokens_and_restarts_with_the_same_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let tls = root.join("tls");
    let base = free_base(26_000);
    let dev = Dev::start(&[], base, &root);
    let text = dev.text();
    for d in ["node-1", "node-2", "node-3", "agent-1", "agent-2", "client"] {
        assert!(tls.join(d).join("cert.pem").exists(), "{d}\n{text}");
    }
    assert!(tls.join("ca").join("ca.key").exists(), "{text}");
    assert_eq!(demo_outcomes(&dev.out), (4, 1), "{text}");
    let env = root.join("env");
    let (admin_file, agent_file) = (root.join("admin.token"), root.join("agent.token"));
    for f in [&env, &admin_file, &agent_file] {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    let (admin, agent) = (read(&admin_file), read(&agent_file));
    assert!(admin.starts_with("tdl_") && agent.starts_with("tdl_") && admin != agent);
    let env_text = read(&env);
    let client = tls.join("client");
    let eps: Vec<String> = (0..3)
        .map(|i| format!("https://127.0.0.1:{}", base + i))
        .collect();
    for line in [
        format!("export TIDAL_ENDPOINTS={}", eps.join(",")),
        format!("export TIDAL_TLS_DIR={}", client.display()),
        format!("export TIDAL_TOKEN={}", admin.trim()),
    ] {
        assert!(env_text.lines().any(|l| l == line), "{line}\n{env_text}");
    }
    let source = format!(". {}", env.display());
    assert!(
        dev.out.iter().any(|l| l.trim().starts_with(&source)),
        "{text}"
    );
    assert!(text.contains(&admin_file.display().to_string()), "{text}");
    assert!(text.contains(&agent_file.display().to_string()), "{text}");
    assert_eq!(security(&env), vec![("tokens".to_string(), true); 3]);

    // The CLI as the guide says: `. DIR/env`, then tidal.
    run_task(&env, "t2i", "sdxl");

    // Without the token: refused, exit 8.
    let no_token = cli(
        &["task", "list", "--endpoints", &eps[0]],
        &[("TIDAL_TLS_DIR", &client)],
    );
    let stderr = String::from_utf8_lossy(&no_token.stderr);
    assert_eq!(no_token.status.code(), Some(8), "{stderr}");

    // A plaintext CLI is told why, at once.
    let plain = format!("127.0.0.1:{base}");
    let started = Instant::now();
    let refused = cli(
        &["status", "--endpoints", &plain, "--timeout-ms", "10000"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the server speaks TLS and this client does not"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(8), "{stderr}");
    // An https:// endpoint without a TLS directory is an error too.
    let https_only = cli(&["status", "--endpoints", &eps[0]], &[]);
    assert!(!https_only.status.success());
    dev.stop();

    // A restart keeps the tokens: the bootstrap and the agents' token are
    // the only ones, and the agents run tasks again.
    let dev = Dev::start(&["--no-demo"], base, &root);
    let text = dev.text();
    assert!(text.contains("restarting the cluster"), "{text}");
    assert!(!text.contains("created an admin token"), "{text}");
    assert!(!text.contains("created the agents' token"), "{text}");
    assert!(text.contains("agents use the token in"), "{text}");
    assert_eq!((read(&admin_file), read(&agent_file)), (admin, agent));
    let list: serde_json::Value =
        serde_json::from_str(&ok(cli_sourcing(&env, &["token", "list", "-o", "json"]))).unwrap();
    let names: Vec<&str> = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{list}");
    assert!(names.contains(&"dev-agents"), "{list}");
    run_task(&env, "tts", "vits");
    dev.stop();
}

/// `--insecure --dcs 2`: the plaintext dev setup, every server with
/// `--auth none`; no certificates or tokens are made; the two DCs link and
/// the demo's tts and sr tasks run in dc-b; `. DIR/env` works in plaintext.
#[test]
fn dev_insecure_with_two_dcs_runs_the_demo_across_them_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let dev = Dev::start(
        &["--insecure", "--dcs", "2", "--agents", "1"],
        free_base(20_000),
        &root,
    );
    let (text, out) = (dev.text(), dev.out.clone());
    assert!(text.contains("dc-a: linked to dc-b"), "{text}");
    assert!(
        text.contains("(no agent in dc-a runs tts: it ran in dc-b as t"),
        "{text}"
    );
    assert!(
        text.contains("(no agent in dc-a runs sr: it ran in dc-b as t"),
        "{text}"
    );
    assert_eq!(demo_outcomes(&out).0, 4, "{text}");
    assert!(
        out.iter()
            .any(|l| l.contains(" tts ") && l.contains("dc-b-agent-1@dc-b")),
        "{text}"
    );
    for f in ["tls", "admin.token", "dc-a/agent.token", "dc-b/agent.token"] {
        assert!(!root.join(f).exists(), "{f}\n{text}");
    }
    let env = root.join("env");
    assert!(!read(&env).contains("TIDAL_TOKEN="), "{}", read(&env));
    assert_eq!(security(&env), vec![("none".to_string(), false); 3]);
    assert_eq!(
        security(&root.join("dc-b").join("env")),
        vec![("none".to_string(), false); 3]
    );
    dev.stop();
}

/// `--dcs 2` (the default, mutual TLS and tokens; `--tls` is still
/// accepted): both DCs come up with certificates of their own DC, each with
/// its own agents' token and the one admin token as bootstrap, link, and
/// the demo's tts task forwards from dc-a to dc-b.
#[test]
fn dev_with_two_dcs_forwards_between_them_over_tls_with_tokens() {
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
    assert_eq!(demo_outcomes(&out).0, 4, "{text}");
    let (a, b) = (
        read(&root.join("dc-a").join("agent.token")),
        read(&root.join("dc-b").join("agent.token")),
    );
    assert!(a.starts_with("tdl_") && b.starts_with("tdl_") && a != b);
    // DIR/env is dc-a's; each DC has its own.
    assert!(read(&root.join("env")).starts_with(&read(&root.join("dc-a").join("env"))));
    let dc_b = root.join("dc-b").join("env");
    assert_eq!(security(&dc_b), vec![("tokens".to_string(), true); 3]);
    // A task for dc-b's agents, submitted in dc-a, forwarded and followed.
    run_task(&root.join("env"), "tts", "vits");
    dev.stop();
}
