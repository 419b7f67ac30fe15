//! The placement state's types: what a task asks of placement (label
//! constraints, tags and tag rules, GPU shapes, a hash key), the GPU devices
//! its assignment holds, each queue's strategy, and the GPU models' weights.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::collections::Map;
use crate::model::{AgentId, FencingToken, TaskId, TaskSpec};

/// The cluster format version that adds the placement state: its commands
/// need it, snapshots carry a placement section from it on, the digest
/// covers it from it on, and from it on `Assign` picks GPU devices.
pub const PLACEMENT_VERSION: u8 = 5;

/// The most label constraints a task may carry.
pub const MAX_CONSTRAINTS: usize = 32;
/// The most values an `in`/`notin` constraint may list.
pub const MAX_CONSTRAINT_VALUES: usize = 32;
/// The most tags a task may carry.
pub const MAX_TAGS: usize = 16;
/// The most tag rules (affinity, anti-affinity, max-per) a task may carry.
pub const MAX_TAG_RULES: usize = 16;
/// The most GPU shapes (alternatives) a task may list.
pub const MAX_SHAPES: usize = 8;
/// The longest hash key, in bytes.
pub const MAX_HASH_KEY_BYTES: usize = 256;
/// The most GPUs one shape may ask for (device indexes are u16).
pub const MAX_SHAPE_GPUS: u32 = 1024;
/// A GPU model with no weight set counts this much (thousandths): 1.0.
pub const DEFAULT_GPU_WEIGHT_MILLI: u32 = 1000;
/// The largest weight a GPU model may be given (thousandths): 100.0.
pub const MAX_GPU_WEIGHT_MILLI: u32 = 100_000;
/// The weights a cluster starts with, before any `SetGpuWeights`: an A100
/// counts 1.0, an A40 0.5; any other model 1.0.
pub const BUILTIN_GPU_WEIGHTS: &[(&str, u32)] = &[("A100", 1000), ("A40", 500)];

/// A constraint's operator (Kubernetes' set-based label selectors).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Op {
    /// `key=value`: the label is present with this value.
    Eq,
    /// `key!=value`: the label is absent or has another value.
    Ne,
    /// `key in (a,b)`: the label is present with one of the values.
    In,
    /// `key notin (a,b)`: the label is absent or has none of the values.
    NotIn,
    /// `key`: the label is present.
    Exists,
    /// `!key`: the label is absent.
    NotExists,
}

/// One label constraint; `values` are sorted and without repeats (one for
/// `Eq`/`Ne`, none for `Exists`/`NotExists`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Constraint {
    pub key: String,
    pub op: Op,
    pub values: Vec<String>,
}

/// What a tag rule counts over: the agent itself, or every agent that has
/// the same value of a label (e.g. `zone`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    Agent,
    Label(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RuleKind {
    /// Only where a task with the tag is held (in the scope).
    Affinity,
    /// Only where no task with the tag is held (in the scope).
    AntiAffinity,
    /// Only where fewer than this many tasks with the tag are held (in the
    /// scope), counting the task itself if it carries the tag.
    MaxPer(u32),
}

/// A rule over the tags of the tasks an agent (or a group of agents) holds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TagRule {
    pub kind: RuleKind,
    pub tag: String,
    pub scope: Scope,
}

/// One way a task can take GPUs: `count` devices of `model` (any model if
/// none), each with at least `min_memory_mb`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GpuShape {
    pub count: u32,
    pub model: Option<String>,
    pub min_memory_mb: u64,
}

/// What a task asks of placement; given at submit, never changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PlaceAsk {
    /// Sorted, without repeats.
    pub constraints: Vec<Constraint>,
    /// Sorted, without repeats.
    pub tags: Vec<String>,
    /// Sorted, without repeats.
    pub rules: Vec<TagRule>,
    /// GPU alternatives in order: the first that fits wins. Empty: the
    /// spec's `gpus` devices of any model with `gpu_memory_mb` each.
    pub shapes: Vec<GpuShape>,
    /// Consistent hashing's key (queues with that strategy).
    pub hash_key: Option<String>,
}

impl PlaceAsk {
    /// Whether it asks nothing beyond the spec (no entry is kept for it).
    pub fn is_plain(&self) -> bool {
        *self == PlaceAsk::default()
    }
}

/// The GPU devices a task's current assignment holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Held {
    /// The assignment's token.
    pub token: FencingToken,
    /// The index of the shape it took (0 when the task has no shapes).
    pub shape: u8,
    /// Device indexes on its agent (positions in the agent's GPU list),
    /// ascending.
    pub devices: Vec<u16>,
    /// The devices' weights, summed (thousandths).
    pub gpu_milli: u32,
}

/// A task's placement entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskPlace {
    pub ask: PlaceAsk,
    /// Set by the entry that assigned it, cleared when it lets go.
    pub held: Option<Held>,
    /// The shape its latest assignment took; kept after the assignment ends.
    pub last_shape: Option<u8>,
    /// The devices its latest assignment took; kept after it ends.
    pub last_devices: Vec<u16>,
}

/// How a queue's tasks choose among the agents that can take them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PlaceStrategy {
    /// The agent with the least work per unit of weight (and, for tasks
    /// that take GPUs, the smallest share of its weighted GPUs in use).
    #[default]
    LeastLoaded,
    /// Smooth weighted round-robin over the agents, by weight.
    WeightedRoundRobin,
    /// The agent with the least free capacity left after the task, so whole
    /// machines stay free for big tasks.
    BinPack,
    /// The group of agents (by the value of the label `key`) that holds the
    /// fewest tasks of the queue, then least-loaded within it.
    Spread { key: String },
    /// Rendezvous hashing of the task's hash key over the agents that fit.
    ConsistentHash,
}

/// A queue's placement settings (from version 5).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QueuePlacement {
    pub strategy: PlaceStrategy,
}

/// The part of the state that cluster format version 5 adds.
///
/// Not part of the state's own encoding: tidal-store writes it after the
/// lifecycle section in snapshots of version 5 and later. The fields after
/// `gpu_weights` are derived from the tasks, the agents and this state, not
/// encoded, and rebuilt when a state is restored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Tasks with a non-plain ask, or that hold devices; removed with the
    /// task by `Expire`.
    pub(crate) tasks: Map<TaskId, TaskPlace>,
    /// Queues whose strategy was set at version 5 (it overrides the queue's
    /// version-1 strategy).
    pub(crate) queues: BTreeMap<String, QueuePlacement>,
    /// GPU model -> weight (thousandths), set by `SetGpuWeights`; models not
    /// in it weigh [`BUILTIN_GPU_WEIGHTS`] or [`DEFAULT_GPU_WEIGHT_MILLI`]
    /// until the map was set once (`weights_set`).
    pub(crate) gpu_weights: BTreeMap<String, u32>,
    /// `SetGpuWeights` was applied: `gpu_weights` replaces the built-ins.
    pub(crate) weights_set: bool,
    /// Per agent, device index -> the task that holds it.
    #[serde(skip)]
    pub(crate) devices: Map<AgentId, BTreeMap<u16, TaskId>>,
    /// Held tasks per scope group and tag: the group is `(None, agent id)`
    /// for the agent scope, `(Some(label key), label value)` otherwise (an
    /// agent without the label is in the group with the value "").
    #[serde(skip)]
    pub(crate) tags: BTreeMap<(Option<String>, String), BTreeMap<String, u32>>,
    /// Held tasks per tag, anywhere.
    #[serde(skip)]
    pub(crate) tags_total: BTreeMap<String, u32>,
}

/// The replicated fields, in their encoded order; the indexes are derived.
impl Hash for Placement {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let Placement {
            tasks,
            queues,
            gpu_weights,
            weights_set,
            devices: _,
            tags: _,
            tags_total: _,
        } = self;
        tasks.hash(h);
        queues.hash(h);
        gpu_weights.hash(h);
        weights_set.hash(h);
    }
}

impl Placement {
    /// The weight of a GPU model, in thousandths.
    pub fn gpu_weight(&self, model: &str) -> u32 {
        if let Some(w) = self.gpu_weights.get(model) {
            return *w;
        }
        if !self.weights_set {
            if let Some((_, w)) = BUILTIN_GPU_WEIGHTS.iter().find(|(m, _)| *m == model) {
                return *w;
            }
        }
        DEFAULT_GPU_WEIGHT_MILLI
    }

    /// The lightest weight a GPU can have now: of the models weighed, and of
    /// the models that are not ([`DEFAULT_GPU_WEIGHT_MILLI`]).
    pub fn lightest_gpu_weight(&self) -> u32 {
        let set = if self.weights_set {
            self.gpu_weights.values().min().copied()
        } else {
            BUILTIN_GPU_WEIGHTS.iter().map(|(_, w)| *w).min()
        };
        set.map_or(DEFAULT_GPU_WEIGHT_MILLI, |w| {
            w.min(DEFAULT_GPU_WEIGHT_MILLI)
        })
    }

    /// The weights in force: the set ones, or the built-ins.
    pub fn gpu_weights(&self) -> BTreeMap<String, u32> {
        if self.weights_set {
            self.gpu_weights.clone()
        } else {
            BUILTIN_GPU_WEIGHTS
                .iter()
                .map(|(m, w)| (m.to_string(), *w))
                .collect()
        }
    }

    /// A task's entry, if it has one.
    pub fn task(&self, id: TaskId) -> Option<&TaskPlace> {
        self.tasks.get(&id)
    }

    /// A task's ask (the plain one if it has no entry).
    pub fn ask(&self, id: TaskId) -> Option<&PlaceAsk> {
        self.tasks.get(&id).map(|t| &t.ask)
    }

    /// What a held task's GPUs weigh, in thousandths: the weight recorded
    /// with the devices it took (from version 5), else 1000 per GPU of its
    /// spec (a task assigned before version 5 holds GPUs by count). What
    /// its tenant's usage counts against max-gpus.
    pub fn held_gpu_milli(&self, id: TaskId, spec: &TaskSpec) -> u64 {
        match self.tasks.get(&id).and_then(|e| e.held.as_ref()) {
            Some(held) => u64::from(held.gpu_milli),
            None => u64::from(spec.gpus) * 1000,
        }
    }

    /// The devices an agent's tasks hold now: index -> holder.
    pub fn busy(&self, agent: &str) -> Option<&BTreeMap<u16, TaskId>> {
        self.devices.get(agent)
    }

    /// A queue's strategy set at version 5, if any.
    pub fn queue(&self, name: &str) -> Option<&QueuePlacement> {
        self.queues.get(name)
    }

    /// How many held tasks carry `tag` in the group `group` (see `tags`).
    pub fn tag_count(&self, group: &(Option<String>, String), tag: &str) -> u32 {
        self.tags
            .get(group)
            .and_then(|m| m.get(tag))
            .copied()
            .unwrap_or(0)
    }

    /// How many held tasks carry `tag`, anywhere.
    pub fn tag_total(&self, tag: &str) -> u32 {
        self.tags_total.get(tag).copied().unwrap_or(0)
    }
}
