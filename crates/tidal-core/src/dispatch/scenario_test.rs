//! Scenario files of placement at cluster format version 5:
//! `testdata/placement/*.txt`, run as the golden files of the scheduling
//! policies are ([`crate::testing`]: a directive per line, `----` then the
//! expected output; `TIDAL_REWRITE_GOLDEN=1` rewrites it).
//!
//! Directives (`key=value` arguments, lists comma-separated):
//!
//! - `queue NAME [weight=W] [strategy=least-loaded|wrr|bin-pack|spread:KEY|consistent-hash]`
//! - `agent ID [slots=N] [weight=W] [gpus=A100,A40:24576,..] [labels=zone:a,rack:r1]
//!   [models=..]` (a GPU's memory: after `:`, else 81920 for A100, 49152 otherwise)
//! - `warm AGENT [models=..]`: the models the agent reports warm (planning only)
//! - `warm-weight MILLI`: how much warm models count (default 1000)
//! - `gpu-weights MODEL:MILLI,..`: `SetGpuWeights`
//! - `submit N [queue=Q] [slots=S] [gpus=G] [gpu_mem=MB] [models=..] [tags=a,b]
//!   [affinity=TAG[@SCOPE]] [anti=TAG[@SCOPE]] [max-per=TAG:N[@SCOPE]]
//!   [shapes=1xA100|2xA40:40960|1xany] [key=K] [eager] [where C; C; ..]`: a
//!   `SubmitWithPlacement` of N equal tasks; after `where`, label constraints
//!   separated by `;`. With `eager`, placed at submit (`place_new_with`);
//!   prints the placements then.
//! - `plan max=N`: plans a round with `plan_with` over every agent, prints
//!   `tN queue -> agent [gpus=..]` per pair (the devices apply took), applies
//!   it as one Assign, which must grant every pair.
//! - `complete ID,ID,..`, `down AGENT`

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use super::{place_new_with, plan_with, DispatchCursor, InFlight, Live};
use crate::command::{ApplyCtx, Command, Completion, Response};
use crate::model::{AgentId, AgentSpec, Gpu, Outcome, TaskId, TaskSpec};
use crate::placement::types::{
    GpuShape, PlaceAsk, PlaceStrategy, QueuePlacement, Scope, PLACEMENT_VERSION,
};
use crate::placement::{constraint, rules, validate};
use crate::state::State;

struct Scenario {
    state: State,
    index: u64,
    cursor: DispatchCursor,
    warm: BTreeMap<AgentId, BTreeSet<String>>,
    warm_weight_milli: u32,
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

/// `A100` or `A40:24576`.
pub(super) fn gpu(text: &str) -> Gpu {
    let (model, mem) = match text.split_once(':') {
        Some((m, mem)) => (m, mem.parse().expect("GPU memory in MB")),
        None => (text, if text == "A100" { 81_920 } else { 49_152 }),
    };
    Gpu {
        model: model.into(),
        memory_mb: mem,
    }
}

/// `1xA100|2xA40:40960|1xany`.
pub(super) fn shapes(text: &str) -> Result<Vec<GpuShape>, String> {
    text.split('|')
        .map(|s| {
            let (count, rest) = s.split_once('x').ok_or(format!("shape {s:?}"))?;
            let (model, mem) = match rest.split_once(':') {
                Some((m, mem)) => (m, mem.parse().map_err(|_| format!("shape {s:?}"))?),
                None => (rest, 0),
            };
            Ok(GpuShape {
                count: count.parse().map_err(|_| format!("shape {s:?}"))?,
                model: (model != "any").then(|| model.to_string()),
                min_memory_mb: mem,
            })
        })
        .collect()
}

fn strategy(text: &str) -> Result<PlaceStrategy, String> {
    Ok(match text {
        "least-loaded" => PlaceStrategy::LeastLoaded,
        "wrr" => PlaceStrategy::WeightedRoundRobin,
        "bin-pack" => PlaceStrategy::BinPack,
        "consistent-hash" => PlaceStrategy::ConsistentHash,
        other => match other.strip_prefix("spread:") {
            Some(key) => PlaceStrategy::Spread { key: key.into() },
            None => return Err(format!("unknown strategy {other:?}")),
        },
    })
}

impl Scenario {
    fn apply(&mut self, cmd: Command) -> Response {
        self.index += 1;
        let r = self.state.apply(
            cmd,
            ApplyCtx {
                log_index: self.index,
                time_ms: self.index,
            },
        );
        self.state.check_invariants().expect("invariants hold");
        r
    }

    fn live<'a>(&'a self, connected: &'a BTreeSet<AgentId>) -> Live<'a> {
        Live {
            connected,
            warm: &self.warm,
            warm_weight_milli: self.warm_weight_milli,
        }
    }

    fn run(&mut self, line: &str) -> Result<Option<String>, String> {
        let (line, wheres) = match line.split_once(" where ") {
            Some((l, w)) => (l, Some(w)),
            None => (line, None),
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let (cmd, rest) = words.split_first().ok_or("empty directive")?;
        let a = args(rest.get(1..).unwrap_or_default());
        let first = rest.first().copied().unwrap_or_default();
        match *cmd {
            "queue" => {
                let strategy = strategy(a.get("strategy").map_or("least-loaded", |s| s))?;
                expect_ok(self.apply(Command::SetQueueWith {
                    name: first.into(),
                    weight: num(&a, "weight", 1),
                    placement: QueuePlacement { strategy },
                }))
            }
            "agent" => {
                let labels = list(&a, "labels")
                    .iter()
                    .map(|l| {
                        let (k, v) = l.split_once(':').unwrap_or((l, ""));
                        (k.to_string(), v.to_string())
                    })
                    .collect();
                let spec = AgentSpec {
                    id: first.into(),
                    dc: "dc1".into(),
                    task_types: ["t2i".to_string()].into(),
                    models: list(&a, "models").into_iter().collect(),
                    slots: num(&a, "slots", 4),
                    weight: num(&a, "weight", 1),
                    gpus: list(&a, "gpus").iter().map(|g| gpu(g)).collect(),
                    labels,
                    ..AgentSpec::default()
                };
                expect_ok(self.apply(Command::RegisterAgent(spec)))
            }
            "warm" => {
                let models = list(&a, "models").into_iter().collect();
                self.warm.insert(first.into(), models);
                Ok(None)
            }
            "warm-weight" => {
                self.warm_weight_milli = first.parse().map_err(|_| "warm-weight MILLI")?;
                Ok(None)
            }
            "gpu-weights" => {
                let mut w = BTreeMap::new();
                for p in first.split(',') {
                    let (m, v) = p.split_once(':').ok_or("MODEL:MILLI")?;
                    w.insert(m.to_string(), v.parse().map_err(|_| "MILLI")?);
                }
                expect_ok(self.apply(Command::SetGpuWeights(w)))
            }
            "submit" => self.submit(first, &a, wheres),
            "plan" => {
                let connected: BTreeSet<AgentId> =
                    self.state.agents().map(|a| a.spec.id.clone()).collect();
                let mut cursor = std::mem::take(&mut self.cursor);
                let p = plan_with(
                    &self.state,
                    &self.live(&connected),
                    num(&args(rest), "max", 0),
                    &mut cursor,
                );
                self.cursor = cursor;
                match self.apply(Command::Assign(p.clone())) {
                    Response::Assigned { granted, rejected }
                        if rejected.is_empty() && granted.len() == p.len() =>
                    {
                        Ok(Some(self.describe(&p)))
                    }
                    other => Err(format!("plan not granted in full: {other:?}")),
                }
            }
            "complete" => {
                let mut completions = Vec::new();
                for id in first.split(',') {
                    let id: TaskId = id.parse()?;
                    let task = self.state.task(id).ok_or(format!("no task {id}"))?;
                    let (_, token) = task.state.holder().ok_or(format!("{id} is not live"))?;
                    completions.push(Completion {
                        task: id,
                        token,
                        outcome: Outcome {
                            success: true,
                            result: Vec::new(),
                            error: String::new(),
                            exit_code: 0,
                        },
                    });
                }
                match self.apply(Command::Complete(completions)) {
                    Response::Completed(v) if v.iter().all(Result::is_ok) => Ok(None),
                    other => Err(format!("complete failed: {other:?}")),
                }
            }
            "down" => match self.apply(Command::AgentDown {
                agent: first.into(),
            }) {
                Response::AgentDown { .. } => Ok(None),
                other => Err(format!("down failed: {other:?}")),
            },
            other => Err(format!("unknown directive {other:?}")),
        }
    }

    fn submit(
        &mut self,
        n: &str,
        a: &BTreeMap<String, String>,
        wheres: Option<&str>,
    ) -> Result<Option<String>, String> {
        let n: usize = n.parse().map_err(|_| format!("submit count {n:?}"))?;
        let spec = TaskSpec {
            task_type: "t2i".into(),
            queue: a.get("queue").cloned().unwrap_or_default(),
            models: list(a, "models"),
            slots: num(a, "slots", 1),
            gpus: num(a, "gpus", 0),
            gpu_memory_mb: num(a, "gpu_mem", 0),
            ..TaskSpec::default()
        };
        let mut ask = PlaceAsk {
            tags: list(a, "tags"),
            hash_key: a.get("key").cloned(),
            ..PlaceAsk::default()
        };
        for c in wheres.into_iter().flat_map(|w| w.split(';')) {
            ask.constraints.push(constraint::parse(c.trim())?);
        }
        for (kind, name) in [
            ("affinity", "affinity"),
            ("anti-affinity", "anti"),
            ("max-per", "max-per"),
        ] {
            if let Some(text) = a.get(name) {
                ask.rules.push(rules::parse_rule(
                    kind,
                    &format!("tag={text}"),
                    &Scope::Agent,
                )?);
            }
        }
        if let Some(s) = a.get("shapes") {
            ask.shapes = shapes(s)?;
        }
        let ask = validate::normalize(ask);
        let specs = vec![spec; n];
        let asks = vec![ask; n];
        let mut place = Vec::new();
        if a.contains_key("eager") {
            let connected: BTreeSet<AgentId> =
                self.state.agents().map(|a| a.spec.id.clone()).collect();
            let mut cursor = std::mem::take(&mut self.cursor);
            place = place_new_with(
                &self.state,
                &self.live(&connected),
                &specs,
                &asks,
                &InFlight::default(),
                &mut cursor,
            );
            self.cursor = cursor;
        }
        let planned = place.len();
        match self.apply(Command::SubmitWithPlacement {
            specs,
            place,
            by: Vec::new(),
            opts: Vec::new(),
            asks,
        }) {
            Response::SubmittedPlaced { submitted, granted } => {
                if let Some(Err(e)) = submitted.iter().find(|s| s.is_err()) {
                    return Err(format!("submit failed: {e:?}"));
                }
                if !a.contains_key("eager") {
                    return Ok(None);
                }
                if granted.len() != planned {
                    return Err(format!("eager placement not granted in full: {granted:?}"));
                }
                let p: Vec<(TaskId, AgentId)> =
                    granted.into_iter().map(|g| (g.task, g.agent)).collect();
                Ok(Some(self.describe(&p)))
            }
            other => Err(format!("submit failed: {other:?}")),
        }
    }

    fn describe(&self, p: &[(TaskId, AgentId)]) -> String {
        let mut out = String::new();
        for (t, a) in p {
            let queue = self.state.task(*t).map_or("?", |t| t.spec.queue.as_str());
            write!(out, "t{} {queue} -> {a}", t.0).expect("writing to a String");
            let held = self
                .state
                .placement()
                .task(*t)
                .and_then(|e| e.held.as_ref());
            if let Some(h) = held.filter(|h| !h.devices.is_empty()) {
                let d: Vec<String> = h.devices.iter().map(u16::to_string).collect();
                write!(out, " gpus={}", d.join(",")).expect("writing to a String");
            }
            out.push('\n');
        }
        if p.is_empty() {
            out.push_str("(nothing)\n");
        }
        out
    }
}

fn expect_ok(r: Response) -> Result<Option<String>, String> {
    match r {
        Response::Ok => Ok(None),
        other => Err(format!("expected Ok, got {other:?}")),
    }
}

#[test]
fn placement_scenarios() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/placement");
    crate::testing::run_dir(&dir, || {
        let mut state = State::new();
        state.restore_cluster_version(PLACEMENT_VERSION);
        let mut s = Scenario {
            state,
            index: 0,
            cursor: DispatchCursor::default(),
            warm: BTreeMap::new(),
            warm_weight_milli: 1000,
        };
        move |directive: &str| s.run(directive)
    });
}
