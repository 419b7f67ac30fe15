//! Unit tests of `quorum.rs`.

use super::*;

const MS: Duration = Duration::from_millis(1);

fn set(ids: &[u64]) -> BTreeSet<u64> {
    ids.iter().copied().collect()
}

#[test]
fn the_majority_th_latest_acceptance_counts() {
    let t0 = Instant::now();
    let now = t0 + 1000 * MS;
    let acks = |v: u64| match v {
        2 => Some(t0 + 900 * MS),
        3 => Some(t0 + 500 * MS),
        _ => None,
    };
    // 3 voters: me (now) and node 2 (900) make a majority.
    assert_eq!(
        quorum_contact(&[set(&[1, 2, 3])], 1, now, acks),
        Some(t0 + 900 * MS)
    );
    // 5 voters: me, 2 and 3: the third latest is node 3's.
    assert_eq!(
        quorum_contact(&[set(&[1, 2, 3, 4, 5])], 1, now, acks),
        Some(t0 + 500 * MS)
    );
    // Only me and node 4 (never accepted): no majority of 3.
    assert_eq!(quorum_contact(&[set(&[1, 4, 5])], 1, now, acks), None);
    // A single voter is its own majority.
    assert_eq!(quorum_contact(&[set(&[1])], 1, now, acks), Some(now));
}

#[test]
fn a_joint_configuration_needs_both_majorities() {
    let t0 = Instant::now();
    let now = t0 + 1000 * MS;
    let acks = |v: u64| match v {
        2 => Some(t0 + 900 * MS),
        4 => Some(t0 + 300 * MS),
        5 => Some(t0 + 200 * MS),
        _ => None,
    };
    let joint = [set(&[1, 2, 3]), set(&[3, 4, 5])];
    // Old config: 900; new config (without me): 4 and 5 -> 200.
    assert_eq!(quorum_contact(&joint, 1, now, acks), Some(t0 + 200 * MS));
    let cut = [set(&[1, 2, 3]), set(&[3, 5, 6])];
    assert_eq!(quorum_contact(&cut, 1, now, acks), None);
}

#[test]
fn verdicts_follow_the_lease_and_the_step_down_bound() {
    let b = Bounds {
        lease: 150 * MS,
        step_down: 300 * MS,
    };
    let t0 = Instant::now();
    let since = t0;
    let at = |ms: u64| t0 + ms as u32 * MS;
    assert_eq!(verdict(b, at(1000), since, Some(at(900))), Verdict::Lease);
    assert_eq!(
        verdict(b, at(1000), since, Some(at(850))),
        Verdict::Unproven
    );
    assert_eq!(
        verdict(b, at(1000), since, Some(at(700))),
        Verdict::Unproven
    );
    assert_eq!(
        verdict(b, at(1000), since, Some(at(699))),
        Verdict::StepDown
    );
    // A leader elected just now that has heard nobody yet waits a timeout.
    assert_eq!(verdict(b, at(200), since, None), Verdict::Unproven);
    assert_eq!(verdict(b, at(301), since, None), Verdict::StepDown);
}
