use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use openraft::error::Fatal;
use openraft::{BasicNode, Membership, RaftMetrics, StoredMembership};

use super::not_serving;

/// Metrics of node 1 with `voters` and `learners`, knowing `leader`.
fn metrics(voters: &[u64], learners: &[u64], leader: Option<u64>) -> RaftMetrics<u64, BasicNode> {
    let nodes: BTreeMap<u64, BasicNode> = voters
        .iter()
        .chain(learners)
        .map(|id| (*id, BasicNode::new(format!("127.0.0.1:{}", 7000 + id))))
        .collect();
    let config = vec![voters.iter().copied().collect::<BTreeSet<u64>>()];
    let mut m = RaftMetrics::new_initial(1);
    m.membership_config = Arc::new(StoredMembership::new(None, Membership::new(config, nodes)));
    m.current_leader = leader;
    m
}

#[test]
fn a_member_that_knows_a_leader_serves() {
    let serves = |m: &RaftMetrics<u64, BasicNode>, heard| not_serving(1, m, false, heard);
    assert_eq!(serves(&metrics(&[1, 2, 3], &[], Some(2)), true), None);
    // A leader hears from no leader but itself.
    assert_eq!(serves(&metrics(&[1], &[], Some(1)), false), None);
    // A learner serves too (it reads, and sends writes on to the leader).
    assert_eq!(serves(&metrics(&[2, 3], &[1], Some(2)), true), None);
}

#[test]
fn no_leader_no_membership_a_deposed_leader_or_a_stopped_core_does_not_serve() {
    let why = |m: &RaftMetrics<u64, BasicNode>, deposed| not_serving(1, m, deposed, true).unwrap();
    assert_eq!(
        why(&metrics(&[1, 2, 3], &[], None), false),
        "no leader known"
    );
    // A new node the leader has not added yet has no membership.
    assert_eq!(
        why(&RaftMetrics::new_initial(1), false),
        "not a member of its DC's raft group"
    );
    assert_eq!(
        why(&metrics(&[2, 3], &[], Some(2)), false),
        "not a member of its DC's raft group"
    );
    assert_eq!(
        why(&metrics(&[1, 2, 3], &[], Some(1)), true),
        "a leader no majority has heard within its lease"
    );
    // Deposed matters only while openraft has this node lead.
    assert_eq!(
        not_serving(1, &metrics(&[1, 2, 3], &[], Some(2)), true, true),
        None
    );
    // A follower whose leader went quiet (openraft still names it).
    assert_eq!(
        not_serving(1, &metrics(&[1, 2, 3], &[], Some(2)), false, false),
        Some("no word from its leader within an election timeout")
    );
    let mut stopped = metrics(&[1], &[], Some(1));
    stopped.running_state = Err(Fatal::Stopped);
    assert_eq!(why(&stopped, false), "its raft core stopped");
}
