//! Forged peer traffic from a gRPC client that is not tidal's (Python, grpcio, stubs generated from proto/ at test time) against a plaintext cluster with `--peer-listen` at 127.0.0.11-13: every Raft and exchange RPC from 127.0.0.1 is PERMISSION_DENIED on both ports, no node stops, and a leader killed during a HoldElections flood is replaced as fast as ever.
//!
//! The Python comes from `TIDAL_TEST_PYTHON` (`.ci/run` sets it to a venv
//! it makes with `tests/py/venv.sh`); without it the test makes that venv
//! itself under the target directory (PyPI, pinned in
//! `tests/py/requirements.txt`). A missing python3 fails the test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::time::Instant;

use crate::harness::AgentOpts;
use crate::peer_plane::{run_task, start, WAIT};

/// How long a new leader may take after the old one is SIGKILLed, with the
/// flood going on. A hold that was honoured would keep the followers from
/// electing for as long as the flood lasts; pre-vote and the election
/// timeout (150-300 ms) make it about a second on a loaded machine.
const FAILOVER_BOUND: Duration = Duration::from_secs(5);

/// The Python with grpcio and grpcio-tools.
fn python() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("TIDAL_TEST_PYTHON") {
        return Ok(p.into());
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("py-grpc");
    let script = py_dir().join("venv.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(&venv)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "no Python for the forged-peer test: {} {} failed ({}); set TIDAL_TEST_PYTHON \
             to a python with grpcio and grpcio-tools, or install python3 with venv",
            script.display(),
            venv.display(),
            out.status
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().into())
}

fn py_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py")
}

/// The running script: its stdin for commands, its stdout's JSON lines.
struct Script {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Script {
    /// The next JSON line, which must be of `phase`.
    async fn next(&mut self, phase: &str) -> anyhow::Result<Value> {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .with_context(|| format!("no {phase:?} line from the script in {WAIT:?}"))??;
        let Some(line) = line else {
            bail!(
                "the script ended before its {phase:?} line: {:?}",
                self.child.wait().await
            );
        };
        let v: Value = serde_json::from_str(&line).with_context(|| line.clone())?;
        anyhow::ensure!(v["phase"] == phase, "expected {phase:?}, got {line}");
        Ok(v)
    }

    async fn send(&mut self, cmd: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// The flood's rounds so far.
    async fn rounds(&mut self) -> anyhow::Result<u64> {
        self.send("count").await?;
        let v = self.next("count").await?;
        v["rounds"].as_u64().context("rounds")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_grpc_client_cannot_stop_hold_or_move_the_peer_plane() -> anyhow::Result<()> {
    let python = python()?;
    let (mut c, peers) = start().await?;
    let (leader, _) = c.wait_leader(WAIT).await?;

    let nodes: Vec<Value> = (1..=3u64)
        .map(|id| {
            serde_json::json!({
                "id": id,
                "public": c.node(id).addr,
                "peer": peers[(id - 1) as usize].addr().to_string(),
            })
        })
        .collect();
    let proto = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let mut child = tokio::process::Command::new(&python)
        .arg(py_dir().join("forged_peer.py"))
        .arg(&proto)
        .arg(serde_json::to_string(&nodes)?)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    let mut script = Script {
        stdin: child.stdin.take().context("stdin")?,
        lines: BufReader::new(child.stdout.take().context("stdout")?).lines(),
        child,
    };

    // The client works: each node answers its Cluster/Status.
    let control = script.next("control").await?;
    for call in control["calls"].as_array().context("calls")? {
        assert_eq!(call["code"], "OK", "{call}");
    }

    // Every Raft RPC and Dcs/Exchange, to every node's peer and public
    // port, from 127.0.0.1: refused.
    let attacks = script.next("attacks").await?;
    let calls = attacks["calls"].as_array().context("calls")?;
    // Per node and port: 6 removal notices, 7 other Raft RPCs, an exchange.
    assert_eq!(calls.len(), 3 * 2 * 14, "{attacks}");
    for call in calls {
        assert_eq!(call["code"], "PERMISSION_DENIED", "{call}");
        let message = call["message"].as_str().unwrap_or_default();
        let why = match (call["port"].as_str(), call["rpc"].as_str()) {
            (Some("public"), _) => "served on the peer listener only",
            (_, Some("Dcs/Exchange")) => "127.0.0.1 is neither a member of this DC",
            _ => "127.0.0.1 is not the peer address of a member of this DC",
        };
        assert!(message.contains(why), "{call}");
    }

    // No node stopped, none was removed, the leader did not move, and each
    // node logged the refusals with the caller's address.
    for id in 1..=3 {
        assert!(
            c.node_mut(id).proc.as_mut().unwrap().running(),
            "node {id} stopped\n{}",
            c.logs_tail(20)
        );
        let s = c.client.status_of(&c.node(id).addr.clone()).await?;
        assert_eq!(s.leader_id, leader, "node {id}: {s:?}");
        let log = std::fs::read_to_string(c.dir.path().join(format!("node{id}.log")))?;
        assert!(
            log.contains("refused a call") && log.contains("127.0.0.1:"),
            "node {id}:\n{log}"
        );
        assert!(!log.contains("was removed from the cluster"), "{log}");
    }
    let members = c.client.members().await?;
    assert_eq!(members.members.iter().filter(|m| m.voter).count(), 3);

    // The flood of HoldElections{40 s} every 200 ms starts; the cluster
    // runs a task under it.
    script.next("flooding").await?;
    c.start_agent(AgentOpts::new("agent-1", &["t2i"]))?;
    c.wait_agents(1, WAIT).await?;
    run_task(&c, "under the flood").await?;
    for id in 1..=3 {
        c.wait_caught_up(id, WAIT).await?;
    }

    // SIGKILL the leader while the flood goes on: the followers elect a
    // new one within the bound.
    let before = script.rounds().await?;
    let killed = Instant::now();
    c.kill_node(leader);
    let new_leader = loop {
        if let Some(l) = c.leader().await.filter(|l| *l != leader) {
            break l;
        }
        assert!(
            killed.elapsed() < WAIT,
            "no new leader\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let failover = killed.elapsed();
    let during = script.rounds().await?;
    eprintln!(
        "new leader {new_leader} {failover:?} after node {leader} was killed; \
         flood rounds during the failover: {}",
        during - before
    );
    assert!(
        during > before,
        "the flood went on through the failover: {before} -> {during} rounds"
    );
    assert!(
        failover < FAILOVER_BOUND,
        "new leader after {failover:?}\n{}",
        c.logs_tail(30)
    );
    run_task(&c, "a new leader, under the flood").await?;

    // Every flooded call to a running node was refused; the killed node's
    // were refused until it died, then unreachable.
    script.send("stop").await?;
    let flood = script.next("flood").await?;
    let codes = flood["codes"].as_object().context("codes")?;
    assert_eq!(codes.len(), 6, "{flood}");
    for (target, per) in codes {
        let node: u64 = target.split('/').next().unwrap().parse()?;
        let per = per.as_object().context("per code")?;
        let denied = per
            .get("PERMISSION_DENIED")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        assert!(denied > 0, "{target}: {flood}");
        for code in per.keys() {
            let allowed = code == "PERMISSION_DENIED"
                || (node == leader && ["UNAVAILABLE", "DEADLINE_EXCEEDED"].contains(&&**code));
            assert!(allowed, "{target} answered {code}: {flood}");
        }
    }
    let status = tokio::time::timeout(WAIT, script.child.wait()).await??;
    assert!(status.success(), "the script: {status}");
    for id in (1..=3).filter(|id| *id != leader) {
        assert!(
            c.node_mut(id).proc.as_mut().unwrap().running(),
            "node {id} stopped\n{}",
            c.logs_tail(20)
        );
    }
    Ok(())
}
