//! A follower whose data directory is a small tmpfs that fills up: its store
//! cannot write, so it exits 5 with one line naming the directory and the
//! error; the other two keep serving and log a bounded number of lines about
//! it; once space is freed and it restarts, it catches up.
//!
//! Needs root (to mount the tmpfs; CI runs as root): elsewhere the test says
//! it is skipped and passes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use tidal_client::{v1, Client, ClientOptions};
use tokio::time::{sleep, Instant};

use crate::harness::{Cluster, ClusterOpts};

/// The tmpfs's size: room for the store at start, then filled.
const TMPFS_BYTES: u64 = 64 << 20;
/// How long the survivors' logs are watched while the follower is down.
const QUIET_WINDOW: Duration = Duration::from_secs(5);
/// Lines about the dead peer (or warnings at all) a survivor may log from
/// its failure to [`QUIET_WINDOW`] after its exit. openraft alone logs four
/// lines per heartbeat (50 ms) per unreachable peer.
const MAX_PEER_LINES: usize = 10;

/// A tmpfs mounted on a directory; unmounted on drop (lazily if a process
/// still holds it, so the memory goes when that process does).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` on `dir`; `Err` says why not (not root, no
    /// mount command, no tmpfs).
    fn mount(dir: &Path, bytes: u64) -> anyhow::Result<Tmpfs> {
        std::fs::create_dir_all(dir)?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .output()
            .context("run mount")?;
        if !out.status.success() {
            bail!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Writes a file in `dir` until the filesystem is full; returns its path.
fn fill(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path)?;
    let chunk = vec![0xa5u8; 64 << 10];
    let mut written = 0u64;
    for size in [chunk.len(), 4096, 1] {
        loop {
            match file.write(&chunk[..size]) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => return Err(e).context("write the filler"),
            }
        }
    }
    let _ = file.sync_all();
    eprintln!("filled {} with {written} bytes", dir.display());
    Ok(path)
}

fn spec(key: String, payload_bytes: usize) -> v1::TaskSpec {
    v1::TaskSpec {
        task_type: "t2i".into(),
        payload: vec![b'p'; payload_bytes],
        idempotency_key: key,
        ..Default::default()
    }
}

/// Submits `n` tasks of `payload_bytes` each in one batch; every one must be
/// accepted. Returns their ids.
async fn submit(
    client: &Client,
    prefix: &str,
    n: usize,
    payload_bytes: usize,
) -> anyhow::Result<Vec<String>> {
    let specs = (0..n)
        .map(|i| spec(format!("{prefix}-{i}"), payload_bytes))
        .collect();
    let results = client.submit(specs).await.context("submit")?;
    let mut ids = Vec::new();
    for r in results {
        if let Some(e) = r.error.filter(|e| e.code != 0) {
            bail!("submit refused: {}", e.message);
        }
        ids.push(r.id);
    }
    Ok(ids)
}

fn log_len(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// The lines of `path` after the first `from` that are about peer `peer`
/// (at `addr`) or warn or err at all.
fn peer_lines(path: &Path, from: usize, peer: u64, addr: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let target = [
        format!("target={peer}"),
        format!("target: {peer}"),
        format!("peer={peer}"),
        format!("peer: {peer}"),
        addr.to_string(),
    ];
    text.lines()
        .skip(from)
        .filter(|l| {
            l.contains(" WARN ") || l.contains(" ERROR ") || target.iter().any(|t| l.contains(t))
        })
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_on_a_full_disk_exits_loudly_and_catches_up_after() -> anyhow::Result<()> {
    let mut c = Cluster::new(ClusterOpts::default())?;
    let data2 = c.node(2).data.clone();
    // Declared after the cluster, so it is dropped (unmounted) first.
    let tmpfs = match Tmpfs::mount(&data2, TMPFS_BYTES) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("full_disk: skipped: {e:#} (needs root to mount a tmpfs)");
            return Ok(());
        }
    };
    c.launch().await?;
    let addr2 = c.node(2).addr.clone();
    let before = submit(&c.client, "before", 20, 1024).await?;
    c.wait_caught_up(2, Duration::from_secs(20)).await?;

    // The survivors' logs are counted from here: node 2 is about to fail.
    let logs = [1u64, 3].map(|id| c.dir.path().join(format!("node{id}.log")));
    let from = logs.each_ref().map(|p| log_len(p));
    let filler = fill(&tmpfs.dir)?;
    let filled = Instant::now();
    // Each entry needs new pages on node 2's tmpfs: it fails within a few.
    let mut accepted = before.clone();
    let status = loop {
        if let Some(status) = c.node_mut(2).proc.as_mut().and_then(|p| p.try_exit()) {
            break status;
        }
        if filled.elapsed() > Duration::from_secs(30) {
            bail!(
                "node 2 still runs 30 s after its disk filled\n{}",
                c.logs_tail(30)
            );
        }
        let n = accepted.len();
        accepted.extend(submit(&c.client, &format!("during-{n}"), 8, 16 << 10).await?);
    };
    let took = filled.elapsed();
    let log2 = c.dir.path().join("node2.log");
    let text2 = std::fs::read_to_string(&log2)?;
    eprintln!("node 2 exited with {status} {took:?} after its disk filled");
    assert_eq!(status.code(), Some(5), "exit status\n{text2}");
    let last = text2.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: cannot ")
            && last.contains(&data2.join("raft").display().to_string())
            && last.contains("No space left on device")
            && last.ends_with("this server stops"),
        "the last line names the directory, the operation and the error: {last:?}"
    );
    eprintln!("node 2's last line: {last}");

    // The others serve on, and say little about their dead peer.
    let watch_until = Instant::now() + QUIET_WINDOW;
    let mut meanwhile = Vec::new();
    while Instant::now() < watch_until {
        let n = meanwhile.len();
        meanwhile.extend(submit(&c.client, &format!("meanwhile-{n}"), 5, 1024).await?);
        sleep(Duration::from_millis(100)).await;
    }
    for (path, from) in logs.iter().zip(from) {
        let lines = peer_lines(path, from, 2, &addr2);
        eprintln!(
            "{}: {} lines about node 2 from its failure to {QUIET_WINDOW:?} after",
            path.display(),
            lines.len()
        );
        assert!(
            lines.len() <= MAX_PEER_LINES,
            "{} logged {} lines about its dead peer from its failure to {QUIET_WINDOW:?} after:\n{}",
            path.display(),
            lines.len(),
            lines.join("\n")
        );
    }

    // Space freed, node 2 restarts and catches up.
    std::fs::remove_file(&filler)?;
    c.start_node(2, false)?;
    c.wait_caught_up(2, Duration::from_secs(60)).await?;
    let on2 = Client::with_options(
        vec![addr2.clone()],
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(5),
            ..c.client.options().clone()
        },
    )?;
    for id in meanwhile.iter().chain(accepted.iter()) {
        let task = on2
            .get_task(id, true)
            .await
            .with_context(|| format!("stale read of {id} on node 2"))?;
        assert_eq!(&task.id, id);
    }
    eprintln!(
        "node 2 caught up: {} tasks submitted before and during the failure, {} while it was down",
        accepted.len(),
        meanwhile.len()
    );
    // Processes first, then the mount.
    for n in &mut c.nodes {
        if let Some(p) = n.proc.as_mut() {
            p.kill();
        }
    }
    drop(tmpfs);
    Ok(())
}
