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

/// What a refused plaintext endpoint prints, after `error: `.
fn refusal(endpoint: &str) -> String {
    format!(
        "refusing to connect in plaintext to {endpoint} (not a loopback address): give --tls-dir \
         DIR or TIDAL_TLS_DIR (see `tidal cert`), or --insecure or TIDAL_INSECURE=true"
    )
}

/// Without TLS a client or an agent talks only to loopback servers unless
/// `--insecure`: the refusal comes at once (exit 2), before anything is
/// sent (10.1.2.3 is never dialled: nothing here leaves this machine).
#[test]
fn plaintext_to_a_remote_server_is_refused_without_insecure() {
    let unset = |c: &mut Command| {
        c.env_remove("TIDAL_ENDPOINTS")
            .env_remove("TIDAL_TLS_DIR")
            .env_remove("TIDAL_INSECURE")
            .env_remove("TIDAL_TOKEN")
            .env_remove("RUST_LOG");
    };
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tidal"));
        unset(&mut c);
        c.args(args).envs(env.iter().copied());
        let start = Instant::now();
        let o = c.output().expect("run the tidal binary");
        (o, start.elapsed())
    };
    let agent = [
        "agent",
        "--id",
        "a",
        "--dc",
        "dc1",
        "--task-types",
        "t2i",
        "--endpoints",
        "127.0.0.1:7001,10.1.2.3:7001",
        "--",
        "true",
    ];
    for (args, env, endpoint) in [
        (
            &["status", "--endpoints", "10.1.2.3:7001"][..],
            &[][..],
            "10.1.2.3:7001",
        ),
        (
            &["task", "list"],
            &[("TIDAL_ENDPOINTS", "localhost:7001,gpu-cluster.example:7001")],
            "gpu-cluster.example:7001",
        ),
        (
            &["status"],
            &[
                ("TIDAL_INSECURE", "false"),
                ("TIDAL_ENDPOINTS", "0.0.0.0:7001"),
            ],
            "0.0.0.0:7001",
        ),
        (&agent, &[], "10.1.2.3:7001"),
    ] {
        let (o, took) = run(args, env);
        assert_eq!(o.status.code(), Some(2), "{args:?} {env:?}: {}", stderr(&o));
        assert!(
            stderr(&o).starts_with("error: ")
                && stderr(&o).trim_end().ends_with(&refusal(endpoint)),
            "{args:?} {env:?}: {}",
            stderr(&o)
        );
        assert!(o.stdout.is_empty());
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
    }
    // With --insecure (or TIDAL_INSECURE) the rule lets it through: this
    // submit then fails on its payload file, still before sending anything.
    let submit = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec![
            "task",
            "submit",
            "--type",
            "t2i",
            "--payload-file",
            "/nonexistent/payload",
            "--endpoints",
            "10.1.2.3:7001",
        ];
        args.extend_from_slice(extra);
        run(&args, env).0
    };
    let o = submit(&[], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    for (extra, env) in [
        (&["--insecure"][..], &[][..]),
        (&["--insecure=true"], &[]),
        (&[], &[("TIDAL_INSECURE", "1")]),
    ] {
        let o = submit(extra, env);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{extra:?} {env:?}: {}",
            stderr(&o)
        );
        assert!(
            stderr(&o).contains("reading --payload-file /nonexistent/payload")
                && !stderr(&o).contains("plaintext"),
            "{extra:?} {env:?}: {}",
            stderr(&o)
        );
    }
}

/// Loopback endpoints need neither TLS nor --insecure: the client tries
/// them and, with no server there, exits 3 (unavailable), not 2.
#[test]
fn plaintext_to_loopback_needs_no_insecure() {
    for endpoint in ["127.0.0.1:1", "localhost:1", "127.0.0.77:1"] {
        let o = tidal(&["status", "--endpoints", endpoint, "--timeout-ms", "500"]);
        assert_eq!(o.status.code(), Some(3), "{endpoint}: {}", stderr(&o));
        assert!(
            !stderr(&o).contains("plaintext"),
            "{endpoint}: {}",
            stderr(&o)
        );
    }
}
