//! The server's secure defaults with real processes: plaintext on an address that is not loopback is refused before anything is bound (exit 2), and a new cluster under the default `--auth tokens` writes its admin token to `DATA/bootstrap.token`, which the CLI then needs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{spawn, tidal_exe, Proc};

/// `tidal server` with `args` after `--id 1 --dc dc1 --data DIR`, no
/// `TIDAL_*` variable; must exit within 20 s. Its exit code and log.
async fn server_exit(dir: &Path, name: &str, args: &[&str]) -> (Option<i32>, String) {
    let data = dir.join(name);
    let mut all: Vec<String> = ["server", "--id", "1", "--dc", "dc1", "--data"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    all.push(data.display().to_string());
    all.extend(args.iter().map(|s| s.to_string()));
    let log = dir.join(format!("{name}.log"));
    let mut p = Proc::new(name, Path::new(tidal_exe()), all, &log);
    for (k, _) in std::env::vars() {
        if k.starts_with("TIDAL_") {
            p = p.env_remove(&k);
        }
    }
    p.start().unwrap();
    let status = p.wait_exit(Duration::from_secs(20)).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("{name} did not exit:\n{text}"));
    assert!(!data.exists(), "{name} created its data directory:\n{text}");
    (status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_on_an_address_that_is_not_loopback_is_refused_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    // Addresses this machine need not own: the refusal comes first.
    for (name, listen) in [("any", "0.0.0.0:0"), ("lan", "10.0.0.5:7001")] {
        let (code, log) = server_exit(dir.path(), name, &["--listen", listen, "--init"]).await;
        assert_eq!(code, Some(2), "{log}");
        assert!(
            log.contains(&format!(
                "error: invalid server configuration: refusing to serve plaintext on {listen} \
                 (not a loopback address): give --tls-dir DIR (see `tidal cert`) or --insecure"
            )),
            "{log}"
        );
        assert!(!log.contains("listening on"), "{log}");
    }
    // A peer listener counts too.
    let (code, log) = server_exit(
        dir.path(),
        "peer",
        &["--listen", "127.0.0.1:0", "--peer-listen", "10.0.0.5:7101"],
    )
    .await;
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("refusing to serve plaintext on 10.0.0.5:7101"),
        "{log}"
    );
    // --insecure there needs a peer listener of its own.
    let (code, log) = server_exit(
        dir.path(),
        "insecure",
        &["--listen", "10.0.0.5:7001", "--insecure"],
    )
    .await;
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("--insecure on 10.0.0.5:7001 (not a loopback address) needs --peer-listen"),
        "{log}"
    );
    // The same from a config file.
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "listen = \"10.0.0.5:7001\"\ninit = true\n").unwrap();
    let (code, log) = server_exit(
        dir.path(),
        "file",
        &["--config", &file.display().to_string()],
    )
    .await;
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("refusing to serve plaintext on 10.0.0.5:7001"),
        "{log}"
    );
}

/// The CLI at `addr` with `TIDAL_TOKEN` set to `token` (unset for None).
fn cli(addr: &str, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(tidal_exe());
    cmd.args(args)
        .env("TIDAL_ENDPOINTS", addr)
        .env_remove("TIDAL_TOKEN")
        .env_remove("TIDAL_TLS_DIR")
        .env_remove("RUST_LOG");
    if let Some(t) = token {
        cmd.env("TIDAL_TOKEN", t);
    }
    cmd.output().expect("run the tidal binary")
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A server on 127.0.0.1 port 0 with `args`, `TIDAL_AUTH` unset; it and
/// the address it printed.
async fn start(args: &[String], log: &Path) -> (Proc, String) {
    let node = spawn("node1", args, log).unwrap();
    node.wait_log("listening on ", Duration::from_secs(20))
        .await
        .unwrap();
    let printed = std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("listening on "))
        .unwrap()
        .to_string();
    (node, printed)
}

const WROTE: &str = "wrote this new cluster's admin token to";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cluster_under_default_auth_writes_its_bootstrap_token() {
    let dir = tempfile::Builder::new()
        .prefix("tidal-it-")
        .tempdir()
        .unwrap();
    let data = dir.path().join("node1");
    let token_file = data.join("bootstrap.token");
    let args: Vec<String> = [
        "server",
        "--id",
        "1",
        "--dc",
        "dc1",
        "--listen",
        "127.0.0.1:0",
        "--data",
        &data.display().to_string(),
        "--init",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = dir.path().join("node1.log");
    let (mut node, addr) = start(&args, &log).await;
    node.wait_log(WROTE, Duration::from_secs(20)).await.unwrap();
    let line = node.last_log_line(WROTE).unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(&format!("TIDAL_TOKEN=$(cat {})", token_file.display())),
        "{line}"
    );
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(
        token.starts_with("tdl_") && token.ends_with('\n'),
        "{token:?}"
    );
    assert_eq!(token.lines().count(), 1);
    let token = token.trim().to_string();
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        !std::fs::read_to_string(&log).unwrap().contains(&token),
        "the secret is never logged"
    );

    // Without a token: refused, exit 8.
    let o = cli(&addr, None, &["task", "list"]);
    assert_eq!(o.status.code(), Some(8), "{}", stderr(&o));
    // With the file's token: an admin, and the leader makes it the first
    // token, `bootstrap`.
    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let o = cli(&addr, Some(&token), &["token", "list", "-o", "json"]);
        if o.status.success() && stdout(&o).contains("\"bootstrap\"") {
            break stdout(&o);
        }
        assert!(
            Instant::now() < deadline,
            "token list: {}\n{}",
            stderr(&o),
            node.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(listed.contains("\"bootstrap\""), "{listed}");
    let o = cli(
        &addr,
        Some(&token),
        &[
            "token", "create", "--role", "user", "--tenant", "team-a", "--name", "alice",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let alice = stdout(&o);
    let o = cli(&addr, Some(&alice), &["task", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // A restart reuses the file and writes nothing.
    node.terminate();
    assert!(
        node.wait_exit(Duration::from_secs(30)).await.is_some(),
        "{}",
        node.log_tail(20)
    );
    let restart_log = dir.path().join("node1-restart.log");
    let (node, again) = start(&args, &restart_log).await;
    assert_eq!(again, addr);
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = cli(&addr, Some(&token), &["token", "list"]);
        if o.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}\n{}",
            stderr(&o),
            node.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(node.log_lines(WROTE).is_empty(), "{}", node.log_tail(20));
}

/// A cluster made under `--auth none` (as by an older build, whose default
/// it was) restarted under the default: no token exists and none is given,
/// so the server says it refuses every call, and it does (exit 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokenless_cluster_restarted_under_the_default_says_it_refuses_every_call() {
    let dir = tempfile::Builder::new()
        .prefix("tidal-it-")
        .tempdir()
        .unwrap();
    let data = dir.path().join("node1");
    let args = |extra: &[&str]| -> Vec<String> {
        [
            "server",
            "--id",
            "1",
            "--dc",
            "dc1",
            "--listen",
            "127.0.0.1:0",
            "--data",
            &data.display().to_string(),
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    };
    let (mut node, addr) = start(
        &args(&["--init", "--auth", "none"]),
        &dir.path().join("none.log"),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cli(&addr, None, &["task", "list"]).status.success() {
        assert!(Instant::now() < deadline, "{}", node.log_tail(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.terminate();
    assert!(node.wait_exit(Duration::from_secs(30)).await.is_some());
    assert!(!data.join("bootstrap.token").exists());

    let (node, again) = start(&args(&[]), &dir.path().join("tokens.log")).await;
    assert_eq!(again, addr);
    node.wait_log("holds no token yet", Duration::from_secs(20))
        .await
        .unwrap();
    let line = node.last_log_line("holds no token yet").unwrap();
    assert!(
        line.contains("WARN")
            && line.contains("--bootstrap-token-file")
            && line.contains("--auth none"),
        "{line}"
    );
    let o = cli(&addr, None, &["task", "list"]);
    assert_eq!(o.status.code(), Some(8), "{}", stderr(&o));
    assert!(!data.join("bootstrap.token").exists());
}
