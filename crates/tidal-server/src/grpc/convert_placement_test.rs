//! The placement wire: asks parsed with the field named in each refusal,
//! limits as RESOURCE_EXHAUSTED, the echo, queue strategies.

use tidal_core::placement::types::{
    Constraint, GpuShape, Op, PlaceStrategy, QueuePlacement, RuleKind, Scope, TagRule,
};
use tidal_proto::v1;
use tonic::Code;

use super::*;

fn spec() -> v1::TaskSpec {
    v1::TaskSpec {
        task_type: "t".into(),
        ..Default::default()
    }
}

fn refused(s: v1::TaskSpec) -> (Code, String) {
    let e = ask_from(&s).expect_err("refused");
    (e.code(), e.to_string())
}

#[test]
fn an_ask_is_read_normalised_and_echoed() {
    let s = v1::TaskSpec {
        constraints: vec![
            "zone = a".into(),
            "gpu in (H100, A100)".into(),
            "!spot".into(),
        ],
        tags: vec!["web".into(), "db".into(), "web".into()],
        tag_rules: vec![
            v1::TagRule {
                kind: v1::TagRuleKind::MaxPer as i32,
                tag: "web".into(),
                max: 2,
                scope: "zone".into(),
            },
            v1::TagRule {
                kind: v1::TagRuleKind::AntiAffinity as i32,
                tag: "db".into(),
                ..Default::default()
            },
        ],
        gpu_shapes: vec![
            v1::GpuShape {
                count: 1,
                model: "A100".into(),
                memory_mb: 40_960,
            },
            v1::GpuShape {
                count: 2,
                model: String::new(),
                memory_mb: 0,
            },
        ],
        hash_key: "user-7".into(),
        ..spec()
    };
    let ask = ask_from(&s).unwrap();
    assert_eq!(ask.tags, vec!["db".to_string(), "web".to_string()]);
    assert_eq!(
        ask.constraints[0],
        Constraint {
            key: "gpu".into(),
            op: Op::In,
            values: vec!["A100".into(), "H100".into()],
        }
    );
    assert!(ask.rules.contains(&TagRule {
        kind: RuleKind::MaxPer(2),
        tag: "web".into(),
        scope: Scope::Label("zone".into()),
    }));
    assert_eq!(
        ask.shapes,
        vec![
            GpuShape {
                count: 1,
                model: Some("A100".into()),
                min_memory_mb: 40_960,
            },
            GpuShape {
                count: 2,
                model: None,
                min_memory_mb: 0,
            },
        ]
    );
    assert_eq!(ask.hash_key.as_deref(), Some("user-7"));

    // The echo reads back to the same ask.
    let mut echoed = spec();
    ask_into(&ask, &mut echoed);
    assert_eq!(
        echoed.constraints,
        vec!["gpu in (A100,H100)", "!spot", "zone=a"]
    );
    assert_eq!(ask_from(&echoed).unwrap(), ask);
    // As Get shows a task that took its second shape: gpus and memory are
    // that shape's, and the spec can be sent again as it is.
    let got = v1::TaskSpec {
        gpus: 2,
        gpu_memory_mb: 0,
        ..echoed.clone()
    };
    assert_eq!(ask_from(&got).unwrap(), ask);
    let first = v1::TaskSpec {
        gpus: 1,
        gpu_memory_mb: 40_960,
        ..echoed
    };
    assert_eq!(ask_from(&first).unwrap(), ask);

    // gpu_model with gpus is one shape, echoed as gpu_model.
    let s = v1::TaskSpec {
        gpus: 2,
        gpu_model: "A40".into(),
        ..spec()
    };
    let ask = ask_from(&s).unwrap();
    assert_eq!(ask.shapes.len(), 1);
    let mut echoed = v1::TaskSpec { gpus: 2, ..spec() };
    ask_into(&ask, &mut echoed);
    assert_eq!(echoed.gpu_model, "A40");
    assert!(echoed.gpu_shapes.is_empty());
}

#[test]
fn a_malformed_field_is_invalid_argument_naming_it() {
    let cases: Vec<(v1::TaskSpec, &str)> = vec![
        (
            v1::TaskSpec {
                constraints: vec!["zone=".into()],
                ..spec()
            },
            "constraints[0]",
        ),
        (
            v1::TaskSpec {
                tags: vec!["bad tag".into()],
                ..spec()
            },
            "tags[0]",
        ),
        (
            v1::TaskSpec {
                tag_rules: vec![v1::TagRule {
                    tag: "web".into(),
                    ..Default::default()
                }],
                ..spec()
            },
            "tag_rules[0]",
        ),
        (
            v1::TaskSpec {
                tag_rules: vec![v1::TagRule {
                    kind: v1::TagRuleKind::Affinity as i32,
                    tag: "web".into(),
                    max: 3,
                    ..Default::default()
                }],
                ..spec()
            },
            "tag_rules[0]",
        ),
        (
            v1::TaskSpec {
                gpu_model: "A100".into(),
                ..spec()
            },
            "gpu_model",
        ),
        (
            v1::TaskSpec {
                gpus: 2,
                gpu_shapes: vec![v1::GpuShape {
                    count: 1,
                    ..Default::default()
                }],
                ..spec()
            },
            "gpu_shapes",
        ),
        (
            // Memory given beside the shapes, none of which asks it.
            v1::TaskSpec {
                gpu_memory_mb: 40_960,
                gpu_shapes: vec![v1::GpuShape {
                    count: 1,
                    ..Default::default()
                }],
                ..spec()
            },
            "gpu_shapes",
        ),
        (
            v1::TaskSpec {
                gpus: 1,
                gpu_model: "A100".into(),
                gpu_shapes: vec![v1::GpuShape {
                    count: 1,
                    ..Default::default()
                }],
                ..spec()
            },
            "gpu_shapes",
        ),
        (
            v1::TaskSpec {
                gpu_shapes: vec![v1::GpuShape::default()],
                ..spec()
            },
            "gpu_shapes",
        ),
        (
            v1::TaskSpec {
                hash_key: "k".repeat(257),
                ..spec()
            },
            "hash_key",
        ),
    ];
    for (s, field) in cases {
        let (code, message) = refused(s);
        assert_eq!(code, Code::InvalidArgument, "{message}");
        assert!(message.starts_with(field), "{field}: {message}");
    }
}

#[test]
fn every_shape_is_within_the_gpu_limit() {
    let s = v1::TaskSpec {
        gpu_shapes: vec![
            v1::GpuShape {
                count: 2,
                ..Default::default()
            },
            v1::GpuShape {
                count: 16,
                ..Default::default()
            },
        ],
        ..spec()
    };
    let ask = ask_from(&s).unwrap();
    assert!(shapes_within(&ask, 16).is_ok());
    // The second shape, not only the first, is held to the limit.
    let e = shapes_within(&ask, 8).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.to_string(),
        "gpu_shapes[1]: task asks for 16 GPUs, over the limit of 8"
    );
}

#[test]
fn over_a_limit_is_resource_exhausted() {
    let cases = vec![
        v1::TaskSpec {
            constraints: (0..33).map(|i| format!("k{i}")).collect(),
            ..spec()
        },
        v1::TaskSpec {
            tags: (0..17).map(|i| format!("t{i}")).collect(),
            ..spec()
        },
        v1::TaskSpec {
            gpu_shapes: vec![
                v1::GpuShape {
                    count: 1,
                    ..Default::default()
                };
                9
            ],
            ..spec()
        },
        v1::TaskSpec {
            constraints: vec![format!(
                "k in ({})",
                (0..33)
                    .map(|i| format!("v{i}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )],
            ..spec()
        },
    ];
    for s in cases {
        let (code, message) = refused(s);
        assert_eq!(code, Code::ResourceExhausted, "{message}");
        assert!(message.contains("over the limit"), "{message}");
    }
}

#[test]
fn queue_strategies_read_and_write() {
    assert_eq!(
        strategy_from("", "").unwrap(),
        QueueStrategy::V1(Strategy::LeastLoaded)
    );
    assert_eq!(
        strategy_from("wrr", "").unwrap(),
        QueueStrategy::V1(Strategy::WeightedRoundRobin)
    );
    assert_eq!(
        strategy_from("spread", "zone").unwrap(),
        QueueStrategy::Placement(QueuePlacement {
            strategy: PlaceStrategy::Spread { key: "zone".into() }
        })
    );
    for (strategy, key) in [
        ("spread", ""),
        ("bin-pack", "zone"),
        ("least-loaded", "zone"),
        ("fastest", ""),
    ] {
        let e = strategy_from(strategy, key).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{strategy} {key}: {e}");
    }
    for s in [
        PlaceStrategy::BinPack,
        PlaceStrategy::ConsistentHash,
        PlaceStrategy::Spread { key: "rack".into() },
    ] {
        let (name, key) = strategy_to(&s);
        assert_eq!(
            strategy_from(name, &key).unwrap(),
            QueueStrategy::Placement(QueuePlacement { strategy: s })
        );
    }
}
