//! `tidal dev`: a local 3-node cluster and agents on 127.0.0.1, as child
//! processes of this binary, over mutual TLS with tokens (or plaintext with
//! `--insecure`), with a short demo; Ctrl-C stops everything.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tidal_client::{Client, Token};
use tidal_proto::v1;
use tidal_testkit::{AgentSpec, Kind, Proc, ServerSpec, Supervisor};
use tidal_tls::issue::{self, Request, Validity};
use tidal_tls::rustls::ClientConfig;
use tidal_tls::{CertIdentity, Expect, Role, TlsDir};
use tokio::time::{sleep, Instant};

use crate::output;
use crate::shutdown;

const NODES: u64 = 3;

/// In DIR: every DC's bootstrap token, the admin token of the dev's own
/// calls and of the CLI.
const ADMIN_TOKEN: &str = "admin.token";
/// In each DC's directory: its agents' token (role agent, every tenant).
const AGENT_TOKEN: &str = "agent.token";
/// The name the agents' token is created under (`tidal token list`).
const AGENT_TOKEN_NAME: &str = "dev-agents";
/// In each DC's directory: `. DIR/env` points the CLI at that DC.
const ENV_FILE: &str = "env";
/// Variables of a user's shell (`. DIR/env` sets them) that the dev's
/// servers and agents must not inherit: the dev passes its own.
const NOT_INHERITED: [&str; 4] = [
    "TIDAL_ENDPOINTS",
    "TIDAL_TLS_DIR",
    "TIDAL_TOKEN",
    "TIDAL_INSECURE",
];

#[derive(Args, Debug)]
#[command(
    after_help = "By default every server runs mutual TLS and --auth tokens: the CA and \
    certificates are in DIR/tls, the admin token (every server's bootstrap token) in \
    DIR/admin.token, the agents' token in DIR/agent.token, and `. DIR/env` sets TIDAL_ENDPOINTS, \
    TIDAL_TLS_DIR and TIDAL_TOKEN for the CLI. --insecure: plaintext and --auth none.\n\
    Data and logs stay in DIR. Run `tidal dev` again to restart the same cluster \
    from its data (membership and tokens are kept; nothing is re-initialised), or pass --fresh \
    to delete DIR/node1..3, DIR/tls, the tokens, DIR/env and the logs first."
)]
pub struct DevArgs {
    /// Where nodes keep their data and everything writes its log.
    #[arg(long, default_value = ".tidal-dev", value_name = "DIR")]
    pub dir: PathBuf,
    /// Node N listens on 127.0.0.1:(BASE_PORT + N - 1).
    #[arg(long, default_value_t = 7001, value_name = "PORT")]
    pub base_port: u16,
    /// How many agents to start (agent-1 runs t2i,tts; agent-2 t2i,sr,i2i; then alternating).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub agents: u32,
    /// Do not submit the demo tasks.
    #[arg(long)]
    pub no_demo: bool,
    /// Delete the previous run's data and logs in DIR first.
    #[arg(long)]
    pub fresh: bool,
    /// The data center name (with --dcs 2 the DCs are dc-a and dc-b).
    #[arg(long, default_value = "dev", value_name = "NAME")]
    pub dc: String,
    /// How many data centers: 2 starts dc-a and dc-b (3 nodes each, dc-b's
    /// on BASE_PORT+100..), peers of each other, with agents of different
    /// capabilities, so part of the demo runs in dc-b and is followed from dc-a.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=2))]
    pub dcs: u8,
    /// Plaintext and no tokens (every server with --auth none), as on a
    /// machine no one else can reach.
    #[arg(long)]
    pub insecure: bool,
    /// Mutual TLS: the default (certificates in DIR/tls); kept so that
    /// older command lines still work.
    #[arg(long, hide = true, conflicts_with = "insecure")]
    pub tls: bool,
}

/// What one dev agent offers.
struct Profile {
    task_types: &'static str,
    models: &'static str,
    gpus: &'static str,
    labels: &'static str,
    weight: u32,
}

const PROFILES: [Profile; 2] = [
    Profile {
        task_types: "t2i,tts",
        models: "sdxl,vits",
        gpus: "A100:81920",
        labels: "zone=a",
        weight: 2,
    },
    Profile {
        task_types: "t2i,sr,i2i",
        models: "sdxl,flux,esrgan",
        gpus: "L40S:46068",
        labels: "zone=b",
        weight: 1,
    },
];

/// With --dcs 2: dc-a runs image work, dc-b speech and super-resolution.
const PROFILES_A: [Profile; 1] = [Profile {
    task_types: "t2i,i2i",
    models: "sdxl,flux",
    gpus: "A100:81920",
    labels: "zone=a",
    weight: 2,
}];
const PROFILES_B: [Profile; 1] = [Profile {
    task_types: "tts,sr",
    models: "vits,esrgan",
    gpus: "L40S:46068",
    labels: "zone=b",
    weight: 1,
}];

/// One data center of the dev setup.
struct Layout {
    exe: PathBuf,
    /// Where logs go (shared by every DC).
    root: PathBuf,
    /// Where this DC's nodes keep their data.
    dir: PathBuf,
    dc: String,
    endpoints: Vec<String>,
    /// Process and log names start with this ("" for one DC, "dc-a-" ...).
    prefix: String,
    /// The other DCs: name and endpoints.
    peers: Vec<(String, Vec<String>)>,
    profiles: &'static [Profile],
    /// Without --insecure: the certificates, the client's TLS
    /// configuration and the admin token.
    secure: Option<Secure>,
}

/// What every DC of the dev setup gets without --insecure.
#[derive(Clone)]
struct Secure {
    /// DIR/tls: ca, node-N, agent-N (prefixed by the DC with --dcs 2), client.
    tls_dir: PathBuf,
    client: Arc<ClientConfig>,
    /// DIR/admin.token: every DC's `--bootstrap-token-file`.
    admin_file: PathBuf,
    /// Its token, which the dev's own calls present.
    admin: String,
}

impl Layout {
    fn endpoint(&self, node: u64) -> &str {
        &self.endpoints[(node - 1) as usize]
    }

    fn node_dir(&self, node: u64) -> PathBuf {
        self.dir.join(format!("node{node}"))
    }

    fn name(&self, what: &str) -> String {
        format!("{}{what}", self.prefix)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.log"))
    }

    fn profile(&self, i: u32) -> &Profile {
        &self.profiles[((i - 1) as usize) % self.profiles.len()]
    }

    /// Its agents' token file.
    fn agent_token_file(&self) -> PathBuf {
        self.dir.join(AGENT_TOKEN)
    }

    /// A client of this DC (over TLS, with the admin token, unless --insecure).
    fn client(&self) -> anyhow::Result<Client> {
        let token = match &self.secure {
            Some(s) => Some(Token::new(&s.admin).context("the admin token")?),
            None => None,
        };
        super::client_with(
            &self.endpoints,
            Duration::from_secs(20),
            self.secure.as_ref().map(|s| s.client.clone()),
            token,
        )
    }

    /// `--tls-dir DIR/tls/NAME` (prefixed), nothing with --insecure.
    fn tls_args(&self, what: &str) -> Vec<String> {
        match &self.secure {
            Some(s) => vec![
                "--tls-dir".into(),
                s.tls_dir.join(self.name(what)).display().to_string(),
            ],
            None => Vec::new(),
        }
    }

    /// Every server's `--auth`, given explicitly: tokens with the admin
    /// token as the bootstrap token, or none with --insecure.
    fn auth_args(&self) -> Vec<String> {
        match &self.secure {
            Some(s) => vec![
                "--auth".into(),
                "tokens".into(),
                "--bootstrap-token-file".into(),
                s.admin_file.display().to_string(),
            ],
            None => vec!["--auth".into(), "none".into()],
        }
    }

    /// The endpoints as a client names them: `https://` over TLS (an
    /// https:// endpoint refuses plaintext).
    fn client_endpoints(&self) -> String {
        let scheme = if self.secure.is_some() {
            "https://"
        } else {
            ""
        };
        self.endpoints
            .iter()
            .map(|e| format!("{scheme}{e}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Makes DIR/tls on the first start: a CA, then a certificate
/// for every node (`node-N`), agent (`agent-N`) and the client
/// (`client`); a directory already holding the certificate wanted is kept,
/// one naming someone else (another --dc) is issued again.
fn ensure_pki(
    root: &Path,
    layouts: &[Layout],
    agents: u32,
) -> anyhow::Result<(PathBuf, Arc<ClientConfig>)> {
    let dir = root.join("tls");
    let ca = dir.join("ca");
    if !ca.join(tidal_tls::files::CA_FILE).exists() {
        // Certificates of a CA that is gone are useless.
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        issue::new_ca(&ca, "tidal dev CA", Validity::days(3650))?;
        println!("created a CA for mutual TLS in {}", ca.display());
    }
    let mut wanted = vec![(
        CertIdentity::new(Role::Client, None, "dev")?,
        dir.join("client"),
    )];
    for l in layouts {
        for n in 1..=NODES {
            let name = l.name(&format!("node-{n}"));
            wanted.push((CertIdentity::server(&l.dc, n)?, dir.join(name)));
        }
        for i in 1..=agents {
            let name = l.name(&format!("agent-{i}"));
            let id = CertIdentity::new(Role::Agent, Some(&l.dc), &name)?;
            wanted.push((id, dir.join(name)));
        }
    }
    for (identity, out) in wanted {
        if out.exists() {
            match TlsDir::load(&out) {
                Ok(d) if *d.identity() == identity => continue,
                _ => std::fs::remove_dir_all(&out)
                    .with_context(|| format!("removing {}", out.display()))?,
            }
        }
        let req = Request {
            identity,
            hosts: Vec::new(),
            validity: Validity::days(365),
        };
        issue::issue(&ca, &req, &out)?;
    }
    let client_dir = dir.join("client");
    let context = || format!("loading {}", client_dir.display());
    let loaded = TlsDir::load(&client_dir).with_context(context)?;
    let client = tidal_tls::client_config(&loaded, Expect::AnyServer).with_context(context)?;
    Ok((dir, client))
}

/// DIR/admin.token, made on the first start (as `tidal token generate`
/// makes one) and kept: every DC's bootstrap token, and the admin token
/// of the dev's own calls and of the CLI.
fn ensure_admin_token(root: &Path) -> anyhow::Result<(PathBuf, String)> {
    let path = root.join(ADMIN_TOKEN);
    if let Ok(text) = std::fs::read_to_string(&path) {
        if tidal_server::auth::token::Token::parse(&text).is_ok() {
            return Ok((path, text.trim().to_string()));
        }
        println!("{} holds no token: making a new one", path.display());
    }
    let token = tidal_server::auth::token::Token::generate().context("generating a token")?;
    let text = token.reveal();
    write_private(&path, &format!("{text}\n"))?;
    println!(
        "created an admin token (token {}) in {}",
        token.id(),
        path.display()
    );
    Ok((path, text))
}

/// The agents' token of a DC whose servers are up: DIR/agent.token if the
/// cluster holds it and it is active, else a new one (role agent, every
/// tenant), written there. Older dev agent tokens are revoked first, since
/// an agent id registered under an active token is refused to any other.
async fn agent_token(client: &Client, l: &Layout) -> anyhow::Result<String> {
    let path = l.agent_token_file();
    let tokens = client.list_tokens().await.context("listing tokens")?;
    if let Ok(text) = std::fs::read_to_string(&path) {
        let text = text.trim().to_string();
        let id = Token::new(&text)
            .ok()
            .and_then(|t| t.id().map(str::to_string));
        if tokens
            .iter()
            .any(|t| t.active && Some(t.id.as_str()) == id.as_deref())
        {
            println!("{}: agents use the token in {}", l.dc, path.display());
            return Ok(text);
        }
    }
    for stale in tokens
        .iter()
        .filter(|t| t.active && t.name == AGENT_TOKEN_NAME)
    {
        client
            .revoke_token(&stale.id)
            .await
            .with_context(|| format!("revoking the old agents' token {}", stale.id))?;
    }
    let created = client
        .create_token(v1::CreateTokenRequest {
            role: "agent".into(),
            all_tenants: true,
            name: AGENT_TOKEN_NAME.into(),
            ..v1::CreateTokenRequest::default()
        })
        .await
        .context("creating the agents' token")?;
    write_private(&path, &format!("{}\n", created.token))?;
    println!(
        "{}: created the agents' token (token {}, role agent, every tenant) in {}",
        l.dc,
        created.info.map(|i| i.id).unwrap_or_default(),
        path.display()
    );
    Ok(created.token)
}

/// Writes `text` to `path` with mode 0600, through a new file renamed
/// over it (a reader sees the old text or the new, never a part).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("new");
    let context = || format!("writing {}", path.display());
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(context)?;
    f.write_all(text.as_bytes()).with_context(context)?;
    f.sync_all().with_context(context)?;
    std::fs::rename(&tmp, path).with_context(context)
}

/// `s` as one word of a POSIX shell.
fn sh_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._,:=@+-%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// DIR/env of a DC (and of the first DC in DIR too, with --dcs 2): what
/// `. DIR/env` sets for the CLI.
fn write_env(layouts: &[Layout]) -> anyhow::Result<()> {
    let text = |l: &Layout| {
        let mut t = format!(
            "# tidal dev, dc {}: `. {}` points the tidal CLI at it.\n",
            l.dc,
            l.dir.join(ENV_FILE).display()
        );
        t += &format!(
            "export TIDAL_ENDPOINTS={}\n",
            sh_word(&l.client_endpoints())
        );
        match &l.secure {
            Some(s) => {
                let client = s.tls_dir.join("client").display().to_string();
                t += &format!("export TIDAL_TLS_DIR={}\n", sh_word(&client));
                t += &format!("export TIDAL_TOKEN={}\n", sh_word(&s.admin));
                t += "unset TIDAL_INSECURE\n";
            }
            None => t += "unset TIDAL_TLS_DIR TIDAL_TOKEN TIDAL_INSECURE\n",
        }
        t
    };
    let first = &layouts[0];
    let mut top = text(first);
    for l in &layouts[1..] {
        top += &format!(
            "# dc {}: . {}\n",
            l.dc,
            sh_word(&l.dir.join(ENV_FILE).display().to_string())
        );
    }
    write_private(&first.root.join(ENV_FILE), &top)?;
    if layouts.len() > 1 {
        for l in layouts {
            write_private(&l.dir.join(ENV_FILE), &text(l))?;
        }
    }
    Ok(())
}

/// Every DC of the dev setup: one, or dc-a and dc-b linked as peers.
fn layouts(args: &DevArgs, exe: PathBuf, root: PathBuf) -> Vec<Layout> {
    let names: Vec<String> = if args.dcs == 1 {
        vec![args.dc.clone()]
    } else {
        vec!["dc-a".into(), "dc-b".into()]
    };
    let endpoints = |k: usize| -> Vec<String> {
        (0..NODES)
            .map(|i| format!("127.0.0.1:{}", args.base_port + 100 * k as u16 + i as u16))
            .collect()
    };
    names
        .iter()
        .enumerate()
        .map(|(k, dc)| Layout {
            exe: exe.clone(),
            root: root.clone(),
            dir: if args.dcs == 1 {
                root.clone()
            } else {
                root.join(dc)
            },
            dc: dc.clone(),
            endpoints: endpoints(k),
            prefix: if args.dcs == 1 {
                String::new()
            } else {
                format!("{dc}-")
            },
            peers: names
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != k)
                .map(|(j, p)| (p.clone(), endpoints(j)))
                .collect(),
            profiles: match (args.dcs, k) {
                (1, _) => &PROFILES,
                (_, 0) => &PROFILES_A,
                _ => &PROFILES_B,
            },
            secure: None,
        })
        .collect()
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding this binary's path")?;
    if args
        .base_port
        .checked_add(100 * (u16::from(args.dcs) - 1) + NODES as u16)
        .is_none()
    {
        bail!("--base-port {} is too high", args.base_port);
    }
    if args.fresh {
        clear(&args.dir)?;
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let root = args
        .dir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.dir.display()))?;
    let mut layouts = layouts(&args, exe, root);
    for e in layouts.iter().flat_map(|l| &l.endpoints) {
        TcpListener::bind(e).with_context(|| {
            format!("port {e} is in use (another `tidal dev` or server running? stop it or pick --base-port)")
        })?;
    }
    if !args.insecure {
        let root = &layouts[0].root;
        let (tls_dir, client) = ensure_pki(root, &layouts, args.agents)?;
        let (admin_file, admin) = ensure_admin_token(root)?;
        let secure = Secure {
            tls_dir,
            client,
            admin_file,
            admin,
        };
        for l in &mut layouts {
            l.secure = Some(secure.clone());
        }
    }
    for l in &layouts {
        std::fs::create_dir_all(&l.dir).with_context(|| format!("creating {}", l.dir.display()))?;
    }
    write_env(&layouts)?;

    let signal = shutdown::on_signal()?;
    tokio::pin!(signal);
    let mut sup = Supervisor::default();
    let started = tokio::select! {
        r = start(&args, &layouts, &mut sup) => r.map(Some),
        _ = &mut signal => Ok(None),
    };
    let result = match started {
        Ok(Some(())) => {
            print_guide(&layouts, args.agents);
            loop {
                tokio::select! {
                    _ = &mut signal => break,
                    _ = sleep(Duration::from_secs(1)) => {
                        for (name, status, log) in sup.newly_exited() {
                            eprintln!("warning: {name} exited ({status}); see {}", log.display());
                        }
                    }
                }
            }
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    println!("\nstopping agents, then servers...");
    sup.stop_all(Duration::from_secs(10)).await;
    result
}

/// Deletes only what `tidal dev` creates: the node directories, the
/// certificates, tokens, env and logs.
fn clear(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for name in [ADMIN_TOKEN, AGENT_TOKEN, ENV_FILE] {
        let f = dir.join(name);
        if f.exists() {
            std::fs::remove_file(&f).with_context(|| format!("removing {}", f.display()))?;
        }
    }
    let created = (1..=NODES).map(|i| format!("node{i}")).chain([
        "dc-a".to_string(),
        "dc-b".to_string(),
        "tls".to_string(),
    ]);
    for name in created {
        let d = dir.join(name);
        if d.exists() {
            std::fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
        }
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log") {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

fn has_data(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

async fn start(args: &DevArgs, layouts: &[Layout], sup: &mut Supervisor) -> anyhow::Result<()> {
    for l in layouts {
        start_dc(l, sup).await?;
    }
    for l in layouts {
        let token = match (&l.secure, args.agents) {
            (Some(_), 1..) => Some(agent_token(&l.client()?, l).await?),
            _ => None,
        };
        for i in 1..=args.agents {
            start_agent(l, sup, i, token.as_deref())?;
        }
    }
    for l in layouts {
        let client = l.client()?;
        wait_agents(&client, l, sup, args.agents).await?;
        println!("{}: {} agent(s) connected", l.dc, args.agents);
    }
    let client = layouts[0].client()?;
    if layouts.len() > 1 {
        wait_peer_summary(&client, &layouts[0]).await?;
    }

    if args.no_demo {
        return Ok(());
    }
    if args.agents == 0 {
        println!("no agents, so no demo tasks (--agents 0)");
        return Ok(());
    }
    if layouts.len() > 1 {
        demo(&client, &DEMO_TWO_DCS, &layouts[0].dc).await
    } else {
        let demo_tasks: Vec<DemoTask> = DEMO
            .iter()
            .filter(|d| args.agents >= d.4)
            .map(|d| (d.0, d.1, d.2, d.3))
            .collect();
        demo(&client, &demo_tasks, &layouts[0].dc).await
    }
}

/// Starts (or restarts) one DC's servers, joins them, sets its queues.
async fn start_dc(l: &Layout, sup: &mut Supervisor) -> anyhow::Result<()> {
    let client = l.client()?;
    let restarting = (1..=NODES).any(|n| has_data(&l.node_dir(n)));
    if restarting {
        println!(
            "{}: restarting the cluster from {} (pass --fresh to start over)",
            l.dc,
            l.dir.display()
        );
        for n in 1..=NODES {
            start_node(l, sup, n, false)?;
        }
    } else {
        println!("{}: starting a new cluster in {}", l.dc, l.dir.display());
        start_node(l, sup, 1, true)?;
        wait_leader(&client, l, sup, &l.endpoints[..1]).await?;
        for n in 2..=NODES {
            start_node(l, sup, n, false)?;
        }
    }
    let leader = wait_leader(&client, l, sup, &l.endpoints).await?;
    println!("{}: node {leader} is the leader", l.dc);
    join_members(&client, l).await?;

    for (name, weight) in [("vip", 8), ("normal", 2)] {
        client
            .set_queue(name, weight, "least-loaded")
            .await
            .with_context(|| format!("setting queue {name}"))?;
    }
    println!(
        "{}: queues vip (weight 8), normal (weight 2), default (weight 1)",
        l.dc
    );
    Ok(())
}

/// Waits until the first DC has its peer's capability summary, so the demo's
/// tasks for the peer are forwarded at once.
async fn wait_peer_summary(client: &Client, l: &Layout) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = client.dc_status().await {
            if s.peers.iter().all(|p| p.summary.is_some()) {
                println!(
                    "{}: linked to {}",
                    l.dc,
                    s.peers
                        .iter()
                        .map(|p| p.dc.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not hear from its peer DCs after 30s; see the node logs",
                l.dc
            );
        }
        sleep(Duration::from_millis(200)).await;
    }
}

fn start_node(l: &Layout, sup: &mut Supervisor, n: u64, init: bool) -> anyhow::Result<()> {
    let name = l.name(&format!("node{n}"));
    let mut spec = ServerSpec::new(n, &l.dc, l.endpoint(n), l.node_dir(n));
    spec.init = init;
    for (dc, endpoints) in &l.peers {
        spec.args.push("--peer".into());
        spec.args.push(format!("{dc}={}", endpoints.join(",")));
    }
    spec.args.extend(l.tls_args(&format!("node-{n}")));
    spec.args.extend(l.auth_args());
    spawn(sup, &name, Kind::Server, l, spec.args(), &[])?;
    println!(
        "{}: started node {n} on {} (log {})",
        l.dc,
        l.endpoint(n),
        l.log(&name).display()
    );
    Ok(())
}

/// Starts a child with this DC's log, without the user's TIDAL_* client
/// variables, with `env`.
fn spawn(
    sup: &mut Supervisor,
    name: &str,
    kind: Kind,
    l: &Layout,
    args: Vec<String>,
    env: &[(String, String)],
) -> anyhow::Result<()> {
    let mut proc = Proc::new(name, &l.exe, args, &l.log(name)).envs(env);
    for k in NOT_INHERITED {
        proc = proc.env_remove(k);
    }
    sup.start(kind, proc)
}

/// Starts agent `i`, presenting `token` (in TIDAL_TOKEN, which `ps` does
/// not show) when given.
fn start_agent(
    l: &Layout,
    sup: &mut Supervisor,
    i: u32,
    token: Option<&str>,
) -> anyhow::Result<()> {
    let p = l.profile(i);
    let name = l.name(&format!("agent-{i}"));
    let types: Vec<&str> = p.task_types.split(',').collect();
    let models: Vec<&str> = p.models.split(',').collect();
    let exe = l.exe.display().to_string();
    let mut spec = AgentSpec::new(&name, &types)
        .models(&models)
        .slots(2)
        .command(&[&exe, "example-worker"]);
    spec.extra_args = [
        "--weight",
        &p.weight.to_string(),
        "--gpus",
        p.gpus,
        "--labels",
        p.labels,
        // Stopped with SIGTERM: drain, deregister, exit within the
        // supervisor's grace (demo tasks take 2 s at most).
        "--drain-timeout-ms",
        "5000",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(l.tls_args(&format!("agent-{i}")))
    .collect();
    let args = spec.args(&l.dc, &l.endpoints, &l.exe);
    let env: Vec<(String, String)> = token
        .map(|t| ("TIDAL_TOKEN".to_string(), t.to_string()))
        .into_iter()
        .collect();
    spawn(sup, &name, Kind::Agent, l, args, &env)?;
    println!(
        "{}: started {name}: task types {}, models {} (log {})",
        l.dc,
        p.task_types,
        p.models,
        l.log(&name).display()
    );
    Ok(())
}

/// Polls each node's own status until one of `among` says it leads.
async fn wait_leader(
    client: &Client,
    l: &Layout,
    sup: &mut Supervisor,
    among: &[String],
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for n in 1..=among.len() {
            sup.check_alive(&l.name(&format!("node{n}")))?;
        }
        for e in among {
            match client.status_of(e).await {
                Ok(s) if s.role == "leader" => return Ok(s.node_id),
                Err(err) if err.is_credentials_refused() => {
                    let file = l
                        .secure
                        .as_ref()
                        .map(|s| s.admin_file.display().to_string());
                    bail!(
                        "{e} refused the admin token in {}: {err}. The cluster in {} holds \
                         tokens made with another admin token; put that one back, or start \
                         over with --fresh",
                        file.unwrap_or_default(),
                        l.dir.display()
                    );
                }
                _ => {}
            }
        }
        if Instant::now() > deadline {
            bail!(
                "no leader among {} after 30s; see the node logs",
                among.join(", ")
            );
        }
        sleep(Duration::from_millis(200)).await;
    }
}

/// Adds nodes 2..=3 as learners and promotes them, one at a time; members
/// already present (a restart) are left alone.
async fn join_members(client: &Client, l: &Layout) -> anyhow::Result<()> {
    for n in 2..=NODES {
        let members = client.members().await.context("reading membership")?;
        let found = members.members.iter().find(|m| m.id == n).map(|m| m.voter);
        if found.is_none() {
            client
                .add_learner(n, l.endpoint(n))
                .await
                .with_context(|| format!("adding node {n} as a learner"))?;
            println!("{}: node {n} joined as a learner", l.dc);
        }
        if found != Some(true) {
            client
                .promote(n)
                .await
                .with_context(|| format!("promoting node {n}"))?;
            println!("{}: node {n} promoted to voter", l.dc);
        }
    }
    Ok(())
}

async fn wait_agents(
    client: &Client,
    l: &Layout,
    sup: &mut Supervisor,
    n: u32,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for i in 1..=n {
            sup.check_alive(&l.name(&format!("agent-{i}")))?;
        }
        let connected = match client.list_agents(false).await {
            Ok(agents) => agents
                .iter()
                .filter(|a| a.connected && a.state == v1::AgentState::Ready as i32)
                .count(),
            Err(_) => 0,
        };
        if connected >= n as usize {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{}: only {connected} of {n} agents connected after 30s; see the agent logs",
                l.dc
            );
        }
        sleep(Duration::from_millis(200)).await;
    }
}

/// (payload, task type, model, queue)
type DemoTask = (&'static str, &'static str, &'static str, &'static str);

/// Submitted in dc-a with --dcs 2: tts and sr run in dc-b.
const DEMO_TWO_DCS: [DemoTask; 4] = [
    ("a red fox in the snow", "t2i", "sdxl", "vip"),
    ("hello from dc-a", "tts", "vits", "normal"),
    ("photo-0001.png", "sr", "esrgan", "vip"),
    (
        "a lighthouse at dusk, oil painting",
        "t2i",
        "flux",
        "normal",
    ),
];

/// (payload, task type, model, queue, which profile must be present)
const DEMO: [(&str, &str, &str, &str, u32); 5] = [
    ("a red fox in the snow", "t2i", "sdxl", "vip", 1),
    ("hello from tidal", "tts", "vits", "normal", 1),
    (
        "a lighthouse at dusk, oil painting",
        "t2i",
        "flux",
        "normal",
        2,
    ),
    ("photo-0001.png", "sr", "esrgan", "vip", 2),
    ("please fail", "t2i", "sdxl", "normal", 1),
];

async fn demo(client: &Client, tasks: &[DemoTask], dc: &str) -> anyhow::Result<()> {
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let mut specs = Vec::new();
    for (i, (payload, task_type, model, queue)) in tasks.iter().enumerate() {
        specs.push(v1::TaskSpec {
            task_type: task_type.to_string(),
            models: vec![model.to_string()],
            queue: queue.to_string(),
            idempotency_key: format!("dev-demo-{run}-{}", i + 1),
            payload: payload.as_bytes().to_vec(),
            max_attempts: if payload.contains("fail") { 1 } else { 0 },
            priority: if *queue == "vip" {
                v1::Priority::Online
            } else {
                v1::Priority::Nearline
            } as i32,
            ..v1::TaskSpec::default()
        });
    }
    println!(
        "\nsubmitting {} demo tasks in one batch to {dc}...",
        specs.len()
    );
    let first = specs.first().cloned();
    let results = client
        .submit(specs)
        .await
        .context("submitting the demo tasks")?;
    let mut ids = Vec::new();
    for r in results {
        match r.error {
            Some(e) if e.code != 0 => bail!(
                "a demo task was rejected: {}",
                tidal_client::Error::from_item(&e)
            ),
            _ => ids.push(r.id),
        }
    }
    if let Some(spec) = first {
        let again = client
            .submit_one(spec)
            .await
            .context("re-submitting the first demo task")?;
        println!(
            "re-submitted the first task with the same idempotency key: id {} (existed: {})",
            again.id, again.existed
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let tasks = loop {
        let mut tasks = Vec::new();
        for id in &ids {
            tasks.push(
                client
                    .get_task(id, false)
                    .await
                    .with_context(|| format!("reading task {id}"))?,
            );
        }
        if tasks.iter().all(|t| output::is_terminal(t.state)) {
            break tasks;
        }
        if Instant::now() > deadline {
            println!("some demo tasks are not finished after 60s:");
            break tasks;
        }
        sleep(Duration::from_millis(300)).await;
    };
    println!();
    print!("{}", super::task::tasks_table(&tasks));
    println!("\nresults:");
    for t in &tasks {
        if !t.error.is_empty() {
            println!(
                "  {}  error (exit code {}): {}",
                t.id,
                t.exit_code,
                t.error.trim()
            );
        } else {
            println!("  {}  {}", t.id, output::encode_bytes(&t.result).0.trim());
        }
        if !t.forwarded_to.is_empty() {
            println!(
                "      (no agent in {dc} runs {}: it ran in {} as {})",
                t.spec.as_ref().map_or("", |s| s.task_type.as_str()),
                t.forwarded_to,
                t.remote_id
            );
        }
    }
    Ok(())
}

fn print_guide(layouts: &[Layout], agents: u32) {
    let first = &layouts[0];
    let exe = first.exe.display();
    println!();
    for l in layouts {
        let logs: Vec<String> = (1..=NODES)
            .map(|n| format!("node{n}"))
            .chain((1..=agents).map(|i| format!("agent-{i}")))
            .map(|n| format!("{}.log", l.name(&n)))
            .collect();
        println!("tidal dev is running (dc {:?}).", l.dc);
        println!(
            "  servers:  {}",
            l.endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| format!("{e} (node {})", i + 1))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  agents:   {}",
            (1..=agents)
                .map(|i| format!(
                    "{} ({})",
                    l.name(&format!("agent-{i}")),
                    l.profile(i).task_types
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !l.peers.is_empty() {
            println!(
                "  peers:    {}",
                l.peers
                    .iter()
                    .map(|(dc, _)| dc.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        println!("  data:     {}/node1..node{NODES}", l.dir.display());
        match &l.secure {
            Some(s) => {
                println!(
                    "  tls:      mutual TLS; the CA in {}/ca, certificates in {}/{{{},{},client}}",
                    s.tls_dir.display(),
                    s.tls_dir.display(),
                    l.name("node-1..3"),
                    l.name(&format!("agent-1..{agents}")),
                );
                println!(
                    "  tokens:   --auth tokens; admin (every server's bootstrap token) in {}, agents' in {}",
                    s.admin_file.display(),
                    l.agent_token_file().display()
                );
            }
            None => println!("  security: none (--insecure): plaintext, --auth none"),
        }
        println!("  logs:     {}/{{{}}}", l.root.display(), logs.join(","));
    }
    println!();
    println!(
        "Try (from another terminal; `cargo run -q --bin tidal --` works in place of the path):"
    );
    let env = first.root.join(ENV_FILE);
    let sets = if first.secure.is_some() {
        "TIDAL_ENDPOINTS, TIDAL_TLS_DIR (the client certificate) and TIDAL_TOKEN (the admin token)"
    } else {
        "TIDAL_ENDPOINTS"
    };
    println!(
        "  . {}   # sets {sets} for dc {}",
        sh_word(&env.display().to_string()),
        first.dc
    );
    println!("  {exe} task submit --type t2i --payload \"a red fox\"");
    if layouts.len() > 1 {
        println!(
            "  {exe} task submit --type tts --models vits --payload \"hello\"   # runs in {}",
            layouts[1].dc
        );
    }
    println!("  {exe} task watch <ID>");
    println!("  {exe} task list");
    println!("  {exe} agent list");
    println!("  {exe} status");
    println!("  {exe} cluster members");
    if layouts.len() > 1 {
        println!("  {exe} dc status");
        for l in &layouts[1..] {
            println!(
                "  . {}   # the same for dc {}",
                sh_word(&l.dir.join(ENV_FILE).display().to_string()),
                l.dc
            );
        }
    }
    if first.secure.is_some() {
        println!("  {exe} token create --role user --tenant team-a   # a token for one tenant");
    }
    println!();
    println!("Ctrl-C stops the agents, then the servers. The data stays in {}: run `tidal dev` again to restart from it, or add --fresh.", first.root.display());
}
