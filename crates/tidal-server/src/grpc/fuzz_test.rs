//! The gRPC edge's fuzz targets on stable Rust (see `crate::fuzz`'s tests);
//! `TIDAL_WRITE_FUZZ_SEEDS=1 cargo test -p tidal-server fuzz_seeds` writes
//! their seeds too.

use tidal_store::fuzz::replay::replay;
use tidal_store::fuzz::samples;

use super::*;
use crate::fuzz::tests::{seeds, Seeds, CASES};

fn framing_seeds() -> Seeds {
    let frame = |flag: u8, msg: &[u8]| {
        let mut out = vec![flag];
        out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        out.extend_from_slice(msg);
        out
    };
    let submit = v1::SubmitRequest {
        tasks: vec![v1::TaskSpec {
            task_type: "t2i".into(),
            payload: b"a cat".to_vec(),
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let two: Vec<u8> = [frame(0, &submit), frame(0, b"")].concat();
    let with = |head: u8, body: &[u8]| [vec![head], body.to_vec()].concat();
    vec![
        ("one-frame".into(), with(0, &frame(0, &submit))),
        // Cut after 2, 3 and 1 bytes.
        (
            "one-frame-cut".into(),
            with(3 << 1, &[&[2u8, 3, 1][..], &frame(0, &submit)].concat()),
        ),
        ("two-frames".into(), with(0, &two)),
        ("compressed".into(), with(1, &frame(1, &submit))),
        ("empty".into(), vec![0]),
    ]
}

fn proto_seeds() -> Seeds {
    let entries = samples::commands();
    let mut specs = Vec::new();
    let mut agent = None;
    for command in entries {
        match command {
            tidal_core::Command::Submit(s) => specs.extend(s),
            tidal_core::Command::RegisterAgent(a) => agent = Some(a),
            _ => {}
        }
    }
    let with = |which: u8, msg: Vec<u8>| [vec![which], msg].concat();
    let submit = v1::SubmitRequest {
        tasks: specs.iter().map(|s| convert::spec_to(s, true)).collect(),
    };
    let register = v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Register(v1::Register {
            spec: agent.as_ref().map(convert::agent_spec_to),
            running: vec![v1::RunningTask {
                task_id: "t0000000001".into(),
                token: 4,
            }],
            instance: "i-1".into(),
            fenced: vec![],
            warm_models: vec![],
        })),
    };
    let completed = v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Completed(v1::TaskCompleted {
            task_id: "t0000000001".into(),
            token: 4,
            success: true,
            result: b"ok".to_vec(),
            ..Default::default()
        })),
    };
    vec![
        ("submit".into(), with(0, submit.encode_to_vec())),
        ("register".into(), with(1, register.encode_to_vec())),
        ("completed".into(), with(1, completed.encode_to_vec())),
        (
            "get".into(),
            with(
                2,
                v1::GetTaskRequest {
                    id: "t0000000042".into(),
                    stale: true,
                }
                .encode_to_vec(),
            ),
        ),
        (
            "list".into(),
            with(
                3,
                v1::ListTasksRequest {
                    state: 2,
                    queue: "q1".into(),
                    limit: 10,
                    after_id: "t0000000003".into(),
                    stale: false,
                    dead: false,
                }
                .encode_to_vec(),
            ),
        ),
        (
            "cancel".into(),
            with(
                4,
                v1::CancelTaskRequest {
                    id: "t0000000007".into(),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "set-queue".into(),
            with(
                5,
                v1::SetQueueRequest {
                    name: "vip".into(),
                    weight: 8,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
        ),
        ("submit-placement".into(), with(0, placement_submit())),
        (
            "set-queue-spread".into(),
            with(
                5,
                v1::SetQueueRequest {
                    name: "spread-q".into(),
                    weight: 2,
                    strategy: "spread".into(),
                    spread_key: "zone".into(),
                }
                .encode_to_vec(),
            ),
        ),
    ]
}

/// A submit with every placement field (cluster format version 5).
fn placement_submit() -> Vec<u8> {
    let shaped = v1::TaskSpec {
        task_type: "train".into(),
        constraints: vec!["zone in (a,b)".into(), "!spot".into(), "rack!=r3".into()],
        tags: vec!["web".into()],
        tag_rules: vec![
            v1::TagRule {
                kind: v1::TagRuleKind::MaxPer as i32,
                tag: "web".into(),
                max: 2,
                scope: "zone".into(),
            },
            v1::TagRule {
                kind: v1::TagRuleKind::Affinity as i32,
                tag: "db".into(),
                ..Default::default()
            },
        ],
        gpu_shapes: vec![
            v1::GpuShape {
                count: 2,
                model: "A100".into(),
                memory_mb: 40_960,
            },
            v1::GpuShape {
                count: 4,
                model: String::new(),
                memory_mb: 0,
            },
        ],
        hash_key: "user-42".into(),
        ..Default::default()
    };
    let modelled = v1::TaskSpec {
        task_type: "infer".into(),
        gpus: 1,
        gpu_model: "A40".into(),
        ..Default::default()
    };
    v1::SubmitRequest {
        tasks: vec![shaped, modelled],
    }
    .encode_to_vec()
}

#[test]
fn fuzz_seeds() {
    seeds("grpc_framing", framing_seeds(), grpc_framing, |b| {
        let mut scan = crate::grpc::framing::Scan::new(b[0] & 1 == 1);
        let cuts = usize::from((b[0] >> 1) & 0x0f);
        scan.feed(&b[1 + cuts..])
            .and_then(|()| scan.finish())
            .is_ok()
    });
    seeds(
        "proto_to_domain",
        proto_seeds(),
        proto_to_domain,
        |b| match b[0] {
            0 => v1::SubmitRequest::decode(&b[1..])
                .map(|r| r.tasks.into_iter().all(|s| convert::spec_from(s).is_ok()))
                .unwrap_or(false),
            1 => v1::AgentMessage::decode(&b[1..]).is_ok(),
            2 => v1::GetTaskRequest::decode(&b[1..]).is_ok_and(|r| convert::task_id(&r.id).is_ok()),
            _ => true,
        },
    );
}

#[test]
fn grpc_framing_replays() {
    replay("grpc_framing", grpc_framing, CASES);
}

#[test]
fn proto_to_domain_replays() {
    replay("proto_to_domain", proto_to_domain, CASES);
}
