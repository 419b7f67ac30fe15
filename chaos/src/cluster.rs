//! Real `tidal` processes for a chaos run: nodes behind their proxies and
//! agents whose workers present their tokens to the sink. Every process
//! dials from its own loopback address so the proxies can fault each link.
//! In the netns mode there are no proxies: each node and agent runs in its
//! own network namespace (`ip netns exec NS tidal ...`), the nodes listen
//! on their namespace's address and nftables drops the faulted packets.
//! With [`Layout::tls`], every node, agent and client has a certificate of
//! its own and speaks mutual TLS; the proxies pass its bytes on unchanged
//! (the peers check identities, not addresses). With [`Layout::tokens`],
//! the servers run `--auth tokens` with a bootstrap admin token the run
//! makes (`tidal token generate`), which the run's own clients present, and
//! every agent gets an agent token of its own (so revoking one token
//! affects one agent). Without TLS every process is told `--insecure`, and
//! in the netns mode (nodes on non-loopback addresses) the nodes serve the
//! peer plane on a listener of its own (`--peer-listen`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tidal_client::tidal_tls::rustls::ClientConfig;
use tidal_client::tidal_tls::Expect;
use tidal_client::{v1, Client, ClientOptions, Token};
pub use tidal_testkit::Proc;
use tidal_testkit::{Pki, Port};
use tokio::time::{sleep, Instant};

use crate::link::Peer;
use crate::net::Net;
use crate::proxy::Proxy;

/// The servers' default election timeout minimum (the harness does not
/// change it unless `--server-arg` does).
pub(crate) const ELECTION_TIMEOUT_MIN_MS: u64 = 150;

/// The servers' default Raft heartbeat interval.
const RAFT_HEARTBEAT_MS: u64 = 50;

/// The shortest runtime stall of a server that can cost a leader its
/// leadership without any fault: a follower that stalls this long may wake
/// to an election timer that expired (its last heartbeat came up to one
/// heartbeat interval before the stall) before it reads the heartbeat
/// waiting for it, and a leader that stalls this long sends nothing for an
/// election timeout. Shorter stalls cannot: the S1 and S29 criteria excuse
/// an election only for a stall of at least this.
pub(crate) const STALL_COSTS_LEADERSHIP_MS: u64 = ELECTION_TIMEOUT_MIN_MS - RAFT_HEARTBEAT_MS;

/// The shortest wait of a leader's Raft core for its disk that can cost
/// its leadership: three election timeouts (the upper bound, 300 ms), past
/// which it no longer tells its voters it is alive (tidal-server's
/// `raft::alive`).
pub(crate) const DISK_STALL_COSTS_LEADERSHIP_MS: u64 = 3 * 300;

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
    /// Each agent's GPUs (A100 devices 0..n): with format version 5 their
    /// tasks hold devices, whose workers tell the sink which
    /// (`TIDAL_GPU_IDS`), for the exclusivity checker.
    pub agent_gpus: u32,
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
    /// Mutual TLS, with certificates from this CA (shared by both DCs).
    pub tls: Option<Pki>,
    /// `--auth tokens` (an admin token for the run's clients, an agent
    /// token per agent); `--auth none` without.
    pub tokens: bool,
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

    /// The servers' agent heartbeat interval (`--heartbeat-interval-ms`):
    /// a quarter of the agent lease.
    pub fn heartbeat_ms(&self) -> u64 {
        (self.agent_ttl_ms / 4).max(50)
    }

    /// The client configuration for this DC's servers, with TLS.
    pub fn client_tls(&self) -> anyhow::Result<Option<Arc<ClientConfig>>> {
        match &self.tls {
            Some(pki) => Ok(Some(
                pki.client_config("chaos", Expect::Dc(self.dc.clone()))?,
            )),
            None => Ok(None),
        }
    }

    /// `--tls-dir DIR` of node `id`, with TLS.
    fn node_tls_args(&self, id: u64) -> anyhow::Result<Vec<String>> {
        match &self.tls {
            Some(pki) => Ok(tls_dir_arg(&pki.server(&self.dc, id)?)),
            None => Ok(Vec::new()),
        }
    }

    /// `--tls-dir DIR` of agent `k`, with TLS.
    fn agent_tls_args(&self, k: u8) -> anyhow::Result<Vec<String>> {
        match &self.tls {
            Some(pki) => Ok(tls_dir_arg(&pki.agent(&self.dc, &self.agent_id(k))?)),
            None => Ok(Vec::new()),
        }
    }
}

fn tls_dir_arg(dir: &std::path::Path) -> Vec<String> {
    vec!["--tls-dir".into(), dir.display().to_string()]
}

/// The port of every node's peer listener in the netns mode without TLS.
pub const NETNS_PEER_PORT: u16 = 7101;

/// Variables of the harness's own environment that would change what its
/// processes do (a user's `. DIR/env` of `tidal dev`, say): every process
/// gets its settings as flags, never from these.
const INHERITED_SETTINGS: &[&str] = &[
    "FAILPOINTS",
    "TIDAL_TOKEN",
    "TIDAL_TLS_DIR",
    "TIDAL_INSECURE",
    "TIDAL_AUTH",
    "TIDAL_ENDPOINTS",
    "TIDAL_BOOTSTRAP_TOKEN_FILE",
];

/// Writes a token to `path`, one line, readable by its owner only.
fn write_secret(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{text}").with_context(|| format!("writing {}", path.display()))
}

/// A new token's text from `tidal token generate` (stores nothing).
fn generate_token(tidal: &std::path::Path) -> anyhow::Result<String> {
    let o = std::process::Command::new(tidal)
        .args(["token", "generate"])
        .env_remove("RUST_LOG")
        .output()
        .context("running tidal token generate")?;
    if !o.status.success() {
        bail!(
            "tidal token generate exited {:?}: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// A node or agent process of the run: `ip netns exec NS tidal ...` in the
/// netns mode, killed when the harness dies, logging at `TIDAL_CHAOS_LOG`
/// (default info), never armed by the harness's own `FAILPOINTS`.
fn proc(
    layout: &Layout,
    name: &str,
    args: Vec<String>,
    log: PathBuf,
    netns: Option<String>,
) -> Proc {
    let level = std::env::var("TIDAL_CHAOS_LOG").unwrap_or_else(|_| "info".into());
    let mut p = Proc::new(name, &layout.tidal, args, &log)
        .netns(netns)
        .env("RUST_LOG", &level);
    for key in INHERITED_SETTINGS {
        p = p.env_remove(key);
    }
    p
}

pub struct Node {
    pub id: u64,
    /// Where the node listens; only the observer dials it directly.
    pub private: SocketAddr,
    /// Holds `private` for the run (not in the netns mode, where each node
    /// has its namespace's address to itself).
    _held: Option<Port>,
    /// Its proxy: what it advertises and everyone else dials.
    pub public: SocketAddr,
    /// Its peer listener (`--peer-listen`), in the netns mode without TLS.
    pub peer: Option<SocketAddr>,
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
    /// The admin token `admin` presents (the servers' bootstrap token),
    /// with [`Layout::tokens`].
    pub admin_token: Option<Token>,
    /// Each agent's current token id, with [`Layout::tokens`] (set when
    /// the agents start).
    pub agent_tokens: Vec<Option<String>>,
    _proxies: Vec<Proxy>,
}

/// The port every node listens on in the netns mode (each in its own
/// namespace, on its own address).
pub const NETNS_SERVER_PORT: u16 = 7100;

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
        let admin_token = match layout.tokens {
            true => {
                let text = generate_token(&layout.tidal)?;
                let path = layout
                    .dir
                    .join(format!("{}admin.token", log_prefix(&layout)));
                write_secret(&path, &text)?;
                Some((Token::new(&text)?, path))
            }
            false => None,
        };
        let auth_args: Vec<String> = match &admin_token {
            Some((_, path)) => vec![
                "--auth".into(),
                "tokens".into(),
                "--bootstrap-token-file".into(),
                path.display().to_string(),
            ],
            None => vec!["--auth".into(), "none".into()],
        };
        for i in 1..=layout.nodes as u64 {
            let peer = layout.node_peer(i);
            let (private, public, held) = match ns {
                // Its own namespace: one address, no proxy.
                Some(ns) => {
                    let addr = SocketAddr::new(ns.ip(peer), NETNS_SERVER_PORT);
                    (addr, addr, None)
                }
                None => {
                    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
                    let public = listener.local_addr()?;
                    let held = Port::local().context("holding a server port")?;
                    let private = held.addr();
                    proxies.push(Proxy::start(
                        listener,
                        layout.id_base + i as u8,
                        private,
                        net.clone(),
                        layout.seed ^ i,
                    )?);
                    (private, public, Some(held))
                }
            };
            let mut args = node_args(&layout, i, private, public, net.ip(peer));
            args.extend(auth_args.iter().cloned());
            // Without TLS on a namespace's own (non-loopback) address, the
            // peer plane gets a listener of its own, checked against the
            // membership's peer addresses.
            let peer_listen = match (ns, &layout.tls) {
                (Some(ns), None) => Some(SocketAddr::new(ns.ip(peer), NETNS_PEER_PORT)),
                _ => None,
            };
            match &layout.tls {
                Some(_) => args.extend(layout.node_tls_args(i)?),
                None => args.push("--insecure".into()),
            }
            if let Some(p) = peer_listen {
                args.extend(["--peer-listen".into(), p.to_string()]);
            }
            let name = format!("{}node{i}", log_prefix(&layout));
            let log = layout.dir.join(format!("{name}.log"));
            nodes.push(Node {
                id: i,
                private,
                _held: held,
                public,
                peer: peer_listen,
                proc: proc(&layout, &name, args, log, ns.and_then(|n| n.ns(peer))),
            });
        }
        let publics: Vec<String> = nodes.iter().map(|n| n.public.to_string()).collect();
        let mut agents = Vec::new();
        for k in 1..=layout.agents {
            let peer = layout.agent_peer(k as u8);
            let mut args = agent_args(&layout, k as u8, &publics, sink, net.ip(peer));
            // Before the `--` that starts the worker's command.
            let at = args.iter().position(|a| a == "--").unwrap_or(args.len());
            let command = args.split_off(at);
            match &layout.tls {
                Some(_) => args.extend(layout.agent_tls_args(k as u8)?),
                None => args.push("--insecure".into()),
            }
            args.extend(command);
            let name = format!("{}agent-{k}", log_prefix(&layout));
            let log = layout.dir.join(format!("{name}.log"));
            agents.push(proc(&layout, &name, args, log, ns.and_then(|n| n.ns(peer))));
        }
        let admin = Client::with_options(
            publics.clone(),
            ClientOptions {
                request_timeout: Duration::from_secs(2),
                retry_for: Duration::from_secs(10),
                connect_timeout: Duration::from_millis(300),
                // The root namespace's own address, which no fault names.
                source_ip: ns.map(|n| n.host_ip()),
                tls: layout.client_tls()?,
                token: admin_token.as_ref().map(|(t, _)| t.clone()),
                ..ClientOptions::default()
            },
        )?;
        let incarnations = Arc::new((0..nodes.len()).map(|_| AtomicU32::new(0)).collect());
        let agent_tokens = vec![None; agents.len()];
        Ok(Cluster {
            layout,
            nodes,
            agents,
            retired: Vec::new(),
            net,
            admin,
            incarnations,
            admin_token: admin_token.map(|(t, _)| t),
            agent_tokens,
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
        c.nodes[0].proc.start()?;
        c.wait_leader(Duration::from_secs(20)).await?;
        if c.layout.tokens {
            c.wait_bootstrapped(Duration::from_secs(20)).await?;
        }
        for i in 1..c.nodes.len() {
            c.nodes[i].proc.start()?;
        }
        for n in c.nodes.iter().take(c.layout.voters).skip(1) {
            c.join(n.id)
                .await
                .with_context(|| format!("adding and promoting node {}", n.id))?;
        }
        for k in 1..=c.agents.len() {
            if c.layout.tokens {
                c.new_agent_token(k).await?;
            }
            c.agents[k - 1].start()?;
        }
        c.wait_agents(Duration::from_secs(30)).await?;
        Ok(())
    }

    /// Adds node `id` as a learner (with its peer address, if it has a
    /// peer listener) and promotes it; both are idempotent.
    pub async fn join(&self, id: u64) -> Result<(), tidal_client::Error> {
        let n = &self.nodes[(id - 1) as usize];
        let peer = n.peer.map(|p| p.to_string());
        self.admin
            .add_learner_with_peer(id, &n.public.to_string(), peer.as_deref())
            .await?;
        self.admin.promote(id).await.map(|_| ())
    }

    /// Waits until the leader has made the bootstrap token the first admin
    /// token (the admin client can list tokens).
    async fn wait_bootstrapped(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.admin.list_tokens().await {
                Ok(tokens) if !tokens.is_empty() => return Ok(()),
                r if Instant::now() > deadline => {
                    bail!("the bootstrap token was not created after {timeout:?}: {r:?}")
                }
                _ => sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Creates a new agent token (every tenant) for agent `k`, which its
    /// next start presents (`TIDAL_TOKEN`); returns the token's id.
    pub async fn new_agent_token(&mut self, k: usize) -> anyhow::Result<String> {
        let name = self.layout.agent_id(k as u8);
        let created = self
            .admin
            .create_token(v1::CreateTokenRequest {
                role: "agent".into(),
                all_tenants: true,
                name: name.clone(),
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating an agent token for {name}"))?;
        let id = created.info.map(|i| i.id).unwrap_or_default();
        self.agents[k - 1].extra_env = vec![("TIDAL_TOKEN".into(), created.token)];
        self.agent_tokens[k - 1] = Some(id.clone());
        Ok(id)
    }

    pub fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.node(id).proc.start()?;
        let inc = self.node(id).proc.incarnation;
        self.incarnations[(id - 1) as usize].store(inc, Ordering::Relaxed);
        Ok(())
    }

    pub fn restart_agent(&mut self, k: usize) -> anyhow::Result<()> {
        self.agents[k - 1].start()
    }

    /// Starts a second process with agent `k`'s id and flags (its own log,
    /// `agent-K.dupN.log`), while agent `k` may still run.
    pub fn start_duplicate_agent(&mut self, k: usize) -> anyhow::Result<Proc> {
        let a = &self.agents[k - 1];
        let n = self.retired.len() + 1;
        let name = format!("{}agent-{k}.dup{n}", log_prefix(&self.layout));
        let log = self.layout.dir.join(format!("{name}.log"));
        let mut p = proc(&self.layout, &name, a.args.clone(), log, a.netns.clone());
        p.extra_env = a.extra_env.clone();
        p.start()?;
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
            if !self.node(id).proc.extra_env.is_empty() {
                self.node(id).proc.extra_env.clear();
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

    /// The stalls of at least `min_ms` the servers logged, as "node N: X ms
    /// (why)": a runtime stall (the machine starved a server of CPU), or a
    /// disk stall of at least [`DISK_STALL_COSTS_LEADERSHIP_MS`] (a log
    /// sync, or a store call holding the Raft core: a leader tells its
    /// voters it is alive through shorter ones, `Raft/LeaderAlive`).
    pub fn stalls(&self, min_ms: u64) -> Vec<String> {
        let disk_ms = min_ms.max(DISK_STALL_COSTS_LEADERSHIP_MS);
        let kinds = [
            ("runtime stalled", "stalled_ms=", min_ms, "runtime"),
            ("fdatasync was slow", "took_ms=", disk_ms, "log sync"),
            (
                "held the Raft core",
                "took_ms=",
                disk_ms,
                "store call on the Raft core",
            ),
        ];
        let mut out = Vec::new();
        for (needle, field, least, why) in kinds {
            out.extend(self.node_log_lines(needle).into_iter().filter_map(|line| {
                let ms: u64 = line
                    .split(field)
                    .nth(1)?
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()?;
                let node = line.split(':').next().unwrap_or("?").to_string();
                (ms >= least).then(|| format!("{node}: {ms} ms ({why})"))
            }));
        }
        out
    }

    /// The agents' log lines that contain one of `needles`, each agent's in
    /// its log's order, with the index of the first needle it contains.
    pub fn agent_log_matches(&self, needles: &[&str]) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for a in self.agents.iter().chain(&self.retired) {
            let text = std::fs::read_to_string(&a.log).unwrap_or_default();
            out.extend(text.lines().filter_map(|l| {
                let k = needles.iter().position(|n| l.contains(n))?;
                Some((k, l.trim().to_string()))
            }));
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
    let hb = l.heartbeat_ms();
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
    let gpus = vec!["A100:81920"; l.agent_gpus as usize].join(",");
    let gpus: &[&str] = if l.agent_gpus > 0 {
        &["--gpus", &gpus]
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
    ]
    .iter()
    .chain(gpus)
    .chain(&["--"])
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
