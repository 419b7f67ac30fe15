//! The status page at `/` of the metrics listener and its data at `/status.json`.
//!
//! One read of what the node knows, as of the request: its Raft view
//! (members, leader, term, indexes; on the leader each follower's matched
//! index) and its applied state (queues with their depth, agents with their
//! load, the [`RECENT_TASKS`] tasks updated last, the cross-DC outboxes).
//! `/` is that read rendered as HTML, complete without scripts; an inline
//! script then fetches `/status.json` every [`REFRESH_MS`] and renders it
//! again (without scripts a `<noscript>` refresh reloads the page).
//!
//! Everything the page needs is in the binary: inline CSS and script, no
//! fonts or images, and a Content-Security-Policy that lets the page load
//! nothing else and run only its own script (by hash). Every name that comes
//! from users (queues, task types, agent ids, labels) is escaped on the
//! server and set as text (`textContent`) by the script.
//!
//! Cost: the state is copied under its lock (its maps share their nodes),
//! then one pass over the tasks counts them per queue and keeps the most
//! recently updated in a heap of at most [`RECENT_TASKS`]: no sort of every
//! task per request.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Write as _;
use std::sync::LazyLock;
use std::time::Instant;

use base64::Engine as _;
use openraft::{BasicNode, RaftMetrics, ServerState};
use tidal_core::model::{AgentState, Strategy, TaskStateKind};
use tidal_core::State;
use tidal_store::{Raft, StateHandle};

use crate::links::PeerTable;

/// How many tasks the page lists: those updated last.
pub const RECENT_TASKS: usize = 50;
/// How often the page fetches `/status.json`.
pub const REFRESH_MS: u64 = 2000;

/// A page of the status, by path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    /// `/`: the status page.
    Html,
    /// `/status.json`: the status page's data.
    Json,
}

impl Page {
    /// The page at `path` (without its query), if any.
    pub fn of(path: &str) -> Option<Page> {
        match path {
            "/" => Some(Page::Html),
            "/status.json" => Some(Page::Json),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Page::Html => "text/html; charset=utf-8",
            Page::Json => "application/json",
        }
    }

    /// The page of node `node` with Raft `raft` and applied state `state`,
    /// as of now.
    pub fn render(
        self,
        node: u64,
        raft: &Raft,
        state: &StateHandle,
        peers: Option<&PeerTable>,
    ) -> String {
        let mut status = Status::read(node, raft, state);
        if let Some(peers) = peers {
            status.add_links(peers, Instant::now());
        }
        match self {
            Page::Html => status.html(),
            Page::Json => status.json(),
        }
    }
}

/// One read of a node's status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub node: u64,
    /// leader, follower, candidate, learner or shutdown.
    pub role: &'static str,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub members: Vec<Member>,
    pub queues: Vec<QueueRow>,
    pub agents: Vec<AgentRow>,
    /// Every task in the applied state.
    pub tasks_total: u64,
    /// The tasks updated last, newest first (at most [`RECENT_TASKS`]).
    pub recent: Vec<TaskRow>,
    pub links: Vec<LinkRow>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub addr: String,
    pub voter: bool,
    /// On the leader: the last index of its log this member matched.
    pub matched: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueRow {
    pub name: String,
    pub weight: u32,
    pub strategy: &'static str,
    /// Pending tasks: the queue's depth.
    pub pending: u64,
    /// Assigned or running.
    pub in_flight: u64,
    /// Every task of the queue, finished ones until retention removes them.
    pub tasks: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentRow {
    pub id: String,
    pub dc: String,
    /// ready, draining or down.
    pub state: &'static str,
    pub weight: u32,
    pub slots_in_use: u32,
    pub slots: u32,
    pub gpus_in_use: u32,
    pub gpus: u32,
    /// Tasks assigned to or running on it.
    pub tasks: u64,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRow {
    /// As the API shows it (`t0000000042`).
    pub id: String,
    pub task_type: String,
    pub queue: String,
    pub state: &'static str,
    /// The agent holding it or that last held it; for a forwarded task,
    /// the DC it went to as `dc:NAME`.
    pub agent: String,
    /// Since its last update, by this node's clock.
    pub age_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkRow {
    pub peer: String,
    /// Records the peer has not acknowledged.
    pub records: u64,
    /// The highest sequence the peer acknowledged.
    pub acked: u64,
    /// The age of the oldest record not acknowledged, by this node's clock.
    pub oldest_age_ms: Option<u64>,
    /// The link as this node's shipper last saw it (the leader's: a
    /// follower ships nothing): up, down, unknown (not tried), or "" for an
    /// outbox of a DC that is no longer configured.
    pub link: &'static str,
    /// Since the peer last answered an exchange.
    pub last_ack_age_ms: Option<u64>,
    /// Why the last exchange failed, while the link is down.
    pub last_error: String,
}

impl Status {
    /// Adds what the links know of each configured peer DC (in preference
    /// order, first), whether or not it has an outbox yet; outboxes of DCs
    /// no longer configured stay after them.
    pub fn add_links(&mut self, peers: &PeerTable, now: Instant) {
        let mut rows = Vec::with_capacity(self.links.len() + peers.peers().len());
        for p in peers.peers() {
            let info = peers.get(&p.dc);
            let mut row = match self.links.iter().position(|l| l.peer == p.dc) {
                Some(i) => self.links.remove(i),
                None => LinkRow {
                    peer: p.dc.clone(),
                    records: 0,
                    acked: 0,
                    oldest_age_ms: None,
                    link: "",
                    last_ack_age_ms: None,
                    last_error: String::new(),
                },
            };
            row.link = match info.up {
                None => "unknown",
                Some(true) => "up",
                Some(false) => "down",
            };
            row.last_ack_age_ms = info
                .last_ack
                .map(|t| now.saturating_duration_since(t).as_millis() as u64);
            row.last_error = info.last_error;
            rows.push(row);
        }
        rows.append(&mut self.links);
        self.links = rows;
    }

    /// What node `node` knows as of now.
    pub fn read(node: u64, raft: &Raft, state: &StateHandle) -> Status {
        let metrics = raft.metrics().borrow().clone();
        // A copy shares the maps' nodes: the lock is held for the copy only.
        let state = state.read().state.clone();
        Status::of(node, &metrics, &state, crate::clock::now_ms(), RECENT_TASKS)
    }

    /// The status of node `node` from its Raft metrics and applied state at
    /// `now_ms`, listing the `recent` tasks updated last.
    pub fn of(
        node: u64,
        metrics: &RaftMetrics<u64, BasicNode>,
        state: &State,
        now_ms: u64,
        recent: usize,
    ) -> Status {
        let membership = metrics.membership_config.membership();
        let leads = metrics.current_leader == Some(node);
        let replication = metrics.replication.as_ref().filter(|_| leads);
        let members = membership
            .nodes()
            .map(|(id, n)| Member {
                id: *id,
                addr: n.addr.clone(),
                voter: membership.voter_ids().any(|v| v == *id),
                matched: replication
                    .and_then(|r| r.get(id).copied())
                    .map(|l| l.map_or(0, |l| l.index)),
            })
            .collect();
        let role = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };

        // One pass over the tasks: counts per queue, and a min-heap of the
        // `recent` newest by (update time, id) whose top is the one to drop.
        let mut counts: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        let mut newest = BinaryHeap::with_capacity(recent);
        let mut tasks_total = 0;
        for task in state.tasks_after(None) {
            tasks_total += 1;
            let (in_flight, all) = counts.entry(task.spec.queue.as_str()).or_default();
            *all += 1;
            if matches!(
                task.state.kind(),
                TaskStateKind::Assigned | TaskStateKind::Running
            ) {
                *in_flight += 1;
            }
            let key = Reverse((task.updated_ms, task.id));
            if newest.len() < recent {
                newest.push(key);
            } else if newest.peek().is_some_and(|oldest| key < *oldest) {
                // Newer than the oldest kept (`Reverse` orders it first).
                newest.pop();
                newest.push(key);
            }
        }
        let recent = newest
            .into_sorted_vec()
            .into_iter()
            .filter_map(|Reverse((_, id))| state.task(id))
            .map(|task| TaskRow {
                id: task.id.to_string(),
                task_type: task.spec.task_type.clone(),
                queue: task.spec.queue.clone(),
                state: task.state.kind().as_str(),
                agent: match &task.state {
                    tidal_core::model::TaskState::Forwarded { dc, .. } => format!("dc:{dc}"),
                    s => s.last_holder().0.cloned().unwrap_or_default(),
                },
                age_ms: now_ms.saturating_sub(task.updated_ms),
            })
            .collect();

        let queues = state
            .queues()
            .map(|q| {
                let (in_flight, tasks) = counts.get(q.name.as_str()).copied().unwrap_or_default();
                QueueRow {
                    name: q.name.clone(),
                    weight: q.weight,
                    strategy: match q.strategy {
                        Strategy::LeastLoaded => "least-loaded",
                        Strategy::WeightedRoundRobin => "weighted-round-robin",
                    },
                    pending: state.pending_in_queue(&q.name) as u64,
                    in_flight,
                    tasks,
                }
            })
            .collect();
        let agents = state
            .agents()
            .map(|a| AgentRow {
                id: a.spec.id.clone(),
                dc: a.spec.dc.clone(),
                state: match a.state {
                    AgentState::Ready => "ready",
                    AgentState::Draining { .. } => "draining",
                    AgentState::Down => "down",
                },
                weight: a.spec.weight,
                slots_in_use: a.slots_in_use,
                slots: a.spec.slots,
                gpus_in_use: a.gpus_in_use,
                gpus: a.spec.gpus.len() as u32,
                tasks: a.tasks.len() as u64,
                labels: a.spec.labels.clone(),
            })
            .collect();
        let links = state
            .outboxes()
            .map(|(peer, outbox)| LinkRow {
                peer: peer.to_string(),
                records: outbox.records.len() as u64,
                acked: outbox.acked,
                oldest_age_ms: outbox.oldest_ms().map(|t| now_ms.saturating_sub(t)),
                link: "",
                last_ack_age_ms: None,
                last_error: String::new(),
            })
            .collect();
        Status {
            node,
            role,
            term: metrics.current_term,
            leader: metrics.current_leader,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.map_or(0, |l| l.index),
            members,
            queues,
            agents,
            tasks_total,
            recent,
            links,
        }
    }

    /// The status as one JSON object (what the page's script renders).
    pub fn json(&self) -> String {
        let mut j = String::with_capacity(4096);
        let opt = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
        let _ = write!(
            j,
            "{{\"node\":{},\"role\":{},\"term\":{},\"leader\":{},\"last_log_index\":{},\
             \"applied_index\":{},\"tasks_total\":{},\"members\":[",
            self.node,
            json_str(self.role),
            self.term,
            opt(self.leader),
            self.last_log_index,
            self.applied_index,
            self.tasks_total,
        );
        for (i, m) in self.members.iter().enumerate() {
            let _ = write!(
                j,
                "{}{{\"id\":{},\"addr\":{},\"voter\":{},\"matched\":{}}}",
                comma(i),
                m.id,
                json_str(&m.addr),
                m.voter,
                opt(m.matched)
            );
        }
        j.push_str("],\"queues\":[");
        for (i, q) in self.queues.iter().enumerate() {
            let _ = write!(
                j,
                "{}{{\"name\":{},\"weight\":{},\"strategy\":{},\"pending\":{},\"in_flight\":{},\
                 \"tasks\":{}}}",
                comma(i),
                json_str(&q.name),
                q.weight,
                json_str(q.strategy),
                q.pending,
                q.in_flight,
                q.tasks
            );
        }
        j.push_str("],\"agents\":[");
        for (i, a) in self.agents.iter().enumerate() {
            let _ = write!(
                j,
                "{}{{\"id\":{},\"dc\":{},\"state\":{},\"weight\":{},\"slots_in_use\":{},\
                 \"slots\":{},\"gpus_in_use\":{},\"gpus\":{},\"tasks\":{},\"labels\":{{",
                comma(i),
                json_str(&a.id),
                json_str(&a.dc),
                json_str(a.state),
                a.weight,
                a.slots_in_use,
                a.slots,
                a.gpus_in_use,
                a.gpus,
                a.tasks
            );
            for (k, (key, value)) in a.labels.iter().enumerate() {
                let _ = write!(j, "{}{}:{}", comma(k), json_str(key), json_str(value));
            }
            j.push_str("}}");
        }
        j.push_str("],\"recent\":[");
        for (i, t) in self.recent.iter().enumerate() {
            let _ = write!(
                j,
                "{}{{\"id\":{},\"type\":{},\"queue\":{},\"state\":{},\"agent\":{},\"age_ms\":{}}}",
                comma(i),
                json_str(&t.id),
                json_str(&t.task_type),
                json_str(&t.queue),
                json_str(t.state),
                json_str(&t.agent),
                t.age_ms
            );
        }
        j.push_str("],\"links\":[");
        for (i, l) in self.links.iter().enumerate() {
            let _ = write!(
                j,
                "{}{{\"peer\":{},\"link\":{},\"records\":{},\"acked\":{},\"oldest_age_ms\":{},\
                 \"last_ack_age_ms\":{},\"last_error\":{}}}",
                comma(i),
                json_str(&l.peer),
                json_str(l.link),
                l.records,
                l.acked,
                opt(l.oldest_age_ms),
                opt(l.last_ack_age_ms),
                json_str(&l.last_error)
            );
        }
        j.push_str("]}");
        j
    }

    /// The status page: this read rendered, and the script that renders
    /// `/status.json` in its place every [`REFRESH_MS`].
    pub fn html(&self) -> String {
        let mut h = String::with_capacity(8192);
        let _ = write!(
            h,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <meta http-equiv=\"Content-Security-Policy\" content=\"{}\">\
             <title>tidal node {}</title><style>{STYLE}</style>\
             <noscript><meta http-equiv=\"refresh\" content=\"{}\"></noscript></head>\n<body>\
             <main id=\"status\" data-source=\"server\">",
            escape(&CSP),
            self.node,
            REFRESH_MS / 1000,
        );
        self.body(&mut h);
        let _ = write!(
            h,
            "</main>\n<p id=\"live\">rendered by the server; the page refreshes itself every {} s</p>\n\
             <script>{SCRIPT}</script></body></html>\n",
            REFRESH_MS / 1000
        );
        h
    }

    /// The contents of `<main>`; the script builds the same from JSON.
    fn body(&self, h: &mut String) {
        let leader = self
            .leader
            .map_or("none known".to_string(), |l| l.to_string());
        let _ = write!(
            h,
            "<h1>tidal node {}</h1><p class=\"summary\">{} · term {} · leader \
             <b id=\"leader\">{}</b> · log {} · applied {} · {} tasks</p>",
            self.node,
            self.role,
            self.term,
            leader,
            self.last_log_index,
            self.applied_index,
            self.tasks_total
        );
        let rows = self
            .members
            .iter()
            .map(|m| {
                let mut role = Vec::new();
                if self.leader == Some(m.id) {
                    role.push("leader");
                }
                if m.id == self.node {
                    role.push("this node");
                }
                vec![
                    m.id.to_string(),
                    m.addr.clone(),
                    if m.voter { "voter" } else { "learner" }.into(),
                    role.join(", "),
                    m.matched.map_or(String::new(), |i| i.to_string()),
                ]
            })
            .collect();
        table(
            h,
            "Members",
            &["id", "address", "kind", "role", "matched"],
            rows,
        );
        let rows = self
            .queues
            .iter()
            .map(|q| {
                vec![
                    q.name.clone(),
                    q.weight.to_string(),
                    q.strategy.into(),
                    q.pending.to_string(),
                    q.in_flight.to_string(),
                    q.tasks.to_string(),
                ]
            })
            .collect();
        table(
            h,
            "Queues",
            &[
                "queue",
                "weight",
                "strategy",
                "pending",
                "in flight",
                "tasks",
            ],
            rows,
        );
        let rows = self
            .agents
            .iter()
            .map(|a| {
                vec![
                    a.id.clone(),
                    a.dc.clone(),
                    a.state.into(),
                    format!("{}/{}", a.slots_in_use, a.slots),
                    format!("{}/{}", a.gpus_in_use, a.gpus),
                    a.tasks.to_string(),
                    a.weight.to_string(),
                    labels(&a.labels),
                ]
            })
            .collect();
        table(
            h,
            "Agents",
            &[
                "agent", "dc", "state", "slots", "gpus", "tasks", "weight", "labels",
            ],
            rows,
        );
        let rows = self
            .recent
            .iter()
            .map(|t| {
                vec![
                    t.id.clone(),
                    t.task_type.clone(),
                    t.queue.clone(),
                    t.state.into(),
                    t.agent.clone(),
                    age(t.age_ms),
                ]
            })
            .collect();
        table(
            h,
            &format!(
                "Recent tasks ({} of {}, last updated first)",
                self.recent.len(),
                self.tasks_total
            ),
            &["id", "type", "queue", "state", "agent", "age"],
            rows,
        );
        let rows = self
            .links
            .iter()
            .map(|l| {
                vec![
                    l.peer.clone(),
                    l.link.to_string(),
                    l.last_ack_age_ms.map_or(String::new(), age),
                    l.records.to_string(),
                    l.acked.to_string(),
                    l.oldest_age_ms.map_or(String::new(), age),
                    l.last_error.clone(),
                ]
            })
            .collect();
        table(
            h,
            "Cross-DC links",
            &[
                "peer dc",
                "link",
                "last ack",
                "outbox records",
                "acked",
                "oldest",
                "last error",
            ],
            rows,
        );
    }
}

/// A `<section>` with a heading and a table; every cell escaped.
fn table(h: &mut String, title: &str, columns: &[&str], rows: Vec<Vec<String>>) {
    let _ = write!(h, "<section><h2>{}</h2><table><thead><tr>", escape(title));
    for c in columns {
        let _ = write!(h, "<th>{}</th>", escape(c));
    }
    h.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(
            h,
            "<tr><td class=\"none\" colspan=\"{}\">none</td></tr>",
            columns.len()
        );
    }
    for row in rows {
        h.push_str("<tr>");
        for cell in row {
            let _ = write!(h, "<td>{}</td>", escape(&cell));
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table></section>");
}

/// `k=v` pairs, comma-separated.
fn labels(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A duration in its two largest units: `42s`, `3m 7s`, `5h 2m`, `2d 4h`.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

fn comma(i: usize) -> &'static str {
    if i == 0 {
        ""
    } else {
        ","
    }
}

/// `s` safe in HTML text and in quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` as a JSON string; `<`, `>` and `&` escaped too, so the JSON stays
/// inert wherever it is pasted.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}\
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.2em 0 .3em}\
table{border-collapse:collapse;min-width:30em}\
th,td{text-align:left;padding:.15em .8em .15em 0;border-bottom:1px solid #ddd;\
font-variant-numeric:tabular-nums;white-space:nowrap}\
th{color:#555;font-weight:600}td.none{color:#888}\
.summary{color:#444}#live{color:#888;font-size:.9em}#live.stale{color:#b00}\
@media (prefers-color-scheme:dark){body{color:#ddd;background:#111}\
th,td{border-color:#333}th,.summary{color:#aaa}}";

/// Fetches `/status.json` every REFRESH_MS and renders it in place of
/// `<main>`, as `Status::body` does, setting every value as text.
const SCRIPT: &str = r#""use strict";
(function () {
  const REFRESH = 2000;
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function age(ms) {
    const s = Math.floor(ms / 1000);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }
  function table(main, title, columns, rows) {
    const section = el("section");
    section.appendChild(el("h2", title));
    const t = el("table"), head = el("thead"), hr = el("tr"), body = el("tbody");
    columns.forEach(function (c) { hr.appendChild(el("th", c)); });
    head.appendChild(hr);
    if (rows.length === 0) {
      const td = el("td", "none", "none");
      td.colSpan = columns.length;
      const tr = el("tr");
      tr.appendChild(td);
      body.appendChild(tr);
    }
    rows.forEach(function (row) {
      const tr = el("tr");
      row.forEach(function (cell) { tr.appendChild(el("td", cell)); });
      body.appendChild(tr);
    });
    t.appendChild(head);
    t.appendChild(body);
    section.appendChild(t);
    main.appendChild(section);
  }
  function render(s) {
    const main = el("main");
    main.id = "status";
    main.dataset.source = "json";
    main.appendChild(el("h1", "tidal node " + s.node));
    const p = el("p", null, "summary");
    p.appendChild(document.createTextNode(s.role + " \u00b7 term " + s.term + " \u00b7 leader "));
    const b = el("b", s.leader === null ? "none known" : s.leader);
    b.id = "leader";
    p.appendChild(b);
    p.appendChild(document.createTextNode(" \u00b7 log " + s.last_log_index + " \u00b7 applied " +
      s.applied_index + " \u00b7 " + s.tasks_total + " tasks"));
    main.appendChild(p);
    table(main, "Members", ["id", "address", "kind", "role", "matched"], s.members.map(function (m) {
      const role = [];
      if (s.leader === m.id) role.push("leader");
      if (s.node === m.id) role.push("this node");
      return [m.id, m.addr, m.voter ? "voter" : "learner", role.join(", "),
        m.matched === null ? "" : m.matched];
    }));
    table(main, "Queues", ["queue", "weight", "strategy", "pending", "in flight", "tasks"],
      s.queues.map(function (q) {
        return [q.name, q.weight, q.strategy, q.pending, q.in_flight, q.tasks];
      }));
    table(main, "Agents", ["agent", "dc", "state", "slots", "gpus", "tasks", "weight", "labels"],
      s.agents.map(function (a) {
        const labels = Object.keys(a.labels).sort().map(function (k) { return k + "=" + a.labels[k]; });
        return [a.id, a.dc, a.state, a.slots_in_use + "/" + a.slots, a.gpus_in_use + "/" + a.gpus,
          a.tasks, a.weight, labels.join(", ")];
      }));
    table(main, "Recent tasks (" + s.recent.length + " of " + s.tasks_total + ", last updated first)",
      ["id", "type", "queue", "state", "agent", "age"], s.recent.map(function (t) {
        return [t.id, t.type, t.queue, t.state, t.agent, age(t.age_ms)];
      }));
    table(main, "Cross-DC links",
      ["peer dc", "link", "last ack", "outbox records", "acked", "oldest", "last error"],
      s.links.map(function (l) {
        return [l.peer, l.link, l.last_ack_age_ms === null ? "" : age(l.last_ack_age_ms), l.records,
          l.acked, l.oldest_age_ms === null ? "" : age(l.oldest_age_ms), l.last_error];
      }));
    document.getElementById("status").replaceWith(main);
  }
  function tick() {
    const live = document.getElementById("live");
    fetch("/status.json", { cache: "no-store" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (s) {
        render(s);
        live.textContent = "live: updated " + new Date().toLocaleTimeString() +
          ", every " + REFRESH / 1000 + " s";
        live.className = "";
      })
      .catch(function (e) {
        live.textContent = "stale: " + e.message + "; retrying every " + REFRESH / 1000 + " s";
        live.className = "stale";
      })
      .finally(function () { setTimeout(tick, REFRESH); });
  }
  tick();
})();
"#;

/// Lets the page load nothing and run only its own style and script.
static CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = |text: &str| {
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    };
    format!(
        "default-src 'none'; connect-src 'self'; style-src 'sha256-{}'; \
         script-src 'sha256-{}'; base-uri 'none'; form-action 'none'",
        hash(STYLE),
        hash(SCRIPT)
    )
});

#[cfg(test)]
#[path = "status_test.rs"]
mod tests;
