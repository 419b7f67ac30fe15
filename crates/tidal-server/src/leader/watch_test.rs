//! Scenarios of the leadership watch: one row per step, times in ms from a base instant.

use std::time::{Duration, Instant};

use super::*;

/// The election timeout of these scenarios: lease 150 ms, step down after 300 ms.
const BOUNDS: Bounds = Bounds {
    lease: Duration::from_millis(150),
    step_down: Duration::from_millis(300),
};

/// One step: at `at` ms, Raft is in `term`, this node leads or not, a
/// majority last accepted its entries at `contact` ms, and the decisions
/// expected, one string each.
struct Row {
    at: u64,
    term: u64,
    leader: bool,
    contact: Option<u64>,
    want: &'static [&'static str],
    /// `deposed()` after the step.
    deposed: bool,
    /// A majority said they follow it (`LeaderAlive`), though late with
    /// their answers.
    vouched: bool,
}

const fn row(
    at: u64,
    term: u64,
    leader: bool,
    contact: Option<u64>,
    want: &'static [&'static str],
    deposed: bool,
) -> Row {
    Row {
        at,
        term,
        leader,
        contact,
        want,
        deposed,
        vouched: false,
    }
}

impl Row {
    /// The same step while a majority vouches for it.
    const fn vouched(mut self) -> Row {
        self.vouched = true;
        self
    }
}

fn show(d: &Decision, base: Instant) -> String {
    match d {
        Decision::Removed(why) => format!("removed: {why}"),
        Decision::Start {
            term,
            since,
            heard_again,
        } => format!(
            "start {term} since {}{}",
            since.duration_since(base).as_millis(),
            if *heard_again { " heard again" } else { "" }
        ),
        Decision::StepDown { term } => format!("step down {term}"),
        Decision::End { term } => format!("end at {term}"),
        Decision::Replace { term } => format!("replace {term}"),
    }
}

fn run(name: &str, rows: &[Row]) {
    let base = Instant::now();
    let mut watch = LeadershipWatch::new(1, BOUNDS);
    for (i, r) in rows.iter().enumerate() {
        let at = |ms: u64| base + Duration::from_millis(ms);
        let got: Vec<String> = watch
            .step(Observation {
                now: at(r.at),
                term: r.term,
                is_leader: r.leader,
                contact: r.contact.map(at),
                membership: None,
                vouched: r.vouched,
            })
            .iter()
            .map(|d| show(d, base))
            .collect();
        assert_eq!(got, r.want, "{name}, row {i} (at {} ms)", r.at);
        assert_eq!(watch.deposed(), r.deposed, "{name}, row {i}: deposed");
        assert_eq!(watch.leading(), r.leader, "{name}, row {i}: leading");
    }
}

#[test]
fn becoming_leader_of_a_term_starts_one_leadership() {
    run(
        "becoming leader",
        &[
            row(0, 1, false, None, &[], false),
            row(10, 2, true, None, &["start 2 since 10"], false),
            // Heard by a majority, or not yet (within one election timeout).
            row(60, 2, true, Some(50), &[], false),
            row(300, 2, true, None, &[], false),
        ],
    );
}

#[test]
fn a_higher_vote_ends_the_leadership() {
    run(
        "higher vote",
        &[
            row(0, 2, true, Some(0), &["start 2 since 0"], false),
            row(50, 3, false, None, &["end at 3"], false),
            row(100, 3, false, None, &[], false),
        ],
    );
}

#[test]
fn no_majority_for_an_election_timeout_steps_down_until_one_is_heard_within_the_lease() {
    run(
        "check-quorum",
        &[
            row(0, 2, true, Some(0), &["start 2 since 0"], false),
            row(100, 2, true, Some(0), &[], false),
            // 300 ms since the contact: the bound, not past it.
            row(300, 2, true, Some(0), &[], false),
            row(301, 2, true, Some(0), &["step down 2"], true),
            // Heard again, but not within the lease: still deposed.
            row(400, 2, true, Some(240), &[], true),
            row(
                450,
                2,
                true,
                Some(310),
                &["start 2 since 0 heard again"],
                false,
            ),
            row(500, 2, true, Some(450), &[], false),
        ],
    );
    run(
        "a new leader never heard",
        &[
            row(0, 4, true, None, &["start 4 since 0"], false),
            row(301, 4, true, None, &["step down 4"], true),
            // A higher vote while deposed: not leading, nothing to end.
            row(350, 5, false, None, &[], false),
        ],
    );
}

#[test]
fn a_majority_that_says_it_follows_keeps_the_leader_from_stepping_down() {
    run(
        "disks stall",
        &[
            row(0, 2, true, Some(0), &["start 2 since 0"], false),
            // Disks stall: the answers to its entries are late, but a
            // majority says it follows (LeaderAlive), and nobody elects.
            row(301, 2, true, Some(0), &[], false).vouched(),
            row(450, 2, true, Some(0), &[], false).vouched(),
            // The answers come back: it leads on, never having stepped down.
            row(500, 2, true, Some(480), &[], false),
            // The same silence with nobody saying it follows: a lost majority.
            row(781, 2, true, Some(480), &["step down 2"], true),
        ],
    );
}

#[test]
fn a_new_term_replaces_the_old_leadership() {
    run(
        "new term",
        &[
            row(0, 2, true, Some(0), &["start 2 since 0"], false),
            row(50, 3, true, None, &["replace 2", "start 3 since 50"], false),
        ],
    );
    run(
        "a new term forgets the step-down",
        &[
            row(0, 2, true, None, &["start 2 since 0"], false),
            row(400, 2, true, None, &["step down 2"], true),
            // Leader of term 3 with no contact yet: it starts at once.
            row(500, 3, true, None, &["start 3 since 500"], false),
        ],
    );
}

#[test]
fn a_leader_restored_by_a_restart_only_commits_its_barrier_before_acting() {
    // openraft restores this node as leader of its term at once: the watch
    // starts a leadership, which acts only once its own entry commits.
    run(
        "restored",
        &[row(0, 7, true, None, &["start 7 since 0"], false)],
    );
    let mut barrier = Barrier::default();
    let waits: Vec<u128> = (0..7).map(|_| barrier.failed().as_millis()).collect();
    assert_eq!(waits, [20, 40, 80, 160, 320, 500, 500]);
}

#[test]
fn removal_from_the_membership() {
    let base = Instant::now();
    let mut watch = LeadershipWatch::new(1, BOUNDS);
    let mut step = |index, names_me, has_nodes| {
        watch
            .step(Observation {
                now: base,
                term: 1,
                is_leader: false,
                contact: None,
                vouched: false,
                membership: Some(Membership {
                    index,
                    names_me,
                    has_nodes,
                }),
            })
            .iter()
            .map(|d| show(d, base))
            .collect::<Vec<_>>()
    };
    // A joining learner first sees configurations without itself.
    assert!(step(1, false, true).is_empty());
    assert!(step(4, true, true).is_empty());
    // An empty membership names nobody: no removal.
    assert!(step(5, false, false).is_empty());
    assert_eq!(
        step(9, false, true),
        ["removed: node 1 was removed from the cluster (membership at log index 9); it stops serving. \
          To bring this machine back, wipe its data directory and add it again with `tidal cluster add-learner`"]
    );
    // No log entry with a membership yet: nothing to say.
    let quiet = watch.step(Observation {
        now: base,
        term: 1,
        is_leader: false,
        contact: None,
        membership: None,
        vouched: false,
    });
    assert!(quiet.is_empty());
}
