//! Real `tidal` processes for cluster tests: N servers and some agents on free
//! 127.0.0.1 ports in a tempdir, each logging to `<dir>/<name>.log`; all are
//! SIGKILLed (and reaped) when the [`Cluster`] is dropped.
//!
//! ```ignore
//! let mut c = Cluster::start(ClusterOpts::default()).await?; // 3 nodes, joined
//! c.start_agent(AgentOpts::new("agent-1", &["t2i"]))?;
//! c.wait_agents(1, Duration::from_secs(20)).await?;
//! let out = c.tidal(&["task", "submit", "--type", "t2i", "--payload", "x"]);
//! ```
// Not every helper is used by every test binary configuration.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use tempfile::TempDir;
use tidal_client::{Client, ClientOptions};
use tokio::time::{sleep, Instant};

/// The binary under test.
pub fn tidal_exe() -> &'static str {
    env!("CARGO_BIN_EXE_tidal")
}

/// A task command that records one line per execution ("task-id token
/// agent") in `runs`, then echoes the payload back as the result. `>>`
/// appends with O_APPEND, so concurrent runs do not interleave their short
/// lines.
pub fn recording_worker(runs: &Path) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "echo \"$TIDAL_TASK_ID $TIDAL_FENCING_TOKEN $TIDAL_AGENT_ID\" >> '{}'; cat",
            runs.display()
        ),
    ]
}

/// A task command that logs the start and the end of each execution to
/// `runs` ("start|end task-id token agent-id agent-pid unix-nanos"), sleeps
/// `sleep_s` seconds in between, then echoes the payload back. A killed
/// execution has a start and no end.
pub fn timed_worker(runs: &Path, sleep_s: f64) -> Vec<String> {
    let line = |what: &str| {
        format!(
            "echo \"{what} $TIDAL_TASK_ID $TIDAL_FENCING_TOKEN $TIDAL_AGENT_ID $PPID $(date +%s%N)\" >> '{}'",
            runs.display()
        )
    };
    vec![
        "sh".into(),
        "-c".into(),
        format!("{}; sleep {sleep_s}; {}; cat", line("start"), line("end")),
    ]
}

/// One line of a [`timed_worker`]'s log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub start: bool,
    pub task: String,
    pub token: u64,
    pub agent: String,
    pub agent_pid: u32,
    pub at_nanos: u128,
}

/// The lines of a [`timed_worker`]'s log.
pub fn read_runs(runs: &Path) -> Vec<Run> {
    std::fs::read_to_string(runs)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 6 {
                return None;
            }
            Some(Run {
                start: f[0] == "start",
                task: f[1].to_string(),
                token: f[2].parse().ok()?,
                agent: f[3].to_string(),
                agent_pid: f[4].parse().ok()?,
                at_nanos: f[5].parse().ok()?,
            })
        })
        .collect()
}

/// `n` distinct free ports for servers, outside the range the kernel takes
/// source ports of outgoing connections from (`tidal_chaos::cluster::server_port`).
pub fn free_ports(n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| tidal_chaos::cluster::server_port().expect("a free server port"))
        .collect()
}

/// One child process; SIGKILLed and reaped on drop.
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    pub fn spawn(name: &str, args: &[String], log: &Path) -> anyhow::Result<Proc> {
        Proc::spawn_env(name, args, &[], log)
    }

    /// Like [`Proc::spawn`], with extra environment variables.
    pub fn spawn_env(
        name: &str,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<Proc> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(tidal_exe());
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd.spawn().with_context(|| format!("spawn {name}"))?;
        Ok(Proc {
            name: name.to_string(),
            log: log.to_path_buf(),
            child: Some(child),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The exit status if the process has exited (it is reaped then), else `None`.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL and reap (a crash, as far as the process can tell).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `grace` for a clean exit, then SIGKILL.
    /// Returns the exit code of a clean exit.
    pub fn terminate(&mut self, grace: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) and returns at once.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: a plain kill(2) of our own child, which is not reaped yet.
            unsafe {
                libc::kill(pid as libc::pid_t, signal);
            }
        }
    }

    /// Waits up to `timeout` for the process to exit; its status, reaped.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_exit() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits up to `timeout` until the log has a line containing `needle`.
    pub async fn wait_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if std::fs::read_to_string(&self.log).is_ok_and(|t| t.contains(needle)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} logged no {needle:?} in {timeout:?}\n{}",
                    self.name,
                    self.log_tail(20)
                );
            }
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last `n` lines of the log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How to build a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOpts {
    pub nodes: usize,
    pub dc: String,
    /// Extra flags for every `tidal server` (e.g. `--agent-ttl-ms 3000`).
    pub server_args: Vec<String>,
    /// Add nodes 2..=N as learners and promote them.
    pub join: bool,
}

impl Default for ClusterOpts {
    fn default() -> ClusterOpts {
        ClusterOpts {
            nodes: 3,
            dc: "dc1".into(),
            server_args: Vec::new(),
            join: true,
        }
    }
}

/// An agent to start; the command defaults to the built-in demo worker.
#[derive(Clone, Debug)]
pub struct AgentOpts {
    pub id: String,
    pub task_types: Vec<String>,
    pub models: Vec<String>,
    pub slots: u32,
    pub extra_args: Vec<String>,
    pub command: Vec<String>,
    /// Extra environment variables of the agent process.
    pub env: Vec<(String, String)>,
}

impl AgentOpts {
    pub fn new(id: &str, task_types: &[&str]) -> AgentOpts {
        AgentOpts {
            id: id.to_string(),
            task_types: task_types.iter().map(|s| s.to_string()).collect(),
            models: Vec::new(),
            slots: 1,
            extra_args: Vec::new(),
            command: vec![
                tidal_exe().to_string(),
                "example-worker".into(),
                "--sleep-ms".into(),
                "50".into(),
            ],
            env: Vec::new(),
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> AgentOpts {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn models(mut self, models: &[&str]) -> AgentOpts {
        self.models = models.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn slots(mut self, slots: u32) -> AgentOpts {
        self.slots = slots;
        self
    }

    pub fn command(mut self, command: &[&str]) -> AgentOpts {
        self.command = command.iter().map(|s| s.to_string()).collect();
        self
    }
}

pub struct Node {
    pub id: u64,
    pub addr: String,
    pub data: PathBuf,
    pub proc: Option<Proc>,
}

pub struct Cluster {
    pub opts: ClusterOpts,
    pub nodes: Vec<Node>,
    pub agents: Vec<Proc>,
    pub client: Client,
    // Last, so processes are gone before the directory is removed.
    pub dir: TempDir,
}

impl Cluster {
    /// Ports and directories for `opts.nodes` servers; nothing is started.
    pub fn new(opts: ClusterOpts) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("tidal-it-").tempdir()?;
        let nodes: Vec<Node> = free_ports(opts.nodes)
            .into_iter()
            .enumerate()
            .map(|(i, port)| Node {
                id: i as u64 + 1,
                addr: format!("127.0.0.1:{port}"),
                data: dir.path().join(format!("node{}", i + 1)),
                proc: None,
            })
            .collect();
        let endpoints: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
        let client = Client::with_options(
            endpoints,
            ClientOptions {
                request_timeout: Duration::from_secs(5),
                retry_for: Duration::from_secs(20),
                connect_timeout: Duration::from_millis(500),
                source_ip: None,
                ..ClientOptions::default()
            },
        )?;
        Ok(Cluster {
            opts,
            nodes,
            agents: Vec::new(),
            client,
            dir,
        })
    }

    /// Starts every node (node 1 with `--init`), waits for a leader and, if
    /// `opts.join`, adds and promotes the others one at a time.
    pub async fn start(opts: ClusterOpts) -> anyhow::Result<Cluster> {
        let mut c = Cluster::new(opts)?;
        c.launch().await?;
        Ok(c)
    }

    /// Starts the nodes of a cluster made with [`Cluster::new`], as
    /// [`Cluster::start`] does (for settings that need the ports first, like
    /// two DCs naming each other as peers).
    pub async fn launch(&mut self) -> anyhow::Result<()> {
        let c = self;
        c.start_node(1, true)?;
        c.wait_leader(Duration::from_secs(20)).await?;
        for id in 2..=c.nodes.len() as u64 {
            c.start_node(id, false)?;
        }
        if c.opts.join {
            c.join_all().await?;
        }
        Ok(())
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    pub fn node_mut(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// `--endpoints` value naming every node.
    pub fn endpoints_arg(&self) -> String {
        self.endpoints().join(",")
    }

    /// Starts (or restarts, on its existing data) node `id`.
    pub fn start_node(&mut self, id: u64, init: bool) -> anyhow::Result<()> {
        self.start_node_with(id, init, &[])
    }

    /// Starts node `id` with flags of its own after the cluster's.
    pub fn start_node_with(&mut self, id: u64, init: bool, own: &[String]) -> anyhow::Result<()> {
        let dc = self.opts.dc.clone();
        let mut extra = self.opts.server_args.clone();
        extra.extend_from_slice(own);
        let log = self.dir.path().join(format!("node{id}.log"));
        let n = self.node_mut(id);
        let mut args: Vec<String> = vec![
            "server".into(),
            "--id".into(),
            id.to_string(),
            "--dc".into(),
            dc,
            "--listen".into(),
            n.addr.clone(),
            "--data".into(),
            n.data.display().to_string(),
        ];
        if init {
            args.push("--init".into());
        }
        args.extend(extra);
        n.proc = Some(Proc::spawn(&format!("node{id}"), &args, &log)?);
        Ok(())
    }

    /// SIGKILLs node `id` (its data stays for a restart).
    pub fn kill_node(&mut self, id: u64) {
        if let Some(mut p) = self.node_mut(id).proc.take() {
            p.kill();
        }
    }

    /// SIGTERMs node `id` and waits up to `timeout` for it to exit; its
    /// exit status (`None`: still running, then SIGKILLed) and how long it took.
    pub async fn terminate_node(
        &mut self,
        id: u64,
        timeout: Duration,
    ) -> (Option<std::process::ExitStatus>, Duration) {
        let Some(mut p) = self.node_mut(id).proc.take() else {
            return (None, Duration::ZERO);
        };
        let start = Instant::now();
        p.signal(libc::SIGTERM);
        let st = p.wait_exit(timeout).await;
        let took = start.elapsed();
        if st.is_none() {
            eprintln!("--- node{id} did not exit:\n{}", p.log_tail(30));
            p.kill();
        }
        (st, took)
    }

    /// Waits until some running node reports itself leader; returns its id and address.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<(u64, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            for n in self.nodes.iter().filter(|n| n.proc.is_some()) {
                if let Ok(s) = self.client.status_of(&n.addr).await {
                    if s.role == "leader" {
                        return Ok((s.node_id, n.addr.clone()));
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("no leader after {timeout:?}\n{}", self.logs_tail(20));
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until node `id` reports the leader's applied index and state
    /// digest; returns its status.
    pub async fn wait_caught_up(
        &self,
        id: u64,
        timeout: Duration,
    ) -> anyhow::Result<tidal_client::v1::StatusResponse> {
        let addr = self.node(id).addr.clone();
        let deadline = Instant::now() + timeout;
        loop {
            let leader_addr = self.client.status().await?.leader_addr;
            let leader = self.client.status_digest_of(&leader_addr).await;
            if let (Ok(l), Ok(s)) = (leader, self.client.status_digest_of(&addr).await) {
                if s.applied_index == l.applied_index && s.state_digest == l.state_digest {
                    return Ok(s);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "node {id} did not catch up after {timeout:?}\n{}",
                    self.logs_tail(20)
                );
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Adds every node but 1 as a learner, then promotes it, one at a time.
    pub async fn join_all(&self) -> anyhow::Result<()> {
        for n in self.nodes.iter().skip(1) {
            self.client
                .add_learner(n.id, &n.addr)
                .await
                .with_context(|| format!("add-learner {}\n{}", n.id, self.logs_tail(20)))?;
            self.client
                .promote(n.id)
                .await
                .with_context(|| format!("promote {}\n{}", n.id, self.logs_tail(20)))?;
        }
        Ok(())
    }

    /// Starts an agent against every node of the cluster.
    pub fn start_agent(&mut self, a: AgentOpts) -> anyhow::Result<()> {
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--id".into(),
            a.id.clone(),
            "--dc".into(),
            self.opts.dc.clone(),
            "--task-types".into(),
            a.task_types.join(","),
            "--slots".into(),
            a.slots.to_string(),
            "--endpoints".into(),
            self.endpoints_arg(),
        ];
        if !a.models.is_empty() {
            args.push("--models".into());
            args.push(a.models.join(","));
        }
        args.extend(a.extra_args);
        args.push("--".into());
        args.extend(a.command);
        // A second process under one id gets a log of its own.
        let mut log = self.dir.path().join(format!("{}.log", a.id));
        let mut n = 1;
        while log.exists() {
            n += 1;
            log = self.dir.path().join(format!("{}.{n}.log", a.id));
        }
        self.agents
            .push(Proc::spawn_env(&a.id, &args, &a.env, &log)?);
        Ok(())
    }

    /// Waits until at least `n` agents are connected and ready.
    pub async fn wait_agents(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(agents) = self.client.list_agents(false).await {
                let ready = agents
                    .iter()
                    .filter(|a| {
                        a.connected && a.state == tidal_client::v1::AgentState::Ready as i32
                    })
                    .count();
                if ready >= n {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "fewer than {n} agents connected after {timeout:?}\n{}",
                    self.logs_tail(20)
                );
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs the CLI against this cluster (`TIDAL_ENDPOINTS` names every node).
    pub fn tidal(&self, args: &[&str]) -> Output {
        Command::new(tidal_exe())
            .args(args)
            .env("TIDAL_ENDPOINTS", self.endpoints_arg())
            .env_remove("RUST_LOG")
            .output()
            .expect("run the tidal binary")
    }

    /// Like [`Cluster::tidal`], but fails with stderr unless the exit code is 0; returns stdout.
    pub fn tidal_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let o = self.tidal(args);
        if !o.status.success() {
            bail!(
                "tidal {args:?} exited {:?}: {}",
                o.status.code(),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// The end of every process's log, for failure messages.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for p in self
            .nodes
            .iter()
            .filter_map(|n| n.proc.as_ref())
            .chain(self.agents.iter())
        {
            out.push_str(&format!(
                "--- {} ({})\n{}\n",
                p.name,
                p.log.display(),
                p.log_tail(lines)
            ));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for a in &mut self.agents {
            a.kill();
        }
        for n in &mut self.nodes {
            if let Some(p) = n.proc.as_mut() {
                p.kill();
            }
        }
        // TIDAL_IT_KEEP=1 keeps the data directories and logs, for debugging.
        if std::env::var_os("TIDAL_IT_KEEP").is_some() {
            if let Ok(empty) = tempfile::tempdir() {
                let kept = std::mem::replace(&mut self.dir, empty).keep();
                eprintln!("kept {}", kept.display());
            }
        }
    }
}

/// A TCP relay to one address that a test can cut (every connection through
/// it is closed and new ones are closed at once) and heal: a link between
/// two DCs that can fail.
pub struct Relay {
    pub addr: String,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(target: &str) -> anyhow::Result<Relay> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let (cut, _) = tokio::sync::watch::channel(false);
        let target = target.to_string();
        let watch = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut rx = watch.subscribe();
                if *rx.borrow() {
                    continue; // dropped: closed at once
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Ok(Relay { addr, cut, task })
    }

    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut.send_replace(true);
        self.task.abort();
    }
}
