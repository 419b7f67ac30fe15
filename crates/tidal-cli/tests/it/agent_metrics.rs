//! `tidal agent --metrics-listen`: a scrape of a real agent counts its
//! workers' exits by code and shows its session; the Grafana dashboard in
//! cluster/grafana names only metrics a server or an agent serves.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{AgentOpts, Cluster, ClusterOpts};

/// A worker that exits with the code its payload names.
const EXIT_WORKER: &[&str] = &["sh", "-c", "code=$(cat); exit \"$code\""];

/// `GET /metrics` on `addr`: the body of a 200 answer.
async fn scrape(addr: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: tidal\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: application/openmetrics-text"),
        "{head}"
    );
    body.to_string()
}

/// The value of the sample whose name and labels are `series` (labels in
/// the order they are exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
}

/// Every sample name a scrape can hold: each `# TYPE` family with the
/// suffixes of its type.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in text.lines() {
        let Some(rest) = l.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => {
                out.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
            _ => {
                out.insert(name.to_string());
            }
        }
    }
    out
}

/// A one-server cluster serving metrics, and one agent of `t2i` serving
/// its own (on ports of the kernel's choice); their metrics addresses.
async fn cluster() -> (Cluster, SocketAddr, SocketAddr) {
    let mut c = Cluster::start(ClusterOpts {
        nodes: 1,
        server_args: vec!["--metrics-listen".into(), "127.0.0.1:0".into()],
        ..ClusterOpts::default()
    })
    .await
    .expect("cluster");
    let mut agent = AgentOpts::new("agent-m", &["t2i"]).command(EXIT_WORKER);
    agent.extra_args = vec!["--metrics-listen".into(), "127.0.0.1:0".into()];
    c.start_agent(agent).unwrap();
    c.wait_agents(1, Duration::from_secs(30)).await.unwrap();
    let server = std::fs::read_to_string(c.node(1).data.join("metrics_listen.addr"))
        .expect("the server wrote its metrics address")
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let agent = loop {
        let line = c.agents[0].last_log_line("serving metrics at /metrics");
        if let Some(addr) = line.as_deref().and_then(|l| {
            let at = l.split("metrics_listen=").nth(1)?;
            at.split_whitespace().next()?.parse::<SocketAddr>().ok()
        }) {
            break addr;
        }
        assert!(
            Instant::now() < deadline,
            "the agent logged no metrics address\n{}",
            c.agents[0].log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    (c, server, agent)
}

/// Submits a t2i task with `payload` and waits until it ends: its state.
async fn run(c: &Cluster, payload: &str) -> String {
    let id = c
        .tidal_ok(&[
            "task",
            "submit",
            "--type",
            "t2i",
            "--payload",
            payload,
            "--max-attempts",
            "1",
        ])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t: serde_json::Value = serde_json::from_str(
            &c.tidal_ok(&["task", "get", id.trim(), "-o", "json"])
                .unwrap(),
        )
        .unwrap();
        let state = t["state"].as_str().unwrap_or_default().to_string();
        if ["succeeded", "failed", "cancelled"].contains(&state.as_str()) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "task not done: {t}\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_counts_its_workers_exits_by_code() {
    let (c, _, agent) = cluster().await;
    let text = scrape(agent).await;
    assert_eq!(sample(&text, "tidal_agent_connected"), Some(1.0), "{text}");
    assert!(
        sample(&text, "tidal_agent_sessions_total").unwrap() >= 1.0,
        "{text}"
    );
    assert!(
        sample(&text, "tidal_agent_lease_remaining_seconds").unwrap() > 0.0,
        "{text}"
    );
    assert_eq!(run(&c, "0").await, "succeeded");
    assert_eq!(run(&c, "3").await, "failed");
    let text = scrape(agent).await;
    for (series, want) in [
        (
            r#"tidal_agent_worker_exits_total{type="t2i",code="0"}"#,
            1.0,
        ),
        (
            r#"tidal_agent_worker_exits_total{type="t2i",code="3"}"#,
            1.0,
        ),
        (
            r#"tidal_agent_tasks_completed_total{type="t2i",outcome="succeeded"}"#,
            1.0,
        ),
        (
            r#"tidal_agent_tasks_completed_total{type="t2i",outcome="failed"}"#,
            1.0,
        ),
        (r#"tidal_agent_workers_running{type="t2i"}"#, 0.0),
        ("tidal_agent_connected", 1.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series}\n{text}");
    }
}

/// Every `tidal_*` name in `expr`.
fn tidal_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("tidal_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail
            .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == '_') {
            out.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// Every `expr` of every panel (rows' panels included) and every query of
/// the templating variables.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::Object(q)) => {
                        if let Some(serde_json::Value::String(s)) = q.get("query") {
                            out.push(s.clone());
                        }
                    }
                    _ => exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_names_only_metrics_a_server_or_an_agent_serves() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../cluster/grafana/tidal.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard"))
            .expect("the dashboard is JSON");
    let (_c, server, agent) = cluster().await;
    let mut known = names(&scrape(server).await);
    known.extend(names(&scrape(agent).await));
    let mut used = Vec::new();
    exprs(&dashboard, &mut used);
    let used: BTreeSet<String> = used.iter().flat_map(|e| tidal_names(e)).collect();
    assert!(used.len() > 10, "{used:?}");
    let unknown: Vec<&String> = used.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard names metrics nothing serves: {unknown:?}\nknown: {known:?}"
    );
    // Importable: a datasource input and an instance variable.
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    let vars = dashboard["templating"]["list"].as_array().unwrap();
    assert!(vars.iter().any(|v| v["name"] == "instance"), "{vars:?}");
}
