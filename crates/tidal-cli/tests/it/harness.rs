//! Cluster tests' scenario helpers over tidal-testkit: the binary under
//! test, worker scripts that record their runs, and a [`Relay`] that can
//! cut a link. Processes are tidal-testkit's: each logs to
//! `<dir>/<name>.log` and is SIGKILLed (and reaped) when dropped.
//!
//! ```ignore
//! let mut c = Cluster::start(ClusterOpts::default()).await?; // 3 nodes, joined
//! c.start_agent(AgentOpts::new("agent-1", &["t2i"]))?;
//! c.wait_agents(1, Duration::from_secs(20)).await?;
//! let out = c.tidal(&["task", "submit", "--type", "t2i", "--payload", "x"]);
//! ```
// Not every helper is used by every test binary configuration.
#![allow(dead_code)]

use std::path::Path;

use tidal_testkit::ClusterSpec;
pub use tidal_testkit::{AgentSpec as AgentOpts, Proc};

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

/// A `tidal` process with the tests' `RUST_LOG` (the caller's, else info).
pub fn spawn(name: &str, args: &[String], log: &Path) -> anyhow::Result<Proc> {
    let mut p =
        Proc::new(name, Path::new(tidal_exe()), args.to_vec(), log).env("RUST_LOG", &rust_log());
    p.start()?;
    Ok(p)
}

fn rust_log() -> String {
    std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into())
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

/// tidal-testkit's cluster of the binary under test, in a `tidal-it-`
/// tempdir that `TIDAL_IT_KEEP=1` keeps. Like the kit, it runs as users
/// run theirs unless a test opts out: mutual TLS (a CA of its own) and
/// `--auth tokens` (the kit's client, [`tidal_testkit::Cluster::tidal`]
/// and agents present the kit's tokens).
pub struct Cluster(tidal_testkit::Cluster);

impl Cluster {
    /// Ports and directories for `opts.nodes` servers, with TLS and
    /// tokens; nothing is started.
    pub fn new(opts: ClusterOpts) -> anyhow::Result<Cluster> {
        Cluster::new_spec(opts, |_| {})
    }

    /// As [`Cluster::new`], in plaintext and with `--auth none`: for tests
    /// about the plaintext peer plane, raw calls without credentials, or
    /// certificates and tokens of their own.
    pub fn new_plaintext(opts: ClusterOpts) -> anyhow::Result<Cluster> {
        Cluster::new_spec(opts, |s| {
            s.tls = false;
            s.tokens = false;
        })
    }

    /// As [`Cluster::new`]; with `peer_listen`, every server gets a peer
    /// listener of its own (`ClusterSpec::peer_listen`).
    pub fn new_with(opts: ClusterOpts, peer_listen: bool) -> anyhow::Result<Cluster> {
        Cluster::new_spec(opts, |s| s.peer_listen = peer_listen)
    }

    /// As [`Cluster::new`], a DC that peers with `other`: its certificates
    /// come from `other`'s CA, so each DC's servers trust the other's.
    pub fn new_peer_of(other: &Cluster, opts: ClusterOpts) -> anyhow::Result<Cluster> {
        let pki = other.pki.clone();
        let (tls, tokens) = (other.spec.tls, other.spec.tokens);
        Cluster::new_spec(opts, |s| {
            s.pki = pki;
            s.tls = tls;
            s.tokens = tokens;
        })
    }

    /// As [`Cluster::new`], with the kit's spec changed by `with` first
    /// (e.g. `|s| s.tokens = false`).
    pub fn new_spec(
        opts: ClusterOpts,
        with: impl FnOnce(&mut ClusterSpec),
    ) -> anyhow::Result<Cluster> {
        let mut spec = ClusterSpec::new(tidal_exe());
        with(&mut spec);
        spec.nodes = opts.nodes;
        spec.dc = opts.dc;
        spec.server_args = opts.server_args;
        spec.join = opts.join;
        spec.rust_log = Some(rust_log());
        spec.prefix = "tidal-it-".into();
        spec.keep_var = Some("TIDAL_IT_KEEP".into());
        Ok(Cluster(tidal_testkit::Cluster::new(spec)?))
    }

    /// [`Cluster::new`] and its bootstrap admin token (the token the kit's
    /// client and CLI present), for tests that use it by name.
    pub fn new_with_tokens(opts: ClusterOpts) -> anyhow::Result<(Cluster, String)> {
        let c = Cluster::new(opts)?;
        let boot = c.admin().to_string();
        Ok((c, boot))
    }

    /// The bootstrap admin token; panics for a cluster without tokens.
    pub fn admin(&self) -> &str {
        self.admin_token().expect("a cluster with tokens")
    }

    /// The CLI against the cluster (endpoints and, with TLS, the kit's
    /// client certificate) with `TIDAL_TOKEN` set to `token` (unset for None).
    pub fn tidal_as(&self, token: Option<&str>, args: &[&str]) -> std::process::Output {
        let mut cmd = self.cli(args);
        cmd.env_remove("TIDAL_TOKEN");
        if let Some(t) = token {
            cmd.env("TIDAL_TOKEN", t);
        }
        cmd.output().expect("run the tidal binary")
    }

    /// [`Cluster::tidal_as`] that must succeed: its stdout, trimmed.
    pub fn tidal_as_ok(&self, token: &str, args: &[&str]) -> anyhow::Result<String> {
        let o = self.tidal_as(Some(token), args);
        anyhow::ensure!(
            o.status.success(),
            "tidal {args:?} exited {:?}: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    }

    /// Starts every node (node 1 with `--init`), waits for a leader and, if
    /// `opts.join`, adds and promotes the others one at a time.
    pub async fn start(opts: ClusterOpts) -> anyhow::Result<Cluster> {
        let mut c = Cluster::new(opts)?;
        c.launch().await?;
        Ok(c)
    }

    /// As [`Cluster::start`], in plaintext with `--auth none`
    /// ([`Cluster::new_plaintext`]).
    pub async fn start_plaintext(opts: ClusterOpts) -> anyhow::Result<Cluster> {
        let mut c = Cluster::new_plaintext(opts)?;
        c.launch().await?;
        Ok(c)
    }
}

impl std::ops::Deref for Cluster {
    type Target = tidal_testkit::Cluster;
    fn deref(&self) -> &tidal_testkit::Cluster {
        &self.0
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut tidal_testkit::Cluster {
        &mut self.0
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
