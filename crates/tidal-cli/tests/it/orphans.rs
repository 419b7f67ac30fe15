//! A SIGKILLed test binary leaves no `tidal` process behind: a child test
//! process starts a small cluster, reports its processes' ids and is
//! SIGKILLed; the kernel then kills every server and agent it started.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{AgentOpts, Cluster, ClusterOpts};

const CHILD_ENV: &str = "TIDAL_IT_ORPHANS_CHILD";
const PIDS: &str = "PIDS ";

/// Child mode: only does something when the parent set `CHILD_ENV`. Starts
/// two servers and an agent, prints their ids, then waits for its stdin to
/// close (never, unless the parent goes first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_child_cluster() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let mut c = Cluster::start(ClusterOpts {
        nodes: 2,
        ..ClusterOpts::default()
    })
    .await
    .expect("cluster");
    c.start_agent(AgentOpts::new("agent-1", &["t2i"])).unwrap();
    c.wait_agents(1, Duration::from_secs(30)).await.unwrap();
    let pids: Vec<String> = c
        .nodes
        .iter()
        .filter_map(|n| n.proc.as_ref()?.pid())
        .chain(c.agents.iter().filter_map(|a| a.pid()))
        .map(|p| p.to_string())
        .collect();
    // Straight to the pipe, past the test harness's capture of `println!`.
    let mut out = std::io::stdout().lock();
    writeln!(out, "{PIDS}{}", pids.join(" ")).expect("stdout");
    out.flush().expect("stdout");
    drop(out);
    tokio::task::spawn_blocking(|| std::io::stdin().lines().count())
        .await
        .unwrap();
}

/// A pidfd of process `pid`: it names that process even after its id is
/// reused, and polls readable once the process has ended.
fn pidfd(pid: u32) -> OwnedFd {
    // SAFETY: pidfd_open(2) returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    assert!(
        fd >= 0,
        "pidfd_open({pid}): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a new descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Waits until the process behind `fd` has ended, at most until `deadline`.
fn ended_by(fd: &OwnedFd, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, left.as_millis() as i32) };
        if n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return n == 1;
        }
    }
}

#[test]
fn a_sigkilled_test_binary_leaves_no_process_behind() {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args([
            "orphans::orphans_child_cluster",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child test");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let line = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            // The harness may have begun the line ("test NAME ... ").
            .find_map(|l| Some(l.split_once(PIDS)?.1.to_string()));
        let _ = tx.send(line);
    });
    let Ok(Some(line)) = rx.recv_timeout(Duration::from_secs(120)) else {
        let _ = child.kill();
        let status = child.wait().expect("reap the child");
        panic!("the child test printed no process ids ({status})");
    };
    let pids: Vec<u32> = line.split(' ').map(|p| p.parse().expect("a pid")).collect();
    assert_eq!(pids.len(), 3, "two servers and an agent: {line}");
    // Opened while the child test holds them, so each names its process.
    let fds: Vec<(u32, OwnedFd)> = pids.iter().map(|&p| (p, pidfd(p))).collect();

    child.kill().expect("SIGKILL the child test");
    child.wait().expect("reap the child test");

    let deadline = Instant::now() + Duration::from_secs(10);
    let left: Vec<&(u32, OwnedFd)> = fds
        .iter()
        .filter(|(_, fd)| !ended_by(fd, deadline))
        .collect();
    for (_, fd) in &left {
        // SAFETY: pidfd_send_signal(2) on a pidfd this test owns.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }
    let left: Vec<u32> = left.iter().map(|(pid, _)| *pid).collect();
    assert!(
        left.is_empty(),
        "still running 10 s after the kill: {left:?}"
    );
}
