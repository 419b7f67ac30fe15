//! The agent's Prometheus metrics over plain HTTP on `--metrics-listen`
//! (off by default): `GET /metrics` answers the families below in the
//! OpenMetrics text format; every other path is 404. No TLS, no
//! authentication: bind loopback or a private network. The HTTP side is
//! [`tidal_client::plain_http`].
//!
//! Families (prefix `tidal_agent_`):
//! - `workers_running{type}` (gauge): workers alive now, by task type;
//! - `worker_exits_total{type, code}` (counter): workers gone, by how:
//!   `code` is the exit code `"0"`..`"255"` of a worker that exited on its
//!   own (one killed by a signal counts as 128 + the signal number, as
//!   shells report it), or one of `"timed_out"` (ended by the agent past
//!   its max-run), `"stopped"` (stopped on the leader's order),
//!   `"preempted"`, `"killed"` (cancel, self-fence, shutdown),
//!   `"spawn_failed"` (never started), `"unknown"` (its status could not
//!   be read);
//! - `tasks_completed_total{type, outcome}` (counter): completions
//!   reported to the leader, `outcome` one of `succeeded`, `failed`,
//!   `timed_out`, `stopped`, `preempted`, `handed_back` (not started for
//!   want of room, or while leaving);
//! - `connected` (gauge): 1 while a session is registered with a leader;
//! - `sessions_total` (counter): registrations with a leader (the first
//!   and every reconnect);
//! - `lease_remaining_seconds` (gauge): time left before the agent fences
//!   itself unless its lease is renewed (0: no lease).
//!
//! `type` is one of the agent's `--task-types`, or `other`, so the label
//! set stays as small as its configuration.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tidal_client::plain_http::{self, Response};
use tokio::time::Instant;

use crate::executor::ExecEvent;

/// The Content-Type of `/metrics`.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

/// The agent's metrics: written by its loop, read by the listener.
pub(crate) struct Metrics {
    task_types: Vec<String>,
    workers_running: Family<Labels, Gauge>,
    worker_exits: Family<Labels, Counter>,
    tasks_completed: Family<Labels, Counter>,
    connected: Gauge,
    sessions: Counter,
    lease_deadline: Mutex<Option<Instant>>,
    /// The `type` label of each live worker, by (task, token).
    workers: Mutex<BTreeMap<(String, u64), String>>,
}

impl Metrics {
    pub(crate) fn new(task_types: &[String]) -> Metrics {
        Metrics {
            task_types: task_types.to_vec(),
            workers_running: Family::default(),
            worker_exits: Family::default(),
            tasks_completed: Family::default(),
            connected: Gauge::default(),
            sessions: Counter::default(),
            lease_deadline: Mutex::new(None),
            workers: Mutex::new(BTreeMap::new()),
        }
    }

    /// The `type` label of a task type.
    pub(crate) fn type_label(&self, task_type: &str) -> String {
        match self.task_types.iter().any(|t| t == task_type) {
            true => task_type.to_string(),
            false => "other".to_string(),
        }
    }

    /// A worker started for this task under this token.
    pub(crate) fn worker_started(&self, task_id: &str, token: u64, task_type: &str) {
        let label = self.type_label(task_type);
        self.workers_running
            .get_or_create(&type_labels(&label))
            .inc();
        lock(&self.workers).insert((task_id.to_string(), token), label);
    }

    /// A worker could not start: counted as gone with `spawn_failed`.
    pub(crate) fn spawn_failed(&self, task_type: &str) {
        let label = self.type_label(task_type);
        self.exit(&label, "spawn_failed");
    }

    /// A worker's last event: counts its exit and returns its `type` label
    /// (`other` for a worker not seen starting). None for a checkpoint.
    pub(crate) fn worker_gone(&self, e: &ExecEvent) -> Option<String> {
        let (task_id, token, code) = match e {
            ExecEvent::Exited(c) => {
                let code = match c.exit_code {
                    _ if c.timed_out => "timed_out".to_string(),
                    n @ 0..=255 => n.to_string(),
                    _ => "unknown".to_string(),
                };
                (&c.task_id, c.token, code)
            }
            ExecEvent::Killed { task_id, token } => (task_id, *token, "killed".to_string()),
            ExecEvent::Stopped {
                task_id,
                token,
                preempted,
            } => {
                let code = if *preempted { "preempted" } else { "stopped" };
                (task_id, *token, code.to_string())
            }
            ExecEvent::Checkpoint(_) => return None,
        };
        let label = lock(&self.workers).remove(&(task_id.clone(), token));
        let label = match label {
            Some(l) => {
                self.workers_running.get_or_create(&type_labels(&l)).dec();
                l
            }
            None => "other".to_string(),
        };
        self.exit(&label, &code);
        Some(label)
    }

    fn exit(&self, label: &str, code: &str) {
        self.worker_exits
            .get_or_create(&vec![
                ("type".into(), label.into()),
                ("code".into(), code.into()),
            ])
            .inc();
    }

    /// A completion reported to the leader (see the module's docs for
    /// `outcome`).
    pub(crate) fn completed(&self, label: &str, outcome: &str) {
        self.tasks_completed
            .get_or_create(&vec![
                ("type".into(), label.into()),
                ("outcome".into(), outcome.into()),
            ])
            .inc();
    }

    /// A session was registered with a leader.
    pub(crate) fn registered(&self) {
        self.sessions.inc();
        self.connected.set(1);
    }

    /// No registered session any more.
    pub(crate) fn disconnected(&self) {
        self.connected.set(0);
    }

    pub(crate) fn set_lease_deadline(&self, deadline: Option<Instant>) {
        *lock(&self.lease_deadline) = deadline;
    }

    /// Every family, as of now, in the text exposition format.
    pub(crate) fn scrape(&self) -> String {
        let mut registry = Registry::with_prefix("tidal_agent");
        registry.register(
            "workers_running",
            "Workers alive now, by task type",
            self.workers_running.clone(),
        );
        registry.register(
            "worker_exits",
            "Workers gone, by task type and exit code (0-255) or how they ended: timed_out, \
             stopped, preempted, killed, spawn_failed, unknown",
            self.worker_exits.clone(),
        );
        registry.register(
            "tasks_completed",
            "Completions reported to the leader, by task type and outcome",
            self.tasks_completed.clone(),
        );
        registry.register(
            "connected",
            "1 while a session is registered with a leader, else 0",
            self.connected.clone(),
        );
        registry.register(
            "sessions",
            "Sessions registered with a leader (the first and every reconnect)",
            self.sessions.clone(),
        );
        let left = Gauge::<f64, AtomicU64>::default();
        if let Some(d) = *lock(&self.lease_deadline) {
            left.set(d.saturating_duration_since(Instant::now()).as_secs_f64());
        }
        registry.register(
            "lease_remaining_seconds",
            "Time before this agent stops its tasks unless its lease is renewed (0: no lease)",
            left,
        );
        let mut text = String::new();
        encode(&mut text, &registry).expect("writing to a String cannot fail");
        text
    }

    /// The answer to a request head (`None`: too long).
    pub(crate) fn answer(&self, head: Option<&[u8]>) -> Response {
        let Some(head) = head else {
            return Response::text(
                "431 Request Header Fields Too Large",
                "request head too long\n",
            );
        };
        let (method, path) = plain_http::request_line(head);
        match (method.as_str(), path.as_str()) {
            ("GET", "/metrics") => Response {
                status: "200 OK",
                content_type: CONTENT_TYPE,
                body: self.scrape(),
            },
            (_, "/metrics") => Response::text("405 Method Not Allowed", "GET only\n"),
            _ => Response::text("404 Not Found", "metrics are at /metrics\n"),
        }
    }
}

fn type_labels(label: &str) -> Labels {
    vec![("type".into(), label.into())]
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
#[path = "metrics_test.rs"]
mod tests;
