//! One chaos run: start the cluster, run the workload under the scenario's
//! faults, heal, measure convergence, record the end state, check.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use rand::SeedableRng;
use tidal_client::{task_state_name as state_name, v1};
use tokio::time::{sleep, Instant};

use crate::check::{self, Facts, Verdict};
use crate::cluster::{Cluster, Layout};
use crate::history::{Event, Recorder};
use crate::scenarios::{self, Fault, Nemesis, Scenario};
use crate::sink::Sink;
use crate::workload::Workload;

/// Service and convergence must return within this long after healing (I11).
pub const HEAL_BOUND: Duration = Duration::from_secs(10);

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
}

impl RunOptions {
    /// The command that repeats this run.
    pub fn reproduce(&self) -> String {
        format!(
            "tidal chaos run --scenario {} --seed {} --duration {}s",
            self.scenario.name,
            self.seed,
            self.duration.as_secs()
        )
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
            "scenario {} ({}) seed {} duration {}s: {} operations, {} acknowledged submits, {} tasks at the end\n",
            o.scenario.name,
            o.scenario.id,
            o.seed,
            o.duration.as_secs(),
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

pub async fn run(options: RunOptions) -> anyhow::Result<Report> {
    let s = options.scenario;
    std::fs::create_dir_all(&options.dir)
        .with_context(|| format!("creating {}", options.dir.display()))?;
    let history = Recorder::new(Some(&options.dir.join("history.jsonl")))?;
    history.record(Event {
        detail: Some(format!(
            "scenario {} seed {} duration {:?}",
            s.name, options.seed, options.duration
        )),
        ..Event::new("runner", "event", "start")
    });
    let sink = Sink::start(history.clone()).await?;
    let layout = Layout {
        tidal: options.tidal.clone(),
        dir: options.dir.clone(),
        nodes: s.nodes,
        voters: scenarios::initial_voters(&s),
        agents: options.agents,
        agent_slots: 4,
        agent_ttl_ms: 3000,
        work_ms: 100,
        seed: options.seed,
    };
    let mut cluster = Cluster::start(layout, sink.addr)
        .await
        .context("starting the cluster")?;
    let nodes = cluster.nodes.iter().map(|n| (n.id, n.private)).collect();
    let observer = crate::observer::start(
        cluster.admin.clone(),
        nodes,
        cluster.incarnations.clone(),
        history.clone(),
    );
    let publics: Vec<String> = cluster.nodes.iter().map(|n| n.public.to_string()).collect();
    let term_before = cluster.admin.status().await.map(|st| st.term).unwrap_or(0);
    let workload = Workload::start(options.clients, publics, history.clone(), options.seed)?;

    let until = Instant::now() + options.duration;
    let mut nemesis = Nemesis {
        cluster: &mut cluster,
        history: history.clone(),
        rng: rand::rngs::StdRng::seed_from_u64(options.seed),
        clients: options.clients,
    };
    let played = nemesis.run(s.fault, until).await;
    // Heal whatever state the nemesis stopped in, even after an error.
    cluster.heal_all()?;
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
            ..Event::new("runner", "event", "final")
        });
    }
    history.record(Event::new("runner", "event", "final-done"));
    expectations(&cluster, &s, term_before, &finals, &history).await;

    observer.abort();
    cluster.stop_all();
    for p in cluster.panics() {
        history.record(Event {
            accepted: Some(false),
            detail: Some(p),
            ..Event::new("runner", "event", "log-panic")
        });
    }
    history.flush();

    let events = history.events();
    let verdicts = check::run_all(
        &events,
        &Facts {
            agents_paused: scenarios::pauses_agents(&s),
        },
    );
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
            let term = cluster.admin.status().await.map(|st| st.term).unwrap_or(0);
            expect(
                term == term_before,
                format!("no election after warm-up (term {term_before} -> {term})"),
            );
        }
        Fault::Failover => {
            let agents = cluster.admin.list_agents(false).await.unwrap_or_default();
            let down = agents
                .iter()
                .filter(|a| a.state != v1::AgentState::Ready as i32)
                .count();
            let requeued = finals.iter().filter(|t| t.attempt > 1).count();
            expect(
                down == 0 && requeued == 0,
                format!(
                    "leader failovers mark no agent down ({down} down, {requeued} tasks requeued)"
                ),
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
