//! Cross-DC forwarding with real processes: two DCs, each its own Raft group,
//! linked only by their shippers. DC-A's agents run t2i, DC-B's run tts (and
//! train), so tts tasks submitted in A must run in B.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use tidal_client::{task_state_name, v1};
use tokio::time::{sleep, Instant};

use crate::harness::{recording_worker, AgentOpts, Cluster, ClusterOpts, Relay};

struct TwoDcs {
    a: Cluster,
    b: Cluster,
    /// Relays A uses to reach B's nodes and B uses to reach A's (when asked for).
    to_b: Vec<Relay>,
    to_a: Vec<Relay>,
}

impl TwoDcs {
    /// Starts DC-A and DC-B with `nodes` servers each, naming each other as
    /// peers (through relays if `relays`), with extra server flags for A.
    async fn start(nodes: usize, relays: bool, a_args: &[&str]) -> anyhow::Result<TwoDcs> {
        let opts = |dc: &str| ClusterOpts {
            nodes,
            dc: dc.into(),
            server_args: Vec::new(),
            join: true,
        };
        let mut a = Cluster::new(opts("dc-a"))?;
        // One CA for both DCs, so each trusts the other's servers.
        let mut b = Cluster::new_peer_of(&a, opts("dc-b"))?;
        let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
        if relays {
            for e in b.endpoints() {
                to_b.push(Relay::start(&e).await?);
            }
            for e in a.endpoints() {
                to_a.push(Relay::start(&e).await?);
            }
        }
        let via = |relays: &[Relay], c: &Cluster| -> String {
            if relays.is_empty() {
                c.endpoints().join(",")
            } else {
                relays
                    .iter()
                    .map(|r| r.addr.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            }
        };
        a.spec.server_args = vec!["--peer".into(), format!("dc-b={}", via(&to_b, &b))];
        a.spec
            .server_args
            .extend(a_args.iter().map(|s| s.to_string()));
        b.spec.server_args = vec!["--peer".into(), format!("dc-a={}", via(&to_a, &a))];
        a.launch().await?;
        b.launch().await?;
        Ok(TwoDcs { a, b, to_a, to_b })
    }

    fn cut(&self) {
        self.to_a.iter().chain(&self.to_b).for_each(Relay::cut);
    }

    fn heal(&self) {
        self.to_a.iter().chain(&self.to_b).for_each(Relay::heal);
    }

    fn logs(&self) -> String {
        format!("{}{}", self.a.logs_tail(15), self.b.logs_tail(15))
    }
}

fn agent(id: &str, types: &[&str], models: &[&str], runs: &Path) -> AgentOpts {
    AgentOpts::new(id, types).models(models).slots(4).command(
        &recording_worker(runs)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
}

fn spec(task_type: &str, model: &str, key: String) -> v1::TaskSpec {
    v1::TaskSpec {
        task_type: task_type.into(),
        models: vec![model.into()],
        payload: format!("payload of {key}").into_bytes(),
        idempotency_key: key,
        ..Default::default()
    }
}

/// Submits the specs (one batch each 50); returns the ids in order.
async fn submit(c: &Cluster, specs: Vec<v1::TaskSpec>) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for chunk in specs.chunks(50) {
        for r in c.client.submit(chunk.to_vec()).await.context("submit")? {
            if let Some(e) = r.error.filter(|e| e.code != 0) {
                bail!("submit refused: {}", e.message);
            }
            ids.push(r.id);
        }
    }
    Ok(ids)
}

/// Waits until every task in `ids` is terminal in `c`; returns them by id.
async fn wait_terminal(
    d: &TwoDcs,
    c: &Cluster,
    ids: &[String],
    timeout: Duration,
) -> anyhow::Result<BTreeMap<String, v1::Task>> {
    let deadline = Instant::now() + timeout;
    let want: BTreeSet<&String> = ids.iter().collect();
    loop {
        let tasks: BTreeMap<String, v1::Task> = c
            .client
            .list_all_tasks(v1::ListTasksRequest::default())
            .await?
            .into_iter()
            .filter(|t| want.contains(&t.id))
            .map(|t| (t.id.clone(), t))
            .collect();
        let open: Vec<String> = tasks
            .values()
            .filter(|t| !tidal_client::is_terminal(t.state))
            .map(|t| format!("{} {}", t.id, task_state_name(t.state)))
            .collect();
        if tasks.len() == ids.len() && open.is_empty() {
            return Ok(tasks);
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {} tasks not finished after {timeout:?}, e.g. {:?}\n{}",
                open.len() + ids.len() - tasks.len(),
                ids.len(),
                open.iter().take(5).collect::<Vec<_>>(),
                d.logs()
            );
        }
        sleep(Duration::from_millis(200)).await;
    }
}

/// Runs recorded by the workers: task id -> executions.
fn runs(path: &Path) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut out = BTreeMap::new();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let id = line.split_whitespace().next().context("empty run line")?;
        *out.entry(id.to_string()).or_default() += 1;
    }
    Ok(out)
}

/// Checks that the tts tasks of A ran in B exactly once each: A mirrors B's
/// state, agent and result; B holds each A task once (one owner, no
/// duplicate ingest) and its worker ran each once.
async fn check_ran_in_b_once(
    d: &TwoDcs,
    a_tasks: &BTreeMap<String, v1::Task>,
    b_runs: &Path,
) -> anyhow::Result<Vec<v1::Task>> {
    let b_tasks =
        d.b.client
            .list_all_tasks(v1::ListTasksRequest::default())
            .await?;
    let mut by_origin: BTreeMap<&str, Vec<&v1::Task>> = BTreeMap::new();
    for t in &b_tasks {
        assert_eq!(t.origin_dc, "dc-a", "B holds a task not from A: {t:?}");
        by_origin.entry(t.origin_id.as_str()).or_default().push(t);
    }
    let b_runs = runs(b_runs)?;
    for (id, t) in a_tasks {
        assert_eq!(
            t.state,
            v1::TaskState::Succeeded as i32,
            "{id}: {} {}",
            task_state_name(t.state),
            t.error
        );
        assert_eq!(t.forwarded_to, "dc-b", "{id} did not run in dc-b");
        assert!(t.agent.starts_with("b-"), "{id} ran on {}", t.agent);
        let in_b = by_origin.get(id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        assert_eq!(in_b.len(), 1, "{id} ingested {} times", in_b.len());
        assert_eq!(t.remote_id, in_b[0].id);
        assert_eq!(
            b_runs.get(&t.remote_id),
            Some(&1),
            "{id} ({}) runs",
            t.remote_id
        );
        // The result came back: the worker echoes the payload.
        let got = d.a.client.get_task(id, false).await?;
        let payload = got
            .spec
            .as_ref()
            .map(|s| s.payload.clone())
            .unwrap_or_default();
        assert_eq!(got.result, payload, "{id}: result not mirrored");
    }
    assert_eq!(
        b_tasks.len(),
        a_tasks.len(),
        "B holds tasks A did not forward"
    );
    Ok(b_tasks)
}

async fn dc_status(c: &Cluster) -> anyhow::Result<v1::PeerStatus> {
    let s = c.client.dc_status().await?;
    s.peers.into_iter().next().context("no peer in dc status")
}

/// Waits until `cond` holds for A's view of its peer.
async fn wait_peer(
    d: &TwoDcs,
    what: &str,
    cond: impl Fn(&v1::PeerStatus) -> bool,
) -> anyhow::Result<v1::PeerStatus> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(p) = dc_status(&d.a).await {
            if cond(&p) {
                return Ok(p);
            }
            if Instant::now() > deadline {
                bail!("{what}: not after 30s; last {p:?}\n{}", d.logs());
            }
        }
        sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_only_b_can_run_run_there_once_and_report_back() -> anyhow::Result<()> {
    let mut d = TwoDcs::start(3, false, &[]).await?;
    let (a_runs, b_runs) = (
        d.a.dir.path().join("runs.log"),
        d.b.dir.path().join("runs.log"),
    );
    d.a.start_agent(agent("a-1", &["t2i"], &["sdxl"], &a_runs))?;
    d.b.start_agent(agent("b-1", &["tts"], &["vits"], &b_runs))?;
    d.b.start_agent(
        AgentOpts::new("b-2", &["train"])
            .models(&["llama"])
            .command(&["sleep", "60"]),
    )?;
    d.a.wait_agents(1, Duration::from_secs(20)).await?;
    d.b.wait_agents(2, Duration::from_secs(20)).await?;
    wait_peer(&d, "B's summary reaches A", |p| {
        p.summary.as_ref().is_some_and(|s| s.groups.len() == 2)
    })
    .await?;

    let tts = submit(
        &d.a,
        (0..40)
            .map(|i| spec("tts", "vits", format!("tts-{i}")))
            .collect(),
    )
    .await?;
    let t2i = submit(
        &d.a,
        (0..20)
            .map(|i| spec("t2i", "sdxl", format!("t2i-{i}")))
            .collect(),
    )
    .await?;
    let a_tts = wait_terminal(&d, &d.a, &tts, Duration::from_secs(60)).await?;
    check_ran_in_b_once(&d, &a_tts, &b_runs).await?;
    // Local work stayed local.
    let a_t2i = wait_terminal(&d, &d.a, &t2i, Duration::from_secs(60)).await?;
    let a_ran = runs(&a_runs)?;
    for (id, t) in &a_t2i {
        assert_eq!(t.state, v1::TaskState::Succeeded as i32);
        assert!(t.forwarded_to.is_empty() && t.agent == "a-1", "{id}: {t:?}");
        assert_eq!(a_ran.get(id), Some(&1));
    }

    // The operator's view: link up, nothing waiting, B's agents known.
    let out = d.a.tidal_ok(&["dc", "status", "--output", "json"])?;
    let status: serde_json::Value = serde_json::from_str(&out)?;
    let peer = &status["peers"][0];
    assert_eq!(peer["dc"], "dc-b");
    assert_eq!(peer["link"], "up");
    assert_eq!(peer["outbox_depth"], 0);
    assert!(peer["acked_seq"].as_u64() >= Some(40));
    let text = d.a.tidal_ok(&["dc", "status"])?;
    assert!(text.contains("types tts; models vits"), "{text}");

    // `task get` in A says where the task runs.
    let shown = d.a.tidal_ok(&["task", "get", &tts[0]])?;
    // (The label column's width depends on the rows shown, e.g. submitted_by.)
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("runs in ") && l.contains(" DC dc-b (as t")),
        "{shown}"
    );

    // A cancel in A reaches the task running in B, and the end comes back.
    let train = submit(&d.a, vec![spec("train", "llama", "train-0".into())]).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while d.a.client.get_task(&train[0], false).await?.state != v1::TaskState::Running as i32 {
        if Instant::now() > deadline {
            bail!("the train task never ran in B\n{}", d.logs());
        }
        sleep(Duration::from_millis(100)).await;
    }
    d.a.tidal_ok(&["task", "cancel", &train[0]])?;
    let ended = wait_terminal(&d, &d.a, &train, Duration::from_secs(30)).await?;
    let t = &ended[&train[0]];
    assert_eq!(t.state, v1::TaskState::Cancelled as i32, "{t:?}");
    let in_b = d.b.client.get_task(&t.remote_id, false).await?;
    assert_eq!(in_b.state, v1::TaskState::Cancelled as i32);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_queues_forwards_then_delivers_each_once_in_order() -> anyhow::Result<()> {
    let mut d = TwoDcs::start(1, true, &["--outbox-limit", "60"]).await?;
    let (a_runs, b_runs) = (
        d.a.dir.path().join("runs.log"),
        d.b.dir.path().join("runs.log"),
    );
    d.a.start_agent(agent("a-1", &["t2i"], &["sdxl"], &a_runs))?;
    d.b.start_agent(agent("b-1", &["tts"], &["vits"], &b_runs))?;
    d.a.wait_agents(1, Duration::from_secs(20)).await?;
    d.b.wait_agents(1, Duration::from_secs(20)).await?;
    wait_peer(&d, "B's summary reaches A", |p| {
        p.summary.as_ref().is_some_and(|s| !s.groups.is_empty())
    })
    .await?;

    d.cut();
    wait_peer(&d, "A sees the link down", |p| p.link == "down").await?;
    let tts = submit(
        &d.a,
        (0..100)
            .map(|i| spec("tts", "vits", format!("tts-{i}")))
            .collect(),
    )
    .await?;
    let t2i = submit(
        &d.a,
        (0..10)
            .map(|i| spec("t2i", "sdxl", format!("t2i-{i}")))
            .collect(),
    )
    .await?;
    // Cut off, A keeps serving its own work.
    wait_terminal(&d, &d.a, &t2i, Duration::from_secs(30)).await?;
    // Forwards queue up to the outbox limit; the rest stay pending here.
    let p = wait_peer(&d, "the outbox fills to its limit", |p| {
        p.outbox_depth == 60
    })
    .await?;
    assert!(p.oldest_unshipped_ms >= 0 && p.link == "down", "{p:?}");
    let pending =
        d.a.client
            .list_tasks(v1::ListTasksRequest {
                state: v1::TaskState::Pending as i32,
                ..Default::default()
            })
            .await?;
    assert_eq!(pending.tasks.len(), 40, "over the limit, tasks stay local");
    assert!(d
        .b
        .client
        .list_all_tasks(v1::ListTasksRequest::default())
        .await?
        .is_empty());

    d.heal();
    let a_tts = wait_terminal(&d, &d.a, &tts, Duration::from_secs(60)).await?;
    let b_tasks = check_ran_in_b_once(&d, &a_tts, &b_runs).await?;
    // FIFO per origin: B took A's tasks in A's order.
    let mut order: Vec<(u64, u64)> = b_tasks
        .iter()
        .map(|t| {
            let num = |s: &str| s.trim_start_matches('t').parse::<u64>().unwrap();
            (num(&t.id), num(&t.origin_id))
        })
        .collect();
    order.sort();
    assert!(
        order.windows(2).all(|w| w[0].1 < w[1].1),
        "B ingested out of order: {order:?}"
    );
    let p = wait_peer(&d, "the outbox drains", |p| p.outbox_depth == 0).await?;
    assert_eq!(p.link, "up");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kills_on_both_sides_lose_no_record_and_ingest_none_twice() -> anyhow::Result<()> {
    let mut d = TwoDcs::start(3, false, &[]).await?;
    let b_runs = d.b.dir.path().join("runs.log");
    d.b.start_agent(agent("b-1", &["tts"], &["vits"], &b_runs))?;
    d.b.wait_agents(1, Duration::from_secs(20)).await?;
    wait_peer(&d, "B's summary reaches A", |p| p.summary.is_some()).await?;

    let mut ids = Vec::new();
    for round in 0..6 {
        ids.extend(
            submit(
                &d.a,
                (0..50)
                    .map(|i| spec("tts", "vits", format!("tts-{round}-{i}")))
                    .collect(),
            )
            .await?,
        );
        match round {
            1 => {
                let (leader, _) = d.a.wait_leader(Duration::from_secs(10)).await?;
                d.a.kill_node(leader);
                d.a.wait_leader(Duration::from_secs(20)).await?;
                d.a.start_node(leader, false)?;
            }
            3 => {
                let (leader, _) = d.b.wait_leader(Duration::from_secs(10)).await?;
                d.b.kill_node(leader);
                d.b.wait_leader(Duration::from_secs(20)).await?;
                d.b.start_node(leader, false)?;
            }
            _ => {}
        }
    }
    let a_tts = wait_terminal(&d, &d.a, &ids, Duration::from_secs(90)).await?;
    assert_eq!(a_tts.len(), 300);
    check_ran_in_b_once(&d, &a_tts, &b_runs).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dc_without_a_route_keeps_serving_local_work() -> anyhow::Result<()> {
    // The peer's address answers nothing: no server listens there.
    let held = tidal_testkit::Port::local()?;
    let nowhere = held.addr().to_string();
    let mut a = Cluster::new(ClusterOpts {
        nodes: 1,
        dc: "dc-a".into(),
        server_args: vec!["--peer".into(), format!("dc-b={nowhere}")],
        join: true,
    })?;
    a.launch().await?;
    let runs_path = a.dir.path().join("runs.log");
    a.start_agent(agent("a-1", &["t2i"], &["sdxl"], &runs_path))?;
    a.wait_agents(1, Duration::from_secs(20)).await?;
    let t2i = submit(
        &a,
        (0..20)
            .map(|i| spec("t2i", "sdxl", format!("t2i-{i}")))
            .collect(),
    )
    .await?;
    let tts = submit(&a, vec![spec("tts", "vits", "tts-0".into())]).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = a
            .client
            .list_all_tasks(v1::ListTasksRequest::default())
            .await?
            .iter()
            .filter(|t| t2i.contains(&t.id) && t.state == v1::TaskState::Succeeded as i32)
            .count();
        if done == t2i.len() {
            break;
        }
        if Instant::now() > deadline {
            bail!("local work stalled: {done} of 20\n{}", a.logs_tail(20));
        }
        sleep(Duration::from_millis(100)).await;
    }
    // With no summary from any peer, a task no agent runs waits here.
    let t = a.client.get_task(&tts[0], false).await?;
    assert_eq!(t.state, v1::TaskState::Pending as i32);
    let s = a.client.dc_status().await?;
    assert_eq!(s.peers[0].link, "down", "{s:?}");
    assert!(!s.peers[0].last_error.is_empty());
    assert!(s.peers[0].summary.is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_that_cannot_be_taken_are_refused_with_the_right_code() -> anyhow::Result<()> {
    use tidal_core::forwarding::Record;
    use tidal_core::model::TaskId;
    use tidal_server::links::{ExchangeBody, Summary};
    use tonic::Code;

    // Raw exchanges over a plaintext channel, without credentials.
    let a = Cluster::start_plaintext(ClusterOpts {
        nodes: 1,
        dc: "dc-a".into(),
        server_args: vec!["--peer".into(), "dc-b=127.0.0.1:9".into()],
        join: true,
    })
    .await?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", a.node(1).addr))?
        .connect()
        .await?;
    let mut dcs = v1::dcs_client::DcsClient::new(channel);
    let body = |n: u64| {
        ExchangeBody {
            summary: Summary::default(),
            records: (1..=n)
                .map(|s| {
                    (
                        s,
                        Record::Cancel {
                            origin_task: TaskId(s),
                        },
                    )
                })
                .collect(),
        }
        .encode()
        .unwrap()
    };
    let request = |origin: &str, target: &str, body: Vec<u8>| v1::ExchangeRequest {
        origin_dc: origin.into(),
        target_dc: target.into(),
        body,
    };
    let code = |r: Result<tonic::Response<v1::ExchangeResponse>, tonic::Status>| {
        r.map(|_| Code::Ok).unwrap_or_else(|s| s.code())
    };
    let wrong_dc = dcs.exchange(request("dc-b", "dc-z", body(1))).await;
    assert_eq!(code(wrong_dc), Code::FailedPrecondition);
    let stranger = dcs.exchange(request("dc-q", "dc-a", body(1))).await;
    let status = stranger.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("not a peer"), "{status:?}");
    let garbage = dcs.exchange(request("dc-b", "dc-a", vec![1, 2, 3])).await;
    assert_eq!(code(garbage), Code::InvalidArgument);
    let too_many = dcs.exchange(request("dc-b", "dc-a", body(513))).await;
    assert_eq!(code(too_many), Code::ResourceExhausted);
    // Nothing of it was taken; a good exchange is.
    let ok = dcs
        .exchange(request("dc-b", "dc-a", body(2)))
        .await?
        .into_inner();
    assert_eq!(ok.dc, "dc-a");
    let s = a.client.dc_status().await?;
    assert_eq!(s.peers[0].inbound_hwm, 2);
    Ok(())
}
