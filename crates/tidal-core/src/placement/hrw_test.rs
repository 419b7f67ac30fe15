//! Unit tests of `hrw.rs`.

use super::*;

#[test]
fn the_hashes_are_fixed() {
    // FNV-1a 64 of "" is its offset basis; of "a" a published value.
    assert_eq!(hash_str(""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(hash_str("a"), 0xaf63_dc4c_8601_ec8c);
    // Pinned outputs (checked against a separate implementation of FNV-1a
    // and splitmix64): every leader and replica, on every build, scores alike.
    assert_eq!(score(hash_str("user-42"), hash_str("agent-1")), PIN_1);
    assert_eq!(score(hash_str("user-42"), hash_str("agent-2")), PIN_2);
    assert_eq!(score(0, 0), 0xe220_a839_7b1d_cdaf);
}

const PIN_1: u64 = 12_719_709_922_036_366_183;
const PIN_2: u64 = 4_722_422_393_798_293_078;

#[test]
fn best_is_deterministic_and_independent_of_order() {
    let agents = ["agent-1", "agent-2", "agent-3"];
    let one = best("user-42", agents);
    let mut reversed = agents;
    reversed.reverse();
    assert_eq!(best("user-42", reversed), one);
    assert!(one.is_some());
    assert_eq!(best("user-42", []), None);
    assert_eq!(best("user-42", ["only"]), Some("only"));
}

#[test]
fn removing_one_of_ten_agents_moves_only_its_keys() {
    let agents: Vec<String> = (0..10).map(|i| format!("agent-{i}")).collect();
    let keys: Vec<String> = (0..10_000).map(|i| format!("key-{i}")).collect();
    let home = |key: &str, agents: &[String]| {
        best(key, agents.iter().map(String::as_str))
            .unwrap()
            .to_string()
    };
    let before: Vec<String> = keys.iter().map(|k| home(k, &agents)).collect();
    let gone = "agent-3";
    let rest: Vec<String> = agents.iter().filter(|a| *a != gone).cloned().collect();
    let mut moved = 0;
    for (k, was) in keys.iter().zip(&before) {
        let now = home(k, &rest);
        if was == gone {
            moved += 1;
        } else {
            assert_eq!(&now, was, "key {k} moved though its agent stayed");
        }
    }
    // About a tenth of the keys were the removed agent's.
    assert!((800..=1200).contains(&moved), "{moved} keys moved");
    // And every agent gets a fair share.
    for a in &agents {
        let n = before.iter().filter(|b| *b == a).count();
        assert!((800..=1200).contains(&n), "{a} is home to {n} keys");
    }
}

#[test]
fn adding_an_agent_takes_keys_only_to_it() {
    let agents: Vec<String> = (0..10).map(|i| format!("agent-{i}")).collect();
    let mut more = agents.clone();
    more.push("agent-new".into());
    let mut taken = 0;
    for i in 0..10_000 {
        let k = format!("key-{i}");
        let was = best(&k, agents.iter().map(String::as_str)).unwrap();
        let now = best(&k, more.iter().map(String::as_str)).unwrap();
        if now != was {
            assert_eq!(now, "agent-new");
            taken += 1;
        }
    }
    assert!((700..=1100).contains(&taken), "{taken} keys moved");
}
