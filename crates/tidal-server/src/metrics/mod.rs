//! Prometheus metrics over plain HTTP on `--metrics-listen` (off by default).
//!
//! `GET /metrics` answers the families below in the text exposition format
//! (OpenMetrics text, which Prometheus reads); `GET /` is a status page and
//! `GET /status.json` its data ([`status`]); every other path is 404. There
//! is no TLS and no authentication: bind the listener to loopback or a
//! private network.
//!
//! What a scrape reads, at the time of the scrape:
//! - openraft's metrics of this node ([`Raft::metrics`]): term, leader,
//!   log and applied indexes, and on the leader each follower's lag;
//! - the applied state ([`StateHandle`]): tasks by queue and state, agents
//!   by state, the cross-DC outboxes. The state is copied under its lock
//!   (its maps share their nodes, so the copy is cheap) and counted after.
//!
//! What is recorded as it happens: the term changes this node saw since it
//! started ([`watch_terms`]), the duration of the leader's rounds
//! ([`rounds`]), and what the store tells as it applies entries and makes
//! log appends durable ([`events`]: tasks' submit-to-assigned and
//! submit-to-finished times, lease expiries, log append times).
//!
//! The HTTP side is [`tidal_client::plain_http`]: one request per
//! connection (`Connection: close`), a request head of at most [`MAX_HEAD`]
//! bytes read within [`READ_TIMEOUT`], at most
//! [`plain_http::MAX_CONNECTIONS`] connections at once; [`route`] decides
//! the answer.

pub mod events;
pub mod rounds;
pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tidal_client::plain_http;
use tidal_core::model::{AgentState, TaskStateKind};
use tidal_store::{Raft, StateHandle};
use tokio::net::TcpListener;

use crate::links::PeerTable;

/// The file in a server's data directory that holds the address of its
/// metrics listener (one line, `HOST:PORT`), written once it listens.
pub const METRICS_LISTEN_ADDR_FILE: &str = "metrics_listen.addr";

pub use tidal_client::plain_http::{MAX_HEAD, READ_TIMEOUT};

/// The Content-Type of `/metrics`.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels: (name, value) pairs.
type Labels = Vec<(String, String)>;

/// What a scrape reads: this node's Raft and applied state, and what is
/// counted as it happens.
#[derive(Clone)]
pub struct Sources {
    pub node_id: u64,
    pub raft: Raft,
    pub state: StateHandle,
    /// Term changes this node saw since it started ([`watch_terms`]).
    pub elections: Counter,
    /// Fed by the store once set on it ([`tidal_store::StateHandle::set_events`]).
    pub events: events::Events,
    /// The configured peer DCs and what this node's links know of them (the
    /// status page's cross-DC links); none in unit tests.
    pub peers: Option<Arc<PeerTable>>,
}

impl Sources {
    pub fn new(node_id: u64, raft: Raft, state: StateHandle) -> Sources {
        Sources {
            node_id,
            raft,
            state,
            elections: Counter::default(),
            events: events::Events::default(),
            peers: None,
        }
    }
}

/// Counts the term changes of `sources`' Raft (by how much the term grew)
/// until its metrics end. Each new term is an election some member started.
pub async fn watch_terms(sources: Sources) {
    let mut metrics = sources.raft.metrics();
    let mut term = metrics.borrow().current_term;
    while metrics.changed().await.is_ok() {
        let now = metrics.borrow().current_term;
        if now > term {
            sources.elections.inc_by(now - term);
        }
        term = now;
    }
}

/// Serves `GET /metrics` and the status pages on `listener` until dropped
/// (the caller aborts it).
pub async fn serve(listener: TcpListener, sources: Sources) {
    plain_http::serve(listener, move |head| {
        let (status, content_type, body) = route(
            head,
            || scrape(&sources),
            |page| {
                page.render(
                    sources.node_id,
                    &sources.raft,
                    &sources.state,
                    sources.peers.as_deref(),
                )
            },
        );
        plain_http::Response {
            status,
            content_type,
            body,
        }
    })
    .await
}

/// The status line, Content-Type and body for a request head (`None`: too
/// long); `scrape` makes the body of `GET /metrics`, `status` that of a
/// status page.
pub fn route(
    head: Option<&[u8]>,
    scrape: impl FnOnce() -> String,
    status: impl FnOnce(status::Page) -> String,
) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let Some(head) = head else {
        return (
            "431 Request Header Fields Too Large",
            TEXT,
            "request head too long\n".into(),
        );
    };
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path, status::Page::of(path)) {
        ("GET", "/metrics", _) => ("200 OK", CONTENT_TYPE, scrape()),
        ("GET", _, Some(page)) => ("200 OK", page.content_type(), status(page)),
        (_, "/metrics", _) | (_, _, Some(_)) => {
            ("405 Method Not Allowed", TEXT, "GET only\n".into())
        }
        _ => (
            "404 Not Found",
            TEXT,
            "metrics are at /metrics, the status page at /\n".into(),
        ),
    }
}

/// Every family, as of now, in the text exposition format.
pub fn scrape(sources: &Sources) -> String {
    let mut registry = Registry::with_prefix("tidal");
    raft_families(&mut registry, sources);
    state_families(&mut registry, sources);
    registry.register(
        "raft_elections",
        "Term changes this node saw since it started (each new term is an election)",
        sources.elections.clone(),
    );
    registry.register(
        "leader_round_seconds",
        "How long each round of the leader's engine took: the events, timers and dispatch it \
         stepped and the actions it performed (every leadership of this process)",
        rounds::histogram().clone(),
    );
    sources.events.register(&mut registry);
    let mut text = String::new();
    encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    registry.register(name, help, g);
}

fn raft_families(registry: &mut Registry, sources: &Sources) {
    let m = sources.raft.metrics().borrow().clone();
    let leads = m.current_leader == Some(sources.node_id);
    gauge(
        registry,
        "raft_term",
        "This node's current Raft term",
        m.current_term as i64,
    );
    gauge(
        registry,
        "raft_is_leader",
        "1 if this node is the leader, else 0",
        leads as i64,
    );
    gauge(
        registry,
        "raft_leader_id",
        "The id of the leader this node knows (0: none known)",
        m.current_leader.unwrap_or(0) as i64,
    );
    gauge(
        registry,
        "raft_last_log_index",
        "The index of the last entry in this node's log (0: empty)",
        m.last_log_index.unwrap_or(0) as i64,
    );
    // What this node saved as committed; no lower than what it applied
    // (an idle node saves nothing new after a restart).
    let applied = m.last_applied.map_or(0, |l| l.index);
    gauge(
        registry,
        "raft_commit_index",
        "The highest log index this node knows committed (saved by its log store, and at least \
         its applied index)",
        sources.events.committed_index().max(applied) as i64,
    );
    gauge(
        registry,
        "raft_applied_index",
        "The index of the last entry applied to this node's state (0: none)",
        m.last_applied.map_or(0, |l| l.index) as i64,
    );
    gauge(
        registry,
        "raft_snapshot_index",
        "The last index of this node's latest snapshot (0: none)",
        m.snapshot.map_or(0, |l| l.index) as i64,
    );
    gauge(
        registry,
        "raft_voters",
        "Voters in the membership this node knows",
        m.membership_config.membership().voter_ids().count() as i64,
    );
    // The leader's view of its followers; absent elsewhere.
    let lag = Family::<Labels, Gauge>::default();
    if let (true, Some(replication)) = (leads, &m.replication) {
        let last = m.last_log_index.unwrap_or(0);
        for (follower, matched) in replication.iter() {
            if *follower == sources.node_id {
                continue;
            }
            let matched = matched.map_or(0, |l| l.index);
            lag.get_or_create(&vec![("follower".into(), follower.to_string())])
                .set(last.saturating_sub(matched) as i64);
        }
    }
    registry.register(
        "raft_replication_lag",
        "On the leader: entries of its log each follower has not matched yet",
        lag,
    );
    let ack = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    if let (true, Some(ms)) = (leads, m.millis_since_quorum_ack) {
        ack.set(ms as f64 / 1000.0);
    }
    registry.register(
        "raft_quorum_ack_age_seconds",
        "On the leader: time since a quorum last acknowledged it (0 elsewhere)",
        ack,
    );
}

/// Tasks by queue and state, agents by state, outboxes by peer DC.
fn state_families(registry: &mut Registry, sources: &Sources) {
    // A copy shares the maps' nodes: the lock is held for the copy only.
    let state = sources.state.read().state.clone();
    let mut tasks: BTreeMap<(&str, TaskStateKind), i64> = BTreeMap::new();
    for task in state.tasks_after(None) {
        *tasks
            .entry((task.spec.queue.as_str(), task.state.kind()))
            .or_default() += 1;
    }
    // Every state of every queue defined, zero included, so a queue that
    // empties reads 0 instead of vanishing.
    for queue in state.queues() {
        for kind in TaskStateKind::ALL {
            tasks.entry((queue.name.as_str(), kind)).or_default();
        }
    }
    let family = Family::<Labels, Gauge>::default();
    for ((queue, kind), n) in &tasks {
        family
            .get_or_create(&vec![
                ("queue".into(), queue.to_string()),
                ("state".into(), kind.as_str().into()),
            ])
            .set(*n);
    }
    registry.register(
        "tasks",
        "Tasks in the applied state by queue and state (finished ones until retention removes them)",
        family,
    );
    let mut agents: BTreeMap<&str, i64> = [("ready", 0), ("draining", 0), ("down", 0)].into();
    for agent in state.agents() {
        let name = match agent.state {
            AgentState::Ready => "ready",
            AgentState::Draining { .. } => "draining",
            AgentState::Down => "down",
        };
        *agents.entry(name).or_default() += 1;
    }
    let family = Family::<Labels, Gauge>::default();
    for (name, n) in agents {
        family
            .get_or_create(&vec![("state".into(), name.into())])
            .set(n);
    }
    registry.register("agents", "Registered agents by state", family);
    let depth = Family::<Labels, Gauge>::default();
    let age = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let now_ms = crate::clock::now_ms();
    for (peer, outbox) in state.outboxes() {
        let labels = vec![("peer".into(), peer.to_string())];
        depth
            .get_or_create(&labels)
            .set(outbox.records.len() as i64);
        let oldest = outbox.oldest_ms().map_or(0, |t| now_ms.saturating_sub(t));
        age.get_or_create(&labels).set(oldest as f64 / 1000.0);
    }
    registry.register(
        "forwarding_outbox_records",
        "Records for a peer DC it has not acknowledged yet",
        depth,
    );
    registry.register(
        "forwarding_outbox_oldest_age_seconds",
        "Age of the oldest record a peer DC has not acknowledged (0: none), by this node's clock",
        age,
    );
}

#[cfg(test)]
#[path = "metrics_test.rs"]
mod tests;
