//! Graceful server shutdown (SIGTERM, SIGINT) and a rolling restart under
//! load, with real processes: a leader hands leadership over and exits 0
//! within `--shutdown-timeout-ms`, agents follow the new leader at once and
//! are never marked down, a follower exits at once, a second signal exits at
//! once, and no acknowledged task is lost or run twice under one token.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tidal_client::{v1, Client};
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};

use crate::harness::{recording_worker, AgentOpts, Cluster, ClusterOpts};

/// The default `--shutdown-timeout-ms`.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(2000);
/// Room over a bound for a loaded test machine (two cores, many processes).
const SLACK: Duration = Duration::from_millis(1000);

fn spec(key: &str) -> v1::TaskSpec {
    v1::TaskSpec {
        task_type: "t2i".into(),
        payload: format!("payload of {key}").into_bytes(),
        idempotency_key: key.to_string(),
        ..Default::default()
    }
}

/// What a [`Load`] got acknowledged.
#[derive(Default)]
struct Acked {
    /// Idempotency key -> task id, for every acknowledged submit.
    ids: BTreeMap<String, String>,
    /// When each submit was acknowledged, in order.
    at: Vec<Instant>,
    /// Submits that failed (after the client's own retries).
    errors: Vec<String>,
}

impl Acked {
    /// The longest time between two acknowledged submits within `from..to`.
    fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let mut last = from;
        let mut gap = Duration::ZERO;
        for t in self.at.iter().filter(|t| **t > from && **t <= to) {
            gap = gap.max(*t - last);
            last = *t;
        }
        gap
    }
}

/// One client submitting one task at a time, about every `pace`, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    handle: JoinHandle<anyhow::Result<Acked>>,
}

impl Load {
    fn start(client: Client, prefix: &str, pace: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let (s, a, prefix) = (stop.clone(), acked.clone(), prefix.to_string());
        let handle = tokio::spawn(async move {
            let mut out = Acked::default();
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                let key = format!("{prefix}-{i}");
                i += 1;
                match client.submit(vec![spec(&key)]).await {
                    Ok(r) => {
                        let r = r.into_iter().next().context("one result per spec")?;
                        if let Some(e) = r.error.filter(|e| e.code != 0) {
                            bail!("submit {key} refused: {}", e.message);
                        }
                        out.ids.insert(key, r.id);
                        out.at.push(Instant::now());
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => out.errors.push(format!("{key}: {e}")),
                }
                sleep(pace).await;
            }
            Ok(out)
        });
        Load {
            stop,
            acked,
            handle,
        }
    }

    /// Waits until `more` submits beyond the current count are acknowledged.
    async fn progress(&self, more: usize, timeout: Duration) -> anyhow::Result<()> {
        let want = self.acked.load(Ordering::Relaxed) + more;
        let deadline = Instant::now() + timeout;
        while self.acked.load(Ordering::Relaxed) < want {
            if Instant::now() > deadline {
                bail!("no {more} more acknowledged submits in {timeout:?}");
            }
            sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn finish(self) -> anyhow::Result<Acked> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await?
    }
}

/// Two agents running the recording worker (4 slots each).
async fn start_agents(c: &mut Cluster, runs: &Path) -> anyhow::Result<()> {
    let worker = recording_worker(runs);
    let worker: Vec<&str> = worker.iter().map(String::as_str).collect();
    for id in ["agent-1", "agent-2"] {
        c.start_agent(AgentOpts::new(id, &["t2i"]).slots(4).command(&worker))?;
    }
    c.wait_agents(2, Duration::from_secs(30)).await
}

/// Waits until every acknowledged task has succeeded; then checks that each
/// carries its own payload as result and that no fencing token ran twice:
/// each attempt ran once (a token the agent never started is not a run).
async fn check_all_ran_once(c: &Cluster, acked: &Acked, runs: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let by_id = loop {
        let tasks = c
            .client
            .list_all_tasks(v1::ListTasksRequest {
                limit: 1000,
                ..Default::default()
            })
            .await?;
        let by_id: BTreeMap<String, v1::Task> =
            tasks.into_iter().map(|t| (t.id.clone(), t)).collect();
        let done = acked
            .ids
            .values()
            .filter(|id| {
                by_id
                    .get(*id)
                    .is_some_and(|t| t.state == v1::TaskState::Succeeded as i32)
            })
            .count();
        if done == acked.ids.len() {
            break by_id;
        }
        if Instant::now() > deadline {
            bail!(
                "{done} of {} acknowledged tasks succeeded\n{}",
                acked.ids.len(),
                c.logs_tail(20)
            );
        }
        sleep(Duration::from_millis(200)).await;
    };
    let log = std::fs::read_to_string(runs).context("read the run log")?;
    let mut executions: BTreeMap<&str, Vec<(u64, &str)>> = BTreeMap::new();
    for line in log.lines() {
        let mut f = line.split(' ');
        let (Some(id), Some(token), Some(agent)) = (f.next(), f.next(), f.next()) else {
            bail!("malformed run line {line:?}");
        };
        executions
            .entry(id)
            .or_default()
            .push((token.parse()?, agent));
    }
    let mut retried = 0;
    for (key, id) in &acked.ids {
        let t = by_id
            .get(id)
            .with_context(|| format!("acknowledged task {id} ({key}) is missing"))?;
        assert_eq!(
            t.result,
            format!("payload of {key}").into_bytes(),
            "task {id}"
        );
        let ran = executions
            .get(id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let tokens: BTreeSet<u64> = ran.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            tokens.len(),
            ran.len(),
            "task {id} ran twice under one token: {ran:?}"
        );
        assert!(
            ran.len() as u32 <= t.attempt,
            "task {id} ran {} times in {} attempt(s): {ran:?}",
            ran.len(),
            t.attempt
        );
        assert!(
            ran.contains(&(t.token, t.agent.as_str())),
            "task {id} succeeded under token {} on {} but did not run so: {ran:?}",
            t.token,
            t.agent
        );
        if t.attempt > 1 {
            retried += 1;
        }
    }
    eprintln!(
        "{} acknowledged tasks ran once per attempt ({retried} needed more than one attempt)",
        acked.ids.len()
    );
    Ok(())
}

/// Both agents are connected to the current leader and none is down.
async fn agents_ready(c: &Cluster) -> anyhow::Result<()> {
    c.wait_agents(2, Duration::from_secs(20)).await?;
    let agents = c.client.list_agents(false).await?;
    assert!(
        agents
            .iter()
            .all(|a| a.state == v1::AgentState::Ready as i32 && a.connected),
        "no agent is marked down: {agents:?}"
    );
    Ok(())
}

/// Waits until node `id` has applied at least what the leader had applied
/// when this was called (load keeps the leader moving, so equality may
/// never be seen).
async fn wait_applied(c: &Cluster, id: u64, timeout: Duration) -> anyhow::Result<()> {
    let target = c.client.status().await?.applied_index;
    let addr = c.node(id).addr.clone();
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = c.client.status_of(&addr).await {
            if s.applied_index >= target && s.leader_id != 0 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "node {id} did not apply index {target} in {timeout:?}\n{}",
                c.logs_tail(20)
            );
        }
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sigterm_on_the_leader_hands_over_and_exits_0() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    let runs = c.dir.path().join("runs.log");
    start_agents(&mut c, &runs).await?;
    let load = Load::start(c.client.clone(), "lead", Duration::from_millis(20));
    load.progress(20, Duration::from_secs(30)).await?;

    let (leader, _) = c.wait_leader(Duration::from_secs(10)).await?;
    let term = c.client.status().await?.term;
    let sent = Instant::now();
    let (st, took) = c.terminate_node(leader, SHUTDOWN_TIMEOUT + SLACK * 5).await;
    let st = st.context("the leader did not exit after SIGTERM")?;
    eprintln!("the leader (node {leader}) exited {st} {took:?} after SIGTERM");
    assert_eq!(st.code(), Some(0), "a graceful stop exits 0");
    assert!(
        took <= SHUTDOWN_TIMEOUT + SLACK,
        "exited within the shutdown timeout: {took:?}"
    );

    let (new_leader, _) = c.wait_leader(Duration::from_secs(10)).await?;
    assert_ne!(new_leader, leader);
    assert!(c.client.status().await?.term > term);
    // Each agent's session ended naming the new leader, which it went to at once.
    for a in &c.agents {
        a.wait_log(
            "reconnecting to the leader it named",
            Duration::from_secs(10),
        )
        .await?;
    }
    load.progress(50, Duration::from_secs(30)).await?;
    agents_ready(&c).await?;
    let acked = load.finish().await?;
    assert!(
        acked.errors.is_empty(),
        "every submit was acknowledged: {:?}",
        acked.errors
    );
    eprintln!(
        "longest time without an acknowledged submit after SIGTERM: {:?}",
        acked.longest_gap(sent, Instant::now())
    );
    check_all_ran_once(&c, &acked, &runs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sigterm_on_a_follower_exits_at_once() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    let (leader, _) = c.wait_leader(Duration::from_secs(10)).await?;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let (st, took) = c.terminate_node(follower, SHUTDOWN_TIMEOUT + SLACK).await;
    let st = st.context("the follower did not exit after SIGTERM")?;
    eprintln!("a follower exited {st} {took:?} after SIGTERM");
    assert_eq!(st.code(), Some(0));
    // It hands nothing over and waits for nothing: well within the bound.
    assert!(took < SHUTDOWN_TIMEOUT / 2 + SLACK, "{took:?}");
    let log = std::fs::read_to_string(c.dir.path().join(format!("node{follower}.log")))?;
    assert!(log.contains("shutting down: not the leader"), "{log}");
    assert!(!log.contains("handing leadership over"), "{log}");
    // The leader is unchanged and still takes writes.
    assert_eq!(c.wait_leader(Duration::from_secs(5)).await?.0, leader);
    c.tidal_ok(&["task", "submit", "--type", "t2i", "--payload", "x"])?;

    // A one-shot command whose reader went away (`tidal task list | head`)
    // ends as SIGPIPE ends other tools, quietly.
    let mut list = c
        .cli(&["task", "list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    drop(list.stdout.take());
    let o = list.wait_with_output()?;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(o.status.signal(), Some(libc::SIGPIPE), "{o:?}");
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_a_second_signal_exits_at_once() -> anyhow::Result<()> {
    use tidal_proto::v1::agents_client::AgentsClient;
    // A raw session over a plaintext channel, without a token.
    let mut c = Cluster::start_plaintext(ClusterOpts {
        nodes: 1,
        server_args: vec!["--shutdown-timeout-ms".into(), "60000".into()],
        ..ClusterOpts::default()
    })
    .await?;
    let addr = c.node(1).addr.clone();
    // A session that never registers keeps its call open: a graceful stop
    // waits for it (up to most of the 60 s bound).
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut agents = AgentsClient::new(channel.clone());
    let session = agents.session(tonic::codegen::tokio_stream::pending::<v1::AgentMessage>());
    tokio::pin!(session);
    tokio::select! {
        biased;
        r = &mut session => bail!("the session call ended at once: {:?}", r.err()),
        _ = std::future::ready(()) => {}
    }
    // A call after it on the same connection: once it is answered, the
    // server has the session's call too (frames arrive in order).
    let mut status = tidal_proto::v1::cluster_client::ClusterClient::new(channel);
    status.status(v1::StatusRequest::default()).await?;

    let node = c.node_mut(1).proc.as_mut().expect("node 1 runs");
    node.signal(libc::SIGTERM);
    node.wait_log(
        "a second SIGINT or SIGTERM exits at once",
        Duration::from_secs(5),
    )
    .await?;
    assert!(
        node.wait_exit(Duration::from_millis(500)).await.is_none(),
        "the graceful stop waits for the open call"
    );
    let sent = Instant::now();
    node.signal(libc::SIGINT);
    let st = node
        .wait_exit(Duration::from_secs(5))
        .await
        .context("no exit after a second signal")?;
    eprintln!("exited {st} {:?} after the second signal", sent.elapsed());
    assert_eq!(st.code(), Some(1), "a second signal is not a clean stop");
    assert!(node.log_tail(5).contains("SIGINT again: exiting at once"));
    Ok(())
}

/// Part of the rolling restart: each of three servers in turn is SIGTERMed
/// (exit 0) and restarted on its data while a client submits and two agents
/// run tasks; every acknowledged task runs, once per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_rolling_restart_under_load_loses_nothing() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    let runs = c.dir.path().join("runs.log");
    start_agents(&mut c, &runs).await?;
    let load = Load::start(c.client.clone(), "roll", Duration::from_millis(20));
    load.progress(20, Duration::from_secs(30)).await?;
    let mut gaps = Vec::new();
    for id in 1..=3u64 {
        let (leader, _) = c.wait_leader(Duration::from_secs(10)).await?;
        let sent = Instant::now();
        let (st, took) = c.terminate_node(id, SHUTDOWN_TIMEOUT + SLACK * 5).await;
        let st = st.with_context(|| format!("node {id} did not exit after SIGTERM"))?;
        assert_eq!(st.code(), Some(0), "node {id} exits 0 on SIGTERM");
        if id == leader {
            let (now, _) = c.wait_leader(Duration::from_secs(10)).await?;
            assert_ne!(now, id);
        }
        load.progress(10, Duration::from_secs(30)).await?;
        c.start_node(id, false)?;
        wait_applied(&c, id, Duration::from_secs(60)).await?;
        load.progress(10, Duration::from_secs(30)).await?;
        gaps.push((id, id == leader, took, sent));
    }
    agents_ready(&c).await?;
    let acked = load.finish().await?;
    assert!(
        acked.errors.is_empty(),
        "every submit was acknowledged: {:?}",
        acked.errors
    );
    for (i, (id, led, took, sent)) in gaps.iter().enumerate() {
        let until = gaps.get(i + 1).map(|g| g.3).unwrap_or_else(Instant::now);
        eprintln!(
            "node {id}{}: exited 0 in {took:?}; longest time without an acknowledged submit: {:?}",
            if *led { " (leader)" } else { "" },
            acked.longest_gap(*sent, until)
        );
    }
    check_all_ran_once(&c, &acked, &runs).await
}
