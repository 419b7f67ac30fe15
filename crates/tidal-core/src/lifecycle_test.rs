//! Unit tests of the lifecycle rules; scenario-level ones are in state_test.rs.

use super::*;

#[test]
fn backoff_doubles_up_to_its_cap_with_a_jitter_in_the_upper_half() {
    let opts = TaskOptions {
        backoff_base_ms: 1000,
        backoff_max_ms: 5000,
        ..TaskOptions::default()
    };
    for (n, d) in [(1u32, 1000u64), (2, 2000), (3, 4000), (4, 5000), (40, 5000)] {
        for token in 1..50 {
            let w = backoff_ms(&opts, TaskId(7), token, n);
            assert!(
                w >= d / 2 && w <= d,
                "retry {n}: {w} not in {}..={d}",
                d / 2
            );
        }
    }
    // Deterministic: the same task and token give the same wait.
    assert_eq!(
        backoff_ms(&opts, TaskId(7), 3, 2),
        backoff_ms(&opts, TaskId(7), 3, 2)
    );
    // And the jitter does vary with the token.
    let waits: std::collections::BTreeSet<u64> = (1..50)
        .map(|t| backoff_ms(&opts, TaskId(7), t, 3))
        .collect();
    assert!(waits.len() > 10, "{waits:?}");
}

#[test]
fn options_are_checked() {
    let ok = TaskOptions::default();
    assert!(validate_options(&ok).is_ok());
    for bad in [
        TaskOptions {
            max_run_ms: Some(0),
            ..TaskOptions::default()
        },
        TaskOptions {
            backoff_base_ms: 2000,
            backoff_max_ms: 1000,
            ..TaskOptions::default()
        },
        TaskOptions {
            backoff_base_ms: MAX_BACKOFF_MS + 1,
            ..TaskOptions::default()
        },
        TaskOptions {
            preempt_grace_ms: MAX_PREEMPT_GRACE_MS + 1,
            ..TaskOptions::default()
        },
    ] {
        assert!(validate_options(&bad).is_err(), "{bad:?}");
    }
}

#[test]
fn reserved_above_sums_the_classes_above() {
    let mut l = Lifecycle::default();
    l.headroom
        .insert(Priority::Online, Headroom { slots: 2, gpus: 1 });
    l.headroom
        .insert(Priority::Nearline, Headroom { slots: 3, gpus: 0 });
    assert_eq!(l.reserved_above(Priority::Online), Headroom::default());
    assert_eq!(
        l.reserved_above(Priority::Nearline),
        Headroom { slots: 2, gpus: 1 }
    );
    assert_eq!(
        l.reserved_above(Priority::Offline),
        Headroom { slots: 5, gpus: 1 }
    );
}

use crate::command::{ApplyCtx, Command, Finished as Fin, Response};
use crate::model::{AgentSpec, Outcome, TaskSpec};
use crate::state::State;

use crate::lifecycle::test_world::World;

/// One agent "a1" of 4 slots.
fn clocked() -> World {
    let mut w = World::new();
    w.agent("a1", 4, 0);
    w
}

/// A task of type "t" with `max_attempts` and `opts`, submitted at `time_ms`.
fn submit(c: &mut World, time_ms: u64, max_attempts: u32, opts: TaskOptions) -> TaskId {
    let spec = TaskSpec {
        task_type: "t".into(),
        max_attempts,
        ..TaskSpec::default()
    };
    c.submit_at(time_ms, spec, opts)
}

impl World {
    fn fail(&mut self, time_ms: u64, id: TaskId, token: u64, timed_out: bool) {
        let r = self.at(
            time_ms,
            Command::Finished(vec![Fin {
                task: id,
                token,
                outcome: Outcome {
                    success: false,
                    result: vec![],
                    error: "exit 3".into(),
                    exit_code: 3,
                },
                timed_out,
            }]),
        );
        assert_eq!(r, Response::Completed(vec![Ok(())]));
    }

    fn life(&self, id: TaskId) -> &TaskLife {
        self.state.lifecycle().task(id).unwrap()
    }
}

fn quick_backoff() -> TaskOptions {
    TaskOptions {
        backoff_base_ms: 100,
        backoff_max_ms: 300,
        ..TaskOptions::default()
    }
}

#[test]
fn a_failed_attempt_is_retried_after_its_backoff_then_dies_with_its_history() {
    let mut c = clocked();
    let id = submit(&mut c, 1_000, 3, quick_backoff());
    let t1 = c.assign_at(1_010, id, "a1");
    c.fail(1_500, id, t1, false);
    // Pending in backoff: 50..=100 ms after the failing entry's time.
    let nb = c.life(id).not_before_ms.unwrap();
    assert!((1_550..=1_600).contains(&nb), "{nb}");
    assert_eq!(c.state.task(id).unwrap().state, TaskState::Pending);
    assert_eq!(c.state.lifecycle().next_wake(), Some(nb));
    // Not dispatchable, not assignable, and not woken early.
    assert!(crate::dispatch::plan(
        &c.state,
        &["a1".to_string()].into(),
        10,
        &mut Default::default()
    )
    .is_empty());
    assert!(matches!(
        c.at(1_520, Command::Assign(vec![(id, "a1".into())])),
        Response::Assigned { granted, .. } if granted.is_empty()
    ));
    assert!(matches!(
        c.at(nb - 1, Command::Wake(vec![id])),
        Response::Items(v) if v[0].is_err()
    ));
    assert_eq!(c.state.lifecycle().wakes_due(nb, 10), vec![id]);
    assert_eq!(
        c.at(nb, Command::Wake(vec![id])),
        Response::Items(vec![Ok(())])
    );
    assert_eq!(c.life(id).not_before_ms, None);
    let t2 = c.assign_at(nb + 1, id, "a1");
    c.fail(nb + 50, id, t2, true);
    // The second retry waits 100..=200 ms.
    let nb2 = c.life(id).not_before_ms.unwrap();
    assert!((nb + 150..=nb + 250).contains(&nb2), "{nb2}");
    c.at(nb2, Command::Wake(vec![id]));
    let t3 = c.assign_at(nb2, id, "a1");
    c.fail(nb2 + 10, id, t3, false);
    // Attempts used up: a dead letter, failed, with three attempts kept.
    let task = c.state.task(id).unwrap();
    assert!(matches!(task.state, TaskState::Failed { .. }), "{task:?}");
    assert!(
        task.error.contains("max_attempts 3 used up"),
        "{}",
        task.error
    );
    let life = c.life(id);
    assert!(life.dead);
    let ends: Vec<_> = life
        .attempts
        .iter()
        .map(|a| a.end.clone().unwrap())
        .collect();
    assert_eq!(
        ends,
        vec![
            AttemptEnd::Failed { exit_code: 3 },
            AttemptEnd::TimedOut,
            AttemptEnd::Failed { exit_code: 3 }
        ]
    );
    assert_eq!(
        life.attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    // Replay: Pending with a fresh budget, history kept.
    assert_eq!(
        c.at(nb2 + 20, Command::Replay(vec![id])),
        Response::Items(vec![Ok(())])
    );
    assert_eq!(c.state.task(id).unwrap().state, TaskState::Pending);
    assert!(!c.life(id).dead);
    assert_eq!(c.life(id).budget_base, 3);
    let t4 = c.assign_at(nb2 + 30, id, "a1");
    assert_eq!(c.state.task(id).unwrap().attempt, 4);
    assert_eq!(c.life(id).attempts.len(), 4);
    c.fail(nb2 + 40, id, t4, false);
    // One of three new attempts used: retried again.
    assert!(c.life(id).not_before_ms.is_some());
    // A task that is not a dead letter is not replayed.
    assert!(matches!(
        c.at(nb2 + 50, Command::Replay(vec![id])),
        Response::Items(v) if v[0].is_err()
    ));
}

#[test]
fn max_attempts_one_means_no_retry() {
    let mut c = clocked();
    let id = submit(&mut c, 1_000, 1, TaskOptions::default());
    let t = c.assign_at(1_001, id, "a1");
    c.fail(1_002, id, t, false);
    assert!(c.life(id).dead);
    assert!(matches!(
        c.state.task(id).unwrap().state,
        TaskState::Failed { .. }
    ));
}

#[test]
fn a_lost_agent_is_a_failed_attempt_with_backoff() {
    let mut c = clocked();
    let id = submit(&mut c, 1_000, 2, quick_backoff());
    let t = c.assign_at(1_001, id, "a1");
    c.at(1_002, Command::Started { task: id, token: t });
    c.at(2_000, Command::AgentDown { agent: "a1".into() });
    let life = c.life(id);
    assert_eq!(life.attempts[0].end, Some(AttemptEnd::Lost));
    assert_eq!(life.attempts[0].started_ms, Some(1_002));
    assert!(life.not_before_ms.is_some_and(|t| t >= 2_050));
}

#[test]
fn a_missed_deadline_is_counted_once_and_fails_only_when_asked() {
    let mut c = clocked();
    let report = submit(
        &mut c,
        1_000,
        3,
        TaskOptions {
            deadline_ms: Some(5_000),
            ..TaskOptions::default()
        },
    );
    let fail = submit(
        &mut c,
        1_000,
        3,
        TaskOptions {
            deadline_ms: Some(4_000),
            on_deadline: OnDeadline::Fail,
            ..TaskOptions::default()
        },
    );
    assert_eq!(c.state.lifecycle().next_deadline(), Some(4_000));
    assert!(c.state.lifecycle().deadlines_due(4_000, 10).is_empty());
    assert_eq!(
        c.state.lifecycle().deadlines_due(5_001, 10),
        vec![fail, report]
    );
    // Not before the deadline.
    assert!(matches!(
        c.at(4_000, Command::DeadlineMissed(vec![fail])),
        Response::Items(v) if v[0].is_err()
    ));
    let r = c.at(6_000, Command::DeadlineMissed(vec![fail, report, report]));
    assert!(matches!(&r, Response::Items(v) if v[0].is_ok() && v[1].is_ok() && v[2].is_err()));
    assert_eq!(c.state.lifecycle().deadlines_missed(), 2);
    assert!(matches!(
        c.state.task(fail).unwrap().state,
        TaskState::Failed { .. }
    ));
    assert!(!c.life(fail).dead, "a missed deadline is not a dead letter");
    assert_eq!(c.state.task(report).unwrap().state, TaskState::Pending);
    assert!(c.state.lifecycle().deadlines_due(u64::MAX, 10).is_empty());
}

#[test]
fn checkpoints_come_only_from_the_current_token() {
    let mut c = clocked();
    let id = submit(&mut c, 1_000, 3, quick_backoff());
    let t = c.assign_at(1_001, id, "a1");
    let r = c.at(1_002, Command::Checkpoint(vec![(id, t + 1, b"x".to_vec())]));
    assert!(matches!(r, Response::Items(v) if v[0].is_err()));
    let r = c.at(
        1_003,
        Command::Checkpoint(vec![(id, t, b"step 10".to_vec())]),
    );
    assert_eq!(r, Response::Items(vec![Ok(())]));
    let cp = c.life(id).checkpoint.clone().unwrap();
    assert_eq!(
        (cp.token, cp.at_ms, cp.data),
        (t, 1_003, b"step 10".to_vec())
    );
    let big = vec![0; MAX_CHECKPOINT_BYTES + 1];
    let r = c.at(1_004, Command::Checkpoint(vec![(id, t, big)]));
    assert!(matches!(r, Response::Items(v) if v[0].is_err()));
}

#[test]
fn earlier_deadline_goes_first_within_a_class() {
    let mut c = clocked();
    let late = submit(
        &mut c,
        1_000,
        3,
        TaskOptions {
            deadline_ms: Some(90_000),
            ..TaskOptions::default()
        },
    );
    let none = submit(&mut c, 1_000, 3, TaskOptions::default());
    let soon = submit(
        &mut c,
        1_000,
        3,
        TaskOptions {
            deadline_ms: Some(10_000),
            ..TaskOptions::default()
        },
    );
    let order: Vec<TaskId> = (0..3)
        .map(|_| {
            let pairs = crate::dispatch::plan(
                &c.state,
                &["a1".to_string()].into(),
                1,
                &mut Default::default(),
            );
            c.assign_at(2_000, pairs[0].0, "a1");
            pairs[0].0
        })
        .collect();
    assert_eq!(order, vec![soon, late, none]);
}

#[test]
fn below_version_4_a_failure_is_final_and_nothing_is_kept() {
    let mut state = State::new();
    state.restore_cluster_version(crate::access::ACCESS_VERSION);
    let ctx = |i| ApplyCtx {
        log_index: i,
        time_ms: 1_000 * i,
    };
    state.apply(
        Command::RegisterAgent(AgentSpec {
            id: "a1".into(),
            task_types: ["t2i".to_string()].into(),
            slots: 1,
            weight: 1,
            ..AgentSpec::default()
        }),
        ctx(1),
    );
    state.apply(
        Command::Submit(vec![TaskSpec {
            task_type: "t2i".into(),
            ..TaskSpec::default()
        }]),
        ctx(2),
    );
    let id = TaskId(1);
    state.apply(Command::Assign(vec![(id, "a1".into())]), ctx(3));
    state.apply(
        Command::Complete(vec![crate::command::Completion {
            task: id,
            token: 3,
            outcome: Outcome {
                success: false,
                result: vec![],
                error: String::new(),
                exit_code: 1,
            },
        }]),
        ctx(4),
    );
    assert!(matches!(
        state.task(id).unwrap().state,
        TaskState::Failed { .. }
    ));
    assert_eq!(*state.lifecycle(), Lifecycle::default());
    state.check_invariants().unwrap();
}
