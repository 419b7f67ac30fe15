//! The workloads. Every client is its own `tidal_client::Client`; agents are
//! real sessions (`Agents/Session`) held by this process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use tidal_client::tidal_tls::rustls::ClientConfig;
use tidal_client::v1::{self, agent_message::Msg as In, server_message::Msg as Out};
use tidal_client::Client;
use tokio::sync::mpsc;

use crate::snapshot_apply;
use crate::stats::{histogram, summary};

/// The TLS configurations of the run (`--tls`): its clients' and its
/// simulated agents' (an agent certificate of the DC), set once before
/// the workload starts.
static TLS: OnceLock<(Arc<ClientConfig>, Arc<ClientConfig>)> = OnceLock::new();

/// Every client of the run connects over TLS with `client`, every
/// simulated agent with `agent`.
pub fn use_tls(client: Arc<ClientConfig>, agent: Arc<ClientConfig>) {
    let _ = TLS.set((client, agent));
}

/// The default client options, with the run's client TLS configuration.
fn options() -> tidal_client::ClientOptions {
    tidal_client::ClientOptions {
        tls: TLS.get().map(|t| t.0.clone()),
        ..tidal_client::ClientOptions::default()
    }
}

/// A client of `endpoints` with [`options`].
fn new_client(endpoints: Vec<String>) -> Result<Client, tidal_client::Error> {
    Client::with_options(endpoints, options())
}

/// A client of `endpoints` for simulated agents: [`options`] with the
/// agents' TLS configuration.
fn agent_options() -> tidal_client::ClientOptions {
    tidal_client::ClientOptions {
        tls: TLS.get().map(|t| t.1.clone()),
        ..tidal_client::ClientOptions::default()
    }
}

fn spec(key: String) -> v1::TaskSpec {
    v1::TaskSpec {
        task_type: "t2i".into(),
        payload: vec![b'x'; 200],
        idempotency_key: key,
        ..Default::default()
    }
}

/// Runs `clients` submitters until `stop`; each records its latencies and,
/// when `started` is given, the submit time of each key.
/// `rate`: tasks per second over all clients (open loop: each client sends
/// on a fixed schedule and latency counts from the scheduled time, so a slow
/// answer is not hidden by sending the next request later); 0 means each
/// client sends as soon as its previous answer is back.
async fn submitters(
    endpoints: &[String],
    clients: usize,
    batch: usize,
    rate: f64,
    duration: Duration,
    started: Option<Arc<Mutex<HashMap<String, Instant>>>>,
) -> anyhow::Result<(u64, hdrhistogram::Histogram<u64>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    // Each client's interval between requests; clients spread over it.
    let period =
        (rate > 0.0).then(|| Duration::from_secs_f64(clients as f64 * batch as f64 / rate));
    let mut pace = Vec::new();
    for k in 0..clients {
        let client = new_client(endpoints.to_vec())?;
        let (stop, started) = (stop.clone(), started.clone());
        let mut due = period.map(|_| {
            let (tx, rx) = mpsc::unbounded_channel::<Instant>();
            pace.push(tx);
            rx
        });
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut ok = 0u64;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let specs: Vec<v1::TaskSpec> = (0..batch)
                    .map(|_| {
                        n += 1;
                        spec(format!("b{k}-{n}"))
                    })
                    .collect();
                let t0 = match due.as_mut() {
                    Some(due) => match due.recv().await {
                        Some(scheduled) => scheduled,
                        None => break,
                    },
                    None => Instant::now(),
                };
                if let Some(s) = &started {
                    let mut s = s.lock().expect("lock");
                    for sp in &specs {
                        s.insert(sp.idempotency_key.clone(), t0);
                    }
                }
                if let Ok(results) = client.submit(specs).await {
                    let _ = h.record(t0.elapsed().as_micros() as u64);
                    ok += results.iter().filter(|r| r.error.is_none()).count() as u64;
                }
            }
            (ok, h)
        }));
    }
    let pacer = period.map(|p| {
        let stop = stop.clone();
        std::thread::spawn(move || pacer(pace, p, &stop))
    });
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    if let Some(pacer) = pacer {
        let _ = pacer.join();
    }
    let mut total = 0;
    let mut all = histogram();
    for t in tasks {
        let (ok, h) = t.await?;
        total += ok;
        all.add(h).context("merging histograms")?;
    }
    Ok((total, all))
}

/// The open-loop schedule: client `k` is due at `begin + (k / clients + i)
/// x period` for i = 0, 1, ... Runs on its own thread with the OS's sleep
/// (tens of microseconds late) rather than tokio's timer, which rounds up to
/// the next millisecond: since latency counts from the scheduled time, the
/// load generator's own lateness would count as the cluster's (figures in
/// benches/README.md, Results). A client still
/// busy with its previous request finds its next due times queued, so a
/// slow answer still shows in the latency of the requests after it.
fn pacer(clients: Vec<mpsc::UnboundedSender<Instant>>, period: Duration, stop: &AtomicBool) {
    let n = clients.len() as u32;
    let begin = Instant::now();
    for i in 0u32.. {
        for (k, client) in clients.iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let at = begin + period * i + period * k as u32 / n;
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let _ = client.send(at);
        }
    }
}

pub async fn submit(
    endpoints: &[String],
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Value> {
    let t0 = Instant::now();
    let (ok, h) = submitters(endpoints, clients, 1, 0.0, duration, None).await?;
    let secs = t0.elapsed().as_secs_f64();
    Ok(json!({
        "name": format!("submit, {clients} clients"),
        "submitted_per_s": ok as f64 / secs,
        "submit_latency": summary(&h),
    }))
}

/// Simulated agents: real sessions that complete every assignment at once,
/// reconnecting (and re-registering) whenever a session ends.
struct SimAgents {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    epoch: Instant,
    assigned: Arc<Mutex<hdrhistogram::Histogram<u64>>>,
    completed: Arc<Mutex<hdrhistogram::Histogram<u64>>>,
    n_assigned: Arc<AtomicU64>,
    n_completed: Arc<AtomicU64>,
    /// Nanoseconds after `epoch` of the latest assignment received.
    last_assignment: Arc<AtomicU64>,
    /// Agents whose first session the leader has registered.
    registered: Arc<AtomicU64>,
}

impl SimAgents {
    fn start(
        endpoints: &[String],
        agents: usize,
        slots: u32,
        started: Arc<Mutex<HashMap<String, Instant>>>,
    ) -> anyhow::Result<SimAgents> {
        let mut sim = SimAgents {
            tasks: Vec::new(),
            epoch: Instant::now(),
            assigned: Arc::new(Mutex::new(histogram())),
            completed: Arc::new(Mutex::new(histogram())),
            n_assigned: Arc::default(),
            n_completed: Arc::default(),
            last_assignment: Arc::default(),
            registered: Arc::default(),
        };
        for a in 0..agents {
            let client = Client::with_options(endpoints.to_vec(), agent_options())?;
            let (started, assigned, completed) =
                (started.clone(), sim.assigned.clone(), sim.completed.clone());
            let (n_assigned, n_completed, last) = (
                sim.n_assigned.clone(),
                sim.n_completed.clone(),
                sim.last_assignment.clone(),
            );
            let epoch = sim.epoch;
            let registered = sim.registered.clone();
            sim.tasks.push(tokio::spawn(async move {
                let mut counted = false;
                loop {
                    let (tx, rx) = mpsc::channel(4096);
                    let register = v1::AgentMessage {
                        msg: Some(In::Register(v1::Register {
                            spec: Some(v1::AgentSpec {
                                id: format!("bench-agent-{a}"),
                                dc: "bench".into(),
                                task_types: vec!["t2i".into()],
                                slots,
                                ..Default::default()
                            }),
                            running: vec![],
                            instance: format!("bench-agent-{a}-{}", std::process::id()),
                            fenced: vec![],
                            warm_models: vec![],
                        })),
                    };
                    let Ok(mut session) = client.open_session(register, rx).await else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    let hb = tx.clone();
                    let beat = tokio::spawn(async move {
                        let mut seq = 0;
                        loop {
                            seq += 1;
                            let m = v1::AgentMessage {
                                msg: Some(In::Heartbeat(v1::Heartbeat {
                                    seq,
                                    free_slots: 0,
                                    warm_models: vec![],
                                })),
                            };
                            if hb.send(m).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    });
                    let mut keys: HashMap<String, String> = HashMap::new();
                    while let Ok(Some(m)) = session.inbound.message().await {
                        match m.msg {
                            Some(Out::Registered(_)) if !counted => {
                                counted = true;
                                registered.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(Out::Assignment(asg)) => {
                                last.fetch_max(
                                    epoch.elapsed().as_nanos() as u64,
                                    Ordering::Relaxed,
                                );
                                let key = asg
                                    .spec
                                    .as_ref()
                                    .map(|s| s.idempotency_key.clone())
                                    .unwrap_or_default();
                                if let Some(t0) = started.lock().expect("lock").get(&key) {
                                    let _ = assigned
                                        .lock()
                                        .expect("lock")
                                        .record(t0.elapsed().as_micros() as u64);
                                }
                                n_assigned.fetch_add(1, Ordering::Relaxed);
                                keys.insert(asg.task_id.clone(), key);
                                let done = v1::AgentMessage {
                                    msg: Some(In::Completed(v1::TaskCompleted {
                                        task_id: asg.task_id,
                                        token: asg.token,
                                        success: true,
                                        ..Default::default()
                                    })),
                                };
                                if tx.send(done).await.is_err() {
                                    break;
                                }
                            }
                            Some(Out::CompletionAck(ack)) if ack.accepted => {
                                if let Some(key) = keys.remove(&ack.task_id) {
                                    if let Some(t0) = started.lock().expect("lock").remove(&key) {
                                        let _ = completed
                                            .lock()
                                            .expect("lock")
                                            .record(t0.elapsed().as_micros() as u64);
                                    }
                                }
                                n_completed.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                    }
                    beat.abort();
                }
            }));
        }
        Ok(sim)
    }

    /// Waits until every agent's first session is registered, so a run's
    /// first requests do not meet a fleet still registering (with 1,000
    /// agents that would dominate a short run's p99).
    async fn wait_registered(&self, agents: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.registered.load(Ordering::Relaxed) < agents as u64 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {agents} agents registered in 120 s",
                self.registered.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Whether an assignment arrived after `t` (an instant after `epoch`).
    fn assigned_since(&self, t: Instant) -> bool {
        self.last_assignment.load(Ordering::Relaxed)
            > t.duration_since(self.epoch).as_nanos() as u64
    }
}

impl Drop for SimAgents {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub async fn e2e(
    endpoints: &[String],
    clients: usize,
    agents: usize,
    slots: u32,
    batch: usize,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Value> {
    let started: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let sim = SimAgents::start(endpoints, agents, slots, started.clone())?;
    sim.wait_registered(agents).await?;
    let t0 = Instant::now();
    let (submitted, submit_h) = submitters(
        endpoints,
        clients,
        batch,
        rate,
        duration,
        Some(started.clone()),
    )
    .await?;
    let secs = t0.elapsed().as_secs_f64();
    let (a, c) = (
        sim.n_assigned.load(Ordering::Relaxed),
        sim.n_completed.load(Ordering::Relaxed),
    );
    let result = json!({
        "name": if rate > 0.0 {
            format!("e2e at {rate:.0} tasks/s, {clients} clients x {batch}, {agents} agents x {slots} slots")
        } else {
            format!("e2e, {clients} clients x {batch}, {agents} agents x {slots} slots")
        },
        "submitted_per_s": submitted as f64 / secs,
        "assigned_per_s": a as f64 / secs,
        "completed_per_s": c as f64 / secs,
        "submit_latency": summary(&submit_h),
        "assign_latency": summary(&sim.assigned.lock().expect("lock")),
        "complete_latency": summary(&sim.completed.lock().expect("lock")),
    });
    Ok(result)
}

/// Kills the leader `kills` times under load; for each, the time from the
/// kill to the first assignment an agent receives afterwards (from the new
/// leader). At the end, every acknowledged submit must exist.
/// The submit load of a failover run.
pub struct Load {
    pub clients: usize,
    /// Tasks per request.
    pub batch: usize,
    /// Tasks per second over all clients; 0: as fast as answers come back.
    pub rate: f64,
}

pub async fn failover(
    cluster: &mut crate::cluster::Cluster,
    load: Load,
    agents: usize,
    kills: usize,
) -> anyhow::Result<Value> {
    let Load { clients, batch, .. } = load;
    let endpoints = cluster.endpoints();
    let started: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let sim = SimAgents::start(&endpoints, agents, 256, started.clone())?;
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load_started = Instant::now();
    let submitters = paced_load(&endpoints, &load, "f", &acked, &stop)?;
    let mut h = histogram();
    for round in 0..kills {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let leader = cluster
            .leader()
            .await
            .context("no leader before the kill")?;
        let killed_at = Instant::now();
        cluster.kill(leader);
        while !sim.assigned_since(killed_at + Duration::from_millis(1)) {
            anyhow::ensure!(
                killed_at.elapsed() < Duration::from_secs(30),
                "no assignment 30 s after kill {round}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let took = killed_at.elapsed();
        eprintln!(
            "kill {}: node {leader}; first assignment after {took:?}",
            round + 1
        );
        let _ = h.record(took.as_micros() as u64);
        cluster.restart(leader)?;
    }
    stop.store(true, Ordering::Relaxed);
    for t in submitters {
        let _ = t.await;
    }
    let load_secs = load_started.elapsed().as_secs_f64();
    let client = new_client(endpoints.clone())?;
    let tasks = client
        .list_all_tasks(v1::ListTasksRequest {
            limit: 10_000,
            ..Default::default()
        })
        .await?;
    let present: std::collections::HashSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    let acked: Vec<String> = acked
        .lock()
        .expect("lock")
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    let lost = acked
        .iter()
        .filter(|id| !present.contains(id.as_str()))
        .count();
    let per_s = acked.len() as f64 / load_secs;
    eprintln!(
        "acknowledged {} tasks, {per_s:.0} per second over the run",
        acked.len()
    );
    Ok(json!({
        "name": format!("failover, {clients} clients x {batch}, {kills} leader kills"),
        "first_assignment_after_kill": summary(&h),
        "acknowledged": acked.len(),
        "acknowledged_per_s": per_s,
        "lost": lost,
    }))
}

/// Acknowledged task ids, each with when its submit was answered.
type Acked = Arc<Mutex<Vec<(String, Instant)>>>;

/// Starts `load.clients` submitters until `stop`, recording every
/// acknowledged task in `acked`. Each client sends a request every
/// `clients * batch / rate` seconds (skipping the sends it is too late
/// for), or back to back.
fn paced_load(
    endpoints: &[String],
    load: &Load,
    prefix: &str,
    acked: &Acked,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let (clients, batch, rate) = (load.clients, load.batch.max(1), load.rate);
    let every = (rate > 0.0).then(|| Duration::from_secs_f64((clients * batch) as f64 / rate));
    let mut submitters = Vec::new();
    for k in 0..clients {
        let client = new_client(endpoints.to_vec())?;
        let (acked, stop, prefix) = (acked.clone(), stop.clone(), prefix.to_string());
        submitters.push(tokio::spawn(async move {
            let mut ticks = every.map(|d| {
                let mut t = tokio::time::interval(d);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                t
            });
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Some(t) = ticks.as_mut() {
                    t.tick().await;
                }
                let specs: Vec<v1::TaskSpec> = (0..batch)
                    .map(|_| {
                        n += 1;
                        spec(format!("{prefix}{k}-{n}"))
                    })
                    .collect();
                if let Ok(results) = client.submit(specs).await {
                    let now = Instant::now();
                    let mut acked = acked.lock().expect("lock");
                    for r in results {
                        if r.error.as_ref().is_none_or(|e| e.code == 0) {
                            acked.push((r.id, now));
                        }
                    }
                }
            }
        }));
    }
    Ok(submitters)
}

/// SIGTERMs each server in turn under load and starts it again once it
/// exited; for each, whether it led, how long it took to exit (and its
/// exit code), and the longest time without an acknowledged submit from
/// the SIGTERM until the next restart began (or the end). At the end,
/// every acknowledged submit must exist.
pub async fn rolling_restart(
    cluster: &mut crate::cluster::Cluster,
    load: Load,
    agents: usize,
    rounds: usize,
) -> anyhow::Result<Value> {
    let endpoints = cluster.endpoints();
    let started: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let _sim = SimAgents::start(&endpoints, agents, 256, started)?;
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load_started = Instant::now();
    let submitters = paced_load(&endpoints, &load, "r", &acked, &stop)?;
    let client = new_client(endpoints.clone())?;
    let mut restarts = Vec::new();
    for round in 0..rounds {
        for id in 1..=3u64 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let led = cluster.leader().await == Some(id);
            let sent = Instant::now();
            let (status, took) = cluster.terminate(id, Duration::from_secs(10)).await;
            let code = status.and_then(|s| s.code());
            cluster.restart(id)?;
            // Caught up: it applied what the leader had when it started.
            let target = client.status().await?.applied_index;
            let addr = endpoints[id as usize - 1].clone();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(s) = client.status_of(&addr).await {
                    if s.applied_index >= target {
                        break;
                    }
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "node {id} did not catch up in 60 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            restarts.push((round, id, led, code, took, sent));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for t in submitters {
        let _ = t.await;
    }
    let ended = Instant::now();
    let load_secs = load_started.elapsed().as_secs_f64();
    let mut times: Vec<Instant> = acked
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, t)| *t)
        .collect();
    times.sort();
    let longest_gap = |from: Instant, to: Instant| {
        let mut last = from;
        let mut gap = Duration::ZERO;
        for t in times.iter().filter(|t| **t > from && **t <= to) {
            gap = gap.max(*t - last);
            last = *t;
        }
        gap.max(to.saturating_duration_since(last))
    };
    let mut per_node = Vec::new();
    for (i, (round, id, led, code, took, sent)) in restarts.iter().enumerate() {
        let until = restarts.get(i + 1).map_or(ended, |r| r.5);
        let gap = longest_gap(*sent, until);
        eprintln!(
            "round {} node {id}{}: exit code {code:?} after {took:?}; longest time without an acknowledged submit {gap:?}",
            round + 1,
            if *led { " (leader)" } else { "" },
        );
        per_node.push(json!({
            "round": round + 1,
            "node": id,
            "was_leader": led,
            "exit_code": code,
            "exit_ms": took.as_secs_f64() * 1e3,
            "longest_gap_ms": gap.as_secs_f64() * 1e3,
        }));
    }
    let tasks = client
        .list_all_tasks(v1::ListTasksRequest {
            limit: 10_000,
            ..Default::default()
        })
        .await?;
    let present: std::collections::HashSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    let acked = acked.lock().expect("lock");
    let lost = acked
        .iter()
        .filter(|(id, _)| !present.contains(id.as_str()))
        .count();
    let per_s = acked.len() as f64 / load_secs;
    eprintln!(
        "acknowledged {} tasks, {per_s:.0} per second over the run; lost {lost}",
        acked.len()
    );
    Ok(json!({
        "name": format!(
            "rolling restart, {} clients x {}, {} rounds of 3 SIGTERMs",
            load.clients, load.batch, rounds
        ),
        "restarts": per_node,
        "acknowledged": acked.len(),
        "acknowledged_per_s": per_s,
        "lost": lost,
    }))
}

/// A process's resident set and its peak, in MiB, from /proc (Linux).
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// How long the memory workload's probe runs before the first snapshot.
const PROBE_ALONE: Duration = Duration::from_secs(2);

/// Submits one task of 16 bytes at a time until `stop`: when each was sent
/// and how long its answer took.
async fn probe_submits(client: Client, stop: Arc<AtomicBool>) -> Vec<snapshot_apply::Probe> {
    let mut probes = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let task = v1::TaskSpec {
            task_type: "t2i".into(),
            payload: vec![b'p'; 16],
            ..Default::default()
        };
        let sent = Instant::now();
        let ok = client
            .submit(vec![task])
            .await
            .is_ok_and(|r| r.iter().all(|r| r.error.is_none()));
        probes.push(snapshot_apply::Probe {
            sent,
            took: sent.elapsed(),
            ok,
        });
    }
    probes
}

/// A client with room for slow answers (big batches, snapshots, restarts).
fn patient_client(
    endpoints: &[String],
    base: tidal_client::ClientOptions,
) -> anyhow::Result<Client> {
    Ok(Client::with_options(
        endpoints.to_vec(),
        tidal_client::ClientOptions {
            request_timeout: Duration::from_secs(60),
            retry_for: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(1),
            source_ip: None,
            ..base
        },
    )?)
}

/// Fills the cluster with `tasks` pending tasks of `payload` bytes (no
/// agent takes them), then measures every server's memory, a snapshot of
/// that state, and a restart of every server until the leader serves a
/// linearizable read again with every task in place.
pub async fn memory(
    cluster: &mut crate::cluster::Cluster,
    tasks: usize,
    payload: usize,
    clients: usize,
    keys: bool,
) -> anyhow::Result<Value> {
    const BATCH: usize = 5_000;
    let endpoints = cluster.endpoints();
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut fillers = Vec::new();
    for _ in 0..clients.max(1) {
        let client = patient_client(&endpoints, options())?;
        let next = next.clone();
        fillers.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(BATCH as u64, Ordering::Relaxed) as usize;
                if from >= tasks {
                    return anyhow::Ok(());
                }
                let specs: Vec<v1::TaskSpec> = (from..(from + BATCH).min(tasks))
                    .map(|i| v1::TaskSpec {
                        task_type: "t2i".into(),
                        payload: vec![b'x'; payload],
                        idempotency_key: if keys {
                            format!("m-{i}")
                        } else {
                            String::new()
                        },
                        ..Default::default()
                    })
                    .collect();
                let results = client.submit(specs).await?;
                if let Some(e) = results.iter().find_map(|r| r.error.as_ref()) {
                    anyhow::bail!("a submit was refused: {}", e.message);
                }
                if from.is_multiple_of(100_000) {
                    eprintln!("  {from} tasks submitted");
                }
            }
        }));
    }
    for f in fillers {
        f.await??;
    }
    let fill = started.elapsed();
    let client = patient_client(&endpoints, options())?;
    let status = client.status().await?;
    let pending = status.tasks_by_state.get("pending").copied().unwrap_or(0);
    anyhow::ensure!(
        pending as usize >= tasks,
        "{pending} tasks pending after submitting {tasks}"
    );
    let leader = status.leader_id;
    let before: Vec<(f64, f64)> = (1..=3).map(|id| rss_mib(cluster.pid(id))).collect();

    // A probe submits one small task at a time from here until every
    // snapshot is built, so each of its round trips goes through apply
    // while the state is encoded: first without a snapshot, for comparison.
    let built_before: Vec<usize> = (1..=3)
        .map(|id| cluster.log_lines(id, snapshot_apply::SNAPSHOT_BUILT).len())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let probe = tokio::spawn(probe_submits(
        patient_client(&endpoints, options())?,
        stop.clone(),
    ));
    let probe_started = Instant::now();
    eprintln!("  probe without a snapshot for {PROBE_ALONE:?}...");
    tokio::time::sleep(PROBE_ALONE).await;

    eprintln!("  snapshot...");
    let t = Instant::now();
    let snap = client.snapshot().await?;
    let snapshot_took = t.elapsed();
    let leader_built = Instant::now();
    // The followers too, one at a time, as their own snapshot_every would
    // (this workload writes too few entries to reach it): a restart then
    // loads snapshots instead of replaying the whole log.
    for e in endpoints.iter().filter(|e| **e != status.leader_addr) {
        patient_client(std::slice::from_ref(e), options())?
            .snapshot()
            .await?;
    }
    let snapshot_all_took = t.elapsed();
    let all_built = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let probes = probe.await?;
    let after_snapshot: Vec<(f64, f64)> = (1..=3).map(|id| rss_mib(cluster.pid(id))).collect();
    let pauses: Vec<Value> = (1..=3u64)
        .map(|id| {
            let lines = cluster.log_lines(id, snapshot_apply::SNAPSHOT_BUILT);
            json!({
                "node": id,
                "apply_pause_max_ms": snapshot_apply::pauses_after(&lines, built_before[id as usize - 1]),
            })
        })
        .collect();
    let snapshot_apply = json!({
        "leader_apply_pause_max_ms": pauses[leader as usize - 1]["apply_pause_max_ms"].get(0),
        "apply_pause_max_ms": pauses,
        "probe_without_snapshot": snapshot_apply::window(&probes, probe_started, t),
        "probe_leader_snapshot": snapshot_apply::window(&probes, t, leader_built),
        "probe_follower_snapshots": snapshot_apply::window(&probes, leader_built, all_built),
    });
    // The probe's tasks are pending too.
    let status = client.status().await?;
    let pending = status.tasks_by_state.get("pending").copied().unwrap_or(0);

    eprintln!("  restart every server...");
    for id in 1..=3 {
        cluster.kill(id);
    }
    let t = Instant::now();
    for id in 1..=3 {
        cluster.restart(id)?;
    }
    // Poll every server directly, with no client backoff in the way.
    let probe = status.applied_index;
    while !served(&endpoints, probe, pending).await? {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(120),
            "no service 120 s after the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restart_took = t.elapsed();
    let after_restart: Vec<(f64, f64)> = (1..=3).map(|id| rss_mib(cluster.pid(id))).collect();
    let mib = |v: &[(f64, f64)]| {
        json!(v
            .iter()
            .enumerate()
            .map(|(i, (rss, peak))| json!({"node": i + 1, "rss_mib": rss.round(), "peak_mib": peak.round()}))
            .collect::<Vec<_>>())
    };
    Ok(json!({
        "name": format!("memory, {tasks} pending tasks of {payload} bytes{}", if keys { " with keys" } else { "" }),
        "fill_seconds": fill.as_secs_f64(),
        "fill_tasks_per_s": tasks as f64 / fill.as_secs_f64(),
        "leader": leader,
        "memory_filled": mib(&before),
        "snapshot_seconds": snapshot_took.as_secs_f64(),
        "snapshot_index": snap.snapshot_index,
        "snapshot_every_server_seconds": snapshot_all_took.as_secs_f64(),
        "memory_after_snapshot": mib(&after_snapshot),
        "snapshot_apply": snapshot_apply,
        "restart_to_service_seconds": restart_took.as_secs_f64(),
        "memory_after_restart": mib(&after_restart),
    }))
}

/// CPU time (user + system) a process has used, from /proc (Linux).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_millis(ticks * 1000 / hz))
}

/// Many agents holding sessions and heartbeating at `interval`, no tasks:
/// the leader's CPU while they beat, and each heartbeat's round trip
/// (heartbeat sent -> its ack received).
pub async fn agents(
    cluster: Option<&crate::cluster::Cluster>,
    endpoints: &[String],
    agents: usize,
    interval: Duration,
    duration: Duration,
) -> anyhow::Result<Value> {
    /// Sessions per client (one HTTP/2 connection each).
    const PER_CLIENT: usize = 100;
    let latency = Arc::new(Mutex::new(histogram()));
    let connected = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..agents.div_ceil(PER_CLIENT) {
        clients.push(patient_client(endpoints, agent_options())?);
    }
    // Open sessions a few hundred at a time: each registration is an entry.
    let opening = Arc::new(tokio::sync::Semaphore::new(256));
    let started = Instant::now();
    for a in 0..agents {
        let client = clients[a / PER_CLIENT].clone();
        let (latency, connected, measuring, opening) = (
            latency.clone(),
            connected.clone(),
            measuring.clone(),
            opening.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (tx, rx) = mpsc::channel(16);
            let register = v1::AgentMessage {
                msg: Some(In::Register(v1::Register {
                    spec: Some(v1::AgentSpec {
                        id: format!("scale-agent-{a}"),
                        dc: "bench".into(),
                        task_types: vec!["t2i".into()],
                        slots: 1,
                        ..Default::default()
                    }),
                    running: vec![],
                    instance: format!("scale-agent-{a}-{}", std::process::id()),
                    fenced: vec![],
                    warm_models: vec![],
                })),
            };
            let permit = opening.acquire_owned().await;
            let Ok(mut session) = client.open_session(register, rx).await else {
                return;
            };
            // Registered once the server says so.
            while let Ok(Some(m)) = session.inbound.message().await {
                if matches!(m.msg, Some(Out::Registered(_))) {
                    break;
                }
            }
            drop(permit);
            connected.fetch_add(1, Ordering::Relaxed);
            let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
            let beats = sent.clone();
            let beat = tokio::spawn(async move {
                // Spread the agents over the interval.
                let phase = interval.mul_f64((a % 1000) as f64 / 1000.0);
                tokio::time::sleep(phase).await;
                let mut tick = tokio::time::interval(interval);
                let mut seq = 0;
                loop {
                    tick.tick().await;
                    seq += 1;
                    beats.lock().expect("lock").insert(seq, Instant::now());
                    let m = v1::AgentMessage {
                        msg: Some(In::Heartbeat(v1::Heartbeat {
                            seq,
                            free_slots: 1,
                            warm_models: vec![],
                        })),
                    };
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
            });
            while let Ok(Some(m)) = session.inbound.message().await {
                if let Some(Out::HeartbeatAck(ack)) = m.msg {
                    let t0 = sent.lock().expect("lock").remove(&ack.seq);
                    if let (Some(t0), true) = (t0, measuring.load(Ordering::Relaxed)) {
                        let _ = latency
                            .lock()
                            .expect("lock")
                            .record(t0.elapsed().as_micros() as u64);
                    }
                }
            }
            beat.abort();
        }));
    }
    while (connected.load(Ordering::Relaxed) as usize) < agents {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "only {} of {agents} agents registered after 600 s",
            connected.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let registered_in = started.elapsed();
    eprintln!("  {agents} agents registered in {registered_in:?}; measuring...");
    // Settle for one interval, then measure.
    tokio::time::sleep(interval).await;
    let leader_pid = match cluster {
        Some(c) => c.leader().await.map(|id| c.pid(id)),
        None => None,
    };
    let cpu0 = leader_pid.and_then(cpu_time);
    let own0 = cpu_time(std::process::id());
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(duration).await;
    measuring.store(false, Ordering::Relaxed);
    let wall = t0.elapsed();
    let cores = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => {
            json!(((b - a).as_secs_f64() / wall.as_secs_f64() * 1000.0).round() / 1000.0)
        }
        _ => Value::Null,
    };
    let leader_cores = cores(cpu0, leader_pid.and_then(cpu_time));
    let bench_cores = cores(own0, cpu_time(std::process::id()));
    for t in tasks {
        t.abort();
    }
    let h = latency.lock().expect("lock").clone();
    Ok(json!({
        "name": format!("agents, {agents} heartbeating every {interval:?}"),
        "registered_seconds": registered_in.as_secs_f64(),
        "heartbeats_per_s": h.len() as f64 / wall.as_secs_f64(),
        "leader_cpu_cores": leader_cores,
        "load_generator_cpu_cores": bench_cores,
        "heartbeat_round_trip": summary(&h),
    }))
}

/// Whether some server leads with at least `applied` applied, `pending`
/// tasks pending, and serves a linearizable read. One quick try per server.
async fn served(endpoints: &[String], applied: u64, pending: u64) -> anyhow::Result<bool> {
    for e in endpoints {
        let quick = Client::with_options(
            vec![e.clone()],
            tidal_client::ClientOptions {
                request_timeout: Duration::from_secs(2),
                retry_for: Duration::ZERO,
                connect_timeout: Duration::from_millis(200),
                source_ip: None,
                ..options()
            },
        )?;
        let Ok(s) = quick.status_of(e).await else {
            continue;
        };
        let back = s.tasks_by_state.get("pending").copied().unwrap_or(0);
        if s.role != "leader" || s.applied_index < applied || back != pending {
            continue;
        }
        let read = quick.list_tasks(v1::ListTasksRequest {
            limit: 1,
            ..Default::default()
        });
        if read.await.is_ok() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Retention under a steady load: `tasks` tasks submitted at `rate` tasks/s,
/// every one run and completed by simulated agents at once, on a cluster
/// whose servers remove finished tasks `retain` after they finish. Every
/// `sample` the leader's resident memory (VmRSS) and the tasks its state
/// holds: with retention both level off once the first tasks expire.
#[allow(clippy::too_many_arguments)]
pub async fn soak(
    cluster: &crate::cluster::Cluster,
    tasks: usize,
    rate: f64,
    clients: usize,
    agents: usize,
    slots: u32,
    retain: Duration,
    sample: Duration,
) -> anyhow::Result<Value> {
    anyhow::ensure!(rate > 0.0, "soak needs --rate above 0");
    let endpoints = cluster.endpoints();
    let sim = SimAgents::start(&endpoints, agents, slots, Arc::default())?;
    sim.wait_registered(agents).await?;
    let duration = Duration::from_secs_f64(tasks as f64 / rate);
    let t0 = Instant::now();
    let load = {
        let endpoints = endpoints.clone();
        tokio::spawn(async move { submitters(&endpoints, clients, 8, rate, duration, None).await })
    };
    let client = patient_client(&endpoints, options())?;
    let mut samples = Vec::new();
    // Past the end of the load: one retention more, so the last tasks expire.
    let end = duration + retain + 2 * sample;
    loop {
        tokio::time::sleep(sample).await;
        let at = t0.elapsed();
        let status = client.status().await?;
        let held: u64 = status.tasks_by_state.values().sum();
        let (rss, peak) = match cluster.leader().await {
            Some(id) => rss_mib(cluster.pid(id)),
            None => (f64::NAN, f64::NAN),
        };
        let completed = sim.n_completed.load(Ordering::Relaxed);
        eprintln!(
            "  {:>5.0} s: completed {completed}, state holds {held} tasks, leader rss {rss:.0} MiB (peak {peak:.0})",
            at.as_secs_f64()
        );
        samples.push(json!({
            "seconds": at.as_secs_f64().round(),
            "completed": completed,
            "tasks_in_state": held,
            "leader": status.leader_id,
            "leader_rss_mib": rss.round(),
            "leader_peak_mib": peak.round(),
        }));
        if at >= end {
            break;
        }
    }
    let (submitted, submit_h) = load.await??;
    let completed = sim.n_completed.load(Ordering::Relaxed);
    Ok(json!({
        "name": format!(
            "soak, {tasks} tasks at {rate:.0}/s, retention {} s, {agents} agents x {slots} slots",
            retain.as_secs_f64()
        ),
        "submitted": submitted,
        "completed": completed,
        "submit_latency": summary(&submit_h),
        "samples": samples,
    }))
}
