//! Real `tidal` processes for a chaos run: nodes behind their proxies and
//! agents whose workers present their tokens to the sink. Every process
//! dials from its own loopback address so the proxies can fault each link.
//! In the netns mode there are no proxies: each node and agent runs in its
//! own network namespace (`ip netns exec NS tidal ...`), the nodes listen
//! on their namespace's address and nftables drops the faulted packets.

use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tidal_client::{v1, Client, ClientOptions};
use tokio::time::{sleep, Instant};

use crate::link::Peer;
use crate::net::Net;
use crate::proxy::Proxy;

/// What a run's cluster looks like.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The `tidal` binary.
    pub tidal: PathBuf,
    /// Where data directories and logs go.
    pub dir: PathBuf,
    pub nodes: usize,
    /// How many of the nodes join at the start (the rest run as strangers
    /// until a scenario adds them).
    pub voters: usize,
    pub agents: usize,
    pub agent_slots: u32,
    /// The server's agent lease; agents take 60% of it.
    pub agent_ttl_ms: u64,
    /// How long a worker pretends to work.
    pub work_ms: u64,
    pub seed: u64,
    /// The data center's name.
    pub dc: String,
    /// Added to node and agent numbers for their loopback identities, so a
    /// second DC's processes are told apart from the first's (0 and 10).
    pub id_base: u8,
    /// What its agents run, comma-separated.
    pub task_types: String,
    /// Agent 1's work when it differs from `work_ms` (the netns scenarios
    /// give the agent that stays with a deposed leader long tasks, so its
    /// workers still run when the task could be granted again).
    pub agent1_work_ms: Option<u64>,
    /// Run each worker under `sh`, so the process that presents the token
    /// to the sink is the agent's grandchild (agent-kill: PDEATHSIG reaches
    /// only the shell; the rest must die by the agent's reaper or cgroup).
    pub wrap_workers: bool,
}

impl Layout {
    /// The proxy identity of node `id`.
    pub fn node_peer(&self, id: u64) -> Peer {
        Peer::Node(self.id_base + id as u8)
    }

    pub fn agent_peer(&self, k: u8) -> Peer {
        Peer::Agent(self.id_base + k)
    }

    /// The id agent `k` registers with.
    pub fn agent_id(&self, k: u8) -> String {
        format!("{}agent-{k}", log_prefix(self))
    }
}

/// One child process; SIGKILLed on drop.
pub struct Proc {
    pub log: PathBuf,
    args: Vec<String>,
    /// The network namespace it runs in (netns mode).
    netns: Option<String>,
    child: Option<Child>,
    /// How many times it was restarted (the first start is incarnation 0).
    pub incarnation: u32,
    started: bool,
    pub paused: bool,
    /// Extra environment for the next start (e.g. armed crash points).
    pub env: Vec<(String, String)>,
}

impl Proc {
    fn new(log: PathBuf, args: Vec<String>, netns: Option<String>) -> Proc {
        Proc {
            log,
            args,
            netns,
            child: None,
            incarnation: 0,
            started: false,
            paused: false,
            env: Vec::new(),
        }
    }

    fn start(&mut self, tidal: &Path) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let out = File::options().create(true).append(true).open(&self.log)?;
        let err = out.try_clone()?;
        // `ip netns exec` enters the namespace and execs tidal in place, so
        // the child's pid is tidal's (signals reach it, not a wrapper).
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(tidal);
                c
            }
            None => Command::new(tidal),
        };
        die_with_parent(&mut cmd);
        let child = cmd
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("TIDAL_CHAOS_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("FAILPOINTS")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", tidal.display()))?;
        if self.started {
            self.incarnation += 1;
        }
        self.started = true;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// If the process has exited on its own, reaps it and says how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// Sends SIGTERM: a graceful stop.
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends SIGUSR1: a `tidal server` built with `failpoints` loses power
    /// (drops every write it has not fsynced and aborts).
    pub fn lose_power(&self) {
        self.signal(libc::SIGUSR1);
    }

    /// Waits up to `timeout` for the process to exit on its own; reaps it
    /// and says how.
    pub async fn wait_exit(
        &mut self,
        timeout: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if self.child.is_none() || tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// The last line of its log that contains `needle`.
    pub fn last_log_line(&self, needle: &str) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        text.lines()
            .rev()
            .find(|l| l.contains(needle))
            .map(|l| l.trim().to_string())
    }

    pub fn pause(&mut self) {
        if self.child.is_some() && !self.paused {
            self.signal(libc::SIGSTOP);
            self.paused = true;
        }
    }

    pub fn resume(&mut self) {
        if self.paused {
            self.signal(libc::SIGCONT);
            self.paused = false;
        }
    }
}

/// On Linux, the child gets SIGKILL when the thread that started it ends,
/// so a harness killed by a CI timeout leaves no servers or agents behind.
/// (Processes are started from the runtime's worker threads, which live as
/// long as the harness.)
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

impl Drop for Proc {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

pub struct Node {
    pub id: u64,
    /// Where the node listens; only the observer dials it directly.
    pub private: SocketAddr,
    /// Its proxy: what it advertises and everyone else dials.
    pub public: SocketAddr,
    pub proc: Proc,
}

pub struct Cluster {
    pub layout: Layout,
    pub nodes: Vec<Node>,
    pub agents: Vec<Proc>,
    /// Agent processes replaced by another process under their id
    /// (duplicate-agent-id), kept for their logs.
    pub retired: Vec<Proc>,
    pub net: Net,
    /// An unfaulted client (it dials from 127.0.0.1) for set-up, the
    /// observer and the end-of-run reads.
    pub admin: Client,
    /// Each node's incarnation, shared with the observer.
    pub incarnations: Arc<Vec<AtomicU32>>,
    _proxies: Vec<Proxy>,
}

/// The port every node listens on in the netns mode (each in its own
/// namespace, on its own address).
pub const NETNS_SERVER_PORT: u16 = 7100;

/// Where [`server_port`] looks: from here up to the kernel's range for
/// outgoing connections.
const SERVER_PORTS_FROM: u32 = 10_000;

/// The first port of the kernel's range for outgoing connections.
fn outgoing_ports_from() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768)
        .min(u32::from(u16::MAX))
}

/// A free 127.0.0.1 port for a server that binds it later, and again after
/// each restart. A port from `127.0.0.1:0` comes from the kernel's range for
/// outgoing connections (`ip_local_port_range`, 32768-60999 by default), so
/// any connection made in the meantime may take it as its source port and
/// the server then fails with "Address already in use" (seen in CI: a node
/// of S18 never started). These ports come from below that range, from a
/// starting point that differs per process and moves on with each call;
/// each is checked free by binding it.
pub fn server_port() -> anyhow::Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let outgoing_from = outgoing_ports_from();
    let Some(span) = outgoing_from
        .checked_sub(SERVER_PORTS_FROM)
        .filter(|&n| n >= 1_000)
    else {
        bail!("no room for server ports below the outgoing range, which starts at {outgoing_from}");
    };
    // Spread processes (nextest runs each test in its own) over the span.
    let base = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let k = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = (SERVER_PORTS_FROM + (base + k) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port between {SERVER_PORTS_FROM} and {outgoing_from}")
}

impl Cluster {
    /// Starts the nodes behind their proxies, joins them into one group and
    /// starts the agents; returns when every agent is connected.
    pub async fn start(layout: Layout, sink: SocketAddr) -> anyhow::Result<Cluster> {
        let mut c = Cluster::prepare(layout, sink, Net::default())?;
        c.launch().await?;
        Ok(c)
    }

    /// Binds the proxies and builds every process's arguments; starts
    /// nothing. The DC's faults go through `net` (share one between DCs to
    /// cut the link between them).
    pub fn prepare(layout: Layout, sink: SocketAddr, net: Net) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(&layout.dir)?;
        let mut nodes = Vec::new();
        let mut proxies = Vec::new();
        let ns = net.namespaces();
        if ns.is_some() && layout.id_base != 0 {
            bail!("the netns mode runs one DC");
        }
        for i in 1..=layout.nodes as u64 {
            let peer = layout.node_peer(i);
            let (private, public) = match ns {
                // Its own namespace: one address, no proxy.
                Some(ns) => {
                    let addr = SocketAddr::new(ns.ip(peer), NETNS_SERVER_PORT);
                    (addr, addr)
                }
                None => {
                    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
                    let public = listener.local_addr()?;
                    let private: SocketAddr = format!("127.0.0.1:{}", server_port()?).parse()?;
                    proxies.push(Proxy::start(
                        listener,
                        layout.id_base + i as u8,
                        private,
                        net.clone(),
                        layout.seed ^ i,
                    )?);
                    (private, public)
                }
            };
            let args = node_args(&layout, i, private, public, net.ip(peer));
            nodes.push(Node {
                id: i,
                private,
                public,
                proc: Proc::new(
                    layout
                        .dir
                        .join(format!("{}node{i}.log", log_prefix(&layout))),
                    args,
                    ns.and_then(|n| n.ns(peer)),
                ),
            });
        }
        let publics: Vec<String> = nodes.iter().map(|n| n.public.to_string()).collect();
        let mut agents = Vec::new();
        for k in 1..=layout.agents {
            let peer = layout.agent_peer(k as u8);
            let args = agent_args(&layout, k as u8, &publics, sink, net.ip(peer));
            agents.push(Proc::new(
                layout
                    .dir
                    .join(format!("{}agent-{k}.log", log_prefix(&layout))),
                args,
                ns.and_then(|n| n.ns(peer)),
            ));
        }
        let admin = Client::with_options(
            publics.clone(),
            ClientOptions {
                request_timeout: Duration::from_secs(2),
                retry_for: Duration::from_secs(10),
                connect_timeout: Duration::from_millis(300),
                // The root namespace's own address, which no fault names.
                source_ip: ns.map(|n| n.host_ip()),
                ..ClientOptions::default()
            },
        )?;
        let incarnations = Arc::new((0..nodes.len()).map(|_| AtomicU32::new(0)).collect());
        Ok(Cluster {
            layout,
            nodes,
            agents,
            retired: Vec::new(),
            net,
            admin,
            incarnations,
            _proxies: proxies,
        })
    }

    /// What every other DC dials to reach this one: its nodes' proxies.
    pub fn publics(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.public.to_string()).collect()
    }

    /// Adds server flags to every node (before [`Cluster::launch`]).
    pub fn add_server_args(&mut self, args: &[String]) {
        for n in &mut self.nodes {
            n.proc.args.extend(args.iter().cloned());
        }
    }

    /// Starts the nodes prepared by [`Cluster::prepare`], joins them and
    /// starts the agents; returns when every agent is connected.
    pub async fn launch(&mut self) -> anyhow::Result<()> {
        let c = self;
        c.nodes[0].proc.args.push("--init".into());
        c.nodes[0].proc.start(&c.layout.tidal)?;
        c.wait_leader(Duration::from_secs(20)).await?;
        for i in 1..c.nodes.len() {
            c.nodes[i].proc.start(&c.layout.tidal)?;
        }
        for n in c.nodes.iter().take(c.layout.voters).skip(1) {
            c.admin
                .add_learner(n.id, &n.public.to_string())
                .await
                .with_context(|| format!("adding node {}", n.id))?;
            c.admin
                .promote(n.id)
                .await
                .with_context(|| format!("promoting node {}", n.id))?;
        }
        for a in &mut c.agents {
            a.start(&c.layout.tidal)?;
        }
        c.wait_agents(Duration::from_secs(30)).await?;
        Ok(())
    }

    pub fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        let tidal = self.layout.tidal.clone();
        self.node(id).proc.start(&tidal)?;
        let inc = self.node(id).proc.incarnation;
        self.incarnations[(id - 1) as usize].store(inc, Ordering::Relaxed);
        Ok(())
    }

    pub fn restart_agent(&mut self, k: usize) -> anyhow::Result<()> {
        let tidal = self.layout.tidal.clone();
        self.agents[k - 1].start(&tidal)
    }

    /// Starts a second process with agent `k`'s id and flags (its own log,
    /// `agent-K.dupN.log`), while agent `k` may still run.
    pub fn start_duplicate_agent(&mut self, k: usize) -> anyhow::Result<Proc> {
        let a = &self.agents[k - 1];
        let n = self.retired.len() + 1;
        let log = self
            .layout
            .dir
            .join(format!("{}agent-{k}.dup{n}.log", log_prefix(&self.layout)));
        let mut p = Proc::new(log, a.args.clone(), a.netns.clone());
        p.start(&self.layout.tidal)?;
        Ok(p)
    }

    /// Makes `p` agent `k`'s process; the one it replaces is retired.
    pub fn replace_agent(&mut self, k: usize, p: Proc) {
        let old = std::mem::replace(&mut self.agents[k - 1], p);
        self.retired.push(old);
    }

    /// One node's own status, straight from its private port.
    pub async fn status(&self, id: u64) -> Option<v1::StatusResponse> {
        let n = &self.nodes[(id - 1) as usize];
        tokio::time::timeout(
            Duration::from_millis(500),
            self.admin.status_digest_of(&n.private.to_string()),
        )
        .await
        .ok()?
        .ok()
    }

    /// The node that says it leads (among running, unpaused nodes).
    pub async fn leader(&self) -> Option<u64> {
        for n in self
            .nodes
            .iter()
            .filter(|n| n.proc.running() && !n.proc.paused)
        {
            if let Some(s) = self.status(n.id).await {
                if s.role == "leader" {
                    return Some(n.id);
                }
            }
        }
        None
    }

    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader().await {
                return Ok(l);
            }
            if Instant::now() > deadline {
                bail!("no leader after {timeout:?}");
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_agents(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(agents) = self.admin.list_agents(false).await {
                if agents.iter().filter(|a| a.connected).count() >= self.agents.len() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "fewer than {} agents connected after {timeout:?}",
                    self.agents.len()
                );
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every peer of the run, for faults that cut whole groups.
    pub fn peers_except_nodes(&self, clients: usize) -> Vec<Peer> {
        (1..=self.agents.len() as u8)
            .map(|k| self.layout.agent_peer(k))
            .chain((1..=clients as u8).map(Peer::Client))
            .collect()
    }

    /// Heals the network, resumes paused processes and restarts dead ones.
    pub fn heal_all(&mut self) -> anyhow::Result<()> {
        self.net.heal();
        // Disarm crash points: restart armed nodes without them.
        for id in 1..=self.nodes.len() as u64 {
            if !self.node(id).proc.env.is_empty() {
                self.node(id).proc.env.clear();
                self.node(id).proc.resume();
                self.node(id).proc.kill();
            }
        }
        for id in 1..=self.nodes.len() as u64 {
            self.node(id).proc.resume();
            self.restart(id)?;
        }
        for k in 1..=self.agents.len() {
            self.agents[k - 1].resume();
            self.restart_agent(k)?;
        }
        Ok(())
    }

    /// SIGKILLs everything (the end of a run).
    pub fn stop_all(&mut self) {
        for a in self.agents.iter_mut().chain(self.retired.iter_mut()) {
            a.resume();
            a.kill();
        }
        for n in &mut self.nodes {
            n.proc.resume();
            n.proc.kill();
        }
    }

    /// The nodes' log lines that contain `needle`.
    pub fn node_log_lines(&self, needle: &str) -> Vec<String> {
        let mut out = Vec::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.proc.log).unwrap_or_default();
            out.extend(
                text.lines()
                    .filter(|l| l.contains(needle))
                    .map(|l| format!("node {}: {}", n.id, l.trim())),
            );
        }
        out
    }

    /// The agents' log lines that contain `needle`.
    pub fn agent_log_lines(&self, needle: &str) -> Vec<String> {
        let mut out = Vec::new();
        for a in self.agents.iter().chain(&self.retired) {
            let text = std::fs::read_to_string(&a.log).unwrap_or_default();
            out.extend(
                text.lines()
                    .filter(|l| l.contains(needle))
                    .map(|l| l.trim().to_string()),
            );
        }
        out
    }

    /// Log lines that show a panic, with their file.
    pub fn panics(&self) -> Vec<String> {
        let logs = self
            .nodes
            .iter()
            .map(|n| &n.proc.log)
            .chain(self.agents.iter().chain(&self.retired).map(|a| &a.log));
        let mut out = Vec::new();
        for log in logs {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            for line in text.lines().filter(|l| l.contains("panicked")) {
                out.push(format!("{}: {line}", log.display()));
            }
        }
        out
    }
}

/// Log names of a second DC start with its name.
fn log_prefix(l: &Layout) -> String {
    if l.id_base == 0 {
        String::new()
    } else {
        format!("{}-", l.dc)
    }
}

fn node_args(
    l: &Layout,
    id: u64,
    private: SocketAddr,
    public: SocketAddr,
    source_ip: IpAddr,
) -> Vec<String> {
    let hb = (l.agent_ttl_ms / 4).max(50);
    [
        "server",
        "--id",
        &id.to_string(),
        "--dc",
        &l.dc,
        "--listen",
        &private.to_string(),
        "--advertise",
        &public.to_string(),
        "--data",
        &l.dir
            .join(format!("{}node{id}", log_prefix(l)))
            .display()
            .to_string(),
        "--source-ip",
        &source_ip.to_string(),
        "--agent-ttl-ms",
        &l.agent_ttl_ms.to_string(),
        "--heartbeat-interval-ms",
        &hb.to_string(),
        "--snapshot-every",
        "300",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn agent_args(
    l: &Layout,
    k: u8,
    publics: &[String],
    sink: SocketAddr,
    source_ip: IpAddr,
) -> Vec<String> {
    let work_ms = match l.agent1_work_ms {
        Some(ms) if k == 1 => ms,
        _ => l.work_ms,
    };
    let wrap: &[&str] = if l.wrap_workers {
        // The shell waits for the worker and exits with its status.
        &["sh", "-c", "\"$@\"; exit $?", "sh"]
    } else {
        &[]
    };
    [
        "agent",
        "--id",
        &l.agent_id(k),
        "--dc",
        &l.dc,
        "--task-types",
        &l.task_types,
        "--slots",
        &l.agent_slots.to_string(),
        "--source-ip",
        &source_ip.to_string(),
        "--endpoints",
        &publics.join(","),
        "--",
    ]
    .iter()
    .chain(wrap)
    .chain(&[
        l.tidal.display().to_string().as_str(),
        "example-worker",
        "--sleep-ms",
        &work_ms.to_string(),
        "--fence-at",
        &sink.to_string(),
    ])
    .map(|s| s.to_string())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ports_are_distinct_and_below_the_outgoing_range() {
        let outgoing_from = outgoing_ports_from();
        let ports: Vec<u16> = (0..50).map(|_| server_port().unwrap()).collect();
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        for &p in &ports {
            assert!(
                u32::from(p) >= SERVER_PORTS_FROM && u32::from(p) < outgoing_from,
                "{p}"
            );
        }
    }
}
