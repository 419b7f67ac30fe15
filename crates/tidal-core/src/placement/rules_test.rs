//! Unit tests of `rules.rs`.

use super::*;

type Group = (Option<String>, String);

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn rule(kind: RuleKind, tag: &str, scope: Scope) -> TagRule {
    TagRule {
        kind,
        tag: tag.into(),
        scope,
    }
}

fn zone() -> Scope {
    Scope::Label("zone".into())
}

fn ask(tags: &[&str], rules: Vec<TagRule>) -> PlaceAsk {
    PlaceAsk {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        rules,
        ..PlaceAsk::default()
    }
}

/// Held tasks' tags per group, as the placement index keeps them.
struct Held(BTreeMap<(Group, String), u32>);

impl Held {
    fn new(rows: &[(Option<&str>, &str, &str, u32)]) -> Self {
        Held(
            rows.iter()
                .map(|(k, g, t, n)| ((((*k).map(String::from), g.to_string()), t.to_string()), *n))
                .collect(),
        )
    }
    fn count(&self) -> impl Fn(&Group, &str) -> u32 + '_ {
        |g, t| {
            self.0
                .get(&(g.clone(), t.to_string()))
                .copied()
                .unwrap_or(0)
        }
    }
    fn total(&self) -> impl Fn(&str) -> u32 + '_ {
        |t| {
            self.0
                .iter()
                .filter(|((g, tag), _)| g.0.is_none() && tag == t)
                .map(|(_, n)| n)
                .sum()
        }
    }
}

fn broken<'a>(
    a: &'a PlaceAsk,
    agent: &str,
    l: &BTreeMap<String, String>,
    h: &Held,
) -> Option<&'a TagRule> {
    first_broken(a, agent, l, h.count(), h.total())
}

#[test]
fn group_of_uses_the_agent_or_its_label_value() {
    let l = labels(&[("zone", "a")]);
    assert_eq!(group_of(&Scope::Agent, "g1", &l), (None, "g1".to_string()));
    assert_eq!(
        group_of(&zone(), "g1", &l),
        (Some("zone".into()), "a".to_string())
    );
    // Without the label, the agent is a group of its own.
    let rack = Scope::Label("rack".into());
    assert_eq!(group_of(&rack, "g1", &l), (None, "g1".to_string()));
    assert_eq!(
        groups_of("g1", &labels(&[("zone", "a"), ("rack", "r1")])),
        vec![
            (None, "g1".to_string()),
            (Some("rack".into()), "r1".to_string()),
            (Some("zone".into()), "a".to_string())
        ]
    );
}

#[test]
fn affinity_needs_a_tagged_task_in_the_group() {
    let h = Held::new(&[(None, "g1", "db", 1), (Some("zone"), "a", "db", 1)]);
    let a = ask(&[], vec![rule(RuleKind::Affinity, "db", Scope::Agent)]);
    assert_eq!(broken(&a, "g1", &labels(&[]), &h), None);
    assert_eq!(broken(&a, "g2", &labels(&[]), &h), Some(&a.rules[0]));

    let a = ask(&[], vec![rule(RuleKind::Affinity, "db", zone())]);
    assert_eq!(broken(&a, "g2", &labels(&[("zone", "a")]), &h), None);
    assert_eq!(
        broken(&a, "g2", &labels(&[("zone", "b")]), &h),
        Some(&a.rules[0])
    );
}

#[test]
fn affinity_bootstraps_when_the_task_carries_the_tag_and_none_is_held() {
    let empty = Held::new(&[]);
    let own = ask(
        &["web"],
        vec![rule(RuleKind::Affinity, "web", Scope::Agent)],
    );
    assert_eq!(broken(&own, "g1", &labels(&[]), &empty), None);
    let other = ask(
        &["api"],
        vec![rule(RuleKind::Affinity, "web", Scope::Agent)],
    );
    assert_eq!(
        broken(&other, "g1", &labels(&[]), &empty),
        Some(&other.rules[0])
    );
    // Once one is held somewhere, the rest must join it.
    let h = Held::new(&[(None, "g1", "web", 1)]);
    assert_eq!(broken(&own, "g1", &labels(&[]), &h), None);
    assert_eq!(broken(&own, "g2", &labels(&[]), &h), Some(&own.rules[0]));
}

#[test]
fn an_agent_without_the_scope_label_meets_no_affinity() {
    // Even with tagged tasks on the unlabelled agent itself, and the
    // bootstrap does not start there either.
    let h = Held::new(&[(Some("zone"), "", "db", 3), (None, "g1", "db", 3)]);
    let a = ask(&[], vec![rule(RuleKind::Affinity, "db", zone())]);
    assert_eq!(broken(&a, "g1", &labels(&[]), &h), Some(&a.rules[0]));
    let own = ask(&["web"], vec![rule(RuleKind::Affinity, "web", zone())]);
    assert_eq!(
        broken(&own, "g1", &labels(&[]), &Held::new(&[])),
        Some(&own.rules[0])
    );
    assert_eq!(
        broken(&own, "g1", &labels(&[("zone", "a")]), &Held::new(&[])),
        None
    );
}

#[test]
fn anti_affinity_needs_none_in_the_group() {
    let h = Held::new(&[(None, "g1", "web", 1), (Some("zone"), "a", "web", 1)]);
    let a = ask(
        &["web"],
        vec![rule(RuleKind::AntiAffinity, "web", Scope::Agent)],
    );
    assert_eq!(broken(&a, "g1", &labels(&[]), &h), Some(&a.rules[0]));
    assert_eq!(broken(&a, "g2", &labels(&[]), &h), None);
    let z = ask(&["web"], vec![rule(RuleKind::AntiAffinity, "web", zone())]);
    assert_eq!(
        broken(&z, "g2", &labels(&[("zone", "a")]), &h),
        Some(&z.rules[0])
    );
    assert_eq!(broken(&z, "g2", &labels(&[("zone", "b")]), &h), None);
    // An unlabelled agent is a group of its own: only its own tasks count.
    assert_eq!(broken(&z, "g3", &labels(&[]), &h), None);
    let h2 = Held::new(&[(Some("zone"), "", "web", 1), (None, "g4", "web", 1)]);
    assert_eq!(broken(&z, "g3", &labels(&[]), &h2), None);
    assert_eq!(broken(&z, "g4", &labels(&[]), &h2), Some(&z.rules[0]));
}

#[test]
fn max_per_counts_the_task_itself_if_it_carries_the_tag() {
    let h = Held::new(&[(None, "g1", "web", 1), (None, "g2", "web", 2)]);
    let own = ask(
        &["web"],
        vec![rule(RuleKind::MaxPer(2), "web", Scope::Agent)],
    );
    assert_eq!(broken(&own, "g0", &labels(&[]), &h), None);
    assert_eq!(broken(&own, "g1", &labels(&[]), &h), None);
    assert_eq!(broken(&own, "g2", &labels(&[]), &h), Some(&own.rules[0]));
    let other = ask(&[], vec![rule(RuleKind::MaxPer(2), "web", Scope::Agent)]);
    assert_eq!(broken(&other, "g2", &labels(&[]), &h), None);
    let h3 = Held::new(&[(None, "g2", "web", 3)]);
    assert_eq!(
        broken(&other, "g2", &labels(&[]), &h3),
        Some(&other.rules[0])
    );
    // No overflow at the top of the range.
    let big = Held::new(&[(None, "g1", "web", u32::MAX)]);
    let max = ask(
        &["web"],
        vec![rule(RuleKind::MaxPer(u32::MAX), "web", Scope::Agent)],
    );
    assert_eq!(broken(&max, "g1", &labels(&[]), &big), Some(&max.rules[0]));
    // Per zone, an unlabelled agent counts alone.
    let hz = Held::new(&[(Some("zone"), "a", "web", 1), (None, "g5", "web", 1)]);
    let z = ask(&["web"], vec![rule(RuleKind::MaxPer(1), "web", zone())]);
    assert_eq!(broken(&z, "g5", &labels(&[]), &hz), Some(&z.rules[0]));
    assert_eq!(broken(&z, "g6", &labels(&[]), &hz), None);
    assert_eq!(
        broken(&z, "g6", &labels(&[("zone", "a")]), &hz),
        Some(&z.rules[0])
    );
    assert_eq!(broken(&z, "g5", &labels(&[("zone", "b")]), &hz), None);
}

#[test]
fn the_first_broken_rule_in_order_is_named() {
    let h = Held::new(&[(None, "g1", "web", 1), (None, "g1", "db", 0)]);
    let a = ask(
        &["web"],
        vec![
            rule(RuleKind::Affinity, "db", Scope::Agent),
            rule(RuleKind::AntiAffinity, "web", Scope::Agent),
        ],
    );
    assert_eq!(broken(&a, "g1", &labels(&[]), &h), Some(&a.rules[0]));
    let b = ask(
        &["web"],
        vec![
            rule(RuleKind::AntiAffinity, "web", Scope::Agent),
            rule(RuleKind::MaxPer(1), "web", Scope::Agent),
        ],
    );
    assert_eq!(broken(&b, "g1", &labels(&[]), &h), Some(&b.rules[0]));
    assert_eq!(broken(&ask(&["web"], vec![]), "g1", &labels(&[]), &h), None);
}

#[test]
fn parses_the_text_forms() {
    let agent = Scope::Agent;
    assert_eq!(
        parse_rule("affinity", "tag=db", &agent),
        Ok(rule(RuleKind::Affinity, "db", Scope::Agent))
    );
    assert_eq!(
        parse_rule("affinity", "tag=db", &zone()),
        Ok(rule(RuleKind::Affinity, "db", zone()))
    );
    assert_eq!(
        parse_rule("anti-affinity", " tag=web@zone ", &agent),
        Ok(rule(RuleKind::AntiAffinity, "web", zone()))
    );
    assert_eq!(
        parse_rule("anti-affinity", "tag=web@agent", &zone()),
        Ok(rule(RuleKind::AntiAffinity, "web", Scope::Agent))
    );
    assert_eq!(
        parse_rule("max-per", "tag=web:2", &agent),
        Ok(rule(RuleKind::MaxPer(2), "web", Scope::Agent))
    );
    assert_eq!(
        parse_rule("max-per", "tag=a:b:3@rack", &agent),
        Ok(rule(
            RuleKind::MaxPer(3),
            "a:b",
            Scope::Label("rack".into())
        ))
    );
    // A tag may hold ':' (names do); affinity takes it whole.
    assert_eq!(
        parse_rule("affinity", "tag=web:2", &agent),
        Ok(rule(RuleKind::Affinity, "web:2", Scope::Agent))
    );
    assert_eq!(
        parse_rule("anti", "tag=x", &agent).unwrap().kind,
        RuleKind::AntiAffinity
    );
    assert_eq!(
        parse_rule("maxper", "tag=x:1", &agent).unwrap().kind,
        RuleKind::MaxPer(1)
    );
    assert_eq!(parse_scope("agent"), Ok(Scope::Agent));
    assert_eq!(parse_scope(""), Ok(Scope::Agent));
    assert_eq!(parse_scope("zone"), Ok(zone()));
}

#[test]
fn text_form_errors_say_what_is_wrong() {
    let agent = Scope::Agent;
    let e = |k: &str, t: &str| parse_rule(k, t, &agent).unwrap_err();
    assert_eq!(
        e("near", "tag=db"),
        "tag rule kind \"near\" is unknown: use affinity, anti-affinity or max-per"
    );
    assert_eq!(
        e("affinity", "db"),
        "affinity \"db\": write tag=web or tag=web@zone"
    );
    assert_eq!(
        e("affinity", "tag="),
        "affinity \"tag=\": tag \"\" is empty"
    );
    assert!(e("affinity", "tag=a b").contains("contains ' '"));
    assert_eq!(
        e("max-per", "tag=web"),
        "max-per \"tag=web\": the most tasks per scope is missing: write tag=web:2 or tag=web:2@zone"
    );
    assert!(e("max-per", "tag=web:x").contains("\"x\" is not a count of tasks"));
    assert!(e("max-per", "tag=web:-1").contains("is not a count of tasks"));
    assert_eq!(
        e("max-per", "tag=web:0"),
        "max-per \"tag=web:0\": the most tasks per scope must be at least 1"
    );
    assert!(
        e("affinity", "tag=db@").contains("a scope (agent or a label key) is needed after \"@\"")
    );
    assert!(e("affinity", "tag=db@zo ne").contains("scope \"zo ne\""));
    assert!(e("affinity", "tag=db@a@b").contains("contains '@'"));
    assert!(parse_scope("bad key")
        .unwrap_err()
        .starts_with("scope \"bad key\": "));
    assert!(parse_rule_text("affinity").is_err());
}

#[test]
fn display_is_read_back() {
    let rules = [
        rule(RuleKind::Affinity, "db", Scope::Agent),
        rule(RuleKind::AntiAffinity, "web", zone()),
        rule(RuleKind::MaxPer(2), "web", Scope::Agent),
        rule(RuleKind::MaxPer(7), "a:b", Scope::Label("rack".into())),
    ];
    let texts: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        texts,
        [
            "affinity tag=db",
            "anti-affinity tag=web@zone",
            "max-per tag=web:2",
            "max-per tag=a:b:7@rack"
        ]
    );
    for (r, t) in rules.iter().zip(&texts) {
        assert_eq!(parse_rule_text(t).as_ref(), Ok(r));
    }
    assert_eq!(Scope::Agent.to_string(), "agent");
    assert_eq!(zone().to_string(), "zone");
}
