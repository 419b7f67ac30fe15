//! Golden-file tests of the scheduling policies: `testdata/*.txt` scenarios and their expected plans.
//!
//! Driven by [`crate::testing`], in the spirit of raft-rs's datadriven tests.
//! A file is a scenario read top to bottom; each line is a directive, `#`
//! starts a comment. A directive that prints something is followed by `----`
//! and the expected output, ending at a blank line. Run with
//! `TIDAL_REWRITE_GOLDEN=1` to rewrite the expected output from the actual
//! one (then review the diff).
//!
//! Directives (`key=value` arguments, lists comma-separated):
//!
//! - `queue NAME weight=W [strategy=least-loaded|wrr]`
//! - `agent ID slots=N [weight=W] [types=a,b] [pipelines=..] [models=..] [gpus=N] [gpu_mem=MB]
//!   [tenant=T|*]` (types default to `t2i`; GPUs all have `gpu_mem`, default 80000; with
//!   `tenant`, it registers with a new agent token `tok-ID` of that tenant, `*`: every tenant)
//! - `submit N [queue=Q] [type=T] [pipeline=P] [models=..] [priority=online|nearline|offline]
//!   [slots=S] [gpus=G] [gpu_mem=MB] [tenant=NAME] [attempts=N] [deadline=MS]` (at format version 4 a
//!   `SubmitWith` with the deadline, absolute, as the tasks' options)
//! - `version V`: raises the cluster's format version (4: the lifecycle rules)
//! - `headroom online|nearline|offline [slots=N] [gpus=N]`: the class's headroom
//! - `fail ID,ID,..`: the current attempts fail (`Finished`; at version 4 a
//!   task with attempts left waits out its backoff)
//! - `wake ID,ID,..`: moves the clock past the tasks' backoff and commits a
//!   `Wake` for them
//! - `tenant NAME [slots=N] [gpus=N] [weight=W]`: sets a tenant's
//!   max-running-slots, max-gpus and weight (raising the cluster's format
//!   version to the one tenants need first)
//! - `revoke TOKEN`: revokes a token (its agent stays bound to its tenant)
//! - `down AGENT`, `complete ID,ID,..` (success with the current token)
//! - `plan max=N [connected=a,b] [classes]` (default: all agents): prints the plan, one
//!   `task queue -> agent` line each (`task queue tenant -> agent` for a
//!   task with a tenant; with `classes`, the task's class and deadline
//!   after the queue), then per-queue and per-agent counts (and
//!   per-tenant counts when a task has a tenant), and applies it as one
//!   Assign, which must grant every pair.
//! - `reset-cursor`: forgets the dispatcher's round-robin memory.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use crate::access::types::{TenantLimits, ACCESS_VERSION};
use crate::access::{Role, TokenRecord};
use crate::command::{ApplyCtx, Command, Completion, Finished, Response};
use crate::dispatch::{plan, DispatchCursor};
use crate::lifecycle::{Headroom, TaskOptions, LIFECYCLE_VERSION};
use crate::model::{AgentId, AgentSpec, Gpu, Outcome, Priority, Strategy, TaskId, TaskSpec};
use crate::state::State;

struct Scenario {
    state: State,
    index: u64,
    /// Added to the log index to make an entry's time (`wake` moves it).
    clock: u64,
    cursor: DispatchCursor,
}

fn args(words: &[&str]) -> BTreeMap<String, String> {
    words
        .iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (w.to_string(), String::new()),
        })
        .collect()
}

fn list(args: &BTreeMap<String, String>, key: &str) -> Vec<String> {
    args.get(key)
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn num<T: std::str::FromStr>(args: &BTreeMap<String, String>, key: &str, default: T) -> T {
    args.get(key).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{key}={v} is not a number"))
    })
}

impl Scenario {
    fn apply(&mut self, cmd: Command) -> Response {
        self.index += 1;
        let r = self.state.apply(
            cmd,
            ApplyCtx {
                log_index: self.index,
                time_ms: self.index + self.clock,
            },
        );
        self.state.check_invariants().expect("invariants hold");
        r
    }

    /// The current token of each named task.
    fn holders(&self, ids: &str) -> Result<Vec<(TaskId, u64)>, String> {
        let mut out = Vec::new();
        for id in ids.split(',') {
            let id: TaskId = id.parse()?;
            let task = self.state.task(id).ok_or(format!("no task {id}"))?;
            let (_, token) = task
                .state
                .holder()
                .ok_or(format!("task {id} is not live"))?;
            out.push((id, token));
        }
        Ok(out)
    }

    /// Runs one directive; returns its output, if it prints any.
    fn run(&mut self, line: &str) -> Result<Option<String>, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (cmd, rest) = words.split_first().ok_or("empty directive")?;
        let a = args(rest.get(1..).unwrap_or_default());
        let first = rest.first().copied().unwrap_or_default();
        match *cmd {
            "queue" => {
                let strategy = a
                    .get("strategy")
                    .map_or(Ok(Strategy::LeastLoaded), |s| s.parse())?;
                let r = self.apply(Command::SetQueue {
                    name: first.into(),
                    weight: num(&a, "weight", 1),
                    strategy,
                });
                expect_ok(r)
            }
            "agent" => {
                let types = list(&a, "types");
                let spec = AgentSpec {
                    id: first.into(),
                    dc: "dc1".into(),
                    task_types: if types.is_empty() {
                        ["t2i".to_string()].into()
                    } else {
                        types.into_iter().collect()
                    },
                    pipelines: list(&a, "pipelines").into_iter().collect(),
                    models: list(&a, "models").into_iter().collect(),
                    slots: num(&a, "slots", 1),
                    weight: num(&a, "weight", 1),
                    gpus: (0..num(&a, "gpus", 0))
                        .map(|_| Gpu {
                            model: "gpu".into(),
                            memory_mb: num(&a, "gpu_mem", 80_000),
                        })
                        .collect(),
                    labels: BTreeMap::new(),
                };
                match a.get("tenant") {
                    None => expect_ok(self.apply(Command::RegisterAgent(spec))),
                    Some(tenant) => {
                        let token = format!("tok-{first}");
                        expect_ok(self.apply(Command::CreateToken {
                            id: token.clone(),
                            record: TokenRecord {
                                hash: [0; 32],
                                name: token.clone(),
                                role: Role::Agent,
                                tenant: (tenant != "*").then(|| tenant.clone()),
                                created_ms: 0,
                                expires_ms: None,
                                created_by: "token:golden".into(),
                                revoked_ms: None,
                            },
                            first_only: false,
                        }))?;
                        expect_ok(self.apply(Command::RegisterAgentAs { spec, token }))
                    }
                }
            }
            "version" => expect_ok(self.apply(Command::SetClusterVersion {
                version: first.parse().map_err(|_| format!("version {first:?}"))?,
            })),
            "headroom" => expect_ok(self.apply(Command::SetHeadroom {
                class: class(first)?,
                headroom: Headroom {
                    slots: num(&a, "slots", 0),
                    gpus: num(&a, "gpus", 0),
                },
            })),
            "fail" => {
                let list = self
                    .holders(first)?
                    .into_iter()
                    .map(|(task, token)| Finished {
                        task,
                        token,
                        outcome: Outcome {
                            success: false,
                            result: Vec::new(),
                            error: "exit 1".into(),
                            exit_code: 1,
                        },
                        timed_out: false,
                    })
                    .collect();
                match self.apply(Command::Finished(list)) {
                    Response::Completed(v) if v.iter().all(Result::is_ok) => Ok(None),
                    other => Err(format!("fail failed: {other:?}")),
                }
            }
            "wake" => {
                let mut ids = Vec::new();
                for id in first.split(',') {
                    let id: TaskId = id.parse()?;
                    let until = self
                        .state
                        .lifecycle()
                        .task(id)
                        .and_then(|l| l.not_before_ms)
                        .ok_or(format!("task {id} is not in backoff"))?;
                    // The next entry's time is past the backoff.
                    self.clock = self.clock.max(until.saturating_sub(self.index));
                    ids.push(id);
                }
                match self.apply(Command::Wake(ids)) {
                    Response::Items(v) if v.iter().all(Result::is_ok) => Ok(None),
                    other => Err(format!("wake failed: {other:?}")),
                }
            }
            "revoke" => expect_ok(self.apply(Command::RevokeToken { id: first.into() })),
            "submit" => {
                let n: usize = first
                    .parse()
                    .map_err(|_| format!("submit count {first:?}"))?;
                let priority = class(a.get("priority").map_or("nearline", String::as_str))?;
                let spec = TaskSpec {
                    task_type: a.get("type").cloned().unwrap_or_else(|| "t2i".into()),
                    pipeline: a.get("pipeline").cloned().unwrap_or_default(),
                    models: list(&a, "models"),
                    queue: a.get("queue").cloned().unwrap_or_default(),
                    priority,
                    slots: num(&a, "slots", 1),
                    gpus: num(&a, "gpus", 0),
                    gpu_memory_mb: num(&a, "gpu_mem", 0),
                    tenant: a.get("tenant").cloned().unwrap_or_default(),
                    max_attempts: num(&a, "attempts", 0),
                    ..TaskSpec::default()
                };
                let deadline = a.get("deadline").map(|_| num(&a, "deadline", 0u64));
                if self.state.cluster_version() < LIFECYCLE_VERSION {
                    if deadline.is_some() {
                        return Err("deadline needs `version 4` first".into());
                    }
                    return match self.apply(Command::Submit(vec![spec; n])) {
                        Response::Submitted(v) if v.iter().all(Result::is_ok) => Ok(None),
                        other => Err(format!("submit failed: {other:?}")),
                    };
                }
                let opts = TaskOptions {
                    deadline_ms: deadline,
                    ..TaskOptions::default()
                };
                match self.apply(Command::SubmitWith {
                    specs: vec![spec; n],
                    place: Vec::new(),
                    by: Vec::new(),
                    opts: vec![opts; n],
                }) {
                    Response::SubmittedPlaced { submitted, .. }
                        if submitted.iter().all(Result::is_ok) =>
                    {
                        Ok(None)
                    }
                    other => Err(format!("submit failed: {other:?}")),
                }
            }
            "tenant" => {
                if self.state.cluster_version() < ACCESS_VERSION {
                    expect_ok(self.apply(Command::SetClusterVersion {
                        version: ACCESS_VERSION,
                    }))?;
                }
                let limits = TenantLimits {
                    max_running_slots: a.get("slots").map(|_| num(&a, "slots", 0)),
                    max_gpus: a.get("gpus").map(|_| num(&a, "gpus", 0)),
                    weight: num(&a, "weight", 1),
                    ..TenantLimits::default()
                };
                expect_ok(self.apply(Command::SetTenant {
                    name: first.into(),
                    limits,
                }))
            }
            "down" => match self.apply(Command::AgentDown {
                agent: first.into(),
            }) {
                Response::AgentDown { .. } => Ok(None),
                other => Err(format!("down failed: {other:?}")),
            },
            "complete" => {
                let mut completions = Vec::new();
                for (id, token) in self.holders(first)? {
                    let outcome = Outcome {
                        success: true,
                        result: Vec::new(),
                        error: String::new(),
                        exit_code: 0,
                    };
                    completions.push(Completion {
                        task: id,
                        token,
                        outcome,
                    });
                }
                match self.apply(Command::Complete(completions)) {
                    Response::Completed(v) if v.iter().all(Result::is_ok) => Ok(None),
                    other => Err(format!("complete failed: {other:?}")),
                }
            }
            "reset-cursor" => {
                self.cursor = DispatchCursor::default();
                Ok(None)
            }
            "plan" => {
                let all = args(rest);
                let connected: BTreeSet<AgentId> = match all.get("connected") {
                    Some(v) => v
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                    None => self.state.agents().map(|a| a.spec.id.clone()).collect(),
                };
                let p = plan(
                    &self.state,
                    &connected,
                    num(&all, "max", 0),
                    &mut self.cursor,
                );
                let out = self.describe(&p, all.contains_key("classes"));
                match self.apply(Command::Assign(p.clone())) {
                    Response::Assigned { granted, rejected }
                        if rejected.is_empty() && granted.len() == p.len() =>
                    {
                        Ok(Some(out))
                    }
                    other => Err(format!("plan not granted in full: {other:?}")),
                }
            }
            other => Err(format!("unknown directive {other:?}")),
        }
    }

    fn describe(&self, p: &[(TaskId, AgentId)], classes: bool) -> String {
        let mut out = String::new();
        let mut queues: BTreeMap<&str, usize> = BTreeMap::new();
        let mut agents: BTreeMap<&str, usize> = BTreeMap::new();
        let mut tenants: BTreeMap<&str, usize> = BTreeMap::new();
        for (t, a) in p {
            let spec = self.state.task(*t).map(|t| &t.spec);
            let queue = spec.map_or("?", |s| s.queue.as_str());
            let tenant = spec.map_or("", |s| s.tenant.as_str());
            let mut queue = queue.to_string();
            if classes {
                let class = spec.map_or(Priority::Nearline, |s| s.priority);
                write!(queue, " {}", format!("{class:?}").to_lowercase())
                    .expect("writing to a String");
                let life = self.state.lifecycle().task(*t);
                if let Some(d) = life.and_then(|l| l.opts.deadline_ms) {
                    write!(queue, " deadline={d}").expect("writing to a String");
                }
            }
            if tenant.is_empty() {
                writeln!(out, "t{} {queue} -> {a}", t.0).expect("writing to a String");
            } else {
                writeln!(out, "t{} {queue} {tenant} -> {a}", t.0).expect("writing to a String");
                *tenants.entry(tenant).or_default() += 1;
            }
            *queues
                .entry(spec.map_or("?", |s| s.queue.as_str()))
                .or_default() += 1;
            *agents.entry(a).or_default() += 1;
        }
        let join = |m: &BTreeMap<&str, usize>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        if p.is_empty() {
            out.push_str("(nothing)\n");
        } else {
            writeln!(out, "queues: {}", join(&queues)).expect("writing to a String");
            writeln!(out, "agents: {}", join(&agents)).expect("writing to a String");
            if !tenants.is_empty() {
                writeln!(out, "tenants: {}", join(&tenants)).expect("writing to a String");
            }
        }
        out
    }
}

fn class(name: &str) -> Result<Priority, String> {
    match name {
        "online" => Ok(Priority::Online),
        "nearline" => Ok(Priority::Nearline),
        "offline" => Ok(Priority::Offline),
        other => Err(format!("unknown priority class {other}")),
    }
}

fn expect_ok(r: Response) -> Result<Option<String>, String> {
    match r {
        Response::Ok => Ok(None),
        other => Err(format!("expected Ok, got {other:?}")),
    }
}

#[test]
fn golden_scheduling_policies() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    crate::testing::run_dir(&dir, || {
        let mut s = Scenario {
            state: State::new(),
            index: 0,
            clock: 0,
            cursor: DispatchCursor::default(),
        };
        move |directive: &str| s.run(directive)
    });
}
