//! Unit and property tests of `validate.rs`.

use proptest::prelude::*;

use super::*;
use crate::limits::{validate_name, Limits};
use crate::placement::types::{Constraint, GpuShape, TagRule};

fn c(key: &str, op: Op, values: &[&str]) -> Constraint {
    Constraint {
        key: key.into(),
        op,
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

fn rule(kind: RuleKind, tag: &str, scope: Scope) -> TagRule {
    TagRule {
        kind,
        tag: tag.into(),
        scope,
    }
}

fn shape(count: u32, model: Option<&str>) -> GpuShape {
    GpuShape {
        count,
        model: model.map(String::from),
        min_memory_mb: 0,
    }
}

fn full_ask() -> PlaceAsk {
    PlaceAsk {
        constraints: vec![
            c("zone", Op::Eq, &["a"]),
            c("gpu", Op::In, &["A100", "H100"]),
            c("rack", Op::Ne, &["r3"]),
            c("spot", Op::NotExists, &[]),
            c("ssd", Op::Exists, &[]),
            c("os", Op::NotIn, &["win"]),
        ],
        tags: vec!["web".into()],
        rules: vec![
            rule(RuleKind::Affinity, "db", Scope::Agent),
            rule(RuleKind::AntiAffinity, "web", Scope::Label("zone".into())),
            rule(RuleKind::MaxPer(2), "web", Scope::Agent),
        ],
        shapes: vec![
            shape(1, Some("A100")),
            shape(2, Some("A40")),
            shape(1, None),
        ],
        hash_key: Some("user-42".into()),
    }
}

fn err(ask: &PlaceAsk) -> String {
    validate(ask).unwrap_err()
}

#[test]
fn accepts_well_formed_asks() {
    assert_eq!(validate(&PlaceAsk::default()), Ok(()));
    assert_eq!(validate(&full_ask()), Ok(()));
}

#[test]
fn the_name_rules_are_those_of_limits() {
    assert_eq!(MAX_NAME_LEN, Limits::default().max_name_len);
    let l = Limits::default();
    for s in [
        "",
        "ok",
        "a b",
        "é",
        "x=y",
        &"k".repeat(128),
        &"k".repeat(129),
    ] {
        let ours = check_name("tag", s);
        let theirs = validate_name("tag", s, &l).map_err(|r| match r {
            crate::command::Rejection::Invalid(m) => m,
            other => panic!("{other:?}"),
        });
        assert_eq!(ours, theirs, "{s:?}");
    }
}

#[test]
fn refuses_counts_over_the_limits() {
    let constraints = |n: usize| -> Vec<Constraint> {
        (0..n)
            .map(|i| c(&format!("k{i}"), Op::Exists, &[]))
            .collect()
    };
    let tags = |n: usize| -> Vec<String> { (0..n).map(|i| format!("t{i}")).collect() };
    let a = PlaceAsk {
        constraints: constraints(MAX_CONSTRAINTS + 1),
        ..PlaceAsk::default()
    };
    assert_eq!(err(&a), "the task has 33 constraints, over the limit of 32");

    let a = PlaceAsk {
        tags: tags(MAX_TAGS + 1),
        ..PlaceAsk::default()
    };
    assert_eq!(err(&a), "the task has 17 tags, over the limit of 16");

    let a = PlaceAsk {
        rules: (0..=MAX_TAG_RULES)
            .map(|i| rule(RuleKind::MaxPer(1), &format!("t{i}"), Scope::Agent))
            .collect(),
        ..PlaceAsk::default()
    };
    assert_eq!(err(&a), "the task has 17 tag rules, over the limit of 16");

    let a = PlaceAsk {
        shapes: vec![shape(1, None); MAX_SHAPES + 1],
        ..PlaceAsk::default()
    };
    assert_eq!(err(&a), "the task has 9 GPU shapes, over the limit of 8");

    let a = PlaceAsk {
        constraints: constraints(MAX_CONSTRAINTS),
        tags: tags(MAX_TAGS),
        rules: (0..MAX_TAG_RULES)
            .map(|i| rule(RuleKind::MaxPer(1), &format!("t{i}"), Scope::Agent))
            .collect(),
        shapes: vec![shape(MAX_SHAPE_GPUS, None); MAX_SHAPES],
        hash_key: None,
    };
    assert_eq!(validate(&a), Ok(()));
}

#[test]
fn refuses_constraints_with_the_wrong_number_of_values() {
    let with = |k: Constraint| PlaceAsk {
        constraints: vec![k],
        ..PlaceAsk::default()
    };
    assert_eq!(
        err(&with(c("ssd", Op::Exists, &["x"]))),
        "constraint \"ssd\" exists has 1 value: it takes no values"
    );
    assert!(err(&with(c("ssd", Op::NotExists, &["x"]))).contains("takes no values"));
    assert!(err(&with(c("zone", Op::Eq, &[]))).contains("it takes exactly one value"));
    assert!(err(&with(c("zone", Op::Ne, &["a", "b"]))).contains("it takes exactly one value"));
    assert!(err(&with(c("zone", Op::In, &[]))).contains("it takes 1 to 32 values"));
    let many: Vec<String> = (0..=MAX_CONSTRAINT_VALUES)
        .map(|i| format!("v{i}"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert!(err(&with(c("zone", Op::NotIn, &many))).contains("has 33 values"));
    assert!(err(&with(c("zo ne", Op::Exists, &[]))).starts_with("constraint label key \"zo ne\""));
    assert!(err(&with(c("zone", Op::Eq, &["a b"]))).contains("constraint value (label \"zone\")"));
    assert!(err(&with(c("zone", Op::Eq, &[""]))).contains("is empty"));
}

#[test]
fn refuses_bad_names() {
    let mut a = full_ask();
    a.tags.push("we b".into());
    assert!(err(&a).starts_with("tag \"we b\" contains ' '"));

    let mut a = full_ask();
    a.rules.push(rule(RuleKind::Affinity, "", Scope::Agent));
    assert_eq!(err(&a), "tag rule's tag \"\" is empty");

    let mut a = full_ask();
    a.rules
        .push(rule(RuleKind::Affinity, "x", Scope::Label("a=b".into())));
    assert!(err(&a).starts_with("tag rule's scope label key \"a=b\""));

    let mut a = full_ask();
    a.shapes.push(shape(1, Some("A 100")));
    assert!(err(&a).starts_with("GPU model \"A 100\""));
}

#[test]
fn refuses_bad_rules_shapes_and_hash_keys() {
    let mut a = full_ask();
    a.rules.push(rule(RuleKind::MaxPer(0), "web", Scope::Agent));
    assert_eq!(
        err(&a),
        "max-per rule for tag \"web\" allows 0 tasks: give at least 1"
    );

    let mut a = full_ask();
    a.rules
        .push(rule(RuleKind::Affinity, "web", Scope::Label("zone".into())));
    assert_eq!(
        err(&a),
        "tag \"web\" has both an affinity and an anti-affinity rule in the same scope (zone): no agent can meet both"
    );
    // Different scopes do not contradict.
    let mut a = full_ask();
    a.rules.push(rule(RuleKind::Affinity, "web", Scope::Agent));
    assert_eq!(validate(&a), Ok(()));

    let mut a = full_ask();
    a.shapes[1].count = 0;
    assert_eq!(err(&a), "GPU shape 2 asks for 0 GPUs: use 1..=1024");
    a.shapes[1].count = MAX_SHAPE_GPUS + 1;
    assert_eq!(err(&a), "GPU shape 2 asks for 1025 GPUs: use 1..=1024");

    let mut a = full_ask();
    a.hash_key = Some(String::new());
    assert!(err(&a).starts_with("hash key \"\" is empty"));
    a.hash_key = Some("k".repeat(MAX_HASH_KEY_BYTES));
    assert_eq!(validate(&a), Ok(()));
    a.hash_key = Some("k".repeat(MAX_HASH_KEY_BYTES + 1));
    assert!(err(&a).contains("is 257 bytes long, over the limit of 256 bytes"));
    // Any characters go in a hash key.
    a.hash_key = Some("user 42 / é".into());
    assert_eq!(validate(&a), Ok(()));
}

#[test]
fn normalize_sorts_and_drops_repeats_but_keeps_shape_order() {
    let a = PlaceAsk {
        constraints: vec![
            c("zone", Op::In, &["b", "a", "b"]),
            c("rack", Op::Exists, &[]),
            c("zone", Op::In, &["a", "b"]),
        ],
        tags: vec!["web".into(), "api".into(), "web".into()],
        rules: vec![
            rule(RuleKind::MaxPer(2), "web", Scope::Agent),
            rule(RuleKind::Affinity, "db", Scope::Agent),
            rule(RuleKind::MaxPer(2), "web", Scope::Agent),
        ],
        shapes: vec![
            shape(2, Some("A40")),
            shape(1, Some("A100")),
            shape(2, Some("A40")),
        ],
        hash_key: Some("k".into()),
    };
    let n = normalize(a.clone());
    assert_eq!(
        n.constraints,
        vec![c("rack", Op::Exists, &[]), c("zone", Op::In, &["a", "b"])]
    );
    assert_eq!(n.tags, vec!["api".to_string(), "web".to_string()]);
    assert_eq!(
        n.rules,
        vec![
            rule(RuleKind::Affinity, "db", Scope::Agent),
            rule(RuleKind::MaxPer(2), "web", Scope::Agent)
        ]
    );
    assert_eq!(n.shapes, a.shapes);
    assert_eq!(n.hash_key, a.hash_key);
    assert_eq!(normalize(PlaceAsk::default()), PlaceAsk::default());
}

// ---- properties ----

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["a", "b", "zone", "web", "A100"]).prop_map(String::from),
        "[a-z0-9._:/-]{1,6}",
    ]
}

fn constraint() -> impl Strategy<Value = Constraint> {
    (
        name(),
        prop::sample::select(vec![
            Op::Eq,
            Op::Ne,
            Op::In,
            Op::NotIn,
            Op::Exists,
            Op::NotExists,
        ]),
        prop::collection::vec(name(), 0..4),
    )
        .prop_map(|(key, op, values)| Constraint { key, op, values })
}

fn tag_rule() -> impl Strategy<Value = TagRule> {
    (
        prop_oneof![
            Just(RuleKind::Affinity),
            Just(RuleKind::AntiAffinity),
            (0u32..4).prop_map(RuleKind::MaxPer)
        ],
        name(),
        prop_oneof![Just(Scope::Agent), name().prop_map(Scope::Label)],
    )
        .prop_map(|(kind, tag, scope)| TagRule { kind, tag, scope })
}

fn ask() -> impl Strategy<Value = PlaceAsk> {
    (
        prop::collection::vec(constraint(), 0..6),
        prop::collection::vec(name(), 0..5),
        prop::collection::vec(tag_rule(), 0..5),
        prop::collection::vec(
            (0u32..3, prop::option::of(name()), 0u64..3).prop_map(|(count, model, m)| GpuShape {
                count,
                model,
                min_memory_mb: m,
            }),
            0..4,
        ),
        prop::option::of(name()),
    )
        .prop_map(|(constraints, tags, rules, shapes, hash_key)| PlaceAsk {
            constraints,
            tags,
            rules,
            shapes,
            hash_key,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn normalize_is_idempotent(a in ask()) {
        let once = normalize(a.clone());
        prop_assert_eq!(normalize(once.clone()), once.clone());
        // It neither adds nor loses what the ask says.
        prop_assert_eq!(&once.shapes, &a.shapes);
        prop_assert_eq!(&once.hash_key, &a.hash_key);
        for t in &a.tags {
            prop_assert!(once.tags.binary_search(t).is_ok());
        }
        for r in &a.rules {
            prop_assert!(once.rules.binary_search(r).is_ok());
        }
        prop_assert!(once.constraints.windows(2).all(|w| w[0] < w[1]));
        for k in &once.constraints {
            prop_assert!(k.values.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn normalizing_keeps_a_valid_ask_valid(a in ask()) {
        if validate(&a).is_ok() {
            prop_assert_eq!(validate(&normalize(a)), Ok(()));
        }
    }

    #[test]
    fn the_order_given_does_not_matter(a in ask(), seed in any::<u64>()) {
        let mut b = a.clone();
        // Rotate the sorted-by-normalize lists; shapes keep their order.
        let r = |n: usize| if n == 0 { 0 } else { (seed as usize) % n };
        let n = b.constraints.len();
        b.constraints.rotate_left(r(n));
        for k in &mut b.constraints {
            let n = k.values.len();
            k.values.rotate_left(r(n));
        }
        let n = b.tags.len();
        b.tags.rotate_left(r(n));
        let n = b.rules.len();
        b.rules.rotate_left(r(n));
        prop_assert_eq!(normalize(a), normalize(b));
    }
}
