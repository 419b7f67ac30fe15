//! Scenario-file tests of the leader engine: `testdata/engine/*.txt`, run against a real `State`.
//!
//! The format of tidal-core's golden tests, driven by `tidal_core::testing`:
//! a file is read top to bottom, one directive a line, `#` starts a comment;
//! a directive that prints is followed by `----` and the expected output up
//! to a blank line. `TIDAL_REWRITE_GOLDEN=1` rewrites the expected output
//! from the actual one (then review the diff).
//!
//! The runner keeps a real `tidal_core::State`. The engine's proposals are
//! applied to it (`State::apply`, so they pass real validation) only when the
//! file says `commit`. Time starts at mono 0 and wall [`WALL0`]; entries
//! applied here carry the wall time.
//!
//! Directives (`key=value` arguments, lists comma-separated):
//!
//! - `config [handlers=a,b] [seed=N] [agent_ttl=MS] [heartbeat=MS] [retain=MS]
//!   [raft_heartbeat=MS] [election_max=MS] [supported=V] [peers=dc2,..]
//!   [forward_after=MS] [outbox_limit=N] [deny=QUEUE,..] [bootstrap=ID]
//!   [gpu_weights=MODEL:MILLI,..|none] [warm_weight=MILLI]`: a
//!   new engine (before the first event); `bootstrap` gives it a bootstrap
//!   token of that id (its hash: 32 bytes of 7); `gpu_weights` are the
//!   configured GPU weights (default the built-ins; `none`: an empty map).
//! - `reset`: starts over (a new state, no engine, the default config).
//! - `time +MS`: advances both clocks.
//! - State, applied directly: `agent ID [slots=N] [types=a,b]`,
//!   `queue NAME [weight=W]`, `submit N [type=T] [queue=Q]
//!   [prio=online|nearline|offline] [slots=N] [suspendable] [grace=MS]` (any
//!   of the last four: submitted with lifecycle options, `SubmitWith`),
//!   `assign AGENT ID,..` (ids may be ranges: `1-20`), `start ID,..` (the
//!   holder reports them running), `complete ID,..` (success with the current
//!   token), `down AGENT`, `version V` (raises the cluster format version),
//!   `gpu-weights MODEL:MILLI,..` (applies `SetGpuWeights`),
//!   `token ID [role=admin|user|agent] [tenant=T] [ttl=MS]` (creates a token,
//!   hash 32 bytes of 1, expiring MS from now), `revoke ID` (revokes it);
//!   `agent ID [token=T]` registers with `RegisterAgentAs` under token T.
//! - Events: `established`, `tick`, `work submitted|freed|queue-set|drain-changed|ingested`,
//!   `commit #ID` (applies the proposal, unless `apply #ID` did, and prints
//!   its response), `apply #ID` (applies the proposal and prints its
//!   response, the engine not told yet: an event may come between),
//!   `fail #ID [precondition] [ERROR]` (`precondition`: refused for good, as
//!   a format version that lacks the command), `formats ID=V@AGE|ID=never,..` (the other members'
//!   supported format versions and their replies' age in ms),
//!   `peers DC=TYPES:FREE[:PENDING]|DC=none,..` (the peer DCs' summaries:
//!   one group of agents with those task types, `+`-separated, and free slots),
//!   `answer DC ok [hwm=H] [verdicts=SEQ,..] [refused=SEQ,..] [summary=TYPES:FREE]`
//!   or `answer DC err=WHY` (a peer's answer to the exchange in flight).
//! - `forward DC ID,..`: applies a `Forward` of those tasks to that peer
//!   directly (its outbox records).
//! - `task ID,..`: prints each task's state, holder and attempt.
//! - Agent sessions (`leases`, `drain`): `open AGENT [inst=I] [addr=A] [token=T]
//!   [running=ID:TOKEN,..] [fenced=ID:TOKEN,..] [warm=MODEL,..]` (attached at the last applied index; an ID
//!   that is not a number goes as sent; `token`: the token it opened with;
//!   `warm`: the models it has loaded), `close AGENT gen=G` (the session
//!   ended), `hb AGENT gen=G seq=S [noquorum] [warm=MODEL,..]`, `revoked` (a token's revoke
//!   applied), `holds AGENT gen=G ID:TOKEN,..` (prints which of those
//!   assignments the session may report started or ended), `forget AGENT`, `granted
//!   ID,..` (each task's current assignment, committed elsewhere), `cancel
//!   ID` (applied; its holder, if any, told), `drain AGENT [deadline=MS]` (applied,
//!   deadline from now; then `work drain-changed`), `stopped AGENT gen=G
//!   ID:TOKEN` (the session reports the task stopped; an ID that is not a
//!   number goes as sent).
//! - `actions`: prints the actions since the last `actions`, one a line, then
//!   `wake-at MS` (the engine's next timer) or `wake-at none`. With the
//!   `dispatch` handler on, a `publish` also names the round in flight
//!   (`dispatching=AGENT:TASKS,..`, or `-`); a `publish` names the agents'
//!   warm models when some are (`warm=AGENT:MODEL+MODEL,..`).
//! - `view`: prints the latest published view's queue throughputs
//!   (`rates=QUEUE:MILLI,..`, the queue `""` as `-`) and last round.
//!
//! Adding a handler: give it a name in `Handler`, make its events and their
//! directives here, and describe its actions in [`describe`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use tidal_core::access::{Role, TokenRecord};
use tidal_core::command::{ApplyCtx, Command, Completion, Granted, Response};
use tidal_core::forwarding::{CapabilityGroup, CapabilitySummary, QueuePolicy, Verdict};
use tidal_core::lifecycle::TaskOptions;
use tidal_core::model::{AgentSpec, Outcome, Priority, Strategy, TaskId, TaskSpec, TaskState};
use tidal_core::State;

use super::{
    Action, Closed, Engine, EngineConfig, Event, ForwardPolicy, Handler, LinkNews, MemberFormat,
    Now, Peer, PeerReply, PeerSummary, ProposalId, ProposeError, ToAgent, View, Work,
};

/// The wall clock when a scenario starts.
const WALL0: u64 = 1_000_000;

struct Scenario {
    state: State,
    index: u64,
    now: Now,
    engine: Option<Engine>,
    cfg: EngineConfig,
    /// Actions taken from the engine and not printed yet.
    unprinted: Vec<Action>,
    /// Proposals not answered yet.
    proposed: BTreeMap<ProposalId, Command>,
    /// Proposals applied (`apply`) and not answered yet: their response and index.
    applied: BTreeMap<ProposalId, (Response, u64)>,
    /// The latest view the engine published.
    view: View,
}

type Args = BTreeMap<String, String>;

fn args(words: &[&str]) -> Args {
    words
        .iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (w.to_string(), String::new()),
        })
        .collect()
}

fn list(args: &Args, key: &str) -> Vec<String> {
    args.get(key)
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The runs listed under `key` as `ID:TOKEN,..`: a number is a task id in
/// its canonical form; any other word goes as the agent sent it.
fn runs(args: &Args, key: &str) -> Result<Vec<(String, u64)>, String> {
    list(args, key)
        .iter()
        .map(|item| {
            let (id, token) = item
                .split_once(':')
                .ok_or_else(|| format!("{key} {item:?}: want ID:TOKEN"))?;
            let token = token.parse().map_err(|_| format!("token {token:?}"))?;
            let id = match id.parse::<u64>() {
                Ok(n) => TaskId(n).to_string(),
                Err(_) => id.to_string(),
            };
            Ok((id, token))
        })
        .collect()
}

/// GPU weights: `A100:1000,A40:500`.
fn weights(word: &str) -> Result<BTreeMap<String, u32>, String> {
    word.split(',')
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (m, w) = item
                .split_once(':')
                .ok_or_else(|| format!("weight {item:?}: want MODEL:MILLI"))?;
            let w = w.parse().map_err(|_| format!("weight {w:?}"))?;
            Ok((m.to_string(), w))
        })
        .collect()
}

fn num<T: std::str::FromStr>(args: &Args, key: &str, default: T) -> Result<T, String> {
    match args.get(key) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| format!("{key}={v} is not a number")),
    }
}

fn proposal(word: &str) -> Result<ProposalId, String> {
    word.strip_prefix('#')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("{word:?} is not a proposal (#N)"))
}

/// Task ids: `1,2,5-9`.
fn ids(word: &str) -> Result<Vec<TaskId>, String> {
    let mut out = Vec::new();
    for part in word.split(',').filter(|s| !s.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.parse::<TaskId>()?, b.parse::<TaskId>()?);
                out.extend((a.0..=b.0).map(TaskId));
            }
            None => out.push(part.parse::<TaskId>()?),
        }
    }
    Ok(out)
}

impl Scenario {
    fn new() -> Scenario {
        Scenario {
            state: State::new(),
            index: 0,
            now: Now {
                mono_ms: 0,
                wall_ms: WALL0,
            },
            engine: None,
            cfg: EngineConfig::default(),
            unprinted: Vec::new(),
            proposed: BTreeMap::new(),
            applied: BTreeMap::new(),
            view: View::default(),
        }
    }

    fn apply(&mut self, cmd: Command) -> (Response, u64) {
        self.index += 1;
        let r = self.state.apply(
            cmd,
            ApplyCtx {
                log_index: self.index,
                time_ms: self.now.wall_ms,
            },
        );
        self.state.check_invariants().expect("invariants hold");
        (r, self.index)
    }

    fn engine(&mut self) -> &mut Engine {
        let cfg = self.cfg.clone();
        self.engine.get_or_insert_with(|| Engine::new(cfg))
    }

    fn step(&mut self, event: Event) {
        let now = self.now;
        let engine = self
            .engine
            .get_or_insert_with(|| Engine::new(self.cfg.clone()));
        engine.step(now, &self.state, event);
        for action in engine.take_actions() {
            if let Action::Propose { id, command } = &action {
                self.proposed.insert(*id, command.clone());
            }
            if let Action::Publish(view) = &action {
                self.view = view.clone();
            }
            self.unprinted.push(action);
        }
    }

    /// Runs one directive; returns its output, if it prints any.
    fn run(&mut self, line: &str) -> Result<Option<String>, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (cmd, rest) = words.split_first().ok_or("empty directive")?;
        let first = rest.first().copied().unwrap_or_default();
        let a = args(rest.get(1..).unwrap_or_default());
        match *cmd {
            "config" => {
                if self.engine.is_some() {
                    return Err("config comes before the first event".into());
                }
                let a = args(rest);
                let d = EngineConfig::default();
                self.cfg = EngineConfig {
                    handlers: list(&a, "handlers")
                        .iter()
                        .map(|h| h.parse())
                        .collect::<Result<_, _>>()?,
                    seed: num(&a, "seed", d.seed)?,
                    agent_ttl_ms: num(&a, "agent_ttl", d.agent_ttl_ms)?,
                    heartbeat_interval_ms: num(&a, "heartbeat", d.heartbeat_interval_ms)?,
                    retain_finished_ms: num(&a, "retain", d.retain_finished_ms)?,
                    raft_heartbeat_ms: num(&a, "raft_heartbeat", d.raft_heartbeat_ms)?,
                    election_timeout_max_ms: num(&a, "election_max", d.election_timeout_max_ms)?,
                    supported_format: num(&a, "supported", d.supported_format)?,
                    peers: list(&a, "peers"),
                    forwarding: ForwardPolicy {
                        forward_after_ms: num(&a, "forward_after", 60_000)?,
                        outbox_limit: num(&a, "outbox_limit", 100_000)?,
                        queues: list(&a, "deny")
                            .into_iter()
                            .map(|q| {
                                let deny = QueuePolicy {
                                    allow: false,
                                    forward_after_ms: 0,
                                };
                                (q, deny)
                            })
                            .collect(),
                    },
                    bootstrap: a.get("bootstrap").map(|id| (id.clone(), [7; 32])),
                    gpu_weights_milli: match a.get("gpu_weights").map(String::as_str) {
                        None => d.gpu_weights_milli.clone(),
                        Some("none") => BTreeMap::new(),
                        Some(w) => weights(w)?,
                    },
                    warm_weight_milli: num(&a, "warm_weight", d.warm_weight_milli)?,
                    ..d
                };
                Ok(None)
            }
            "reset" => {
                *self = Scenario::new();
                Ok(None)
            }
            "time" => {
                let ms: u64 = first
                    .strip_prefix('+')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("time {first:?}: want +MS"))?;
                self.now.mono_ms += ms;
                self.now.wall_ms += ms;
                Ok(None)
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
                    slots: num(&a, "slots", 1)?,
                    weight: 1,
                    ..AgentSpec::default()
                };
                let cmd = match a.get("token") {
                    Some(token) => Command::RegisterAgentAs {
                        spec,
                        token: token.clone(),
                    },
                    None => Command::RegisterAgent(spec),
                };
                expect_ok(self.apply(cmd).0)
            }
            "queue" => {
                let r = self.apply(Command::SetQueue {
                    name: first.into(),
                    weight: num(&a, "weight", 1)?,
                    strategy: Strategy::LeastLoaded,
                });
                expect_ok(r.0)
            }
            "submit" => {
                let n: usize = first
                    .parse()
                    .map_err(|_| format!("submit count {first:?}"))?;
                let priority = match a.get("prio").map(String::as_str) {
                    None | Some("nearline") => Priority::Nearline,
                    Some("online") => Priority::Online,
                    Some("offline") => Priority::Offline,
                    Some(other) => return Err(format!("prio {other:?}")),
                };
                let spec = TaskSpec {
                    task_type: a.get("type").cloned().unwrap_or_else(|| "t2i".into()),
                    queue: a.get("queue").cloned().unwrap_or_default(),
                    slots: num(&a, "slots", 1)?,
                    priority,
                    ..TaskSpec::default()
                };
                let lifecycle = ["prio", "suspendable", "grace", "slots"]
                    .iter()
                    .any(|k| a.contains_key(*k));
                if lifecycle {
                    let opts = TaskOptions {
                        suspendable: a.contains_key("suspendable"),
                        preempt_grace_ms: num(&a, "grace", 0)?,
                        ..TaskOptions::default()
                    };
                    return match self
                        .apply(Command::SubmitWith {
                            specs: vec![spec; n],
                            place: Vec::new(),
                            by: Vec::new(),
                            opts: vec![opts; n],
                        })
                        .0
                    {
                        Response::SubmittedPlaced { submitted, .. }
                            if submitted.iter().all(Result::is_ok) =>
                        {
                            Ok(None)
                        }
                        other => Err(format!("submit failed: {other:?}")),
                    };
                }
                match self.apply(Command::Submit(vec![spec; n])).0 {
                    Response::Submitted(v) if v.iter().all(Result::is_ok) => Ok(None),
                    other => Err(format!("submit failed: {other:?}")),
                }
            }
            "assign" => {
                let tasks = rest.get(1).ok_or("assign AGENT IDS")?;
                let pairs = ids(tasks)?
                    .into_iter()
                    .map(|t| (t, first.to_string()))
                    .collect();
                match self.apply(Command::Assign(pairs)).0 {
                    Response::Assigned { rejected, .. } if rejected.is_empty() => Ok(None),
                    other => Err(format!("assign failed: {other:?}")),
                }
            }
            "task" => {
                let mut out = String::new();
                for id in ids(first)? {
                    let t = self.state.task(id).ok_or(format!("no task {}", id.0))?;
                    let (kind, holder) = match &t.state {
                        TaskState::Assigned { agent, token } => {
                            ("assigned".to_string(), format!(" {agent} token={token}"))
                        }
                        TaskState::Running { agent, token } => {
                            ("running".to_string(), format!(" {agent} token={token}"))
                        }
                        other => (format!("{:?}", other.kind()).to_lowercase(), String::new()),
                    };
                    out.push_str(&format!(
                        "task {} {kind}{holder} attempt={}\n",
                        id.0, t.attempt
                    ));
                }
                Ok(Some(out))
            }
            "start" => {
                let mut items = Vec::new();
                for id in ids(first)? {
                    items.push((id, self.token(id)?));
                }
                match self.apply(Command::StartedBatch(items)).0 {
                    Response::StartedBatch(v) if v.iter().all(Result::is_ok) => Ok(None),
                    other => Err(format!("start failed: {other:?}")),
                }
            }
            "complete" => {
                let mut completions = Vec::new();
                for id in ids(first)? {
                    completions.push(Completion {
                        task: id,
                        token: self.token(id)?,
                        outcome: Outcome {
                            success: true,
                            result: Vec::new(),
                            error: String::new(),
                            exit_code: 0,
                        },
                    });
                }
                match self.apply(Command::Complete(completions)).0 {
                    Response::Completed(v) if v.iter().all(Result::is_ok) => Ok(None),
                    other => Err(format!("complete failed: {other:?}")),
                }
            }
            "open" => {
                let reported = runs(&a, "running")?;
                let fenced = runs(&a, "fenced")?;
                self.step(Event::SessionOpened {
                    agent: first.into(),
                    peer: Peer {
                        instance: a.get("inst").cloned().unwrap_or_default(),
                        addr: a
                            .get("addr")
                            .cloned()
                            .unwrap_or_else(|| "10.0.0.1:1".into()),
                        token: a.get("token").cloned(),
                    },
                    reported,
                    fenced,
                    attached_at: self.index,
                    warm_models: list(&a, "warm"),
                });
                Ok(None)
            }
            "stopped" => {
                let item = rest
                    .get(1..)
                    .unwrap_or_default()
                    .iter()
                    .find(|w| !w.contains('='))
                    .ok_or("stopped AGENT gen=G ID:TOKEN")?;
                let (id, token) = item
                    .split_once(':')
                    .ok_or_else(|| format!("stopped {item:?}: want ID:TOKEN"))?;
                let task_id = match id.parse::<u64>() {
                    Ok(n) => TaskId(n).to_string(),
                    Err(_) => id.to_string(),
                };
                self.step(Event::StopReported {
                    agent: first.into(),
                    generation: num(&a, "gen", 0)?,
                    task_id,
                    token: token.parse().map_err(|_| format!("token {token:?}"))?,
                });
                Ok(None)
            }
            "revoked" => {
                self.step(Event::TokenRevoked);
                Ok(None)
            }
            "holds" => {
                let generation = num(&a, "gen", 0)?;
                let items = rest
                    .get(1..)
                    .unwrap_or_default()
                    .iter()
                    .find(|w| !w.contains('='))
                    .ok_or("holds AGENT gen=G ID:TOKEN,..")?;
                self.engine();
                let table = self.engine.as_ref().expect("made above").sessions();
                let mut out = Vec::new();
                for item in items.split(',') {
                    let (id, token) = item
                        .split_once(':')
                        .ok_or_else(|| format!("holds {item:?}: want ID:TOKEN"))?;
                    let task: TaskId = id.parse()?;
                    let token: u64 = token.parse().map_err(|_| format!("token {token:?}"))?;
                    let held = table.may_report(&self.state, first, generation, task, token);
                    out.push(format!(
                        "{}:{token}={}",
                        task.0,
                        if held { "held" } else { "not-held" }
                    ));
                }
                Ok(Some(format!("{}\n", out.join(" "))))
            }
            "close" => {
                self.step(Event::SessionClosed {
                    agent: first.into(),
                    generation: num(&a, "gen", 0)?,
                });
                Ok(None)
            }
            "hb" => {
                self.step(Event::Heartbeat {
                    agent: first.into(),
                    generation: num(&a, "gen", 0)?,
                    seq: num(&a, "seq", 0)?,
                    lease_holds: !a.contains_key("noquorum"),
                    warm_models: list(&a, "warm"),
                });
                Ok(None)
            }
            "forget" => {
                self.step(Event::Forgotten {
                    agent: first.into(),
                });
                Ok(None)
            }
            "granted" => {
                let mut granted = Vec::new();
                for id in ids(first)? {
                    let task = self.state.task(id).ok_or(format!("no task {id}"))?;
                    let (agent, token) = task
                        .state
                        .holder()
                        .ok_or(format!("task {id} is not live"))?;
                    granted.push(Granted {
                        task: id,
                        agent: agent.clone(),
                        token,
                        attempt: task.attempt,
                    });
                }
                self.step(Event::Granted(granted));
                Ok(None)
            }
            "cancel" => {
                let [task] = ids(first)?[..] else {
                    return Err("cancel ID".into());
                };
                match self.apply(Command::Cancel { task }).0 {
                    Response::Cancelled {
                        holder: Some((agent, token)),
                        ..
                    } => {
                        self.step(Event::Cancelled {
                            agent,
                            task,
                            token,
                            reason: "cancelled by a user".into(),
                        });
                        Ok(None)
                    }
                    // A Pending task: no holder to tell.
                    Response::Cancelled { holder: None, .. } => Ok(None),
                    other => Err(format!("cancel: {other:?}")),
                }
            }
            "drain" => {
                let deadline_ms = match a.get("deadline") {
                    Some(ms) => Some(
                        self.now.wall_ms
                            + ms.parse::<u64>()
                                .map_err(|_| format!("deadline={ms}: want MS from now"))?,
                    ),
                    None => None,
                };
                expect_ok(
                    self.apply(Command::DrainAgent {
                        agent: first.into(),
                        deadline_ms,
                    })
                    .0,
                )?;
                self.step(Event::Work(Work::DrainChanged));
                Ok(None)
            }
            "down" => match self
                .apply(Command::AgentDown {
                    agent: first.into(),
                })
                .0
            {
                Response::AgentDown { .. } => Ok(None),
                other => Err(format!("down failed: {other:?}")),
            },
            "token" => {
                let role = match a.get("role").map(String::as_str) {
                    None | Some("admin") => Role::Admin,
                    Some("user") => Role::User,
                    Some("agent") => Role::Agent,
                    Some(other) => return Err(format!("role {other:?}")),
                };
                let expires_ms = match a.get("ttl") {
                    Some(ms) => Some(
                        self.now.wall_ms
                            + ms.parse::<u64>()
                                .map_err(|_| format!("ttl={ms}: want MS from now"))?,
                    ),
                    None => None,
                };
                let record = TokenRecord {
                    hash: [1; 32],
                    name: String::new(),
                    role,
                    tenant: a.get("tenant").cloned(),
                    created_ms: 0,
                    expires_ms,
                    created_by: String::new(),
                    revoked_ms: None,
                };
                let cmd = Command::CreateToken {
                    id: first.to_string(),
                    record,
                    first_only: false,
                };
                expect_ok(self.apply(cmd).0)
            }
            "revoke" => expect_ok(
                self.apply(Command::RevokeToken {
                    id: first.to_string(),
                })
                .0,
            ),
            "gpu-weights" => expect_ok(self.apply(Command::SetGpuWeights(weights(first)?)).0),
            "view" => {
                let rates: Vec<String> = self
                    .view
                    .queue_rate_milli
                    .iter()
                    .map(|(q, r)| format!("{}:{r}", if q.is_empty() { "-" } else { q }))
                    .collect();
                let rounds: Vec<String> = self
                    .view
                    .last_round
                    .iter()
                    .map(|(q, (picked, share))| {
                        format!("{}:{picked}/{share}", if q.is_empty() { "-" } else { q })
                    })
                    .collect();
                let dash = |v: Vec<String>| {
                    if v.is_empty() {
                        "-".into()
                    } else {
                        v.join(",")
                    }
                };
                Ok(Some(format!(
                    "rates={} last_round={}\n",
                    dash(rates),
                    dash(rounds)
                )))
            }
            "version" => {
                let version = first
                    .parse()
                    .map_err(|_| format!("version {first:?} is not a number"))?;
                expect_ok(self.apply(Command::SetClusterVersion { version }).0)
            }
            "established" => {
                self.step(Event::Established);
                Ok(None)
            }
            "tick" => {
                self.step(Event::Tick);
                Ok(None)
            }
            "work" => {
                let work = match first {
                    "submitted" => Work::Submitted,
                    "freed" => Work::Freed,
                    "queue-set" => Work::QueueSet,
                    "drain-changed" => Work::DrainChanged,
                    "ingested" => Work::Ingested,
                    other => return Err(format!("unknown work {other:?}")),
                };
                self.step(Event::Work(work));
                Ok(None)
            }
            "formats" => {
                let mut formats = Vec::new();
                for item in first.split(',').filter(|s| !s.is_empty()) {
                    let (id, format) = item
                        .split_once('=')
                        .ok_or_else(|| format!("{item:?}: want ID=V@AGE or ID=never"))?;
                    let id = id.parse().map_err(|_| format!("member {id:?}"))?;
                    let format = match format.split_once('@') {
                        None if format == "never" => None,
                        Some((v, age)) => Some((
                            v.parse().map_err(|_| format!("version {v:?}"))?,
                            age.parse().map_err(|_| format!("age {age:?}"))?,
                        )),
                        None => return Err(format!("{item:?}: want ID=V@AGE or ID=never")),
                    };
                    formats.push(MemberFormat { id, format });
                }
                self.step(Event::MemberFormats(formats));
                Ok(None)
            }
            "peers" => {
                let mut peers = Vec::new();
                for item in first.split(',').filter(|s| !s.is_empty()) {
                    let (dc, summary) = item
                        .split_once('=')
                        .ok_or_else(|| format!("{item:?}: want DC=TYPES:FREE[:PENDING]"))?;
                    let summary = if summary == "none" {
                        None
                    } else {
                        Some(peer_summary(summary)?)
                    };
                    peers.push((dc.to_string(), summary));
                }
                self.step(Event::PeerSummaries(peers));
                Ok(None)
            }
            "forward" => {
                let tasks = rest.get(1).ok_or("forward DC IDS")?;
                let round = ids(tasks)?
                    .into_iter()
                    .map(|t| (t, first.to_string()))
                    .collect();
                match self.apply(Command::Forward(round)).0 {
                    Response::Forwarded(v) if v.iter().all(Result::is_ok) => Ok(None),
                    other => Err(format!("forward failed: {other:?}")),
                }
            }
            "answer" => {
                let all = args(rest.get(1..).unwrap_or_default());
                let answer = if let Some(why) = all.get("err") {
                    Err(why.clone())
                } else {
                    let seqs = |key| -> Result<Vec<u64>, String> {
                        list(&all, key)
                            .iter()
                            .map(|n| n.parse().map_err(|_| format!("{key}: {n:?}")))
                            .collect()
                    };
                    let mut verdicts: Vec<(u64, Verdict)> = seqs("verdicts")?
                        .into_iter()
                        .map(|n| (n, Verdict::Accepted { remote_task: None }))
                        .collect();
                    verdicts.extend(seqs("refused")?.into_iter().map(|n| {
                        let reason = "no agent can run it".to_string();
                        (n, Verdict::Rejected { reason })
                    }));
                    verdicts.sort_by_key(|(n, _)| *n);
                    let summary = match all.get("summary") {
                        Some(s) => peer_summary(s)?,
                        None => PeerSummary::default(),
                    };
                    Ok(PeerReply {
                        summary,
                        verdicts,
                        hwm: num(&all, "hwm", 0)?,
                    })
                };
                self.step(Event::PeerAnswer {
                    dc: first.to_string(),
                    answer,
                });
                Ok(None)
            }
            "apply" => {
                let id = proposal(first)?;
                let command = self
                    .proposed
                    .remove(&id)
                    .ok_or_else(|| format!("no proposal #{id} in flight"))?;
                let (response, index) = self.apply(command);
                let out = format!("{}\n", describe_response(&response));
                self.applied.insert(id, (response, index));
                Ok(Some(out))
            }
            "commit" => {
                let id = proposal(first)?;
                let (out, (response, index)) = match self.applied.remove(&id) {
                    Some(applied) => (None, applied),
                    None => {
                        let command = self
                            .proposed
                            .remove(&id)
                            .ok_or_else(|| format!("no proposal #{id} in flight"))?;
                        let (response, index) = self.apply(command);
                        let out = format!("{}\n", describe_response(&response));
                        (Some(out), (response, index))
                    }
                };
                self.step(Event::Committed {
                    id,
                    index,
                    response,
                });
                Ok(out)
            }
            "fail" => {
                let id = proposal(first)?;
                self.proposed
                    .remove(&id)
                    .ok_or_else(|| format!("no proposal #{id} in flight"))?;
                let mut words = rest.get(1..).unwrap_or_default();
                let failed_precondition = words.first() == Some(&"precondition");
                if failed_precondition {
                    words = &words[1..];
                }
                let error = words.join(" ");
                self.step(Event::NotCommitted {
                    id,
                    error: ProposeError {
                        text: if error.is_empty() {
                            "unavailable".into()
                        } else {
                            error
                        },
                        failed_precondition,
                    },
                });
                Ok(None)
            }
            "actions" => {
                let mut out = String::new();
                let dispatch = self.cfg.handlers.contains(&Handler::Dispatch);
                for action in std::mem::take(&mut self.unprinted) {
                    writeln!(out, "{}", describe(&action, dispatch)).expect("writing to a String");
                }
                match self.engine().next_wake() {
                    Some(at) => writeln!(out, "wake-at {at}"),
                    None => writeln!(out, "wake-at none"),
                }
                .expect("writing to a String");
                Ok(Some(out))
            }
            other => Err(format!("unknown directive {other:?}")),
        }
    }

    /// The fencing token of a live task.
    fn token(&self, id: TaskId) -> Result<u64, String> {
        let task = self.state.task(id).ok_or(format!("no task {id}"))?;
        task.state
            .holder()
            .map(|(_, token)| token)
            .ok_or(format!("task {id} is not live"))
    }
}

fn expect_ok(r: Response) -> Result<Option<String>, String> {
    match r {
        Response::Ok => Ok(None),
        other => Err(format!("expected Ok, got {other:?}")),
    }
}

/// Task ids with runs shown as ranges: `1,4-9`.
fn tasks(ids: &[TaskId]) -> String {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for id in ids {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == id.0 => *end = id.0,
            _ => runs.push((id.0, id.0)),
        }
    }
    if runs.is_empty() {
        return "-".into();
    }
    let runs: Vec<String> = runs
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    runs.join(",")
}

/// (task, token) pairs: `2:3,3:3`.
fn pairs(items: &[(TaskId, u64)]) -> String {
    let each: Vec<String> = items.iter().map(|(t, k)| format!("{}:{k}", t.0)).collect();
    each.join(",")
}

/// A peer's summary from `TYPES:FREE[:PENDING]`: one group of agents.
fn peer_summary(text: &str) -> Result<PeerSummary, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let n = |i: usize| -> Result<u64, String> {
        parts
            .get(i)
            .map_or(Ok(0), |v| v.parse().map_err(|_| format!("{v:?}")))
    };
    let free = n(1)? as u32;
    Ok(PeerSummary {
        capabilities: CapabilitySummary {
            groups: vec![CapabilityGroup {
                task_types: parts[0].split('+').map(str::to_string).collect(),
                agents: 1,
                slots: free,
                free_slots: free,
                ..CapabilityGroup::default()
            }],
        },
        pending: n(2)?,
    })
}

/// One action as a line of a scenario file; a published view names the
/// dispatch round in flight if the dispatch handler is on.
fn describe(action: &Action, dispatch: bool) -> String {
    match action {
        Action::Propose { id, command } => format!("propose #{id} {}", describe_command(command)),
        Action::Exchange { dc, records } => {
            let seqs: Vec<u64> = records.iter().map(|(n, _)| *n).collect();
            let shown = match (seqs.first(), seqs.last()) {
                (Some(a), Some(b)) if a == b => a.to_string(),
                (Some(a), Some(b)) => format!("{a}..{b}"),
                _ => "-".into(),
            };
            format!("exchange {dc} records={shown}")
        }
        Action::PeerLink { dc, news } => match news {
            LinkNews::Up => format!("peer {dc} up"),
            LinkNews::Down(why) => format!("peer {dc} down {why:?}"),
            LinkNews::Summary(s) => format!("peer {dc} summary room={}", s.room()),
        },
        Action::Attached {
            agent,
            generation,
            displaced,
        } => {
            let mut line = format!("attached {agent}@{generation}");
            if let Some(d) = displaced {
                write!(line, " displaced={}", d.instance).expect("writing to a String");
            }
            line
        }
        Action::Close {
            agent,
            generation,
            why,
        } => {
            let why = match why {
                Closed::Displaced { by, from } => format!("displaced by={by} from={from}"),
                Closed::Replaced => "replaced".into(),
                Closed::Expired => "expired".into(),
                Closed::Revoked { token } => format!("revoked token={token}"),
            };
            format!("close {agent}@{generation} {why}")
        }
        Action::Detach { agent, generation } => format!("detach {agent}@{generation}"),
        Action::Send {
            agent,
            generation,
            msg,
        } => {
            let msg = match msg {
                ToAgent::Assign { task, token } => format!("assign {} token={token}", task.0),
                ToAgent::Cancel {
                    task_id,
                    token,
                    reason,
                } => format!("cancel {task_id} token={token} ({reason})"),
                ToAgent::Stop {
                    task,
                    token,
                    preempt: None,
                    ..
                } => format!("stop {} token={token}", task.0),
                ToAgent::Stop {
                    task,
                    token,
                    preempt: Some((notice, grace_ms)),
                    ..
                } => format!(
                    "stop {} token={token} preempt={notice:?} grace={grace_ms}",
                    task.0
                ),
                ToAgent::Suspend { task, token } => format!("suspend {} token={token}", task.0),
                ToAgent::Resume { task, token } => format!("resume {} token={token}", task.0),
                ToAgent::HeartbeatAck { seq } => format!("heartbeat-ack seq={seq}"),
                ToAgent::CompletionAck {
                    task_id,
                    token,
                    accepted,
                    reason,
                } if reason.is_empty() => {
                    format!("completion-ack {task_id} token={token} accepted={accepted}")
                }
                ToAgent::CompletionAck {
                    task_id,
                    token,
                    accepted,
                    reason,
                } => {
                    format!("completion-ack {task_id} token={token} accepted={accepted} ({reason})")
                }
                ToAgent::CheckpointAck {
                    task_id,
                    token,
                    seq,
                    accepted,
                    ..
                } => {
                    format!("checkpoint-ack {task_id} token={token} seq={seq} accepted={accepted}")
                }
            };
            format!("send {agent}@{generation} {msg}")
        }
        Action::Publish(view) => {
            let c: Vec<&str> = view.connected.iter().map(String::as_str).collect();
            let mut line = format!("publish connected={}", c.join(","));
            if dispatch {
                let d: Vec<String> = view
                    .dispatching
                    .tasks_per_agent()
                    .map(|(agent, n)| format!("{agent}:{n}"))
                    .collect();
                let d = if d.is_empty() {
                    "-".into()
                } else {
                    d.join(",")
                };
                write!(line, " dispatching={d}").expect("writing to a String");
            }
            if !view.warm.is_empty() {
                let w: Vec<String> = view
                    .warm
                    .iter()
                    .map(|(agent, models)| {
                        let m: Vec<&str> = models.iter().map(String::as_str).collect();
                        format!("{agent}:{}", m.join("+"))
                    })
                    .collect();
                write!(line, " warm={}", w.join(",")).expect("writing to a String");
            }
            line
        }
    }
}

fn describe_command(command: &Command) -> String {
    match command {
        Command::Expire {
            before_ms,
            tasks: t,
        } => {
            format!("Expire before={before_ms} tasks={}", tasks(t))
        }
        Command::SetClusterVersion { version } => format!("SetClusterVersion {version}"),
        Command::CreateToken {
            id,
            record,
            first_only,
        } => format!(
            "CreateToken {id} role={} name={} tenant={} hash={:02x}.. first_only={first_only}",
            record.role.as_str(),
            record.name,
            record.tenant.as_deref().unwrap_or("*"),
            record.hash[0]
        ),
        Command::ForwardAck { peer, verdicts } => {
            let seqs: Vec<String> = verdicts
                .iter()
                .map(|(n, v)| match v {
                    Verdict::Accepted { .. } => n.to_string(),
                    Verdict::Rejected { .. } => format!("{n}(refused)"),
                })
                .collect();
            format!("ForwardAck {peer} verdicts={}", seqs.join(","))
        }
        Command::Forward(round) => {
            let pairs: Vec<String> = round
                .iter()
                .map(|(t, dc)| format!("{}->{dc}", t.0))
                .collect();
            format!("Forward {}", pairs.join(","))
        }
        Command::AgentDown { agent } => format!("AgentDown {agent}"),
        Command::Assign(round) => {
            let mut per_agent: BTreeMap<&str, Vec<TaskId>> = BTreeMap::new();
            for (task, agent) in round {
                per_agent.entry(agent).or_default().push(*task);
            }
            let pairs: Vec<String> = per_agent
                .iter()
                .map(|(agent, t)| format!("{agent}={}", tasks(t)))
                .collect();
            format!("Assign {}", pairs.join(" "))
        }
        Command::StartedBatch(items) => format!("StartedBatch {}", pairs(items)),
        Command::Regrant { agent, tasks } => format!("Regrant {agent} {}", pairs(tasks)),
        Command::Stopped(items) => format!("Stopped {}", pairs(items)),
        Command::Preempt {
            task,
            agent,
            victims,
        } => format!("Preempt {} on {agent} victims={}", task.0, pairs(victims)),
        Command::Resume(ids) => format!("Resume {}", tasks(ids)),
        Command::SetGpuWeights(w) => {
            let w: Vec<String> = w.iter().map(|(m, v)| format!("{m}:{v}")).collect();
            format!("SetGpuWeights {}", w.join(","))
        }
        other => format!("{other:?}"),
    }
}

fn describe_response(response: &Response) -> String {
    match response {
        Response::Ok => "ok".into(),
        Response::Expired { removed, rejected } => format!(
            "expired removed={} refused={}",
            removed.len(),
            rejected.len()
        ),
        Response::Forwarded(results) => {
            let seqs: Vec<String> = results
                .iter()
                .map(|r| match r {
                    Ok(seq) => seq.to_string(),
                    Err(e) => format!("refused({e})"),
                })
                .collect();
            format!("forwarded {}", seqs.join(","))
        }
        Response::Assigned { granted, rejected } => {
            let granted: Vec<TaskId> = granted.iter().map(|g| g.task).collect();
            let rejected: Vec<TaskId> = rejected.iter().map(|(t, _)| *t).collect();
            format!(
                "assigned granted={} rejected={}",
                tasks(&granted),
                tasks(&rejected)
            )
        }
        Response::AgentDown { requeued, failed } => format!(
            "agent-down requeued={} failed={}",
            tasks(requeued),
            tasks(failed)
        ),
        Response::StartedBatch(results) | Response::Stopped(results) => {
            let each: Vec<String> = results
                .iter()
                .map(|r| match r {
                    Ok(()) => "ok".into(),
                    Err(e) => format!("refused({e})"),
                })
                .collect();
            let kind = match response {
                Response::StartedBatch(_) => "started",
                _ => "stopped",
            };
            format!("{kind} {}", each.join(","))
        }
        Response::Regranted {
            granted,
            requeued,
            failed,
            rejected,
        } => {
            let granted: Vec<String> = granted
                .iter()
                .map(|g| format!("{}:{}", g.task.0, g.token))
                .collect();
            let rejected: Vec<TaskId> = rejected.iter().map(|(t, _)| *t).collect();
            format!(
                "regranted granted={} requeued={} failed={} refused={}",
                if granted.is_empty() {
                    "-".into()
                } else {
                    granted.join(",")
                },
                tasks(requeued),
                tasks(failed),
                tasks(&rejected)
            )
        }
        Response::Preempted {
            agent,
            granted,
            suspended,
            stopping,
        } => {
            let stopping: Vec<String> = stopping
                .iter()
                .map(|s| format!("{}:{}", s.task.0, s.token))
                .collect();
            format!(
                "preempted on {agent} granted={} suspended={} stopping={}",
                granted
                    .as_ref()
                    .map_or("-".into(), |g| format!("{}:{}", g.task.0, g.token)),
                pairs(suspended),
                if stopping.is_empty() {
                    "-".into()
                } else {
                    stopping.join(",")
                }
            )
        }
        Response::Items(items) => {
            let each: Vec<String> = items
                .iter()
                .map(|r| match r {
                    Ok(()) => "ok".into(),
                    Err(e) => format!("refused({e})"),
                })
                .collect();
            format!("items {}", each.join(","))
        }
        other => format!("{other:?}"),
    }
}

#[test]
fn engine_scenarios() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/engine");
    tidal_core::testing::run_dir(&dir, || {
        let mut s = Scenario::new();
        move |directive: &str| s.run(directive)
    });
}
