//! cluster/start.sh and stop.sh: a DC from the config files, over mutual TLS with tokens.
//!
//! The scripts run with a data directory, a run directory and three
//! 127.0.0.1 ports of the test's own (`DATA`, `RUN`, `ADDRS`), and the binary
//! under test (`TIDAL`). A task submitted with the env file `start.sh`
//! writes runs on its agent; a client without the certificate or the token
//! is refused. `stop.sh` runs at the end, and on a failure too.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tidal_testkit::Port;

fn cluster_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cluster")
}

/// The scripts' environment; dropping it runs `stop.sh` (agents, then
/// servers), so a failed test leaves nothing running.
struct Scripts {
    env: Vec<(&'static str, String)>,
    data: PathBuf,
    run: PathBuf,
}

impl Scripts {
    fn command(&self, script: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg(cluster_dir().join(script))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG");
        c
    }

    /// Runs a line of shell after sourcing DATA/env, as a user of the
    /// cluster would (`$TIDAL` is the binary).
    fn with_env(&self, line: &str) -> Output {
        Command::new("bash")
            .arg("-c")
            .arg(format!(". \"$DATA/env\" && {line}"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            .output()
            .expect("run bash")
    }

    /// Every log of the run directory, for a failure's message.
    fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(dir) = std::fs::read_dir(&self.run) {
            for f in dir.flatten() {
                if f.path().extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(f.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(30).collect();
                    out.push_str(&format!("--- {}\n", f.path().display()));
                    for l in tail.into_iter().rev() {
                        out.push_str(l);
                        out.push('\n');
                    }
                }
            }
        }
        out
    }
}

impl Drop for Scripts {
    fn drop(&mut self) {
        let _ = self.command("stop.sh").output();
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn start_sh_runs_a_dc_over_tls_with_tokens_and_stop_sh_ends_it() {
    let tmp = tempfile::tempdir().unwrap();
    // Held while the test runs: no other test takes them.
    let ports: Vec<Port> = (0..3).map(|_| Port::local().unwrap()).collect();
    let addrs: Vec<String> = ports.iter().map(|p| p.addr().to_string()).collect();
    let data = tmp.path().join("data");
    let run = tmp.path().join("run");
    let s = Scripts {
        env: vec![
            ("TIDAL", env!("CARGO_BIN_EXE_tidal").to_string()),
            ("DATA", data.display().to_string()),
            ("RUN", run.display().to_string()),
            ("ADDRS", addrs.join(",")),
            ("AGENTS", "1".to_string()),
        ],
        data: data.clone(),
        run,
    };

    let o = s.command("start.sh").output().unwrap();
    assert!(o.status.success(), "start.sh: {}\n{}", text(&o), s.logs());

    // What it made, readable by its owner only where it holds a secret.
    for f in ["admin.token", "agent.token", "env"] {
        let mode = std::fs::metadata(s.data.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{f} is mode {mode:o}");
    }
    for d in ["ca", "node-1", "node-2", "node-3", "agent-1", "client"] {
        assert!(s.data.join("tls").join(d).is_dir(), "tls/{d}");
    }
    let env = std::fs::read_to_string(data.join("env")).unwrap();
    let https: Vec<String> = addrs.iter().map(|a| format!("https://{a}")).collect();
    let lines: Vec<&str> = env.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 4, "{env}");
    assert_eq!(
        lines[0],
        format!("export TIDAL_ENDPOINTS={}", https.join(",")),
        "{env}"
    );
    assert_eq!(
        lines[1],
        format!("export TIDAL_TLS_DIR={}", data.join("tls/client").display()),
        "{env}"
    );
    assert!(lines[2].starts_with("export TIDAL_TOKEN=tdl_"), "{env}");
    assert_eq!(lines[3], "unset TIDAL_INSECURE", "{env}");
    let status = s.with_env("\"$TIDAL\" status -o json");
    assert!(status.status.success(), "{}", text(&status));
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let doc = doc.to_string();
    assert!(
        doc.contains("\"auth\":\"tokens\"") && doc.contains("\"tls\":true"),
        "{doc}"
    );

    // A task submitted with the env file runs on the agent.
    let o = s.with_env(
        "\"$TIDAL\" task submit --type t2i --models sdxl --payload 'a red fox' --queue vip",
    );
    assert!(o.status.success(), "submit: {}\n{}", text(&o), s.logs());
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let o = s.with_env(&format!("timeout 120 \"$TIDAL\" task watch {id}"));
    assert!(o.status.success(), "watch {id}: {}\n{}", text(&o), s.logs());
    let o = s.with_env(&format!("\"$TIDAL\" task get {id} -o json"));
    let task: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(task["state"], "succeeded", "{task}");

    // Without the token, or without the client certificate, it is refused.
    let o = s.with_env("TIDAL_TOKEN= \"$TIDAL\" task list");
    assert_eq!(o.status.code(), Some(8), "no token: {}", text(&o));
    let o = s.with_env("TIDAL_TLS_DIR= \"$TIDAL\" task list --timeout-ms 2000");
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("TLS"),
        "no certificate: {}",
        text(&o)
    );

    let o = s.command("stop.sh").output().unwrap();
    assert!(o.status.success(), "stop.sh: {}", text(&o));
    let said = String::from_utf8_lossy(&o.stdout);
    for name in ["agent-1", "node1", "node2", "node3"] {
        assert!(said.contains(&format!("stopped {name} ")), "{said}");
    }
    drop(ports);
}
