//! One chaos run: start the cluster, run the workload under the scenario's
//! faults, heal, measure convergence, record the end state, check.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use rand::SeedableRng;
use tidal_client::{task_state_name as state_name, v1};
use tokio::time::{sleep, Instant};

use crate::check::{self, Facts, Verdict};
use crate::cluster::{Cluster, Layout, STALL_COSTS_LEADERSHIP_MS};
use crate::history::{Event, Recorder};
use crate::link::Peer;
use crate::net::Net;
use crate::netns::{Netns, Skipped};
use crate::scenarios::{self, Fault, Nemesis, Scenario};
use crate::sink::Sink;
use crate::workload::Workload;
use crate::workload::REMOTE_TYPE;

/// Service and convergence must return within this long after healing (I11).
pub const HEAL_BOUND: Duration = Duration::from_secs(10);

/// How faults reach the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NetMode {
    /// Every node behind a userspace TCP proxy on 127.0.0.0/8 (no
    /// privileges): a fault closes or stalls streams both ends see.
    #[default]
    Proxy,
    /// Every node and agent in its own network namespace; faults are
    /// nftables rules that drop packets silently (root, `ip`, `nft`).
    Netns,
}

impl NetMode {
    pub fn name(self) -> &'static str {
        match self {
            NetMode::Proxy => "proxy",
            NetMode::Netns => "netns",
        }
    }
}

impl std::str::FromStr for NetMode {
    type Err = String;

    fn from_str(s: &str) -> Result<NetMode, String> {
        match s {
            "proxy" => Ok(NetMode::Proxy),
            "netns" => Ok(NetMode::Netns),
            _ => Err(format!("{s:?}: the network is `proxy` or `netns`")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub scenario: Scenario,
    pub seed: u64,
    pub duration: Duration,
    /// Where history, logs and data go; kept when the run fails or `keep`.
    pub dir: PathBuf,
    pub keep: bool,
    /// The `tidal` binary to run.
    pub tidal: PathBuf,
    pub clients: usize,
    pub agents: usize,
    /// Flags added to every server's command line (e.g. other timeouts).
    pub server_args: Vec<String>,
    /// The fault layer (a scenario marked netns always runs in netns).
    pub net: NetMode,
    /// Mutual TLS everywhere: a CA in `dir/tls`, a certificate for every
    /// node, agent and client (`tidal chaos run` does this unless
    /// `--insecure`). Without it, plaintext (S29 always runs with TLS).
    pub tls: bool,
    /// `--auth tokens` on every server: the run's clients present an admin
    /// token, every agent an agent token of its own (`tidal chaos run`
    /// does this unless `--auth none`). Without it, `--auth none` (S30
    /// always runs with tokens).
    pub tokens: bool,
}

impl RunOptions {
    /// The command that repeats this run.
    pub fn reproduce(&self) -> String {
        let mut cmd = format!(
            "tidal chaos run --scenario {} --seed {} --duration {}s",
            self.scenario.name,
            self.seed,
            self.duration.as_secs()
        );
        if self.net == NetMode::Netns || self.scenario.netns {
            cmd.push_str(" --net netns");
        }
        if !self.tls && !scenarios::needs_tls(&self.scenario) {
            cmd.push_str(" --insecure");
        }
        if !self.tokens && !scenarios::needs_tokens(&self.scenario) {
            cmd.push_str(" --auth none");
        }
        for arg in &self.server_args {
            cmd.push_str(&format!(" --server-arg={arg}"));
        }
        cmd
    }
}

impl RunOptions {
    /// Whether the run uses mutual TLS (asked for, or needed by the scenario).
    pub fn uses_tls(&self) -> bool {
        self.tls || scenarios::needs_tls(&self.scenario)
    }

    /// Whether the run's servers check tokens (asked for, or needed by the
    /// scenario).
    pub fn uses_tokens(&self) -> bool {
        self.tokens || scenarios::needs_tokens(&self.scenario)
    }

    /// How the run's processes talk: ", mutual TLS and tokens" and so on.
    pub fn security(&self) -> &'static str {
        match (self.uses_tls(), self.uses_tokens()) {
            (true, true) => ", mutual TLS and tokens",
            (true, false) => ", mutual TLS, --auth none",
            (false, true) => ", plaintext with tokens",
            (false, false) => ", plaintext, --auth none",
        }
    }
}

pub struct Report {
    pub options: RunOptions,
    pub verdicts: Vec<Verdict>,
    pub ops: usize,
    pub acknowledged_submits: usize,
    pub tasks: usize,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.verdicts.iter().all(Verdict::ok)
    }

    pub fn render(&self) -> String {
        let o = &self.options;
        let mut s = format!(
            "scenario {} ({}) seed {} duration {}s{}{}: {} operations, {} acknowledged submits, {} tasks at the end\n",
            o.scenario.name,
            o.scenario.id,
            o.seed,
            o.duration.as_secs(),
            if o.net == NetMode::Netns || o.scenario.netns {
                " in network namespaces"
            } else {
                ""
            },
            o.security(),
            self.ops,
            self.acknowledged_submits,
            self.tasks
        );
        for v in &self.verdicts {
            s.push_str(&format!(
                "  {:<16} {}\n",
                v.checker,
                if v.ok() {
                    "ok".to_string()
                } else {
                    format!("FAILED ({} problems)", v.problems.len())
                }
            ));
            for p in v.problems.iter().take(20) {
                s.push_str(&format!("      {p}\n"));
            }
        }
        if self.ok() {
            s.push_str("PASSED\n");
        } else {
            s.push_str(&format!(
                "FAILED: reproduce with `{}`; history, logs and data are in {}\n",
                o.reproduce(),
                o.dir.display()
            ));
        }
        s
    }
}

/// One run. In the netns mode, an error that [`crate::netns::skipped`]
/// recognises says the run was skipped (not root, no `ip` or `nft`, or a
/// scenario that needs the proxy) and why.
pub async fn run(mut options: RunOptions) -> anyhow::Result<Report> {
    let s = options.scenario;
    options.agents = options.agents.max(scenarios::min_agents(&s));
    if s.netns {
        options.net = NetMode::Netns;
    }
    if options.net == NetMode::Netns {
        if let Some(why) = scenarios::netns_unsupported(&s) {
            return Err(Skipped(format!("{} ({}) in the netns mode: {why}", s.name, s.id)).into());
        }
        if let Some(why) = crate::netns::unavailable() {
            return Err(Skipped(why).into());
        }
    }
    std::fs::create_dir_all(&options.dir)
        .with_context(|| format!("creating {}", options.dir.display()))?;
    let history = Recorder::new(Some(&options.dir.join("history.jsonl")))?;
    history.record(Event {
        detail: Some(format!(
            "scenario {} seed {} duration {:?}{}",
            s.name,
            options.seed,
            options.duration,
            options.security()
        )),
        ..Event::new("runner", "event", "start")
    });
    // The netns mode's network, before anything listens on it; removed when
    // the last holder of `net` (the cluster, the runner) is dropped, also
    // on an error or a panic.
    let net = match options.net {
        NetMode::Proxy => Net::default(),
        NetMode::Netns => Net::netns(
            Netns::create(s.nodes, options.agents, options.clients)
                .context("setting up the network namespaces")?,
        ),
    };
    if let Some(ns) = net.namespaces() {
        history.record(Event {
            detail: Some(format!(
                "network namespaces {}-*: nodes at {}.., agents at {}.., clients at {}.., \
                 the sink and the observer at {}",
                ns.name(),
                ns.ip(Peer::Node(1)),
                ns.ip(Peer::Agent(1)),
                ns.ip(Peer::Client(1)),
                ns.host_ip()
            )),
            ..Event::new("runner", "event", "netns")
        });
    }
    let sink = match net.namespaces() {
        Some(ns) => Sink::start_at(history.clone(), ns.host_ip()).await?,
        None => Sink::start(history.clone()).await?,
    };
    let layout = Layout {
        tidal: options.tidal.clone(),
        dir: options.dir.clone(),
        nodes: s.nodes,
        voters: scenarios::initial_voters(&s),
        agents: options.agents,
        agent_slots: scenarios::agent_slots(&s),
        agent_gpus: scenarios::agent_slots(&s),
        agent_ttl_ms: 3000,
        work_ms: scenarios::work_ms(&s),
        seed: options.seed,
        dc: "chaos".into(),
        id_base: 0,
        task_types: "t2i".into(),
        agent1_work_ms: scenarios::agent1_work_ms(&s),
        wrap_workers: scenarios::wrap_workers(&s),
        tls: match options.uses_tls() {
            true => Some(
                tidal_testkit::Pki::new(&options.tidal, &options.dir.join("tls"))
                    .context("making the run's certificates")?,
            ),
            false => None,
        },
        tokens: options.uses_tokens(),
    };
    let mut cluster = Cluster::prepare(layout.clone(), sink.addr, net.clone())?;
    // A cross-DC scenario: a second DC, the only one that runs tts, with its
    // own sink and history (its task ids are its own).
    let mut remote = match scenarios::dcs(&s) {
        1 => None,
        _ => {
            let history = Recorder::new(Some(&options.dir.join("history-remote.jsonl")))?;
            let sink = Sink::start(history.clone()).await?;
            let b = Layout {
                nodes: 3,
                voters: 3,
                dc: REMOTE_DC.into(),
                id_base: 10,
                task_types: REMOTE_TYPE.into(),
                ..layout.clone()
            };
            let mut b = Cluster::prepare(b, sink.addr, net.clone())?;
            cluster.add_server_args(&[
                "--peer".into(),
                format!("{REMOTE_DC}={}", b.publics().join(",")),
            ]);
            b.add_server_args(&[
                "--peer".into(),
                format!("chaos={}", cluster.publics().join(",")),
            ]);
            Some(Remote {
                cluster: b,
                history,
                _sink: sink,
            })
        }
    };
    cluster.add_server_args(&scenarios::server_args(&s));
    cluster.add_server_args(&options.server_args);
    if let Some(r) = remote.as_mut() {
        r.cluster.add_server_args(&options.server_args);
    }
    cluster.launch().await.context("starting the cluster")?;
    if let Some(r) = remote.as_mut() {
        r.cluster.launch().await.context("starting the second DC")?;
        linked(&cluster).await.context("linking the two DCs")?;
    }
    let nodes = cluster.nodes.iter().map(|n| (n.id, n.private)).collect();
    let observer = crate::observer::start(
        cluster.admin.clone(),
        nodes,
        cluster.incarnations.clone(),
        history.clone(),
    );
    let publics: Vec<String> = cluster.nodes.iter().map(|n| n.public.to_string()).collect();
    let term_before = cluster.admin.status().await.map(|st| st.term).unwrap_or(0);
    let remote_share = if remote.is_some() { 0.3 } else { 0.0 };
    let workload = Workload::start(
        scenarios::mix(&s),
        options.clients,
        publics,
        &net,
        history.clone(),
        options.seed,
        remote_share,
        layout.client_tls()?,
        cluster.admin_token.clone(),
    )?;

    let until = Instant::now() + options.duration;
    let mut nemesis = Nemesis {
        cluster: &mut cluster,
        remote: remote.as_mut().map(|r| &mut r.cluster),
        history: history.clone(),
        rng: rand::rngs::StdRng::seed_from_u64(options.seed),
        clients: options.clients,
        until: None,
    };
    let played = nemesis.run(s.fault, until).await;
    // Heal whatever state the nemesis stopped in, even after an error.
    cluster.heal_all()?;
    if let Some(r) = remote.as_mut() {
        r.cluster.heal_all()?;
    }
    history.record(Event::new("runner", "event", "healed"));
    let healed_at = Instant::now();
    played.context("playing the faults")?;

    // Service within the bound: a write and a read through the healed cluster.
    let probe = async {
        let r = cluster
            .admin
            .submit_one(v1::TaskSpec {
                task_type: "probe".into(),
                idempotency_key: format!("probe-{}", options.seed),
                ..Default::default()
            })
            .await?;
        cluster.admin.get_task(&r.id, false).await
    };
    let probed = tokio::time::timeout(HEAL_BOUND, probe).await;
    history.record(Event {
        accepted: Some(matches!(probed, Ok(Ok(_)))),
        detail: Some(format!(
            "after {:?}: {:?}",
            healed_at.elapsed(),
            probed.as_ref().map(|r| r.as_ref().map(|t| &t.id))
        )),
        ..Event::new("runner", "event", "probe")
    });
    workload.stop().await;

    // Let the agents finish what is left, then measure convergence.
    settle(&cluster, Duration::from_secs(60)).await;
    let converged = converge(&cluster, HEAL_BOUND).await;
    history.record(Event {
        accepted: Some(converged.is_ok()),
        detail: Some(match &converged {
            Ok(d) => format!("equal applied index and digest on every node {d:?} after settling"),
            Err(e) => e.clone(),
        }),
        ..Event::new("runner", "event", "converged")
    });

    // The end state, read linearizably from the leader.
    let finals = all_tasks(&cluster).await.context("reading the end state")?;
    for t in &finals {
        if is_probe(t) {
            continue;
        }
        history.record(Event {
            task: Some(t.id.clone()),
            key: t.spec.as_ref().map(|sp| sp.idempotency_key.clone()),
            state: Some(state_name(t.state).to_string()),
            token: Some(t.token),
            attempt: Some(t.attempt),
            agent: Some(t.agent.clone()),
            remote: (!t.forwarded_to.is_empty())
                .then(|| format!("{}/{}", t.forwarded_to, t.remote_id)),
            preempted: Some(t.preempted),
            suspended: t.suspended.then_some(true),
            ..Event::new("runner", "event", "final")
        });
    }
    if let Some(r) = remote.as_ref() {
        record_remote(r, &history).await?;
    }
    history.record(Event::new("runner", "event", "final-done"));
    expectations(&cluster, &s, term_before, &finals, &history).await;
    if let Some(ns) = net.namespaces() {
        for e in ns.errors() {
            history.record(Event {
                accepted: Some(false),
                detail: Some(format!("a fault was not applied: {e}")),
                ..Event::new("runner", "event", "expect")
            });
        }
    }

    observer.abort();
    cluster.stop_all();
    if let Some(r) = remote.as_mut() {
        r.cluster.stop_all();
        for p in r.cluster.panics() {
            history.record(Event {
                accepted: Some(false),
                detail: Some(p),
                ..Event::new("runner", "event", "log-panic")
            });
        }
    }
    for p in cluster.panics() {
        history.record(Event {
            accepted: Some(false),
            detail: Some(p),
            ..Event::new("runner", "event", "log-panic")
        });
    }
    let stops = record_stops(&cluster, &history);
    if s.fault == Fault::DrainUnderFaults {
        drain_expectations(&history, stops);
    }
    let preemptions = record_preemptions(&cluster, &history);
    if s.fault == Fault::PreemptUnderFaults {
        preemption_expectations(&history, preemptions);
    }
    if s.fault == Fault::DuplicateAgentId {
        displaced_expectations(&history);
    }
    history.flush();

    let events = history.events();
    let facts = Facts {
        agents_paused: scenarios::pauses_agents(&s),
    };
    let mut verdicts = check::run_all(&events, &facts);
    if let Some(r) = remote.as_ref() {
        r.history.flush();
        let mut v = check::exclusivity::check(&r.history.events(), &facts);
        v.checker = "exclusivity (remote DC)";
        verdicts.push(v);
    }
    let ops = events.iter().filter(|e| e.kind == "invoke").count();
    let acknowledged_submits = events.iter().filter(|e| e.is("ok", "submit")).count();
    let report = Report {
        options: options.clone(),
        verdicts,
        ops,
        acknowledged_submits,
        tasks: finals.len(),
    };
    std::fs::write(options.dir.join("report.txt"), report.render())?;
    drop(cluster);
    if report.ok() && !options.keep {
        let _ = std::fs::remove_dir_all(&options.dir);
    }
    Ok(report)
}

/// The second DC of a cross-DC scenario.
const REMOTE_DC: &str = "chaos-b";

/// A cross-DC scenario's second DC: its processes, its history (its sink's
/// records and its end state) and its sink.
struct Remote {
    cluster: Cluster,
    history: Recorder,
    _sink: Sink,
}

/// Waits until the first DC has the second's capability summary, so
/// forwarding starts with the workload.
async fn linked(cluster: &Cluster) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = cluster.admin.dc_status().await {
            if s.peers.iter().all(|p| p.summary.is_some()) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("the first DC has no summary of the second after 20s");
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// The second DC's end state: its convergence as an expectation, every task
/// as `final-remote` in the main history (for the forwarding checker) and
/// as `final` in its own (for its exclusivity check).
async fn record_remote(r: &Remote, history: &Recorder) -> anyhow::Result<()> {
    let converged = converge(&r.cluster, HEAL_BOUND).await;
    history.record(Event {
        accepted: Some(converged.is_ok()),
        detail: Some(format!("the remote DC converged: {converged:?}")),
        ..Event::new("runner", "event", "expect")
    });
    let tasks = all_tasks(&r.cluster)
        .await
        .context("reading the remote DC's end state")?;
    for t in &tasks {
        let e = Event {
            task: Some(t.id.clone()),
            state: Some(state_name(t.state).to_string()),
            token: Some(t.token),
            attempt: Some(t.attempt),
            agent: Some(t.agent.clone()),
            remote: Some(format!("{}/{}", t.origin_dc, t.origin_id)),
            ..Event::new("runner", "event", "final")
        };
        r.history.record(e.clone());
        history.record(Event {
            f: "final-remote".into(),
            ..e
        });
    }
    r.history
        .record(Event::new("runner", "event", "final-done"));
    Ok(())
}

/// The agents' own word (their logs, complete once they are stopped) on
/// the tasks they stopped on the leader's order (a drain's deadline), or
/// handed back unstarted (leaving, or no free slot while workers being
/// stopped still held theirs): one `stopped` event each, with the task,
/// token and agent. Such a task goes back to Pending without spending its
/// attempt, which the exclusivity checker (two tokens of one attempt) and
/// the linearizability checker (a read of pending after one of assigned or
/// running) allow only for these tokens. Returns how many.
fn record_stops(cluster: &Cluster, history: &Recorder) -> usize {
    let kinds = [
        ("task stopped on the leader's order", "stopped"),
        ("handing it back as stopped", "stopped"),
    ];
    record_agent_events(cluster, history, &kinds).iter().sum()
}

/// Records, for each agent log line that contains one of the needles, the
/// runner event named beside it (with the line's task, token and agent),
/// each agent's in its log's order; returns how many of each.
fn record_agent_events(
    cluster: &Cluster,
    history: &Recorder,
    kinds: &[(&str, &str)],
) -> Vec<usize> {
    let needles: Vec<&str> = kinds.iter().map(|(n, _)| *n).collect();
    let mut counts = vec![0; kinds.len()];
    for (k, line) in cluster.agent_log_matches(&needles) {
        let field = |name: &str| {
            line.split(&format!("{name}="))
                .nth(1)
                .and_then(|v| v.split(|c: char| c.is_whitespace() || c == '}').next())
                .map(str::to_string)
        };
        history.record(Event {
            task: field("task_id"),
            token: field("token").and_then(|t| t.parse().ok()),
            agent: field("agent_id"),
            ..Event::new("runner", "event", kinds[k].1)
        });
        counts[k] += 1;
    }
    counts
}

/// What the agents did to preempt (their logs, each agent's in its order):
/// `notice` for a worker given notice to stop (then `stopped` once it
/// did, recorded with the drains' stops), `suspend` and `resume` for a
/// worker paused in place and continued, `rejected` for a report the
/// leader refused. The preemption checker reads them.
struct Preemptions {
    notices: usize,
    suspends: usize,
    resumes: usize,
    /// Reports (a completion, a stop) the leader refused.
    rejected: usize,
}

fn record_preemptions(cluster: &Cluster, history: &Recorder) -> Preemptions {
    let n = record_agent_events(
        cluster,
        history,
        &[
            ("preempting task: notice given", "notice"),
            ("suspending task", "suspend"),
            ("resuming task", "resume"),
            ("completion rejected by the leader", "rejected"),
        ],
    );
    Preemptions {
        notices: n[0],
        suspends: n[1],
        resumes: n[2],
        rejected: n[3],
    }
}

/// preempt-under-faults' pass criteria: online work did preempt offline
/// work in each of the ways, so the checkers saw preemptions under faults.
fn preemption_expectations(history: &Recorder, p: Preemptions) {
    history.record(Event {
        accepted: Some(p.notices > 0 && p.suspends > 0 && p.resumes > 0),
        detail: Some(format!(
            "online work preempted offline work under the faults: {} workers given notice, \
             {} suspended, {} resumed ({} reports refused; the agents' logs)",
            p.notices, p.suspends, p.resumes, p.rejected
        )),
        ..Event::new("runner", "event", "expect")
    });
}

/// drain-under-faults' pass criteria: every drain ended drained, and
/// agent 1's drains (deadlines shorter than its tasks) stopped tasks.
fn drain_expectations(history: &Recorder, stops: usize) {
    let events = history.events();
    let drains: Vec<&Event> = events
        .iter()
        .filter(|e| e.proc == "nemesis" && e.f == "drained")
        .collect();
    let ended = drains.iter().filter(|e| e.accepted == Some(true)).count();
    history.record(Event {
        accepted: Some(!drains.is_empty() && ended == drains.len()),
        detail: Some(format!(
            "every drain under a leader kill ended drained ({ended} of {})",
            drains.len()
        )),
        ..Event::new("runner", "event", "expect")
    });
    history.record(Event {
        accepted: Some(stops > 0),
        detail: Some(format!(
            "drains with a deadline stopped running tasks, which were requeued ({stops} stops in the agents' logs)"
        )),
        ..Event::new("runner", "event", "expect")
    });
}

/// duplicate-agent-id's pass criterion: every displaced process exited 6,
/// saying its id was taken over.
fn displaced_expectations(history: &Recorder) {
    let events = history.events();
    let all: Vec<&Event> = events
        .iter()
        .filter(|e| e.proc == "nemesis" && e.f == "displaced")
        .collect();
    let ok = all.iter().filter(|e| e.accepted == Some(true)).count();
    let bad: Vec<&str> = all
        .iter()
        .filter(|e| e.accepted != Some(true))
        .filter_map(|e| e.detail.as_deref())
        .collect();
    history.record(Event {
        accepted: Some(!all.is_empty() && ok == all.len()),
        detail: Some(format!(
            "every agent process displaced by a second one under its id exited 6 ({ok} of {}){}",
            all.len(),
            if bad.is_empty() {
                String::new()
            } else {
                format!(": {}", bad.join("; "))
            }
        )),
        ..Event::new("runner", "event", "expect")
    });
}

/// The probe's task type, which no agent runs.
fn is_probe(t: &v1::Task) -> bool {
    t.spec.as_ref().is_some_and(|sp| sp.task_type == "probe")
}

/// Waits (bounded) until no task is pending, assigned or running.
async fn settle(cluster: &Cluster, bound: Duration) {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if let Ok(tasks) = all_tasks(cluster).await {
            let busy = tasks
                .iter()
                .filter(|t| !is_probe(t))
                .any(|t| !matches!(state_name(t.state), "succeeded" | "failed" | "cancelled"));
            if !busy {
                return;
            }
        }
        sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every node reports the same applied index and digest and
/// exactly one leader; returns how long it took or what differs.
async fn converge(cluster: &Cluster, bound: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < bound {
        let mut seen = Vec::new();
        for n in &cluster.nodes {
            seen.push(
                cluster
                    .status(n.id)
                    .await
                    .map(|s| (s.applied_index, s.state_digest, s.role)),
            );
        }
        let leaders = seen.iter().flatten().filter(|s| s.2 == "leader").count();
        let first = seen.first().cloned().flatten();
        let all_equal = seen
            .iter()
            .all(|s| s.as_ref().map(|s| (s.0, s.1)) == first.as_ref().map(|f| (f.0, f.1)));
        if leaders == 1 && all_equal && seen.iter().all(Option::is_some) {
            return Ok(start.elapsed());
        }
        last = format!("{seen:?}");
        sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "not converged after {bound:?}: (applied, digest, role) per node: {last}"
    ))
}

async fn all_tasks(cluster: &Cluster) -> anyhow::Result<Vec<v1::Task>> {
    let req = v1::ListTasksRequest {
        limit: 10_000,
        ..Default::default()
    };
    Ok(cluster.admin.list_all_tasks(req).await?)
}

/// S12's criterion: no agent is marked down, seen as none down at the end
/// and no task granted a second time (marking an agent down requeues its
/// tasks with attempt + 1). Says whether it holds, and the counts.
async fn none_marked_down(cluster: &Cluster, finals: &[v1::Task]) -> (bool, String) {
    let agents = cluster.admin.list_agents(false).await.unwrap_or_default();
    let down: Vec<&str> = agents
        .iter()
        .filter(|a| a.state != v1::AgentState::Ready as i32)
        .map(|a| a.spec.as_ref().map_or("?", |sp| sp.id.as_str()))
        .collect();
    let requeued = finals.iter().filter(|t| t.attempt > 1).count();
    (
        down.is_empty() && requeued == 0,
        format!("{} down {down:?}, {requeued} tasks requeued", down.len()),
    )
}

/// Whether some submit was acknowledged during every partition of the
/// nemesis (from its `partition` to the next `heal`), with the counts.
fn committed_while_cut(events: &[Event]) -> (bool, String) {
    let mut windows = Vec::new();
    let mut open = None;
    for e in events.iter().filter(|e| e.proc == "nemesis") {
        match e.f.as_str() {
            "partition" => open = Some(e.t),
            "heal" => {
                if let Some(from) = open.take() {
                    windows.push((from, e.t));
                }
            }
            _ => {}
        }
    }
    let counts: Vec<String> = windows
        .iter()
        .map(|&(from, to)| {
            let n = events
                .iter()
                .filter(|e| e.is("ok", "submit") && e.t > from && e.t < to)
                .count();
            format!("{n} from {} to {}", check::secs(from), check::secs(to))
        })
        .collect();
    let ok = !windows.is_empty()
        && windows.iter().all(|&(from, to)| {
            events
                .iter()
                .any(|e| e.is("ok", "submit") && e.t > from && e.t < to)
        });
    (
        ok,
        format!(
            "acknowledged submits per partition: [{}]",
            counts.join(", ")
        ),
    )
}

/// The scenario's extra pass criteria, recorded as `expect` events.
async fn expectations(
    cluster: &Cluster,
    s: &Scenario,
    term_before: u64,
    finals: &[v1::Task],
    history: &Recorder,
) {
    let expect = |ok: bool, what: String| {
        history.record(Event {
            accepted: Some(ok),
            detail: Some(what),
            ..Event::new("runner", "event", "expect")
        });
    };
    match s.fault {
        Fault::None => {
            // Without faults no election may happen, unless a server's
            // runtime stalled long enough to cost a leadership (the
            // machine starved it of CPU; see STALL_COSTS_LEADERSHIP_MS),
            // or its Raft core waited for its disk for three election
            // timeouts (DISK_STALL_COSTS_LEADERSHIP_MS): each server
            // measures its own stalls and logs them (tidal-server's
            // stall.rs, tidal-store's slow sync and store call warnings).
            let term = cluster.admin.status().await.map(|st| st.term).unwrap_or(0);
            if term == term_before {
                expect(
                    true,
                    format!("no election after warm-up (term {term_before})"),
                );
            } else {
                let stalls = cluster.stalls(STALL_COSTS_LEADERSHIP_MS);
                expect(
                    !stalls.is_empty(),
                    format!(
                        "no election after warm-up unless a server stalled long enough to cost a \
                         leadership (term {term_before} -> {term}; stalls of {STALL_COSTS_LEADERSHIP_MS} ms \
                         or more: {})",
                        if stalls.is_empty() {
                            "none".to_string()
                        } else {
                            stalls.join("; ")
                        }
                    ),
                );
            }
        }
        Fault::JitterFollower => {
            // One slow follower must not cost the leader its leadership: its
            // pre-votes fail while the others hear the leader. One election
            // is allowed for a stall of the whole machine.
            let term = cluster.admin.status().await.map(|st| st.term).unwrap_or(0);
            expect(
                term <= term_before + 1,
                format!("few elections with one slow follower (term {term_before} -> {term})"),
            );
        }
        Fault::Failover => {
            let (ok, what) = none_marked_down(cluster, finals).await;
            expect(ok, format!("leader failovers mark no agent down ({what})"));
        }
        Fault::RollingRestart => {
            let (ok, what) = none_marked_down(cluster, finals).await;
            expect(
                ok,
                format!("graceful stops and restarts mark no agent down ({what})"),
            );
        }
        Fault::IsolateLeaderSilently => {
            let (ok, what) = none_marked_down(cluster, finals).await;
            // What the servers logged, for the reader (the criterion is
            // S12's, on the end state).
            let logged = cluster.node_log_lines("marked down");
            expect(
                ok,
                format!(
                    "agents reach the new leader before the server's agent TTL: no agent marked down \
                     ({what}; {} \"marked down\" lines in the servers' logs{})",
                    logged.len(),
                    logged.first().map_or(String::new(), |l| format!(", the first: {l}"))
                ),
            );
            let (ok, what) = committed_while_cut(&history.events());
            expect(
                ok,
                format!("the workload keeps committing while the leader is isolated: {what}"),
            );
        }
        Fault::PauseAgent => {
            let regranted = finals.iter().filter(|t| t.attempt > 1).count();
            expect(regranted > 0, format!("a paused agent's tasks are granted again with a higher token ({regranted} tasks)"));
        }
        Fault::CrashPoints => {
            let crashes = history
                .events()
                .iter()
                .filter(|e| e.proc == "nemesis" && e.f == "crash")
                .count();
            expect(
                crashes > 0,
                format!("nodes aborted at crash points ({crashes} times; the tidal binary needs --features failpoints)"),
            );
        }
        Fault::PowerLoss => {
            let events = history.events();
            let losses: Vec<&Event> = events
                .iter()
                .filter(|e| e.proc == "nemesis" && e.f == "lost-power")
                .collect();
            let real = losses.iter().filter(|e| e.accepted == Some(true)).count();
            expect(
                real > 0 && real == losses.len(),
                format!(
                    "nodes lost power {real} times, each dropping its unsynced writes, of {} signalled \
                     (the tidal binary needs --features failpoints)",
                    losses.len()
                ),
            );
        }
        Fault::DcLinkCut | Fault::KillRemoteLeader => {
            let forwarded = finals.iter().filter(|t| !t.forwarded_to.is_empty()).count();
            expect(
                forwarded > 0,
                format!("tasks were forwarded to the other DC ({forwarded})"),
            );
        }
        Fault::TokenRevoked => {
            // No task lost with a revoked session: every one ended (the
            // revoked agents' tasks ran again elsewhere once their leases
            // ran out).
            let open: Vec<String> = finals
                .iter()
                .filter(|t| !is_probe(t) && !check::is_terminal(state_name(t.state)))
                .map(|t| format!("{} {} on {:?}", t.id, state_name(t.state), t.agent))
                .collect();
            let again = finals.iter().filter(|t| t.attempt > 1).count();
            // The revocation checker passes a history without revocations
            // (every other scenario's): this one must have revoked a token.
            let revoked = history
                .events()
                .iter()
                .filter(|e| {
                    e.proc == "nemesis" && e.is("event", "revoke") && e.accepted == Some(true)
                })
                .count();
            expect(
                revoked > 0,
                format!("agent tokens were revoked and the revocations acknowledged ({revoked})"),
            );
            expect(
                open.is_empty(),
                format!(
                    "every task ended ({} of {} not finished{}; {again} ran under a later attempt)",
                    open.len(),
                    finals.len(),
                    open.first()
                        .map_or(String::new(), |t| format!(", e.g. {t}"))
                ),
            );
        }
        Fault::Membership => {
            let members = cluster
                .admin
                .members()
                .await
                .map(|m| m.members)
                .unwrap_or_default();
            let voters = members.iter().filter(|m| m.voter).count();
            expect(
                voters == s.nodes,
                format!(
                    "the added node is a voter at the end ({voters} voters of {})",
                    s.nodes
                ),
            );
        }
        _ => {}
    }
}
