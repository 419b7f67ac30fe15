//! Errors the binary reports without any server: exit codes and messages.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn tidal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidal"))
        .args(args)
        .env_remove("TIDAL_ENDPOINTS")
        .env_remove("RUST_LOG")
        .output()
        .expect("run the tidal binary")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn submit_without_type_is_a_usage_error() {
    let o = tidal(&["task", "submit"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--type"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
}

#[test]
fn unknown_command_and_bad_values_are_usage_errors() {
    for args in [
        &["frobnicate"][..],
        &["task", "list", "--state", "done"],
        &["queue", "set", "vip"],
        &["agent", "--id", "a", "--dc", "d", "--task-types", "t2i"],
        &[
            "agent",
            "--id",
            "a",
            "--dc",
            "d",
            "--task-types",
            "t2i",
            "--gpus",
            "A100",
            "--",
            "true",
        ],
        &["status", "--output", "yaml"],
    ] {
        let o = tidal(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn help_and_version_exit_zero() {
    let o = tidal(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    for cmd in [
        "server", "agent", "task", "cluster", "queue", "status", "dev",
    ] {
        assert!(out.contains(cmd), "help lacks {cmd}: {out}");
    }
    assert_eq!(tidal(&["--version"]).status.code(), Some(0));
}

#[test]
fn get_against_a_dead_endpoint_fails_clearly_and_in_time() {
    let start = Instant::now();
    let o = tidal(&[
        "task",
        "get",
        "t-1",
        "--endpoints",
        "127.0.0.1:1",
        "--timeout-ms",
        "1500",
    ]);
    let took = start.elapsed();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains("127.0.0.1:1"),
        "the message should name the endpoint: {err}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(o.stdout.is_empty());
}

#[test]
fn bad_endpoint_is_an_error_not_a_hang() {
    let o = tidal(&["status", "--endpoints", "no-port-here"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
    assert!(stderr(&o).contains("no-port-here"), "{}", stderr(&o));
}

#[test]
fn server_with_missing_settings_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_tidal"))
        .args(["server", "--id", "1", "--listen", "127.0.0.1:0"])
        .arg("--data")
        .arg(dir.path())
        .env_remove("TIDAL_DC")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--dc"), "{}", stderr(&o));
    let o = tidal(&["server", "--config", "/nonexistent/tidal.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("/nonexistent/tidal.toml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn example_worker_succeeds_and_fails_on_request() {
    use std::io::Write;
    let run = |payload: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidal"))
            .args(["example-worker", "--sleep-ms", "0"])
            .env("TIDAL_TASK_TYPE", "t2i")
            .env("TIDAL_MODELS", "sdxl")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(payload.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let ok = run("a red fox");
    assert_eq!(ok.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["prompt"], "a red fox");
    assert_eq!(v["model"], "sdxl");
    let bad = run("please fail");
    assert_eq!(bad.status.code(), Some(3));
    assert!(stderr(&bad).contains("fail"));
}

/// A server that goes away mid-call (here: every connection is closed at
/// once, unread) is an error the command reports, never a death by SIGPIPE.
#[test]
fn a_server_closing_connections_mid_call_is_unavailable_not_sigpipe() {
    use std::os::unix::process::ExitStatusExt;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    listener.set_nonblocking(true).expect("nonblocking");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let resetter = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    // Closed unread: the kernel answers what the
                    // client sends next with RST, and its writes after
                    // that fail with EPIPE.
                    Ok((s, _)) => drop(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
    };
    let o = tidal(&[
        "task",
        "submit",
        "--endpoints",
        &addr,
        "--timeout-ms",
        "1500",
        "--type",
        "t2i",
        "--payload",
        &"x".repeat(100 * 1024),
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = resetter.join();
    assert_eq!(o.status.signal(), None, "killed by a signal: {o:?}");
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
}

/// `tidal server --help` shows the defaults the server uses: the same
/// constants (tidal_server::config).
#[test]
fn server_help_shows_the_defaults_the_server_uses() {
    use tidal_server::config::{
        DEFAULT_ELECTION_TIMEOUT_MS, DEFAULT_RAFT_HEARTBEAT_MS, DEFAULT_SHUTDOWN_TIMEOUT_MS,
    };
    let o = tidal(&["server", "--help"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let help = String::from_utf8_lossy(&o.stdout);
    let line = |flag: &str| {
        help.lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("no {flag} in\n{help}"))
            .to_string()
    };
    for (flag, default) in [
        ("--election-timeout-min-ms", DEFAULT_ELECTION_TIMEOUT_MS.0),
        ("--election-timeout-max-ms", DEFAULT_ELECTION_TIMEOUT_MS.1),
        ("--raft-heartbeat-ms", DEFAULT_RAFT_HEARTBEAT_MS),
        ("--shutdown-timeout-ms", DEFAULT_SHUTDOWN_TIMEOUT_MS),
    ] {
        let l = line(flag);
        assert!(l.contains(&format!("(default {default})")), "{l}");
    }
    assert_eq!(DEFAULT_ELECTION_TIMEOUT_MS, (150, 300));
    assert_eq!(DEFAULT_RAFT_HEARTBEAT_MS, 50);
}
