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
