//! N `tidal server` processes on held 127.0.0.1 ports in one directory,
//! each logging to `<dir>/node<N>.log`, joined into one group, with agents;
//! every process is SIGKILLed (and reaped) when the [`Cluster`] is dropped,
//! and SIGKILLed by the kernel when the process that holds it dies.
//!
//! By default a cluster runs as users run theirs: mutual TLS and tokens.
//! - [`ClusterSpec::tls`] (on by default): a throwaway CA in `<dir>/tls`
//!   (or [`ClusterSpec::pki`], shared by DCs that peer) gives every server,
//!   agent and the kit's own clients a certificate of their own.
//! - [`ClusterSpec::tokens`] (on by default): `tidal token generate` makes
//!   an admin token in `<dir>/admin.token`; every server gets `--auth tokens
//!   --bootstrap-token-file` (the leader makes it the first admin token);
//!   the kit's client and [`Cluster::tidal`] present it; the first agent the
//!   kit starts has it create an agent token (role agent, every tenant,
//!   named `kit-agents`) that every agent gets in `TIDAL_TOKEN`.
//!   Without it every server gets `--auth none`: the kit never depends on
//!   the server's default.
//!
//! ```ignore
//! let mut c = Cluster::start(ClusterSpec::new(tidal)).await?; // 3 nodes, joined
//! c.start_agent(AgentSpec::new("agent-1", &["t2i"]))?;
//! c.wait_agents(1, Duration::from_secs(20)).await?;
//! ```

use std::path::PathBuf;
use std::process::{Command, ExitStatus, Output};
use std::time::Duration;

use anyhow::{bail, Context};
use tempfile::TempDir;
use tidal_client::tidal_tls::{client_config, Expect, TlsDir};
use tidal_client::{v1, Client, ClientOptions, Token};
use tokio::time::{sleep, Instant};

use crate::pki::Pki;
use crate::ports::Port;
use crate::proc::{self, Proc};
use crate::spec::{AgentSpec, ServerSpec};

/// How to build a cluster.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The `tidal` binary.
    pub tidal: PathBuf,
    pub nodes: usize,
    pub dc: String,
    /// Extra flags for every `tidal server` (e.g. `--agent-ttl-ms 3000`).
    pub server_args: Vec<String>,
    /// Extra environment of every `tidal server` (e.g. `FAILPOINTS`).
    pub server_env: Vec<(String, String)>,
    /// Add nodes 2..=N as learners and promote them.
    pub join: bool,
    /// Give every server a held peer port of its own (`--peer-listen`), so
    /// the membership names `CLIENT|PEER` and the servers reach each other
    /// there (nodes are joined with `--peer-addr`). Off by default.
    pub peer_listen: bool,
    /// Mutual TLS: a CA of the cluster's own in `<dir>/tls` (or `pki`), a
    /// certificate and `--tls-dir` for every server and agent, `https://`
    /// endpoints, and the kit's client and CLI with the client certificate
    /// `kit` (unless `client.tls` is set). On by default.
    pub tls: bool,
    /// With `tls`, the CA to issue from instead of a new one: DCs that peer
    /// share one, so each trusts the other's servers.
    pub pki: Option<Pki>,
    /// `--auth tokens` with a bootstrap admin token that the kit's client
    /// (unless `client.token` is set) and CLI present, and an agent token
    /// for the kit's agents; without it, `--auth none`. On by default.
    pub tokens: bool,
    /// `RUST_LOG` of every process (`None`: inherited).
    pub rust_log: Option<String>,
    /// The temporary directory's name starts with this.
    pub prefix: String,
    /// An environment variable that, when set, keeps the directory (data
    /// and logs) after the cluster is dropped, for debugging.
    pub keep_var: Option<String>,
    /// The client's options (`endpoints` aside).
    pub client: ClientOptions,
}

impl ClusterSpec {
    /// Three nodes of DC `dc1`, joined.
    pub fn new(tidal: impl Into<PathBuf>) -> ClusterSpec {
        ClusterSpec {
            tidal: tidal.into(),
            nodes: 3,
            dc: "dc1".into(),
            server_args: Vec::new(),
            server_env: Vec::new(),
            join: true,
            peer_listen: false,
            tls: true,
            pki: None,
            tokens: true,
            rust_log: None,
            prefix: "tidal-".into(),
            keep_var: None,
            client: ClientOptions {
                request_timeout: Duration::from_secs(5),
                retry_for: Duration::from_secs(20),
                connect_timeout: Duration::from_millis(500),
                source_ip: None,
                ..ClientOptions::default()
            },
        }
    }
}

/// One server of the cluster.
pub struct Node {
    pub id: u64,
    pub addr: String,
    pub data: PathBuf,
    /// The running process, if any.
    pub proc: Option<Proc>,
    /// Held for the cluster's life, so a restart listens on the same address.
    pub port: Port,
    /// Its peer listener's address, with [`ClusterSpec::peer_listen`].
    pub peer_addr: Option<String>,
    /// Held like `port`.
    pub peer_port: Option<Port>,
    /// Its `--tls-dir`, with [`ClusterSpec::tls`].
    pub tls_dir: Option<PathBuf>,
}

pub struct Cluster {
    pub spec: ClusterSpec,
    pub nodes: Vec<Node>,
    pub agents: Vec<Proc>,
    pub client: Client,
    /// The cluster's CA, with [`ClusterSpec::tls`].
    pub pki: Option<Pki>,
    /// The bootstrap admin token, with [`ClusterSpec::tokens`].
    admin_token: Option<String>,
    /// The kit's agents' token, created when the first agent starts.
    agent_token: Option<String>,
    // Last, so processes are gone before the directory is removed.
    pub dir: TempDir,
}

impl Cluster {
    /// Ports and directories for `spec.nodes` servers; nothing is started.
    pub fn new(mut spec: ClusterSpec) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new().prefix(&spec.prefix).tempdir()?;
        let pki = match (spec.tls, &spec.pki) {
            (false, _) => None,
            (true, Some(shared)) => Some(shared.clone()),
            (true, None) => Some(Pki::new(&spec.tidal, &dir.path().join("tls"))?),
        };
        if let (Some(pki), None) = (&pki, &spec.client.tls) {
            spec.client.tls = Some(pki.client_config(KIT_CLIENT, Expect::Dc(spec.dc.clone()))?);
        }
        let admin_token = match spec.tokens {
            true => Some(bootstrap_token(
                &spec.tidal,
                &dir.path().join(ADMIN_TOKEN_FILE),
            )?),
            false => None,
        };
        if let (Some(token), None) = (&admin_token, &spec.client.token) {
            spec.client.token = Some(Token::new(token).context("the kit's admin token")?);
        }
        let mut nodes = Vec::new();
        for i in 1..=spec.nodes as u64 {
            let port = Port::local().context("holding a server port")?;
            let peer_port = if spec.peer_listen {
                Some(Port::local().context("holding a peer port")?)
            } else {
                None
            };
            let tls_dir = match &pki {
                Some(pki) => Some(pki.server(&spec.dc, i)?),
                None => None,
            };
            nodes.push(Node {
                id: i,
                addr: port.addr().to_string(),
                data: dir.path().join(format!("node{i}")),
                proc: None,
                port,
                peer_addr: peer_port.as_ref().map(|p| p.addr().to_string()),
                peer_port,
                tls_dir,
            });
        }
        let endpoints: Vec<String> = nodes.iter().map(|n| scheme(spec.tls, &n.addr)).collect();
        let client = Client::with_options(endpoints, spec.client.clone())?;
        Ok(Cluster {
            spec,
            nodes,
            agents: Vec::new(),
            client,
            pki,
            admin_token,
            agent_token: None,
            dir,
        })
    }

    /// Starts every node (node 1 with `--init`), waits for a leader and, if
    /// `spec.join`, adds and promotes the others one at a time.
    pub async fn start(spec: ClusterSpec) -> anyhow::Result<Cluster> {
        let mut c = Cluster::new(spec)?;
        c.launch().await?;
        Ok(c)
    }

    /// Starts the nodes of a cluster made with [`Cluster::new`], as
    /// [`Cluster::start`] does (for settings that need the addresses first,
    /// like two DCs naming each other as peers).
    pub async fn launch(&mut self) -> anyhow::Result<()> {
        self.start_node(1, true)?;
        self.wait_leader(Duration::from_secs(20)).await?;
        for id in 2..=self.nodes.len() as u64 {
            self.start_node(id, false)?;
        }
        if self.spec.join {
            self.join_all().await?;
        }
        Ok(())
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    pub fn node_mut(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    /// Every node's `HOST:PORT` (what the membership names).
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// Every node as clients name it: `https://HOST:PORT` with
    /// [`ClusterSpec::tls`], else `HOST:PORT`.
    pub fn client_endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| scheme(self.spec.tls, &n.addr))
            .collect()
    }

    /// `--endpoints` value naming every node (`https://` with TLS).
    pub fn endpoints_arg(&self) -> String {
        self.client_endpoints().join(",")
    }

    /// The bootstrap admin token (`<dir>/admin.token`), with
    /// [`ClusterSpec::tokens`]: for clients a test builds itself.
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    /// The kit client's TLS directory (`TIDAL_TLS_DIR` of [`Cluster::tidal`]),
    /// with [`ClusterSpec::tls`].
    pub fn client_tls_dir(&self) -> Option<PathBuf> {
        self.pki.as_ref().and_then(|p| p.client(KIT_CLIENT).ok())
    }

    /// The TLS directory of an agent certificate `name` of the cluster's DC
    /// (issued on the first call), with [`ClusterSpec::tls`]: for agents a
    /// test runs itself.
    pub fn agent_tls_dir(&self, name: &str) -> Option<PathBuf> {
        self.pki
            .as_ref()
            .and_then(|p| p.agent(&self.spec.dc, name).ok())
    }

    /// Gives node `id` a new certificate (same identity, new key) for its
    /// next start, with [`ClusterSpec::tls`]; returns its directory.
    pub fn reissue_node_cert(&mut self, id: u64) -> anyhow::Result<PathBuf> {
        let Some(pki) = &self.pki else {
            bail!("the cluster runs without TLS");
        };
        let dir = pki.reissue_server(&self.spec.dc, id)?;
        self.node_mut(id).tls_dir = Some(dir.clone());
        Ok(dir)
    }

    /// A process of the `tidal` binary with this cluster's `RUST_LOG`.
    pub fn spawn(
        &self,
        name: &str,
        args: Vec<String>,
        log: &std::path::Path,
    ) -> anyhow::Result<Proc> {
        self.spawn_with_env(name, args, log, &[])
    }

    /// As [`Cluster::spawn`], with `env` added to the process's environment.
    pub fn spawn_with_env(
        &self,
        name: &str,
        args: Vec<String>,
        log: &std::path::Path,
        env: &[(String, String)],
    ) -> anyhow::Result<Proc> {
        let mut p = without_user_env(Proc::new(name, &self.spec.tidal, args, log)).envs(env);
        if let Some(level) = &self.spec.rust_log {
            p = p.env("RUST_LOG", level);
        }
        p.start()?;
        Ok(p)
    }

    /// `--auth tokens --bootstrap-token-file <dir>/admin.token` with
    /// [`ClusterSpec::tokens`], else `--auth none`.
    fn auth_args(&self) -> Vec<String> {
        match self.admin_token {
            Some(_) => vec![
                "--auth".into(),
                "tokens".into(),
                "--bootstrap-token-file".into(),
                self.dir.path().join(ADMIN_TOKEN_FILE).display().to_string(),
            ],
            None => vec!["--auth".into(), "none".into()],
        }
    }

    /// Starts (or restarts, on its existing data) node `id`.
    pub fn start_node(&mut self, id: u64, init: bool) -> anyhow::Result<()> {
        self.start_node_with(id, init, &[])
    }

    /// Starts node `id` with flags of its own after the cluster's.
    pub fn start_node_with(&mut self, id: u64, init: bool, own: &[String]) -> anyhow::Result<()> {
        let n = self.node(id);
        let mut spec = ServerSpec::new(id, &self.spec.dc, &n.addr, n.data.clone());
        spec.peer_listen = n.peer_addr.clone();
        spec.tls_dir = n.tls_dir.clone();
        spec.init = init;
        spec.args = self.auth_args();
        spec.args.extend_from_slice(&self.spec.server_args);
        spec.args.extend_from_slice(own);
        let log = self.dir.path().join(format!("node{id}.log"));
        let p = self.spawn_with_env(
            &format!("node{id}"),
            spec.args(),
            &log,
            &self.spec.server_env,
        )?;
        self.node_mut(id).proc = Some(p);
        Ok(())
    }

    /// Starts node `id` again on its data (no-op if it runs).
    pub fn restart_node(&mut self, id: u64) -> anyhow::Result<()> {
        if self.node(id).proc.as_ref().is_some_and(Proc::running) {
            return Ok(());
        }
        self.start_node(id, false)
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
    ) -> (Option<ExitStatus>, Duration) {
        let Some(mut p) = self.node_mut(id).proc.take() else {
            return (None, Duration::ZERO);
        };
        let start = Instant::now();
        p.terminate();
        let st = p.wait_exit(timeout).await;
        let took = start.elapsed();
        if st.is_none() {
            eprintln!("--- node{id} did not exit:\n{}", p.log_tail(30));
            p.kill();
        }
        (st, took)
    }

    /// The id of a running node that says it leads.
    pub async fn leader(&self) -> Option<u64> {
        for n in self.nodes.iter().filter(|n| n.proc.is_some()) {
            if let Ok(s) = self.client.status_of(&n.addr).await {
                if s.role == "leader" {
                    return Some(s.node_id);
                }
            }
        }
        None
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
    ) -> anyhow::Result<v1::StatusResponse> {
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
                .add_learner_with_peer(n.id, &n.addr, n.peer_addr.as_deref())
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
    /// With [`ClusterSpec::tls`] it gets a certificate of its id and DC
    /// and `--tls-dir` before its own flags. With [`ClusterSpec::tokens`]
    /// it gets the kit's agent token in `TIDAL_TOKEN` (created on the first
    /// call), unless its spec brings a token of its own (`--token` or
    /// `TIDAL_TOKEN`).
    pub fn start_agent(&mut self, mut a: AgentSpec) -> anyhow::Result<()> {
        if let Some(pki) = &self.pki {
            let dir = pki.agent(&self.spec.dc, &a.id)?;
            let mut extra = vec!["--tls-dir".to_string(), dir.display().to_string()];
            extra.append(&mut a.extra_args);
            a.extra_args = extra;
        }
        let own_token = a
            .extra_args
            .iter()
            .any(|f| f == "--token" || f.starts_with("--token="))
            || a.env.iter().any(|(k, _)| k == "TIDAL_TOKEN");
        let token = match self.admin_token.is_some() && !own_token {
            true => Some(self.agent_token()?),
            false => None,
        };
        let args = a.args(&self.spec.dc, &self.client_endpoints(), &self.spec.tidal);
        // A second process under one id gets a log of its own.
        let mut log = self.dir.path().join(format!("{}.log", a.id));
        let mut n = 1;
        while log.exists() {
            n += 1;
            log = self.dir.path().join(format!("{}.{n}.log", a.id));
        }
        let mut p = without_user_env(Proc::new(&a.id, &self.spec.tidal, args, &log));
        if let Some(token) = &token {
            p = p.env("TIDAL_TOKEN", token);
        }
        p = p.envs(&a.env);
        if let Some(level) = &self.spec.rust_log {
            p = p.env("RUST_LOG", level);
        }
        p.start()?;
        self.agents.push(p);
        Ok(())
    }

    /// A client that presents what the kit's agents present, for tests
    /// that open agent sessions themselves: with [`ClusterSpec::tls`], the
    /// agent certificate `name` of the cluster's DC; with
    /// [`ClusterSpec::tokens`], the kit's agent token.
    pub fn agent_client(&mut self, name: &str) -> anyhow::Result<Client> {
        let mut opts = self.spec.client.clone();
        if let Some(pki) = &self.pki {
            let dir = TlsDir::load(pki.agent(&self.spec.dc, name)?)?;
            opts.tls = Some(client_config(&dir, Expect::Dc(self.spec.dc.clone()))?);
        }
        if self.admin_token.is_some() {
            opts.token = Some(Token::new(&self.agent_token()?)?);
        }
        Ok(Client::with_options(self.client_endpoints(), opts)?)
    }

    /// The kit's agent token: created with the CLI the first time
    /// (`token create --role agent --all-tenants --name kit-agents`, as the
    /// admin), then the same for every agent.
    pub fn agent_token(&mut self) -> anyhow::Result<String> {
        if let Some(t) = &self.agent_token {
            return Ok(t.clone());
        }
        let out = self.tidal_ok(&[
            "token",
            "create",
            "--role",
            "agent",
            "--all-tenants",
            "--name",
            KIT_AGENTS,
        ])?;
        let token = out.trim().to_string();
        if Token::new(&token).ok().and_then(|t| t.id().map(str::len)) != Some(16) {
            bail!("tidal token create printed {out:?}, not a token");
        }
        self.agent_token = Some(token.clone());
        Ok(token)
    }

    /// Waits until at least `n` agents are connected and ready.
    pub async fn wait_agents(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(agents) = self.client.list_agents(false).await {
                let ready = agents
                    .iter()
                    .filter(|a| a.connected && a.state == v1::AgentState::Ready as i32)
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

    /// The CLI against this cluster, not started: `TIDAL_ENDPOINTS` names
    /// every node; with [`ClusterSpec::tls`], `TIDAL_TLS_DIR` is the kit
    /// client's; with [`ClusterSpec::tokens`], `TIDAL_TOKEN` is the admin
    /// token. Those variables are otherwise removed, with `RUST_LOG`.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.spec.tidal);
        cmd.args(args);
        self.cli_env(&mut cmd);
        cmd
    }

    /// Gives `cmd` (the CLI, or a shell that runs it) the environment of
    /// [`Cluster::cli`].
    pub fn cli_env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        for var in USER_ENV {
            cmd.env_remove(var);
        }
        cmd.env("TIDAL_ENDPOINTS", self.endpoints_arg())
            .env_remove("RUST_LOG");
        if let Some(dir) = self.client_tls_dir() {
            cmd.env("TIDAL_TLS_DIR", dir);
        }
        if let Some(token) = &self.admin_token {
            cmd.env("TIDAL_TOKEN", token);
        }
        cmd
    }

    /// Runs [`Cluster::cli`] and waits for it.
    pub fn tidal(&self, args: &[&str]) -> Output {
        let mut cmd = self.cli(args);
        // This thread waits for the CLI, so it outlives it.
        proc::die_with_parent(&mut cmd, libc::SIGKILL);
        cmd.output().expect("run the tidal binary")
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

/// The client certificate of the kit's own client and CLI.
const KIT_CLIENT: &str = "kit";

/// The bootstrap admin token's file in the cluster's directory.
const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The name of the kit's agent token.
const KIT_AGENTS: &str = "kit-agents";

/// `tidal token generate` into `path` (mode 0600, one line); the token.
fn bootstrap_token(tidal: &std::path::Path, path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut cmd = Command::new(tidal);
    cmd.args(["token", "generate"]).env_remove("RUST_LOG");
    proc::die_with_parent(&mut cmd, libc::SIGKILL);
    let o = cmd.output().context("running tidal token generate")?;
    if !o.status.success() {
        bail!(
            "tidal token generate exited {:?}: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let token = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if Token::new(&token).ok().and_then(|t| t.id().map(str::len)) != Some(16) {
        bail!("tidal token generate printed {token:?}, not a token");
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{token}").with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

/// The variables of a user's shell (e.g. after `. .tidal-dev/env`) that
/// would change what the kit's processes do: the kit sets what it means.
const USER_ENV: [&str; 6] = [
    "TIDAL_ENDPOINTS",
    "TIDAL_TLS_DIR",
    "TIDAL_TOKEN",
    "TIDAL_INSECURE",
    "TIDAL_AUTH",
    "TIDAL_BOOTSTRAP_TOKEN_FILE",
];

/// `p` without the user's [`USER_ENV`].
fn without_user_env(p: Proc) -> Proc {
    USER_ENV.iter().fold(p, |p, var| p.env_remove(var))
}

/// `https://ADDR` when `tls`, else `ADDR`.
fn scheme(tls: bool, addr: &str) -> String {
    match tls {
        true => format!("https://{addr}"),
        false => addr.to_string(),
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
        let keep = self.spec.keep_var.as_ref();
        if keep.is_some_and(|v| std::env::var_os(v).is_some()) {
            if let Ok(empty) = tempfile::tempdir() {
                let kept = std::mem::replace(&mut self.dir, empty).keep();
                eprintln!("kept {}", kept.display());
            }
        }
    }
}
