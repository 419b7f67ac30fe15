//! The recorded history: one JSON line per event, in the order events happen.
//!
//! Clients record `invoke` before an operation and `ok`, `fail` (certainly not
//! applied) or `info` (unknown outcome, e.g. a timeout) after it; the sink
//! records what workers presented to it; the observer records each node's
//! status; the runner records faults and the end-of-run checks. All
//! processes run on one machine, so one monotonic clock (`t`, nanoseconds
//! since the run began) orders every event.

use std::io::{BufRead, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One event. Fields that do not apply to an event are left out of its line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the history (0, 1, 2, ...).
    pub i: u64,
    /// Monotonic nanoseconds since the run began.
    pub t: u64,
    /// Who: `c3` (client process 3), `sink`, `observer`, `nemesis`, `runner`.
    pub proc: String,
    /// `invoke`, `ok`, `fail` or `info` for operations; `event` otherwise.
    #[serde(rename = "type")]
    pub kind: String,
    /// What: `submit`, `get`, `cancel`; `begin`, `commit`, `end` (sink);
    /// `status` (observer); a fault's name (nemesis); `final`, `converged`,
    /// `probe`, `log-panic` (runner).
    pub f: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The log index a write committed at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_index: Option<u64>,
    /// The applied index a read was served at (or a node's applied index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_log: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<u64>,
    /// How many times the node was (re)started before this observation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<u32>,
    /// A submit found its key already used and returned the existing task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existed: Option<bool>,
    /// Whether the sink accepted a presented token; whether a check passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<bool>,
    /// Cross-DC: for a task of the first DC, `DC/ID` where it was forwarded
    /// (its id there once known); for a task the second DC ingested,
    /// `DC/ID` of its origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// The GPU devices a worker run was given (`TIDAL_GPU_IDS`, e.g.
    /// `0,2`), on its `begin`, when it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<String>,
    /// The sink's number of one worker run (one worker process's
    /// connection): its `begin`, `commit` and `end` carry the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<u64>,
    /// The time a checker allows after this event, in ms (a revocation:
    /// the servers' heartbeat interval, within which the revoked session
    /// must be closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_ms: Option<u64>,
    /// How many times online work preempted the task (reads, the end state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempted: Option<u32>,
    /// Whether a read saw the task suspended in place (only when it was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<bool>,
    /// Free text: an error message, a fault's targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Event {
    pub fn new(proc: &str, kind: &str, f: &str) -> Event {
        Event {
            proc: proc.to_string(),
            kind: kind.to_string(),
            f: f.to_string(),
            ..Event::default()
        }
    }

    pub fn is(&self, kind: &str, f: &str) -> bool {
        self.kind == kind && self.f == f
    }
}

/// A history being recorded: shared by every recording task, written through
/// to `history.jsonl` as it goes so a crash of the harness keeps it.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Inner>>,
    start: Instant,
}

struct Inner {
    events: Vec<Event>,
    out: Option<BufWriter<std::fs::File>>,
}

impl Recorder {
    /// A recorder writing to `path` (or only to memory when `None`).
    pub fn new(path: Option<&Path>) -> anyhow::Result<Recorder> {
        let out = match path {
            Some(p) => Some(BufWriter::new(
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
            )),
            None => None,
        };
        Ok(Recorder {
            inner: Arc::new(Mutex::new(Inner {
                events: Vec::new(),
                out,
            })),
            start: Instant::now(),
        })
    }

    /// Nanoseconds since the run began.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Appends an event, stamping its position and time; returns it.
    pub fn record(&self, mut e: Event) -> Event {
        let mut inner = self.inner.lock().expect("history lock poisoned");
        e.i = inner.events.len() as u64;
        e.t = self.now();
        if let Some(out) = inner.out.as_mut() {
            // A failed write loses the file copy, never the in-memory history.
            if serde_json::to_writer(&mut *out, &e).is_ok() {
                let _ = out.write_all(b"\n");
            }
        }
        inner.events.push(e.clone());
        e
    }

    pub fn flush(&self) {
        if let Some(out) = self
            .inner
            .lock()
            .expect("history lock poisoned")
            .out
            .as_mut()
        {
            let _ = out.flush();
        }
    }

    /// A copy of every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.inner
            .lock()
            .expect("history lock poisoned")
            .events
            .clone()
    }
}

/// Reads a history written by a [`Recorder`].
pub fn load(path: &Path) -> anyhow::Result<Vec<Event>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut events = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        events.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: not an event", path.display(), n + 1))?,
        );
    }
    Ok(events)
}

/// One client operation: its invocation and its completion (if any).
#[derive(Clone, Debug)]
pub struct Op<'a> {
    pub invoke: &'a Event,
    /// `ok`, `fail` or `info`; `None` when the run ended before it completed.
    pub done: Option<&'a Event>,
}

impl<'a> Op<'a> {
    pub fn ok(&self) -> Option<&'a Event> {
        self.done.filter(|d| d.kind == "ok")
    }

    pub fn f(&self) -> &str {
        &self.invoke.f
    }

    /// When it completed; an unfinished operation completes "never".
    pub fn end(&self) -> u64 {
        self.done.map(|d| d.t).unwrap_or(u64::MAX)
    }
}

/// Pairs every client invocation with the completion of the same process.
/// A process has at most one operation in flight.
pub fn ops(events: &[Event]) -> Vec<Op<'_>> {
    let mut open: std::collections::HashMap<&str, usize> = Default::default();
    let mut out: Vec<Op> = Vec::new();
    for e in events {
        match e.kind.as_str() {
            "invoke" => {
                open.insert(&e.proc, out.len());
                out.push(Op {
                    invoke: e,
                    done: None,
                });
            }
            "ok" | "fail" | "info" => {
                if let Some(at) = open.remove(e.proc.as_str()) {
                    out[at].done = Some(e);
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_to_a_file_and_loads_back_paired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let r = Recorder::new(Some(&path)).unwrap();
        r.record(Event {
            task: Some("t1".into()),
            ..Event::new("c1", "invoke", "get")
        });
        r.record(Event::new("c2", "invoke", "submit"));
        r.record(Event {
            state: Some("pending".into()),
            ..Event::new("c1", "ok", "get")
        });
        r.flush();
        let events = load(&path).unwrap();
        assert_eq!(events, r.events());
        assert_eq!(
            events.iter().map(|e| e.i).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert!(events.windows(2).all(|w| w[0].t <= w[1].t));
        let ops = ops(&events);
        assert_eq!(ops.len(), 2);
        assert_eq!(
            ops[0].ok().and_then(|d| d.state.as_deref()),
            Some("pending")
        );
        assert!(ops[1].done.is_none());
        assert_eq!(ops[1].end(), u64::MAX);
    }
}
