//! The foundation's end-to-end test: three real servers and two real agents
//! run 1,000 tasks exactly once; the leader is killed with SIGKILL, a new one
//! is elected and more tasks complete; the killed node restarts and catches
//! up to the same applied index, state digest and task states.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use tidal_client::{v1, Client, ClientOptions};
use tokio::time::{sleep, Instant};

use crate::harness::{recording_worker, AgentOpts, Cluster, ClusterOpts};

fn spec(key: String) -> v1::TaskSpec {
    v1::TaskSpec {
        task_type: "t2i".into(),
        models: vec!["sdxl".into()],
        payload: format!("payload of {key}").into_bytes(),
        idempotency_key: key,
        ..Default::default()
    }
}

/// Submits `n` tasks in batches of 100 with keys `{prefix}-{i}`; returns
/// key -> id. Every item must be accepted.
async fn submit_all(
    c: &Cluster,
    prefix: &str,
    n: usize,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut ids = BTreeMap::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let specs: Vec<v1::TaskSpec> = chunk
            .iter()
            .map(|i| spec(format!("{prefix}-{i}")))
            .collect();
        let keys: Vec<String> = specs.iter().map(|s| s.idempotency_key.clone()).collect();
        let results = c.client.submit(specs).await.context("submit")?;
        assert_eq!(results.len(), keys.len());
        for (key, r) in keys.into_iter().zip(results) {
            if let Some(e) = r.error.filter(|e| e.code != 0) {
                bail!("submit {key} refused: {}", e.message);
            }
            assert!(r.log_index > 0, "an accepted submit names its log index");
            ids.insert(key, r.id);
        }
    }
    Ok(ids)
}

/// Every task of the cluster, read linearizably, page by page.
async fn all_tasks(client: &Client, stale: bool) -> anyhow::Result<Vec<v1::Task>> {
    let req = v1::ListTasksRequest {
        limit: 1000,
        stale,
        ..Default::default()
    };
    Ok(client.list_all_tasks(req).await?)
}

/// Waits until every task in `ids` has finished; fails on timeout.
async fn wait_finished(
    c: &Cluster,
    ids: &BTreeMap<String, String>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let tasks = all_tasks(&c.client, false).await?;
        let wanted: std::collections::BTreeSet<&str> = ids.values().map(String::as_str).collect();
        let finished = tasks
            .iter()
            .filter(|t| wanted.contains(t.id.as_str()))
            .filter(|t| {
                let s = t.state;
                s == v1::TaskState::Succeeded as i32
                    || s == v1::TaskState::Failed as i32
                    || s == v1::TaskState::Cancelled as i32
            })
            .count();
        if finished >= ids.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{finished} of {} tasks finished after {timeout:?}\n{}",
                ids.len(),
                c.logs_tail(20)
            );
        }
        sleep(Duration::from_millis(200)).await;
    }
}

/// Each task succeeded on its first attempt with its payload as result, and
/// the workers ran each task exactly once, under the token the task records.
fn check_exactly_once(
    ids: &BTreeMap<String, String>,
    tasks: &[v1::Task],
    runs: &Path,
) -> anyhow::Result<()> {
    let by_id: BTreeMap<&str, &v1::Task> = tasks.iter().map(|t| (t.id.as_str(), t)).collect();
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
    for (key, id) in ids {
        let t = by_id
            .get(id.as_str())
            .with_context(|| format!("task {id} ({key}) is missing"))?;
        assert_eq!(t.state, v1::TaskState::Succeeded as i32, "task {id}: {t:?}");
        assert_eq!(t.attempt, 1, "task {id} ran more than one attempt: {t:?}");
        assert_eq!(
            t.result,
            format!("payload of {key}").into_bytes(),
            "task {id}"
        );
        let runs = executions
            .get(id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert_eq!(
            runs.len(),
            1,
            "task {id} executed {} times: {runs:?}",
            runs.len()
        );
        assert_eq!(
            runs[0],
            (t.token, t.agent.as_str()),
            "task {id} ran under another token or agent"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_tasks_survive_a_leader_kill_and_the_node_catches_up() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    let runs = c.dir.path().join("runs.log");
    for id in ["agent-1", "agent-2"] {
        c.start_agent(
            AgentOpts::new(id, &["t2i", "tts"])
                .models(&["sdxl"])
                .slots(4)
                .command(
                    &recording_worker(&runs)
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>(),
                ),
        )?;
    }
    c.wait_agents(2, Duration::from_secs(30)).await?;

    // 1,000 tasks, each run exactly once.
    let mut ids = submit_all(&c, "first", 1000).await?;
    wait_finished(&c, &ids, Duration::from_secs(180)).await?;
    let tasks = all_tasks(&c.client, false).await?;
    assert_eq!(tasks.len(), 1000, "no task twice, none missing");
    check_exactly_once(&ids, &tasks, &runs)?;
    let agents_used: std::collections::BTreeSet<&str> =
        tasks.iter().map(|t| t.agent.as_str()).collect();
    assert_eq!(
        agents_used.len(),
        2,
        "both agents took work: {agents_used:?}"
    );

    // SIGKILL the leader; a new one is elected among the two others.
    let (old_leader, _) = c.wait_leader(Duration::from_secs(10)).await?;
    let old_term = c.client.status().await?.term;
    c.kill_node(old_leader);
    let (new_leader, _) = c.wait_leader(Duration::from_secs(20)).await?;
    assert_ne!(new_leader, old_leader);
    let status = c.client.status().await?;
    assert!(
        status.term > old_term,
        "a new term: {} after {old_term}",
        status.term
    );

    // The agents follow the new leader and more work completes, still once each.
    let more = submit_all(&c, "second", 200).await?;
    wait_finished(&c, &more, Duration::from_secs(120)).await?;
    ids.extend(more);
    let tasks = all_tasks(&c.client, false).await?;
    assert_eq!(tasks.len(), 1200);
    check_exactly_once(&ids, &tasks, &runs)?;
    let agents = c.client.list_agents(false).await?;
    assert!(
        agents
            .iter()
            .all(|a| a.state == v1::AgentState::Ready as i32),
        "a failover marks no agent down: {agents:?}"
    );

    // The killed node restarts from its data and catches up.
    c.start_node(old_leader, false)?;
    let leader_addr = c.node(new_leader).addr.clone();
    let restarted_addr = c.node(old_leader).addr.clone();
    let r = c
        .wait_caught_up(old_leader, Duration::from_secs(60))
        .await?;
    assert_eq!(r.role, "follower");
    assert_eq!(r.leader_id, new_leader);
    assert_eq!(
        c.client.status().await?.node_id,
        new_leader,
        "{leader_addr} still leads"
    );
    let only_restarted = Client::with_options(
        vec![restarted_addr],
        ClientOptions {
            retry_for: Duration::from_secs(5),
            ..c.client.options().clone()
        },
    )?;
    let theirs = all_tasks(&only_restarted, true).await?;
    let ours = all_tasks(&c.client, false).await?;
    assert_eq!(theirs.len(), ours.len());
    for (a, b) in theirs.iter().zip(&ours) {
        assert_eq!(
            (&a.id, a.state, &a.agent, a.token, a.attempt, &a.result),
            (&b.id, b.state, &b.agent, b.token, b.attempt, &b.result)
        );
    }
    Ok(())
}
