//! Drains with real processes: a drained agent's running task finishes and
//! it shows drained; a drain deadline stops the worker (its process gone)
//! and the task runs on another agent with the same attempt, also when the
//! leader that committed the drain dies before its deadline; SIGTERM to an
//! agent drains it, deregisters it and it exits 0; a second SIGTERM exits
//! at once.

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use tidal_client::v1;
use tokio::time::{sleep, Instant};
use tonic::Code;

use crate::harness::{AgentOpts, Cluster, ClusterOpts};

const WAIT: Duration = Duration::from_secs(30);

/// A worker that records "task token agent attempt pid" in `runs`, then
/// sleeps `a1_ms` on agent a1 (`other_ms` elsewhere) and echoes its payload.
fn worker(runs: &Path, a1_ms: u64, other_ms: u64) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "echo \"$TIDAL_TASK_ID $TIDAL_FENCING_TOKEN $TIDAL_AGENT_ID $TIDAL_ATTEMPT $$\" >> '{}'; \
             if [ \"$TIDAL_AGENT_ID\" = a1 ]; then sleep {}; else sleep {}; fi; cat",
            runs.display(),
            a1_ms as f64 / 1000.0,
            other_ms as f64 / 1000.0
        ),
    ]
}

fn agent(id: &str, command: &[String]) -> AgentOpts {
    let mut a = AgentOpts::new(id, &["t2i"]);
    a.command = command.to_vec();
    a.extra_args = vec!["--stop-grace-ms".into(), "1000".into()];
    a
}

async fn one_node() -> Cluster {
    Cluster::start(ClusterOpts {
        nodes: 1,
        join: false,
        ..ClusterOpts::default()
    })
    .await
    .expect("cluster")
}

async fn submit(c: &Cluster) -> String {
    c.client
        .submit_one(v1::TaskSpec {
            task_type: "t2i".into(),
            payload: b"x".to_vec(),
            ..Default::default()
        })
        .await
        .expect("submit")
        .id
}

/// Polls the task until `done` holds for it.
async fn wait_task(
    c: &Cluster,
    id: &str,
    what: &str,
    done: impl Fn(&v1::Task) -> bool,
) -> anyhow::Result<v1::Task> {
    let deadline = Instant::now() + WAIT;
    loop {
        let t = c.client.get_task(id, false).await?;
        if done(&t) {
            return Ok(t);
        }
        if Instant::now() > deadline {
            bail!(
                "{id}: {what}: not after {WAIT:?}: {t:?}\n{}",
                c.logs_tail(30)
            );
        }
        sleep(Duration::from_millis(50)).await;
    }
}

fn state(t: &v1::Task) -> &'static str {
    tidal_client::task_state_name(t.state)
}

/// The agent as `agent list` shows it (None: not listed).
async fn agent_state(c: &Cluster, id: &str) -> anyhow::Result<Option<&'static str>> {
    let agents = c.client.list_agents(false).await?;
    Ok(agents
        .iter()
        .find(|a| a.spec.as_ref().is_some_and(|s| s.id == id))
        .map(|a| tidal_cli_state(a.state)))
}

fn tidal_cli_state(s: i32) -> &'static str {
    match v1::AgentState::try_from(s).unwrap_or(v1::AgentState::Unspecified) {
        v1::AgentState::Ready => "ready",
        v1::AgentState::Draining => "draining",
        v1::AgentState::Drained => "drained",
        v1::AgentState::Down => "down",
        v1::AgentState::Unspecified => "unspecified",
    }
}

async fn wait_agent_state(c: &Cluster, id: &str, want: Option<&str>) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = agent_state(c, id).await?;
        if s == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "agent {id} is {s:?}, not {want:?}, after {WAIT:?}\n{}",
                c.logs_tail(30)
            );
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// The lines of `runs` for task `id`: (token, agent, attempt, pid).
fn runs_of(runs: &Path, id: &str) -> Vec<(u64, String, u32, i32)> {
    lines_of(runs, id)
}

/// The five-field lines of `runs` for task `id`, after the id: (token,
/// agent, then two fields of the worker's choosing).
fn lines_of<A: std::str::FromStr, B: std::str::FromStr>(
    runs: &Path,
    id: &str,
) -> Vec<(u64, String, A, B)>
where
    A::Err: std::fmt::Debug,
    B::Err: std::fmt::Debug,
{
    std::fs::read_to_string(runs)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[0] == id).then(|| {
                (
                    f[1].parse().unwrap(),
                    f[2].to_string(),
                    f[3].parse().unwrap(),
                    f[4].parse().unwrap(),
                )
            })
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_agents_task_finishes_then_it_is_drained_until_undrained() {
    let mut c = one_node().await;
    let runs = c.dir.path().join("runs");
    c.start_agent(agent("a1", &worker(&runs, 1500, 0))).unwrap();
    c.wait_agents(1, WAIT).await.unwrap();
    let t1 = submit(&c).await;
    wait_task(&c, &t1, "running", |t| state(t) == "running")
        .await
        .unwrap();

    let out = c.tidal_ok(&["agent", "drain", "a1"]).unwrap();
    assert!(out.contains("agent a1 is draining"), "{out}");
    // Nothing new is placed on it.
    let t2 = submit(&c).await;
    let t = wait_task(&c, &t1, "succeeded", |t| state(t) == "succeeded")
        .await
        .unwrap();
    assert_eq!(t.attempt, 1);
    wait_agent_state(&c, "a1", Some("drained")).await.unwrap();
    let list = c.tidal_ok(&["agent", "list"]).unwrap();
    assert!(list.contains("drained"), "{list}");
    let t = c.client.get_task(&t2, false).await.unwrap();
    assert_eq!((state(&t), t.attempt), ("pending", 0), "{t:?}");

    let out = c.tidal_ok(&["agent", "undrain", "a1"]).unwrap();
    assert!(out.contains("agent a1 is ready"), "{out}");
    wait_task(&c, &t2, "succeeded", |t| state(t) == "succeeded")
        .await
        .unwrap();
    assert_eq!(agent_state(&c, "a1").await.unwrap(), Some("ready"));

    // Bad input: an unknown agent, a deadline over the limit.
    let o = c.tidal(&["agent", "drain", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not found"),
        "{o:?}"
    );
    let o = c.tidal(&["agent", "drain", "a1", "--deadline-ms", "999999999999"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("over the limit"),
        "{o:?}"
    );
    // The same through the API, with their codes.
    let code = |r: Result<v1::AgentInfo, tidal_client::Error>| r.unwrap_err().code;
    assert_eq!(
        code(c.client.drain_agent("nope", None).await),
        Code::NotFound
    );
    assert_eq!(
        code(c.client.drain_agent(" ", None).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.client.drain_agent("a1", Some(u64::MAX)).await),
        Code::InvalidArgument
    );
    assert_eq!(code(c.client.undrain_agent("nope").await), Code::NotFound);
    // Deregistering an agent that holds a task is refused.
    let t3 = submit(&c).await;
    wait_task(&c, &t3, "running", |t| state(t) == "running")
        .await
        .unwrap();
    let e = c.client.deregister_agent("a1").await.unwrap_err();
    assert_eq!(e.code, Code::FailedPrecondition, "{e}");
    assert!(e.message.contains("still holds 1 task"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_deadline_stops_the_worker_and_the_task_runs_elsewhere_with_its_attempt() {
    let mut c = one_node().await;
    let runs = c.dir.path().join("runs");
    let cmd = worker(&runs, 60_000, 200);
    c.start_agent(agent("a1", &cmd)).unwrap();
    c.wait_agents(1, WAIT).await.unwrap();
    let id = submit(&c).await;
    let first = wait_task(&c, &id, "running on a1", |t| state(t) == "running")
        .await
        .unwrap();
    assert_eq!((first.agent.as_str(), first.attempt), ("a1", 1));
    c.start_agent(agent("a2", &cmd)).unwrap();
    c.wait_agents(2, WAIT).await.unwrap();

    let out = c
        .tidal_ok(&["agent", "drain", "a1", "--deadline-ms", "300"])
        .unwrap();
    assert!(out.contains("stopped at"), "{out}");
    let done = wait_task(&c, &id, "succeeded on a2", |t| state(t) == "succeeded")
        .await
        .unwrap();
    assert_eq!(done.agent, "a2");
    assert_eq!(done.attempt, 1, "a stop spends no attempt");
    assert!(done.token > first.token);
    let r = runs_of(&runs, &id);
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!((r[0].0, r[0].1.as_str(), r[0].2), (first.token, "a1", 1));
    assert_eq!((r[1].0, r[1].1.as_str(), r[1].2), (done.token, "a2", 1));
    // The worker on a1 is gone: stopped and reaped before it was requeued.
    assert!(!alive(r[0].3), "a1's worker {} still runs", r[0].3);
    wait_agent_state(&c, "a1", Some("drained")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_agent_deregisters_it_and_it_exits_0() {
    let mut c = one_node().await;
    let runs = c.dir.path().join("runs");
    let mut a1 = agent("a1", &worker(&runs, 1500, 0));
    a1.extra_args
        .extend(["--drain-timeout-ms".into(), "20000".into()]);
    c.start_agent(a1).unwrap();
    c.wait_agents(1, WAIT).await.unwrap();
    let id = submit(&c).await;
    wait_task(&c, &id, "running", |t| state(t) == "running")
        .await
        .unwrap();

    let pid = c.agents[0].pid().unwrap();
    // SAFETY: kill(2) to the agent process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    wait_agent_state(&c, "a1", Some("draining")).await.unwrap();
    let t = wait_task(&c, &id, "succeeded", |t| state(t) == "succeeded")
        .await
        .unwrap();
    assert_eq!((t.agent.as_str(), t.attempt), ("a1", 1));
    wait_agent_state(&c, "a1", None).await.unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = c.agents[0].try_exit() {
            break s;
        }
        assert!(Instant::now() < deadline, "{}", c.logs_tail(30));
        sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "{}", c.logs_tail(30));
    let log = std::fs::read_to_string(&c.agents[0].log).unwrap();
    assert!(log.contains("deregistered; exiting"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once_and_kills_the_worker() {
    let mut c = one_node().await;
    let runs = c.dir.path().join("runs");
    c.start_agent(agent("a1", &worker(&runs, 60_000, 0)))
        .unwrap();
    c.wait_agents(1, WAIT).await.unwrap();
    let id = submit(&c).await;
    wait_task(&c, &id, "running", |t| state(t) == "running")
        .await
        .unwrap();
    let worker_pid = runs_of(&runs, &id)[0].3;
    let pid = c.agents[0].pid().unwrap() as i32;
    // SAFETY: kill(2) to the agent process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    wait_agent_state(&c, "a1", Some("draining")).await.unwrap();
    let second = Instant::now();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = loop {
        if let Some(s) = c.agents[0].try_exit() {
            break s;
        }
        assert!(
            second.elapsed() < Duration::from_secs(10),
            "{}",
            c.logs_tail(30)
        );
        sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        status.code(),
        Some(1),
        "a task was killed: {}",
        c.logs_tail(30)
    );
    assert!(
        !alive(worker_pid),
        "the worker {worker_pid} outlived its agent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_deadline_shorter_than_the_task_stops_it_and_exits_0() {
    let mut c = one_node().await;
    let runs = c.dir.path().join("runs");
    let cmd = worker(&runs, 60_000, 200);
    let mut a1 = agent("a1", &cmd);
    a1.extra_args
        .extend(["--drain-timeout-ms".into(), "300".into()]);
    c.start_agent(a1).unwrap();
    c.wait_agents(1, WAIT).await.unwrap();
    let id = submit(&c).await;
    let first = wait_task(&c, &id, "running on a1", |t| state(t) == "running")
        .await
        .unwrap();
    c.start_agent(agent("a2", &cmd)).unwrap();
    c.wait_agents(2, WAIT).await.unwrap();

    let pid = c.agents[0].pid().unwrap();
    // SAFETY: kill(2) to the agent process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let done = wait_task(&c, &id, "succeeded on a2", |t| state(t) == "succeeded")
        .await
        .unwrap();
    assert_eq!((done.agent.as_str(), done.attempt), ("a2", first.attempt));
    wait_agent_state(&c, "a1", None).await.unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = c.agents[0].try_exit() {
            break s;
        }
        assert!(Instant::now() < deadline, "{}", c.logs_tail(30));
        sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "{}", c.logs_tail(30));
    let r = runs_of(&runs, &id);
    assert!(!alive(r[0].3), "a1's worker {} still runs", r[0].3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_carries_on_a_drain_whose_deadline_passes_after_a_failover() {
    let mut c = Cluster::start(ClusterOpts::default())
        .await
        .expect("cluster");
    let runs = c.dir.path().join("runs");
    let cmd = worker(&runs, 60_000, 200);
    c.start_agent(agent("a1", &cmd)).unwrap();
    c.wait_agents(1, WAIT).await.unwrap();
    let id = submit(&c).await;
    let first = wait_task(&c, &id, "running on a1", |t| state(t) == "running")
        .await
        .unwrap();
    c.start_agent(agent("a2", &cmd)).unwrap();
    c.wait_agents(2, WAIT).await.unwrap();

    let (old, _) = c.wait_leader(WAIT).await.unwrap();
    c.client.drain_agent("a1", Some(1500)).await.unwrap();
    // The leader that committed the drain dies before its deadline.
    c.kill_node(old);
    let done = wait_task(&c, &id, "succeeded on a2", |t| state(t) == "succeeded")
        .await
        .unwrap();
    assert_eq!((done.agent.as_str(), done.attempt), ("a2", first.attempt));
    let (new, _) = c.wait_leader(WAIT).await.unwrap();
    assert_ne!(new, old);
    let log = std::fs::read_to_string(&c.node(new).proc.as_ref().unwrap().log).unwrap();
    assert!(
        log.contains("drain deadline passed: told the agent to stop the task"),
        "the new leader stopped it:\n{}",
        c.logs_tail(30)
    );
    wait_agent_state(&c, "a1", Some("drained")).await.unwrap();
    let r = runs_of(&runs, &id);
    assert!(!alive(r[0].3), "a1's worker {} still runs", r[0].3);
}

/// Review item: a drain deadline that passes while a second process under
/// the agent's id waits out the first one's lease. The first process is
/// frozen (SIGSTOP, a stand-in for a partition) running a task; the second
/// one takes the id over and reports nothing running. The leader may not
/// have the second process stop (and so requeue) a task it never ran: the
/// task runs elsewhere only after the first process's worker is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_deadline_during_a_take_over_does_not_run_a_task_twice() {
    let mut c = Cluster::start(ClusterOpts {
        nodes: 1,
        join: false,
        server_args: vec!["--agent-ttl-ms".into(), "6000".into()],
        ..ClusterOpts::default()
    })
    .await
    .expect("cluster");
    let runs = c.dir.path().join("runs");
    // "task token agent pid unix-nanos" at each start.
    let cmd: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        format!(
            "echo \"$TIDAL_TASK_ID $TIDAL_FENCING_TOKEN $TIDAL_AGENT_ID $$ $(date +%s%N)\" >> '{}'; \
             if [ \"$TIDAL_AGENT_ID\" = a1 ]; then sleep 60; else sleep 0.2; fi; cat",
            runs.display()
        ),
    ];
    // (token, agent, pid, start time in ns) of each start of a task.
    let starts = |id: &str| -> Vec<(u64, String, i32, u128)> { lines_of(&runs, id) };
    c.start_agent(agent("a1", &cmd)).unwrap();
    c.wait_agents(1, WAIT).await.unwrap();
    let id = submit(&c).await;
    let first = wait_task(&c, &id, "running on a1", |t| state(t) == "running")
        .await
        .unwrap();
    let first_worker = starts(&id)[0].2;
    let (leader, _) = c.wait_leader(WAIT).await.unwrap();

    // Freeze the first process: its worker runs on, its lease on the
    // leader runs 6 s from its last heartbeat.
    c.agents[0].signal(libc::SIGSTOP);
    c.client.drain_agent("a1", Some(300)).await.unwrap();
    c.start_agent(agent("a1", &cmd)).unwrap();
    c.start_agent(agent("a2", &cmd)).unwrap();

    // The deadline passes while the second process holds the id: the
    // leader says it does not stop the task there.
    let server_log = c.node(leader).proc.as_ref().unwrap().log.clone();
    let deadline = Instant::now() + WAIT;
    loop {
        let log = std::fs::read_to_string(&server_log).unwrap_or_default();
        let again = starts(&id);
        assert!(
            again.len() == 1,
            "the task started again while the first process's worker {first_worker} runs: {again:?}\n{}",
            c.logs_tail(40)
        );
        if log.contains("the agent's session does not run the task") {
            break;
        }
        assert!(Instant::now() < deadline, "{}", c.logs_tail(40));
        sleep(Duration::from_millis(20)).await;
    }
    let t = c.client.get_task(&id, false).await.unwrap();
    assert_eq!((state(&t), t.token), ("running", first.token), "{t:?}");
    assert!(alive(first_worker));

    // The first process wakes, hears it was displaced, stops its worker
    // and exits 6.
    c.agents[0].signal(libc::SIGCONT);
    let deadline = Instant::now() + WAIT;
    let (status, exited_by) = loop {
        if let Some(s) = c.agents[0].try_exit() {
            break (s, std::time::SystemTime::now());
        }
        assert!(Instant::now() < deadline, "{}", c.logs_tail(40));
        sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(6), "{}", c.agents[0].log_tail(20));
    let exited_by = exited_by
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    assert!(!alive(first_worker));

    // Once the first process's lease has ended, the task runs on a2, once,
    // after the first worker was gone; never in the second a1 process.
    let done = wait_task(&c, &id, "succeeded on a2", |t| state(t) == "succeeded")
        .await
        .unwrap();
    assert_eq!(done.agent, "a2");
    let all = starts(&id);
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!((all[0].0, all[0].1.as_str()), (first.token, "a1"));
    assert_eq!((all[1].0, all[1].1.as_str()), (done.token, "a2"));
    assert!(
        all[1].3 > exited_by,
        "a2 started the task before the first process had stopped it: {all:?}"
    );
    wait_agent_state(&c, "a1", Some("drained")).await.unwrap();
}

/// SIGTERM to an agent while the cluster is at format version 1 (a rolling
/// upgrade not finished) cannot commit a drain: the agent drains by itself,
/// starts nothing new, stops its task at its deadline and exits 0 (it does
/// not keep retrying the drain); the tasks run elsewhere once its lease has
/// ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_at_format_version_1_drains_locally_and_exits_0() {
    // `--auth none`: agent tokens need format version 3.
    let mut c = Cluster::new_spec(
        ClusterOpts {
            nodes: 1,
            join: false,
            server_args: vec!["--max-format-version".into(), "1".into()],
            ..ClusterOpts::default()
        },
        |s| s.tokens = false,
    )
    .expect("cluster");
    c.launch().await.expect("cluster");
    let runs = c.dir.path().join("runs");
    let cmd = worker(&runs, 60_000, 200);
    let mut a1 = agent("a1", &cmd);
    a1.extra_args
        .extend(["--drain-timeout-ms".into(), "1500".into()]);
    c.start_agent(a1).unwrap();
    c.wait_agents(1, WAIT).await.unwrap();
    let t1 = submit(&c).await;
    wait_task(&c, &t1, "running on a1", |t| state(t) == "running")
        .await
        .unwrap();

    let signalled = Instant::now();
    c.agents[0].signal(libc::SIGTERM);
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(&c.agents[0].log)
        .unwrap_or_default()
        .contains("draining locally")
    {
        assert!(Instant::now() < deadline, "{}", c.logs_tail(30));
        sleep(Duration::from_millis(20)).await;
    }
    // A task placed on it now is not started there.
    let t2 = submit(&c).await;
    let status = loop {
        if let Some(s) = c.agents[0].try_exit() {
            break s;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(15),
            "the agent did not exit after its local drain\n{}",
            c.logs_tail(30)
        );
        sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "{}", c.agents[0].log_tail(30));
    assert!(
        signalled.elapsed() >= Duration::from_millis(1500),
        "the task had until the deadline"
    );
    let r1 = runs_of(&runs, &t1);
    assert_eq!(r1.len(), 1, "{r1:?}");
    assert!(!alive(r1[0].3), "a1's worker {} still runs", r1[0].3);
    assert!(
        runs_of(&runs, &t2).is_empty(),
        "t2 started on the leaving agent"
    );

    c.start_agent(agent("a2", &cmd)).unwrap();
    for id in [&t1, &t2] {
        let t = wait_task(&c, id, "succeeded on a2", |t| state(t) == "succeeded")
            .await
            .unwrap();
        assert_eq!(t.agent, "a2");
    }
}
