//! Tests of the pre-vote's rules, with the time passed in and a fixed seed.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::{CommittedLeaderId, LogId};

use super::*;

fn log_id(term: u64, index: u64) -> Option<LogId<u64>> {
    Some(LogId::new(CommittedLeaderId::new(term, 1), index))
}

fn follower(heard_ms: Option<u64>, last: Option<LogId<u64>>) -> VoterView {
    VoterView {
        leads: false,
        leader_heard: heard_ms.map(Duration::from_millis),
        last_log_id: last,
    }
}

const QUIET: Duration = Duration::from_millis(150);

/// The defaults: 150-300 ms, heartbeat 50 ms.
const TIMEOUTS: Timeouts = Timeouts {
    min_ms: 150,
    max_ms: 300,
    heartbeat_ms: 50,
};

/// A voter that follows no leader and was last touched at `touched`.
fn voter(touched: Option<u64>) -> Seen {
    Seen {
        leads: false,
        voter: true,
        touched_ms: touched,
    }
}

fn lost() -> Canvassed {
    Canvassed {
        won: false,
        retry_after_ms: None,
    }
}

fn win() -> Canvassed {
    Canvassed {
        won: true,
        retry_after_ms: None,
    }
}

/// Ticks until the machine asks for a canvass, jumping to each wake time;
/// returns when.
fn next_canvass(pv: &mut PreVote, local: &Seen, mut now: u64) -> u64 {
    for _ in 0..10 {
        match pv.tick(now, local, || true) {
            Tick::Canvass { .. } => return now,
            Tick::WaitUntil(t) => {
                assert!(t > now, "a wait must move time on: {t} <= {now}");
                now = t;
            }
        }
    }
    panic!("no canvass after ten waits");
}

#[test]
fn a_voter_that_hears_its_leader_refuses() {
    let view = follower(Some(40), log_id(2, 10));
    let why = answer(&view, log_id(2, 10), QUIET).unwrap_err();
    assert_eq!(why, Refusal::HeardLeader(Duration::from_millis(40)));
    assert_eq!(why.to_string(), "this node heard from its leader 40 ms ago");
    // Quiet for the whole minimum: granted.
    assert!(answer(&follower(Some(150), log_id(2, 10)), log_id(2, 10), QUIET).is_ok());
    // Following no leader (after a restart, or a vote granted): granted.
    assert!(answer(&follower(None, log_id(2, 10)), log_id(2, 10), QUIET).is_ok());
}

#[test]
fn only_a_refusal_for_a_recent_leader_says_when_to_ask_again() {
    let ms = Duration::from_millis;
    assert_eq!(
        Refusal::HeardLeader(ms(40)).retry_after(QUIET),
        Some(ms(110))
    );
    assert_eq!(
        Refusal::HeardLeader(ms(150)).retry_after(QUIET),
        Some(ms(1))
    );
    assert_eq!(Refusal::Leads.retry_after(QUIET), None);
    let behind = Refusal::LogBehind {
        candidate: log_id(1, 1),
        voter: log_id(1, 2),
    };
    assert_eq!(behind.retry_after(QUIET), None);
}

#[test]
fn the_leader_refuses() {
    let view = VoterView {
        leads: true,
        leader_heard: Some(Duration::from_secs(10)),
        last_log_id: None,
    };
    assert_eq!(answer(&view, log_id(9, 99), QUIET), Err(Refusal::Leads));
}

#[test]
fn a_candidate_behind_the_voters_log_is_refused() {
    let view = follower(None, log_id(3, 20));
    // Shorter log in the same term, or an older last term.
    let why = answer(&view, log_id(3, 19), QUIET).unwrap_err();
    assert!(matches!(why, Refusal::LogBehind { .. }));
    assert!(why.to_string().contains("before this node's"), "{why}");
    assert!(answer(&view, log_id(2, 50), QUIET).is_err());
    assert!(answer(&view, None, QUIET).is_err());
    // Equal or newer: granted.
    assert!(answer(&view, log_id(3, 20), QUIET).is_ok());
    assert!(answer(&view, log_id(4, 1), QUIET).is_ok());
    assert!(answer(&follower(None, None), None, QUIET).is_ok());
}

#[test]
fn a_pre_vote_is_won_by_a_majority_of_every_configuration() {
    let three = vec![BTreeSet::from([1, 2, 3])];
    assert!(!won(&three, &BTreeSet::from([1])));
    assert!(won(&three, &BTreeSet::from([1, 3])));
    let single = vec![BTreeSet::from([1])];
    assert!(won(&single, &BTreeSet::from([1])));
    // Joint: {1,2,3} -> {3,4,5}; 1 and 3 are a majority of the old only.
    let joint = vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([3, 4, 5])];
    assert!(!won(&joint, &BTreeSet::from([1, 3])));
    assert!(won(&joint, &BTreeSet::from([1, 3, 4])));
    assert!(!won(&[], &BTreeSet::from([1])));
}

#[test]
fn the_timeout_is_drawn_in_the_range_from_the_seed_and_redrawn_every_try() {
    let draws = |seed| {
        let mut pv = PreVote::new(TIMEOUTS, seed, 0);
        let mut seen = vec![pv.timeout_ms()];
        let mut now = 0;
        for _ in 0..200 {
            now = next_canvass(&mut pv, &voter(None), now);
            pv.step(now, lost());
            seen.push(pv.timeout_ms());
        }
        seen
    };
    let a = draws(7);
    assert!(a.iter().all(|t| (150..=300).contains(t)), "{a:?}");
    assert!(
        a.iter().any(|t| *t < 200) && a.iter().any(|t| *t > 250),
        "{a:?}"
    );
    assert_eq!(a, draws(7), "one seed, one sequence");
    assert_ne!(a, draws(8));
    // A range of one value.
    let fixed = Timeouts {
        min_ms: 80,
        max_ms: 80,
        heartbeat_ms: 25,
    };
    assert_eq!(PreVote::new(fixed, 1, 0).timeout_ms(), 80);
}

#[test]
fn a_voter_asks_a_timeout_after_it_last_heard_a_leader_or_tried() {
    let mut pv = PreVote::new(TIMEOUTS, 3, 0);
    pv.start(1000);
    let t = pv.timeout_ms();
    // Never touched: the timeout counts from the driver's start.
    assert_eq!(
        pv.tick(1000, &voter(None), || true),
        Tick::WaitUntil(1000 + t)
    );
    // A leader's message at 1100 moves it.
    assert_eq!(
        pv.tick(1100, &voter(Some(1100)), || true),
        Tick::WaitUntil(1100 + t)
    );
    assert_eq!(
        pv.tick(1100 + t, &voter(Some(1100)), || true),
        Tick::Canvass { quiet_ms: t }
    );
    // Lost: the next try counts from this one, with a new draw.
    pv.step(1100 + t + 5, lost());
    let t2 = pv.timeout_ms();
    assert_eq!(
        pv.tick(1100 + t + 5, &voter(Some(1100)), || true),
        Tick::WaitUntil(1100 + t + 5 + t2)
    );
}

#[test]
fn a_won_pre_vote_elects_and_a_lost_one_is_logged_once_per_spell() {
    let mut pv = PreVote::new(TIMEOUTS, 4, 0);
    let quiet = voter(Some(0));
    let now = next_canvass(&mut pv, &quiet, 0);
    assert_eq!(pv.step(now, lost()), Step::Lost { first: true });
    let now = next_canvass(&mut pv, &quiet, now);
    assert_eq!(pv.step(now, lost()), Step::Lost { first: false });
    // A leader (or a vote) heard since: the next loss is the first again.
    let heard = voter(Some(now + 1));
    let now = next_canvass(&mut pv, &heard, now + 1);
    assert_eq!(pv.step(now, lost()), Step::Lost { first: true });
    let now = next_canvass(&mut pv, &heard, now);
    assert_eq!(pv.step(now, win()), Step::Elect);
}

#[test]
fn a_voter_that_would_grant_soon_is_asked_again_then() {
    let mut pv = PreVote::new(TIMEOUTS, 5, 0);
    let now = next_canvass(&mut pv, &voter(None), 0);
    pv.step(
        now,
        Canvassed {
            won: false,
            retry_after_ms: Some(30),
        },
    );
    // 30 ms, plus 2 for the voter's clock.
    assert_eq!(pv.timeout_ms(), 32);
    assert_eq!(
        pv.tick(now, &voter(None), || true),
        Tick::WaitUntil(now + 32)
    );
    // Never later than the draw.
    let now = next_canvass(&mut pv, &voter(None), now);
    pv.step(
        now,
        Canvassed {
            won: false,
            retry_after_ms: Some(10_000),
        },
    );
    assert!((150..=300).contains(&pv.timeout_ms()));
}

#[test]
fn a_leader_a_learner_a_held_node_or_one_that_may_not_vote_does_not_ask() {
    let leader = Seen {
        leads: true,
        ..voter(None)
    };
    let learner = Seen {
        voter: false,
        ..voter(None)
    };
    for (local, may_vote) in [(leader, true), (learner, true), (voter(None), false)] {
        let mut pv = PreVote::new(TIMEOUTS, 6, 0);
        let due = pv.timeout_ms();
        // Looks again a new timeout later.
        match pv.tick(due, &local, || may_vote) {
            Tick::WaitUntil(t) => assert_eq!(t, due + pv.timeout_ms(), "{local:?}"),
            other => panic!("{local:?} may_vote={may_vote}: {other:?}"),
        }
    }
    // The vote gate is asked only when the rest allows a try.
    let mut pv = PreVote::new(TIMEOUTS, 6, 0);
    let due = pv.timeout_ms();
    pv.tick(due, &leader, || panic!("a leader asked the vote gate"));
}

#[test]
fn a_hold_keeps_a_voter_from_asking_until_it_ends_or_is_released() {
    let mut pv = PreVote::new(TIMEOUTS, 9, 0);
    pv.hold(2000);
    assert!(pv.held(1999) && !pv.held(2000));
    let mut now = 0;
    while now < 2000 {
        match pv.tick(now, &voter(None), || true) {
            Tick::WaitUntil(t) => now = t,
            Tick::Canvass { .. } => panic!("asked at {now} while held until 2000"),
        }
    }
    assert!(matches!(
        pv.tick(now + 300, &voter(None), || true),
        Tick::Canvass { .. }
    ));
    pv.hold(10_000);
    pv.release();
    assert!(!pv.held(0));
}

#[test]
fn a_refusal_for_a_log_behind_nudges_a_quiet_voter_to_ask_at_once() {
    let behind: Result<(), Refusal> = Err(Refusal::LogBehind {
        candidate: log_id(1, 1),
        voter: log_id(1, 2),
    });
    let mut pv = PreVote::new(TIMEOUTS, 10, 0);
    let due = pv.timeout_ms();
    assert!(pv.answered(&behind, true, 100));
    // Nudged, but a leader was heard 100 ms ago (under the minimum): wait,
    // and the nudge is spent.
    assert_eq!(
        pv.tick(110, &voter(Some(10)), || true),
        Tick::WaitUntil(10 + due)
    );
    assert_eq!(
        pv.tick(150, &voter(Some(10)), || true),
        Tick::WaitUntil(10 + due)
    );
    // Nudged with no leader heard for the minimum: ask now, before the timeout.
    assert!(pv.answered(&behind, true, 160));
    assert_eq!(
        pv.tick(160, &voter(Some(10)), || true),
        Tick::Canvass { quiet_ms: 150 }
    );
    // No nudge for other refusals, a grant, a learner or a held voter.
    for (verdict, voter) in [
        (Err(Refusal::Leads), true),
        (Err(Refusal::HeardLeader(Duration::from_millis(3))), true),
        (Ok(()), true),
        (behind.clone(), false),
    ] {
        assert!(!pv.answered(&verdict, voter, 200), "{verdict:?} {voter}");
    }
    pv.hold(1000);
    assert!(!pv.answered(&behind, true, 200));
    assert!(pv.answered(&behind, true, 1000));
}

#[test]
fn a_transfer_target_campaigns_once_the_voters_lease_has_run_out() {
    let pv = PreVote::new(TIMEOUTS, 11, 0);
    // Last heard at 1000: min (150) + a heartbeat (50) later.
    assert_eq!(pv.campaign_at(Some(1000), 1010), Some(1200));
    // Bounded by twice the maximum from now.
    assert_eq!(pv.campaign_at(Some(5000), 1000), Some(1600));
    // Never heard a leader: at once.
    assert_eq!(pv.campaign_at(None, 1000), None);
}
