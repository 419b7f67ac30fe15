//! Unit and property tests of `constraint.rs`.

use proptest::prelude::*;

use super::*;

fn c(key: &str, op: Op, values: &[&str]) -> Constraint {
    Constraint {
        key: key.into(),
        op,
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn err(text: &str) -> String {
    match parse(text) {
        Err(e) => e,
        Ok(c) => panic!("{text:?} parsed as {c:?}"),
    }
}

#[test]
fn parses_every_form() {
    assert_eq!(parse("zone=a"), Ok(c("zone", Op::Eq, &["a"])));
    assert_eq!(parse("zone==a"), Ok(c("zone", Op::Eq, &["a"])));
    assert_eq!(parse("rack!=r3"), Ok(c("rack", Op::Ne, &["r3"])));
    assert_eq!(
        parse("gpu in (H100,A100)"),
        Ok(c("gpu", Op::In, &["A100", "H100"]))
    );
    assert_eq!(
        parse("gpu notin (b, a, b)"),
        Ok(c("gpu", Op::NotIn, &["a", "b"]))
    );
    assert_eq!(parse("ssd"), Ok(c("ssd", Op::Exists, &[])));
    assert_eq!(parse("!spot"), Ok(c("spot", Op::NotExists, &[])));
}

#[test]
fn allows_whitespace_around_tokens() {
    assert_eq!(parse("  zone = a  "), Ok(c("zone", Op::Eq, &["a"])));
    assert_eq!(parse("zone\t==\ta"), Ok(c("zone", Op::Eq, &["a"])));
    assert_eq!(parse(" rack != r3"), Ok(c("rack", Op::Ne, &["r3"])));
    assert_eq!(
        parse(" gpu  in(  A100 ,H100 ) "),
        Ok(c("gpu", Op::In, &["A100", "H100"]))
    );
    assert_eq!(parse("gpu notin(x)"), Ok(c("gpu", Op::NotIn, &["x"])));
    assert_eq!(parse(" ssd "), Ok(c("ssd", Op::Exists, &[])));
    assert_eq!(parse(" ! spot "), Ok(c("spot", Op::NotExists, &[])));
}

#[test]
fn keys_and_values_take_every_name_character() {
    assert_eq!(
        parse("topology.kubernetes.io/zone=eu-west_1:a"),
        Ok(c("topology.kubernetes.io/zone", Op::Eq, &["eu-west_1:a"]))
    );
    // The words in/notin are keys where no list follows.
    assert_eq!(parse("in"), Ok(c("in", Op::Exists, &[])));
    assert_eq!(parse("!notin"), Ok(c("notin", Op::NotExists, &[])));
    assert_eq!(parse("in in (in)"), Ok(c("in", Op::In, &["in"])));
    assert_eq!(parse("inside=1"), Ok(c("inside", Op::Eq, &["1"])));
}

#[test]
fn errors_say_what_is_wrong_and_show_the_input() {
    assert_eq!(
        err("zone="),
        "constraint \"zone=\": a value is needed after \"=\""
    );
    assert_eq!(
        err("zone!= "),
        "constraint \"zone!= \": a value is needed after \"!=\""
    );
    assert!(err("").contains("it is empty"), "{}", err(""));
    assert!(err("   ").starts_with("constraint \"   \": it is empty"));
    let e = err("=a");
    assert!(
        e.starts_with("constraint \"=a\": a label key is needed, not '='"),
        "{e}"
    );
    let e = err("!");
    assert_eq!(e, "constraint \"!\": a label key is needed after \"!\"");
    let e = err("!zone=a");
    assert!(e.contains("\"!\" takes a label key alone"), "{e}");
    let e = err("zone=a b");
    assert!(
        e.contains("unexpected \"b\" after the constraint's end"),
        "{e}"
    );
    let e = err("zone=a=b");
    assert!(e.contains("unexpected \"=b\""), "{e}");
    let e = err("zone ~ a");
    assert!(
        e.contains("unexpected \"~ a\" after the label key \"zone\""),
        "{e}"
    );
    let e = err("zone in a");
    assert!(e.contains("\"(\" is needed after \"in\""), "{e}");
    let e = err("zone in");
    assert_eq!(
        e,
        "constraint \"zone in\": \"(\" is needed after \"in\": write zone in (a,b)"
    );
    let e = err("zone notin ");
    assert!(e.contains("\"(\" is needed after \"notin\""), "{e}");
    let e = err("zone in ()");
    assert!(e.contains("the list after \"in\" is empty"), "{e}");
    let e = err("zone notin (a,)");
    assert!(e.contains("a value is needed after \",\", not ')'"), "{e}");
    let e = err("zone in (a b)");
    assert!(e.contains("unexpected \"b)\" in the list"), "{e}");
    let e = err("zone in (a");
    assert!(e.contains("\")\" is missing"), "{e}");
    let e = err("zone=a b c");
    assert!(e.starts_with("constraint \"zone=a b c\": "), "{e}");
    let e = err("zone=é");
    assert!(e.contains("a value is needed after \"=\", not 'é'"), "{e}");
    let e = err("zoné=a");
    assert!(e.contains("after the label key \"zon\""), "{e}");
    let e = err("zone=\"a\"");
    assert!(e.contains("not '\"'"), "{e}");
}

#[test]
fn refuses_names_and_lists_over_the_limits() {
    let long = "k".repeat(MAX_NAME_LEN + 1);
    let e = err(&format!("{long}=a"));
    assert!(e.contains("over the limit of 128 bytes"), "{e}");
    let e = err(&format!("zone={long}"));
    assert!(e.contains("over the limit of 128 bytes"), "{e}");
    assert!(parse(&format!("{}=a", "k".repeat(MAX_NAME_LEN))).is_ok());

    let list = |n: usize| {
        (0..n)
            .map(|i| format!("v{i}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let ok = parse(&format!("zone in ({})", list(MAX_CONSTRAINT_VALUES))).unwrap();
    assert_eq!(ok.values.len(), MAX_CONSTRAINT_VALUES);
    let e = err(&format!("zone in ({})", list(MAX_CONSTRAINT_VALUES + 1)));
    assert!(
        e.contains("it lists 33 values, over the limit of 32"),
        "{e}"
    );
    // Repeats count once.
    let dup = format!("{},v0", list(MAX_CONSTRAINT_VALUES));
    assert!(parse(&format!("zone in ({dup})")).is_ok());
}

#[test]
fn displays_the_canonical_text() {
    let show = |t: &str| parse(t).unwrap().to_string();
    assert_eq!(show(" zone == a "), "zone=a");
    assert_eq!(show("zone != a"), "zone!=a");
    assert_eq!(show("gpu in ( H100 , A100 )"), "gpu in (A100,H100)");
    assert_eq!(show("gpu notin (b,a)"), "gpu notin (a,b)");
    assert_eq!(show("ssd"), "ssd");
    assert_eq!(show("! ssd"), "!ssd");
}

#[test]
fn matches_with_kubernetes_semantics() {
    let l = labels(&[("zone", "a"), ("gpu", "A100"), ("ssd", "")]);
    let none = labels(&[]);
    let m = |t: &str, l: &BTreeMap<String, String>| matches(l, &parse(t).unwrap());
    assert!(m("zone=a", &l));
    assert!(!m("zone=b", &l));
    assert!(!m("zone=a", &none));
    assert!(m("zone!=b", &l));
    assert!(!m("zone!=a", &l));
    assert!(m("zone!=a", &none), "!= matches an agent without the label");
    assert!(m("gpu in (A100,H100)", &l));
    assert!(!m("gpu in (A40,H100)", &l));
    assert!(!m("gpu in (A100)", &none));
    assert!(m("gpu notin (A40,H100)", &l));
    assert!(!m("gpu notin (A100,H100)", &l));
    assert!(
        m("gpu notin (A100)", &none),
        "notin matches an agent without the label"
    );
    assert!(m("ssd", &l), "an empty value still exists");
    assert!(!m("ssd", &none));
    assert!(!m("!ssd", &l));
    assert!(m("!ssd", &none));
    assert!(matches_all(
        &l,
        &[parse("zone=a").unwrap(), parse("ssd").unwrap()]
    ));
    let cs = [parse("zone=a").unwrap(), parse("rack").unwrap()];
    assert!(!matches_all(&l, &cs));
    assert_eq!(first_unmet(&l, &cs), Some(&cs[1]));
    assert_eq!(first_unmet(&l, &cs[..1]), None);
}

// ---- properties ----

const KEYS: &[&str] = &["zone", "gpu", "rack", "in", "notin", "a.b/c-d_e:f"];
const VALUES: &[&str] = &["a", "b", "A100", "x-1", "r.3", "in", "n/o", "p_q:r"];

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._:/-]{1,12}"
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![prop::sample::select(KEYS).prop_map(String::from), name()]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![prop::sample::select(VALUES).prop_map(String::from), name()]
}

fn op() -> impl Strategy<Value = Op> {
    prop::sample::select(vec![
        Op::Eq,
        Op::Ne,
        Op::In,
        Op::NotIn,
        Op::Exists,
        Op::NotExists,
    ])
}

/// A well-formed, normalised constraint.
fn constraint() -> impl Strategy<Value = Constraint> {
    (
        key(),
        op(),
        prop::collection::vec(value(), 1..=MAX_CONSTRAINT_VALUES),
    )
        .prop_map(|(key, op, mut values)| {
            values.sort();
            values.dedup();
            match op {
                Op::Exists | Op::NotExists => values.clear(),
                Op::Eq | Op::Ne => values.truncate(1),
                Op::In | Op::NotIn => {}
            }
            Constraint { key, op, values }
        })
}

fn labels_strategy() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(key(), value(), 0..5)
}

/// The semantics written out case by case, as a set membership test.
fn naive(labels: &BTreeMap<String, String>, c: &Constraint) -> bool {
    let present = labels.contains_key(&c.key);
    let value_in = labels
        .get(&c.key)
        .map(|v| c.values.contains(v))
        .unwrap_or(false);
    match c.op {
        Op::Exists => present,
        Op::NotExists => !present,
        Op::Eq | Op::In => present && value_in,
        Op::Ne | Op::NotIn => !present || !value_in,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_reads_back_display(c in constraint()) {
        let text = c.to_string();
        prop_assert_eq!(parse(&text), Ok(c.clone()), "text {}", text);
        // Extra whitespace around tokens reads the same.
        let spaced = text
            .replace("!=", " != ")
            .replace('=', " = ")
            .replace("! =", "!=")
            .replace('(', " ( ")
            .replace(',', " , ");
        prop_assert_eq!(parse(&format!(" {spaced} ")), Ok(c), "text {}", spaced);
    }

    #[test]
    fn matches_agrees_with_the_naive_model(c in constraint(), l in labels_strategy()) {
        prop_assert_eq!(matches(&l, &c), naive(&l, &c));
    }

    #[test]
    fn matches_agrees_when_the_label_is_there(c in constraint(), v in value(), l in labels_strategy()) {
        let mut l = l;
        l.insert(c.key.clone(), v);
        prop_assert_eq!(matches(&l, &c), naive(&l, &c));
        if !c.values.is_empty() {
            let mut l2 = l.clone();
            l2.insert(c.key.clone(), c.values[0].clone());
            prop_assert_eq!(matches(&l2, &c), naive(&l2, &c));
        }
    }

    #[test]
    fn parse_never_panics(text in "[ a-z=!(),.é]{0,24}") {
        let _ = parse(&text);
    }

    #[test]
    fn what_parses_is_well_formed(text in "[ a-c=!(),in]{0,16}") {
        if let Ok(c) = parse(&text) {
            let ask = crate::placement::types::PlaceAsk {
                constraints: vec![c.clone()],
                ..Default::default()
            };
            prop_assert_eq!(crate::placement::validate::validate(&ask), Ok(()));
            prop_assert_eq!(parse(&c.to_string()), Ok(c));
        }
    }
}
