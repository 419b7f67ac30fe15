//! `--metrics-listen`: a server serves `GET /metrics` over plain HTTP in
//! the text exposition format; the families read what the node knows (its
//! Raft role and term, the tasks of the applied state by queue and state)
//! and what it recorded as it applied entries and appended to its log.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tidal_client::{v1, Client};
use tidal_server::config::AuthMode;
use tidal_server::metrics::METRICS_LISTEN_ADDR_FILE;
use tidal_server::RawConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);

/// One sample: its labels (sorted) and value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// Sends `GET path` and returns the status line and the body.
pub(crate) async fn get(addr: &str, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    // The server closes the connection after its answer.
    stream.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.lines().next().unwrap().to_string();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("a Content-Length")
        .parse()
        .unwrap();
    assert_eq!(body.len(), length, "the body is as long as announced");
    (status, body.to_string())
}

/// Parses the text exposition format: `# HELP`/`# TYPE` lines name a family
/// before its samples; every other line is `name{labels} value`.
fn parse(text: &str) -> Samples {
    let mut families: Vec<String> = Vec::new();
    let mut samples = Samples::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.split(' ');
            if words.next() == Some("TYPE") {
                families.push(words.next().expect("a family name").to_string());
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not `name value`: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').expect("labels end with }");
                let labels = rest
                    .split(',')
                    .filter(|l| !l.is_empty())
                    .map(|l| {
                        let (k, v) = l.split_once('=').expect("label=value");
                        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                        (k.to_string(), v.expect("a quoted value").to_string())
                    })
                    .collect();
                (name, labels)
            }
            None => (series, BTreeMap::new()),
        };
        assert!(
            families.iter().any(|f| name.starts_with(f.as_str())),
            "{name} comes before the TYPE of its family"
        );
        samples.insert((name.to_string(), labels), value);
    }
    samples
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples.get(&(name.to_string(), labels)).copied()
}

/// The metrics listener's address, once the server wrote it.
pub(crate) async fn metrics_addr(data: &Path) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(data.join(METRICS_LISTEN_ADDR_FILE)) {
            return text.trim().to_string();
        }
        assert!(tokio::time::Instant::now() < deadline, "no metrics address");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One server (node 1 of DC dc1, no auth) with its metrics listener on a
/// free port, leading: what the metrics and status page tests run against.
pub(crate) struct OneNode {
    _dir: tempfile::TempDir,
    pub data: std::path::PathBuf,
    pub client: Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl OneNode {
    /// Starts it with the config `tweak` changes, and waits until it leads.
    pub(crate) async fn start(tweak: impl FnOnce(&mut RawConfig)) -> OneNode {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("node1");
        let mut raw = RawConfig {
            id: Some(1),
            dc: Some("dc1".into()),
            listen: Some("127.0.0.1:0".into()),
            metrics_listen: Some("127.0.0.1:0".into()),
            data: Some(data.clone()),
            init: Some(true),
            auth: Some(AuthMode::None),
            ..RawConfig::default()
        };
        tweak(&mut raw);
        let config = raw.validate().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(tidal_server::run(config, listener, async {
            let _ = stopped.await;
        }));
        let client = Client::new(vec![addr.clone()]).unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        while !matches!(client.status_of(&addr).await, Ok(s) if s.role == "leader") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        OneNode {
            _dir: dir,
            data,
            client,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// The metrics listener's address.
    pub(crate) async fn metrics(&self) -> String {
        metrics_addr(&self.data).await
    }

    /// Stops it and checks that it stopped cleanly within [`WAIT`].
    pub(crate) async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(WAIT, self.server.take().unwrap())
            .await
            .expect("the server stops within its shutdown timeout")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_leader_its_term_and_a_submitted_task() {
    let node = OneNode::start(|_| {}).await;
    let client = &node.client;
    let submitted = client
        .submit_one(v1::TaskSpec {
            queue: "default".into(),
            task_type: "t2i".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(submitted.error.is_none(), "{submitted:?}");

    let metrics = node.metrics().await;
    let pending = [("queue", "default"), ("state", "pending")];
    let deadline = tokio::time::Instant::now() + WAIT;
    let samples = loop {
        let (status, body) = get(&metrics, "/metrics").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        let samples = parse(&body);
        if value(&samples, "tidal_tasks", &pending) == Some(1.0) {
            break samples;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task never showed as pending in:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(value(&samples, "tidal_raft_is_leader", &[]), Some(1.0));
    assert_eq!(value(&samples, "tidal_raft_leader_id", &[]), Some(1.0));
    assert!(value(&samples, "tidal_raft_term", &[]).unwrap() >= 1.0);
    let applied = value(&samples, "tidal_raft_applied_index", &[]).unwrap();
    assert!(applied >= 1.0);
    assert!(value(&samples, "tidal_raft_commit_index", &[]).unwrap() >= applied);
    let running = [("queue", "default"), ("state", "running")];
    assert_eq!(value(&samples, "tidal_tasks", &running), Some(0.0));
    assert_eq!(
        value(&samples, "tidal_agents", &[("state", "ready")]),
        Some(0.0)
    );
    assert!(
        value(&samples, "tidal_leader_round_seconds_count", &[]).unwrap() >= 1.0,
        "the leader's rounds are timed"
    );
    // Nothing else is served.
    assert_eq!(get(&metrics, "/nowhere").await.0, "HTTP/1.1 404 Not Found");

    node.stop().await;
    assert!(
        tokio::net::TcpStream::connect(&metrics).await.is_err(),
        "nothing listens on {metrics} after the shutdown"
    );
}

/// The scrape once `ready` holds for it, polled until [`WAIT`] (then a
/// failure naming `what`).
async fn scrape_until(metrics: &str, what: &str, ready: impl Fn(&Samples) -> bool) -> Samples {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = get(metrics, "/metrics").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        let samples = parse(&body);
        if ready(&samples) {
            return samples;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never showed in:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next message of an agent session that is not a heartbeat ack.
async fn next_msg(session: &mut tidal_client::Session) -> v1::server_message::Msg {
    loop {
        let next = tokio::time::timeout(WAIT, session.inbound.message())
            .await
            .expect("a message on the session within the wait");
        let m = next
            .expect("the session is open")
            .and_then(|m| m.msg)
            .expect("a message");
        if !matches!(m, v1::server_message::Msg::HeartbeatAck(_)) {
            return m;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_time_a_task_to_its_assignment_and_end_and_count_a_lapsed_lease() {
    use v1::{agent_message::Msg as In, server_message::Msg as Out};
    let node = OneNode::start(|c| {
        // A short lease, so the agent's lapses soon after it goes silent.
        c.agent_ttl_ms = Some(2_000);
        c.heartbeat_interval_ms = Some(500);
    })
    .await;
    let client = &node.client;
    let metrics = node.metrics().await;

    // An agent session of the test's own, heartbeating while it works.
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let register = v1::AgentMessage {
        msg: Some(In::Register(v1::Register {
            spec: Some(v1::AgentSpec {
                id: "probe".into(),
                dc: "dc1".into(),
                task_types: vec!["t2i".into()],
                slots: 1,
                ..Default::default()
            }),
            ..Default::default()
        })),
    };
    let mut session = client.open_session(register, rx).await.expect("session");
    assert!(matches!(next_msg(&mut session).await, Out::Registered(_)));
    let beats = {
        let tx = tx.clone();
        tokio::spawn(async move {
            for seq in 1.. {
                let beat = In::Heartbeat(v1::Heartbeat {
                    seq,
                    free_slots: 1,
                    ..Default::default()
                });
                if tx.send(v1::AgentMessage { msg: Some(beat) }).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let submitted = client
        .submit_one(v1::TaskSpec {
            queue: "default".into(),
            task_type: "t2i".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(submitted.error.is_none(), "{submitted:?}");
    let Out::Assignment(assigned) = next_msg(&mut session).await else {
        panic!("no assignment")
    };
    for m in [
        In::Started(v1::TaskStarted {
            task_id: assigned.task_id.clone(),
            token: assigned.token,
        }),
        In::Completed(v1::TaskCompleted {
            task_id: assigned.task_id.clone(),
            token: assigned.token,
            success: true,
            ..Default::default()
        }),
    ] {
        tx.send(v1::AgentMessage { msg: Some(m) }).await.unwrap();
    }
    let Out::CompletionAck(_) = next_msg(&mut session).await else {
        panic!("no completion ack")
    };

    let default = [("queue", "default")];
    let succeeded = [("queue", "default"), ("outcome", "succeeded")];
    let samples = scrape_until(&metrics, "the task's assignment and end", |s| {
        value(s, "tidal_task_finish_seconds_count", &succeeded).is_some_and(|n| n >= 1.0)
    })
    .await;
    assert_eq!(
        value(&samples, "tidal_task_assign_seconds_count", &default),
        Some(1.0),
        "one assignment"
    );
    let inf = [("le", "+Inf"), ("queue", "default")];
    assert_eq!(
        value(&samples, "tidal_task_assign_seconds_bucket", &inf),
        Some(1.0)
    );
    assert!(value(&samples, "tidal_raft_append_seconds_count", &[]).unwrap() >= 1.0);
    assert!(value(&samples, "tidal_raft_fsync_seconds_count", &[]).unwrap() >= 1.0);
    assert_eq!(
        value(&samples, "tidal_lease_expiries_total", &[]),
        Some(0.0)
    );

    // The agent goes silent: its lease lapses and it is marked down.
    beats.abort();
    drop(tx);
    scrape_until(&metrics, "the lapsed lease", |s| {
        value(s, "tidal_lease_expiries_total", &[]) == Some(1.0)
            && value(s, "tidal_agents", &[("state", "down")]) == Some(1.0)
    })
    .await;
    drop(session);

    node.stop().await;
}
