//! Real values to seed the fuzz corpora with: a command of every kind, the
//! log entries that carry them, and the state they build (the same
//! commands the store's golden snapshot test applies, and more).

use std::collections::{BTreeMap, BTreeSet};

use openraft::{BasicNode, CommittedLeaderId, EntryPayload};
use tidal_core::command::ApplyCtx;
use tidal_core::forwarding::{Record, Verdict};
use tidal_core::lifecycle::types::TaskOptions;
use tidal_core::placement::types::{
    Constraint, GpuShape, Op, PlaceAsk, PlaceStrategy, QueuePlacement, RuleKind, Scope, TagRule,
};
use tidal_core::{
    AgentSpec, Command, Completion, Envelope, Outcome, Priority, State, Strategy, TaskId, TaskSpec,
};

use crate::{Applied, Entry, LogId, Membership, StoredMembership};

/// Log id `index` of term `term` (as this store format writes it).
pub fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn spec(i: u64, queue: &str, priority: Priority) -> TaskSpec {
    TaskSpec {
        task_type: "t2i".to_string(),
        queue: queue.to_string(),
        idempotency_key: i.is_multiple_of(2).then(|| format!("key-{i}")),
        payload: i.to_be_bytes().to_vec(),
        priority,
        tenant: "alice".to_string(),
        models: vec!["sdxl".to_string()],
        gpus: 1,
        ..Default::default()
    }
}

/// A command of every kind, in an order that applies cleanly.
pub fn commands() -> Vec<Command> {
    let agent = || "agent-a".to_string();
    vec![
        Command::SetQueue {
            name: "q1".to_string(),
            weight: 3,
            strategy: Strategy::LeastLoaded,
        },
        Command::RegisterAgent(AgentSpec {
            id: agent(),
            dc: "dc1".to_string(),
            task_types: BTreeSet::from(["t2i".to_string()]),
            models: BTreeSet::from(["sdxl".to_string()]),
            slots: 4,
            weight: 1,
            gpus: vec![tidal_core::model::Gpu {
                model: "a100".to_string(),
                memory_mb: 81920,
            }],
            labels: BTreeMap::from([("rack".to_string(), "r1".to_string())]),
            ..Default::default()
        }),
        Command::Submit(vec![
            spec(1, "default", Priority::Nearline),
            spec(2, "q1", Priority::Online),
            spec(3, "default", Priority::Offline),
            spec(4, "q1", Priority::Nearline),
            spec(5, "default", Priority::Online),
            spec(6, "q1", Priority::Offline),
        ]),
        Command::Assign(vec![(TaskId(1), agent()), (TaskId(2), agent())]),
        Command::Started {
            task: TaskId(1),
            token: 4,
        },
        Command::StartedBatch(vec![(TaskId(2), 4)]),
        Command::Complete(vec![Completion {
            task: TaskId(1),
            token: 4,
            outcome: Outcome {
                success: true,
                result: b"done".to_vec(),
                error: String::new(),
                exit_code: 0,
            },
        }]),
        Command::Forward(vec![
            (TaskId(3), "dc2".to_string()),
            (TaskId(4), "dc2".to_string()),
        ]),
        Command::ForwardAck {
            peer: "dc2".to_string(),
            verdicts: vec![
                (
                    1,
                    Verdict::Accepted {
                        remote_task: Some(TaskId(70)),
                    },
                ),
                (
                    2,
                    Verdict::Rejected {
                        reason: "no agent".to_string(),
                    },
                ),
            ],
        },
        Command::Cancel { task: TaskId(3) },
        Command::Ingest {
            origin: "dc9".to_string(),
            records: vec![
                (
                    1,
                    Record::Task {
                        origin_task: TaskId(40),
                        spec: spec(40, "default", Priority::Nearline),
                    },
                ),
                (
                    2,
                    Record::Cancel {
                        origin_task: TaskId(41),
                    },
                ),
            ],
        },
        Command::SubmitPlaced {
            specs: vec![spec(7, "default", Priority::Online)],
            place: vec![(0, agent())],
        },
        Command::Regrant {
            agent: agent(),
            tasks: vec![(TaskId(2), 4)],
        },
        Command::Stopped(vec![(TaskId(2), 4)]),
        Command::DrainAgent {
            agent: agent(),
            deadline_ms: Some(60_000),
        },
        Command::UndrainAgent { agent: agent() },
        Command::Expire {
            before_ms: 500,
            tasks: vec![TaskId(1)],
        },
        Command::AgentDown { agent: agent() },
        Command::DeregisterAgent { agent: agent() },
        Command::Noop,
        Command::SetClusterVersion { version: 2 },
        // Lifecycle options (version 4) and placement (version 5).
        Command::SetClusterVersion { version: 5 },
        Command::SubmitWith {
            specs: vec![spec(5, "default", Priority::Offline)],
            place: Vec::new(),
            by: Vec::new(),
            opts: vec![TaskOptions::default()],
        },
        Command::SetGpuWeights(BTreeMap::from([
            ("a100".to_string(), 1000),
            ("a40".to_string(), 500),
        ])),
        Command::SetQueueWith {
            name: "q2".to_string(),
            weight: 2,
            placement: QueuePlacement {
                strategy: PlaceStrategy::Spread {
                    key: "rack".to_string(),
                },
            },
        },
        Command::SubmitWithPlacement {
            specs: vec![spec(6, "q2", Priority::Nearline)],
            place: Vec::new(),
            by: Vec::new(),
            opts: Vec::new(),
            asks: vec![PlaceAsk {
                constraints: vec![Constraint {
                    key: "rack".to_string(),
                    op: Op::In,
                    values: vec!["r1".to_string(), "r2".to_string()],
                }],
                tags: vec!["web".to_string()],
                rules: vec![TagRule {
                    kind: RuleKind::MaxPer(2),
                    tag: "web".to_string(),
                    scope: Scope::Label("rack".to_string()),
                }],
                shapes: vec![GpuShape {
                    count: 1,
                    model: Some("a100".to_string()),
                    min_memory_mb: 40_960,
                }],
                hash_key: Some("user-1".to_string()),
            }],
        },
    ]
}

/// The membership of a three-node DC.
pub fn membership() -> Membership {
    let voters: BTreeSet<u64> = [1, 2, 3].into();
    let nodes: BTreeMap<u64, BasicNode> = voters
        .iter()
        .map(|id| (*id, BasicNode::new(format!("127.0.0.1:{}", 7000 + id))))
        .collect();
    Membership::new(vec![voters], nodes)
}

/// Entries 1.. of term 1: the membership, the leader's blank entry, then
/// one entry per command of [`commands`] (each of the format version its
/// command needs), then a Noop of version 2.
pub fn entries() -> Vec<Entry> {
    let mut out = vec![
        Entry {
            log_id: log_id(1, 1),
            payload: EntryPayload::Membership(membership()),
        },
        Entry {
            log_id: log_id(1, 2),
            payload: EntryPayload::Blank,
        },
    ];
    for command in commands() {
        let index = out.len() as u64 + 1;
        out.push(Entry {
            log_id: log_id(1, index),
            payload: EntryPayload::Normal(Envelope::new(1_000 + index, command)),
        });
    }
    let index = out.len() as u64 + 1;
    let mut envelope = Envelope::new(1_000 + index, Command::Noop);
    envelope.version = 2;
    out.push(Entry {
        log_id: log_id(2, index),
        payload: EntryPayload::Normal(envelope),
    });
    out
}

/// What applying [`entries`] builds.
pub fn applied() -> Applied {
    let mut state = State::new();
    let mut last = None;
    for entry in entries() {
        if let EntryPayload::Normal(envelope) = entry.payload {
            if let tidal_core::Body::Command(command) = envelope.body {
                state.apply(
                    command,
                    ApplyCtx {
                        log_index: entry.log_id.index,
                        time_ms: envelope.time_ms,
                    },
                );
            }
        }
        last = Some(entry.log_id);
    }
    Applied {
        state,
        last_applied: last,
        membership: StoredMembership::new(Some(log_id(1, 1)), membership()),
    }
}
