//! `preempt`: online work on a cluster full of offline work, as a user
//! sees it. Real `tidal agent` processes fill every slot with offline,
//! preemptible tasks whose workers run until stopped (more offline work
//! waits behind them); then online tasks are submitted one at a time, and
//! each one's latency is the time from the start of its submit call to
//! the moment its worker runs: the worker's first command reads the
//! clock (bash's `$EPOCHREALTIME`, microseconds, the same host clock as
//! the load generator's) and writes it to a file named for its task.
//!
//! Victims, one kind per run:
//! - `prompt`: stopped with notice (SIGTERM), they exit at once, non-zero
//!   (143), as a worker that wants to be requeued does (exit 0 would be
//!   a success);
//! - `full-grace`: stopped with notice, they ignore SIGTERM and are killed
//!   at the end of the grace (`preempt_grace_ms`);
//! - `suspend`: `suspendable`, paused in place (SIGSTOP), no grace.
//!
//! Also from the task's committed history (leader clock, milliseconds):
//! when the victims' stop committed, when the online task was assigned,
//! and when its start was reported.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::ValueEnum;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tidal_client::v1;
use tidal_client::Client;
use tidal_testkit::AgentSpec;

use crate::cluster::Cluster;
use crate::stats::{histogram, summary};

/// How the offline victims behave when preempted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Victims {
    /// Stopped with notice (SIGTERM); they exit at once (143: requeued).
    Prompt,
    /// Stopped with notice; they ignore SIGTERM and are killed at the grace.
    FullGrace,
    /// Suspendable: paused in place (SIGSTOP), no grace.
    Suspend,
}

impl Victims {
    /// The payload that tells [`WORKER`] how to behave.
    fn payload(self) -> &'static str {
        match self {
            Victims::Prompt => "prompt",
            Victims::FullGrace => "full-grace",
            Victims::Suspend => "suspend",
        }
    }

    /// The target: the grace the victims get, plus 50 ms.
    pub fn target_ms(self, grace_ms: u64) -> u64 {
        match self {
            Victims::Suspend => 50,
            _ => grace_ms + 50,
        }
    }
}

pub struct Opts {
    pub agents: usize,
    pub slots: u32,
    /// Offline tasks waiting behind the ones that fill the slots.
    pub pending: usize,
    /// Online tasks per kind of victim.
    pub samples: usize,
    pub grace_ms: u64,
    pub victims: Vec<Victims>,
}

/// The agents' worker. The online task's first command reads the clock;
/// the offline ones run until stopped, as their payload says.
const WORKER: &str = r#"t=$EPOCHREALTIME
p=$(cat)
case "$p" in
online) echo "$t" > "$TIDAL_BENCH_DIR/$TIDAL_TASK_ID"; echo "$t" ;;
prompt) trap 'exit 143' TERM; sleep 86400 & wait ;;
full-grace) trap '' TERM; sleep 86400 ;;
*) sleep 86400 ;;
esac"#;

const TASK_TYPE: &str = "bench-preempt";

pub async fn run(c: &mut Cluster, o: &Opts) -> anyhow::Result<Vec<Value>> {
    let dir = tempfile::Builder::new()
        .prefix("tidal-bench-preempt-")
        .tempdir()?;
    wait_version(c.client()).await?;
    for i in 1..=o.agents {
        c.start_agent(
            AgentSpec::new(&format!("bench-agent-{i}"), &[TASK_TYPE])
                .slots(o.slots)
                .command(&["bash", "-c", WORKER])
                .env("TIDAL_BENCH_DIR", &dir.path().display().to_string()),
        )?;
    }
    c.wait_agents(o.agents, Duration::from_secs(60)).await?;
    let mut out = Vec::new();
    for &v in &o.victims {
        eprintln!(
            "preempt: victims {}, {} online tasks...",
            v.payload(),
            o.samples
        );
        out.push(victims(c.client(), dir.path(), v, o).await?);
    }
    Ok(out)
}

/// Lifecycle options need cluster format version 4.
async fn wait_version(client: &Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = client.status().await {
            if s.cluster_format_version >= 4 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the cluster did not reach format version 4 in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn offline(v: Victims, grace_ms: u64) -> v1::TaskSpec {
    v1::TaskSpec {
        task_type: TASK_TYPE.into(),
        payload: v.payload().into(),
        priority: v1::Priority::Offline as i32,
        preemptible: Some(true),
        suspendable: v == Victims::Suspend,
        preempt_notice: v1::PreemptNotice::Signal as i32,
        preempt_grace_ms: grace_ms,
        ..Default::default()
    }
}

fn online() -> v1::TaskSpec {
    v1::TaskSpec {
        task_type: TASK_TYPE.into(),
        payload: b"online".to_vec(),
        priority: v1::Priority::Online as i32,
        ..Default::default()
    }
}

/// One kind of victim: fill, measure `samples` online tasks, clean up.
async fn victims(client: &Client, dir: &Path, v: Victims, o: &Opts) -> anyhow::Result<Value> {
    let slots = o.agents * o.slots as usize;
    let fill: Vec<_> = (0..slots + o.pending)
        .map(|_| offline(v, o.grace_ms))
        .collect();
    let mut ids = Vec::new();
    for r in client.submit(fill).await? {
        if let Some(e) = r.error.filter(|e| e.code != 0) {
            bail!("offline submit refused: {}", e.message);
        }
        ids.push(r.id);
    }
    let (mut start, mut acked, mut assigned, mut reported, mut stopped) = (
        histogram(),
        histogram(),
        histogram(),
        histogram(),
        histogram(),
    );
    let mine: HashSet<String> = ids.iter().cloned().collect();
    let (mut preempted, attempts) = preemptions(client, &mine).await?;
    let mut seen: HashSet<(String, u64)> = attempts.into_iter().map(|(id, t, _)| (id, t)).collect();
    let (mut not_preempted, mut victims_total) = (0, 0);
    // Per online task: ms from its submit to each point (leader clock but
    // the worker's start), for finding where a slow one's time went.
    let mut each = Vec::new();
    for i in 0..o.samples {
        wait_full(client, slots).await?;
        // Spread the submits over the leader's timers (its preemption look
        // runs at least every 100 ms): 50-150 ms apart after the cluster is
        // full again.
        tokio::time::sleep(Duration::from_millis(50 + (i as u64 * 37) % 101)).await;
        let t0 = SystemTime::now().duration_since(UNIX_EPOCH)?;
        let sent = Instant::now();
        let id = client.submit_one(online()).await?.id;
        let ack = sent.elapsed();
        let began = worker_start(&dir.join(&id)).await?;
        let t0_us = t0.as_micros() as u64;
        let t0_ms = t0.as_millis() as u64;
        let task = wait_done(client, &id).await?;
        let (now_preempted, attempts) = preemptions(client, &mine).await?;
        let mut stops = Vec::new();
        for (task_id, token, ended) in attempts {
            if seen.insert((task_id, token)) {
                stops.push(ended);
            }
        }
        let victims = now_preempted.saturating_sub(preempted);
        preempted = now_preempted;
        victims_total += victims;
        if victims == 0 {
            // The cluster had room after all: not a preemption.
            not_preempted += 1;
            continue;
        }
        let ms = |at: u64| (at > 0).then(|| at.saturating_sub(t0_ms));
        let first = task.attempts.first();
        each.push(json!({
            "id": id,
            "worker_start_ms": began.saturating_sub(t0_us) as f64 / 1000.0,
            "victims": victims,
            "victims_stopped_ms": stops.iter().max().and_then(|&e| ms(e)),
            "assigned_ms": first.and_then(|a| ms(a.assigned_ms)),
            "start_reported_ms": first.and_then(|a| ms(a.started_ms)),
            "agent": task.agent,
        }));
        start.record(began.saturating_sub(t0_us).max(1))?;
        acked.record((ack.as_micros() as u64).max(1))?;
        if let Some(a) = task.attempts.first() {
            record_ms(&mut assigned, a.assigned_ms, t0_ms)?;
            record_ms(&mut reported, a.started_ms, t0_ms)?;
        }
        if let Some(last) = stops.iter().max() {
            record_ms(&mut stopped, *last, t0_ms)?;
        }
    }
    let left_suspended = suspended(client).await?;
    cancel_all(client, &ids).await?;
    let target = v.target_ms(o.grace_ms);
    let p99_ms = start.value_at_quantile(0.99) as f64 / 1000.0;
    Ok(json!({
        "name": format!(
            "preempt, victims {}, grace {} ms, {} agents x {} slots, {} offline pending",
            v.payload(), o.grace_ms, o.agents, o.slots, o.pending
        ),
        "victims": v.payload(),
        "grace_ms": o.grace_ms,
        "target_ms": target,
        "target_met": !start.is_empty() && p99_ms < target as f64,
        "submit_to_worker_start": summary(&start),
        "submit_acknowledged": summary(&acked),
        "leader_clock": {
            "submit_to_victims_stopped": summary(&stopped),
            "submit_to_assigned": summary(&assigned),
            "submit_to_start_reported": summary(&reported),
        },
        "not_preempted": not_preempted,
        "victims_total": victims_total,
        "suspended_left_at_end": left_suspended,
        "per_task": each,
    }))
}

/// Records `at_ms - t0_ms` (leader clock) in microseconds; 0 (not
/// reported) is left out.
fn record_ms(h: &mut Histogram<u64>, at_ms: u64, t0_ms: u64) -> anyhow::Result<()> {
    if at_ms > 0 {
        h.record((at_ms.saturating_sub(t0_ms) * 1000).max(1))?;
    }
    Ok(())
}

/// The worker's start, in microseconds since the epoch, from the file it
/// writes first (polled every millisecond; the time is the worker's, not
/// the poll's).
async fn worker_start(file: &Path) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(file) {
            if let Some(us) = parse_epoch_us(&text) {
                return Ok(us);
            }
        }
        if Instant::now() > deadline {
            bail!("no worker start in {} after 60 s", file.display());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `$EPOCHREALTIME` as the worker wrote it ("1764685200.123456\n") in
/// microseconds; `None` until the line is complete.
pub fn parse_epoch_us(text: &str) -> Option<u64> {
    let line = text.strip_suffix('\n')?;
    let (secs, frac) = line.split_once(['.', ','])?;
    if frac.len() != 6 {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    let frac: u64 = frac.parse().ok()?;
    Some(secs * 1_000_000 + frac)
}

/// Tasks of the bench's type, every page.
async fn all_tasks(client: &Client, state: v1::TaskState) -> anyhow::Result<Vec<v1::Task>> {
    let tasks = client
        .list_all_tasks(v1::ListTasksRequest {
            state: state as i32,
            limit: 10_000,
            ..Default::default()
        })
        .await?;
    Ok(tasks
        .into_iter()
        .filter(|t| t.spec.as_ref().is_some_and(|s| s.task_type == TASK_TYPE))
        .collect())
}

/// Waits until `slots` offline tasks run (not suspended) and nothing
/// else holds a slot.
async fn wait_full(client: &Client, slots: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running = all_tasks(client, v1::TaskState::Running).await?;
        let active: Vec<_> = running.iter().filter(|t| !t.suspended).collect();
        let offline = count_where(&active, |t| {
            t.spec.as_ref().map(|s| s.priority) == Some(v1::Priority::Offline as i32)
        });
        if offline == slots && active.len() == slots {
            let assigned = all_tasks(client, v1::TaskState::Assigned).await?;
            if assigned.is_empty() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the cluster did not fill its {slots} slots with offline work in 60 s ({offline} running)");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count_where(tasks: &[&v1::Task], f: impl Fn(&v1::Task) -> bool) -> usize {
    tasks.iter().filter(|t| f(t)).count()
}

/// The bench's running tasks that are suspended.
async fn suspended(client: &Client) -> anyhow::Result<usize> {
    let running = all_tasks(client, v1::TaskState::Running).await?;
    Ok(running.iter().filter(|t| t.suspended).count())
}

/// How many preemptions the tasks `ids` went through (stops and
/// suspensions), and every attempt of theirs that ended preempted: (task,
/// token, ended_ms).
async fn preemptions(
    client: &Client,
    ids: &HashSet<String>,
) -> anyhow::Result<(u64, Vec<(String, u64, u64)>)> {
    let mut tasks = all_tasks(client, v1::TaskState::Unspecified).await?;
    tasks.retain(|t| ids.contains(&t.id));
    let times = tasks.iter().map(|t| u64::from(t.preempted)).sum();
    let stops = tasks
        .iter()
        .flat_map(|t| {
            t.attempts
                .iter()
                .filter(|a| a.end == "preempted")
                .map(|a| (t.id.clone(), a.token, a.ended_ms))
        })
        .collect();
    Ok((times, stops))
}

/// Polls the online task until it succeeded.
async fn wait_done(client: &Client, id: &str) -> anyhow::Result<v1::Task> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = client.get_task(id, false).await?;
        if tidal_client::is_terminal(t.state) {
            if t.state != v1::TaskState::Succeeded as i32 {
                bail!("online task {id} ended {}: {}", t.state, t.error);
            }
            return Ok(t);
        }
        if Instant::now() > deadline {
            bail!("online task {id} not done after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Cancels the run's offline tasks and waits until none holds a slot.
async fn cancel_all(client: &Client, ids: &[String]) -> anyhow::Result<()> {
    for id in ids {
        let t = client.get_task(id, false).await?;
        if !tidal_client::is_terminal(t.state) {
            client
                .cancel_task(id)
                .await
                .with_context(|| format!("cancelling {id}"))?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let busy = all_tasks(client, v1::TaskState::Running).await?.len()
            + all_tasks(client, v1::TaskState::Assigned).await?.len();
        if busy == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{busy} tasks still hold slots 60 s after being cancelled");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_realtime_is_read_in_microseconds_once_its_line_is_complete() {
        assert_eq!(
            parse_epoch_us("1764685200.123456\n"),
            Some(1_764_685_200_123_456)
        );
        assert_eq!(
            parse_epoch_us("1764685200,000001\n"),
            Some(1_764_685_200_000_001)
        );
        assert_eq!(parse_epoch_us("1764685200.123456"), None);
        assert_eq!(parse_epoch_us("1764685200.12\n"), None);
        assert_eq!(parse_epoch_us(""), None);
    }

    #[test]
    fn the_target_is_the_grace_plus_50_ms() {
        assert_eq!(Victims::Prompt.target_ms(200), 250);
        assert_eq!(Victims::FullGrace.target_ms(1000), 1050);
        assert_eq!(Victims::Suspend.target_ms(200), 50);
    }
}
