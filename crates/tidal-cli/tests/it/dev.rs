//! `tidal dev --dcs 2` as a user runs it: two DCs and their agents come up,
//! the demo's tts and sr tasks, submitted in dc-a, run in dc-b and their
//! results show in dc-a; Ctrl-C stops every child.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::tidal_exe;

/// A base port whose 3 ports and the 3 at +100 are free right now.
fn free_base() -> u16 {
    (0..200)
        .map(|i| 20_000 + i * 211)
        .find(|base| {
            [0, 1, 2, 100, 101, 102]
                .iter()
                .all(|o| TcpListener::bind(("127.0.0.1", base + o)).is_ok())
        })
        .expect("a free port range")
}

#[test]
fn dev_with_two_dcs_runs_the_demo_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_base();
    let mut child = Command::new(tidal_exe())
        .args(["dev", "--dcs", "2", "--agents", "1", "--base-port"])
        .arg(base.to_string())
        .arg("--dir")
        .arg(dir.path())
        .env_remove("RUST_LOG")
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
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut out = Vec::new();
    while !out.iter().any(|l: &String| l.starts_with("Ctrl-C stops")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => out.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("tidal dev did not come up:\n{}", out.join("\n"));
            }
        }
    }
    let text = out.join("\n");
    // SIGINT, as Ctrl-C would.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status:?}\n{text}");
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
