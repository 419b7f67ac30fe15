//! Micro benchmarks of the hot paths that do not need a cluster: applying a
//! batch of submits and an assign round to the state machine, planning a
//! dispatch round, and encoding/decoding log entries.
//!
//!     cargo bench -p tidal-bench --bench core

use std::collections::BTreeSet;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use tidal_core::command::{ApplyCtx, Command, Envelope};
use tidal_core::dispatch::{place_new, plan, DispatchCursor, InFlight};
use tidal_core::model::{AgentSpec, Strategy, TaskSpec};
use tidal_core::placement::constraint;
use tidal_core::placement::types::{PlaceAsk, PlaceStrategy, QueuePlacement, PLACEMENT_VERSION};
use tidal_core::State;

fn ctx(i: u64) -> ApplyCtx {
    ApplyCtx {
        log_index: i,
        time_ms: i,
    }
}

fn specs(n: usize, queue: &str) -> Vec<TaskSpec> {
    (0..n)
        .map(|i| TaskSpec {
            task_type: "t2i".into(),
            queue: queue.into(),
            models: vec!["sdxl".into()],
            idempotency_key: Some(format!("{queue}-{i}")),
            payload: vec![b'x'; 200],
            ..TaskSpec::default()
        })
        .collect()
}

/// A state with queues vip (8) and normal (2), `agents` agents of 4 slots
/// and `pending` pending tasks split between the queues.
fn loaded(agents: usize, pending: usize) -> (State, BTreeSet<String>, u64) {
    loaded_tenants(agents, pending, 1)
}

/// [`loaded`] with the tasks of each queue spread over `tenants` tenants in
/// turn (one tenant: no tenant named).
fn loaded_tenants(agents: usize, pending: usize, tenants: usize) -> (State, BTreeSet<String>, u64) {
    let mut s = State::new();
    let mut i = 1;
    for (q, w) in [("vip", 8), ("normal", 2)] {
        s.apply(
            Command::SetQueue {
                name: q.into(),
                weight: w,
                strategy: Strategy::LeastLoaded,
            },
            ctx(i),
        );
        i += 1;
    }
    let mut connected = BTreeSet::new();
    for a in 0..agents {
        let id = format!("agent-{a}");
        s.apply(
            Command::RegisterAgent(AgentSpec {
                id: id.clone(),
                dc: "dc1".into(),
                task_types: ["t2i".to_string()].into(),
                models: ["sdxl".to_string()].into(),
                slots: 4,
                weight: 1,
                ..AgentSpec::default()
            }),
            ctx(i),
        );
        connected.insert(id);
        i += 1;
    }
    for q in ["vip", "normal"] {
        let mut tasks = specs(pending / 2, q);
        if tenants > 1 {
            for (n, t) in tasks.iter_mut().enumerate() {
                t.tenant = format!("tenant-{}", n % tenants);
            }
        }
        for chunk in tasks.chunks(1000) {
            s.apply(Command::Submit(chunk.to_vec()), ctx(i));
            i += 1;
        }
    }
    (s, connected, i)
}

/// [`loaded`] at cluster format version 5 with placement asks: the queues
/// vip (8) and normal (2) use `strategy`; agent i has the labels zone
/// (a, b, c, d by i mod 4) and rack (r0..r9 by i mod 10); half the tasks ask
/// `zone in (a,b)` and `rack!=r3`, the other half `zone notin (a,b)` and
/// `rack` (present): two asks, each met by about half the agents, together
/// by 950 of 1,000 (3,800 of the 4,000 slots).
fn loaded_asks(
    agents: usize,
    pending: usize,
    strategy: PlaceStrategy,
) -> (State, BTreeSet<String>, u64) {
    let mut s = State::new();
    s.restore_cluster_version(PLACEMENT_VERSION);
    let mut i = 1;
    for (q, w) in [("vip", 8), ("normal", 2)] {
        s.apply(
            Command::SetQueueWith {
                name: q.into(),
                weight: w,
                placement: QueuePlacement {
                    strategy: strategy.clone(),
                },
            },
            ctx(i),
        );
        i += 1;
    }
    let mut connected = BTreeSet::new();
    for a in 0..agents {
        let id = format!("agent-{a}");
        s.apply(
            Command::RegisterAgent(AgentSpec {
                id: id.clone(),
                dc: "dc1".into(),
                task_types: ["t2i".to_string()].into(),
                models: ["sdxl".to_string()].into(),
                slots: 4,
                weight: 1,
                labels: [
                    ("zone".to_string(), ["a", "b", "c", "d"][a % 4].to_string()),
                    ("rack".to_string(), format!("r{}", a % 10)),
                ]
                .into(),
                ..AgentSpec::default()
            }),
            ctx(i),
        );
        connected.insert(id);
        i += 1;
    }
    let asks = [["zone in (a,b)", "rack!=r3"], ["zone notin (a,b)", "rack"]].map(|cs| PlaceAsk {
        constraints: cs
            .iter()
            .map(|c| constraint::parse(c).expect("a constraint"))
            .collect(),
        ..PlaceAsk::default()
    });
    for q in ["vip", "normal"] {
        let tasks = specs(pending / 2, q);
        for chunk in tasks.chunks(1000) {
            s.apply(
                Command::SubmitWithPlacement {
                    specs: chunk.to_vec(),
                    place: Vec::new(),
                    by: Vec::new(),
                    opts: Vec::new(),
                    asks: (0..chunk.len()).map(|n| asks[n % 2].clone()).collect(),
                },
                ctx(i),
            );
            i += 1;
        }
    }
    (s, connected, i)
}

fn apply_submits(c: &mut Criterion) {
    let mut g = c.benchmark_group("apply_submit_batch");
    for n in [100usize, 1000] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let (state, _, i) = loaded(10, 0);
            let batch = specs(n, "vip");
            b.iter_batched(
                || (state.clone(), Command::Submit(batch.clone())),
                |(mut s, cmd)| s.apply(cmd, ctx(i)),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn dispatch_and_assign(c: &mut Criterion) {
    let (state, connected, i) = loaded(1000, 10_000);
    let round = plan(&state, &connected, 4096, &mut DispatchCursor::default());
    assert!(!round.is_empty(), "the fixture has work to plan");
    let mut g = c.benchmark_group("dispatch");
    g.throughput(Throughput::Elements(round.len() as u64));
    g.bench_function("plan_10k_pending_1k_agents", |b| {
        b.iter(|| plan(&state, &connected, 4096, &mut DispatchCursor::default()))
    });
    g.bench_function("apply_assign_round", |b| {
        b.iter_batched(
            || (state.clone(), Command::Assign(round.clone())),
            |(mut s, cmd)| s.apply(cmd, ctx(i)),
            BatchSize::LargeInput,
        )
    });
    // The same round with every queue's tasks spread over 8 tenants.
    let (state, connected, _) = loaded_tenants(1000, 10_000, 8);
    g.bench_function("plan_10k_pending_1k_agents_8_tenants", |b| {
        b.iter(|| plan(&state, &connected, 4096, &mut DispatchCursor::default()))
    });
    // Format version 5: every task with two label constraints, bin-pack;
    // and the same asks least-loaded.
    for (name, strategy) in [
        (
            "plan_10k_pending_1k_agents_constraints_bin_pack",
            PlaceStrategy::BinPack,
        ),
        (
            "plan_10k_pending_1k_agents_constraints_least_loaded",
            PlaceStrategy::LeastLoaded,
        ),
    ] {
        let (state, connected, i) = loaded_asks(1000, 10_000, strategy);
        let round = plan(&state, &connected, 4096, &mut DispatchCursor::default());
        assert!(round.len() > 2000, "the fixture has work to plan");
        let mut applied = state.clone();
        match applied.apply(Command::Assign(round.clone()), ctx(i)) {
            tidal_core::command::Response::Assigned { granted, .. } => {
                assert_eq!(granted.len(), round.len(), "apply grants the plan")
            }
            other => panic!("{other:?}"),
        }
        g.bench_function(name, |b| {
            b.iter(|| plan(&state, &connected, 4096, &mut DispatchCursor::default()))
        });
    }
    g.finish();
}

/// Eager placement of a submit batch of 20 (what the leader plans for every
/// submit entry), over fleets of 100, 1,000 and 10,000 idle agents.
fn eager_placement(c: &mut Criterion) {
    let mut g = c.benchmark_group("place_new_20_tasks");
    let batch: Vec<TaskSpec> = specs(20, "vip")
        .into_iter()
        .map(|mut s| {
            tidal_core::state::normalize(&mut s);
            s
        })
        .collect();
    for agents in [100, 1_000, 10_000] {
        let (state, connected, _) = loaded(agents, 0);
        let placed = place_new(
            &state,
            &connected,
            &batch,
            &InFlight::default(),
            &mut DispatchCursor::default(),
        );
        assert_eq!(
            placed.len(),
            batch.len(),
            "the fixture has room for the batch"
        );
        g.throughput(Throughput::Elements(batch.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(agents), &agents, |b, _| {
            let mut cursor = DispatchCursor::default();
            b.iter(|| {
                place_new(
                    &state,
                    &connected,
                    &batch,
                    &InFlight::default(),
                    &mut cursor,
                )
            })
        });
    }
    g.finish();
}

fn codec(c: &mut Criterion) {
    let entry = openraft::Entry::<tidal_store::TypeConfig> {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(3, 1), 42),
        payload: openraft::EntryPayload::Normal(Envelope::new(
            1,
            Command::Submit(specs(100, "vip")),
        )),
    };
    let bytes = tidal_store::codec::encode("log entry", &entry).expect("encodes");
    let mut g = c.benchmark_group("codec_log_entry_100_submits");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("encode", |b| {
        b.iter(|| tidal_store::codec::encode("log entry", &entry).expect("encodes"))
    });
    g.bench_function("decode", |b| {
        b.iter(|| {
            tidal_store::codec::decode::<openraft::Entry<tidal_store::TypeConfig>>(
                "log entry",
                &bytes,
            )
            .expect("decodes")
        })
    });
    g.finish();
}

/// What a status request walks: the state digest (equal on every replica
/// at the same applied index) and the task counts, over 100,000 tasks.
fn status(c: &mut Criterion) {
    let (state, _, _) = loaded(10, 100_000);
    let mut g = c.benchmark_group("status_100k_tasks");
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("digest", |b| b.iter(|| state.digest()));
    g.bench_function("counts_by_state", |b| b.iter(|| state.counts_by_state()));
    g.finish();
}

criterion_group!(
    benches,
    apply_submits,
    dispatch_and_assign,
    eager_placement,
    codec,
    status
);
criterion_main!(benches);
