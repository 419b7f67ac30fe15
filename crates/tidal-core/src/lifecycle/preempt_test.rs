//! Preempt, Stopped of a victim, Resume, and the ends of suspended tasks.

use crate::command::{Command, Completion, Rejection, Response, Stopping};
use crate::lifecycle::test_world::World;
use crate::lifecycle::{AttemptEnd, Notice, TaskOptions, LIFECYCLE_VERSION};
use crate::model::{Outcome, Priority, TaskId, TaskState};
use crate::state::State;

/// One agent "a1": 4 slots, 2 GPUs.
fn world() -> World {
    let mut w = World::new();
    w.agent("a1", 4, 2);
    w
}

impl World {
    /// A running task of `prio` on a1; returns it and its token.
    fn running(
        &mut self,
        prio: Priority,
        slots: u32,
        gpus: u32,
        opts: TaskOptions,
    ) -> (TaskId, u64) {
        let id = self.submit(prio, slots, gpus, opts);
        let token = self.start_at(1_000 * (self.index + 1), id, "a1");
        (id, token)
    }

    fn slots_gpus(&self) -> (u32, u32) {
        let a = self.state.agent("a1").unwrap();
        (a.slots_in_use, a.gpus_in_use)
    }

    fn preempt(&mut self, task: TaskId, victims: Vec<(TaskId, u64)>) -> Response {
        self.apply(Command::Preempt {
            task,
            agent: "a1".into(),
            victims,
        })
    }
}

fn suspendable() -> TaskOptions {
    TaskOptions {
        suspendable: true,
        ..TaskOptions::default()
    }
}

#[test]
fn a_stopped_victim_holds_until_it_stops_then_is_pending_with_its_attempt_back() {
    let mut w = world();
    let opts = TaskOptions {
        notice: Notice::File,
        preempt_grace_ms: 5_000,
        ..TaskOptions::default()
    };
    let (v, tv) = w.running(Priority::Offline, 4, 0, opts);
    let online = w.submit(Priority::Online, 2, 0, TaskOptions::default());
    let r = w.preempt(online, vec![(v, tv)]);
    assert_eq!(
        r,
        Response::Preempted {
            agent: "a1".into(),
            granted: None,
            suspended: vec![],
            stopping: vec![Stopping {
                task: v,
                token: tv,
                notice: Notice::File,
                grace_ms: 5_000,
            }],
        }
    );
    // Still held, all of it, until the agent reports it stopped.
    assert_eq!(w.slots_gpus(), (4, 0));
    assert!(w.state.lifecycle().task(v).unwrap().preempting.is_some());
    assert_eq!(w.state.preempting().count(), 1);
    // A second preemption of the same victim is refused.
    assert!(matches!(
        w.preempt(online, vec![(v, tv)]),
        Response::Rejected(Rejection::Invalid(_))
    ));
    assert_eq!(
        w.apply(Command::Stopped(vec![(v, tv)])),
        Response::Stopped(vec![Ok(())])
    );
    let task = w.state.task(v).unwrap();
    assert_eq!(task.state, TaskState::Pending);
    assert_eq!(task.attempt, 0, "the attempt is given back");
    let life = w.state.lifecycle().task(v).unwrap();
    assert_eq!(life.preempted, 1);
    assert!(life.preempting.is_none());
    assert_eq!(
        life.attempts.last().unwrap().end,
        Some(AttemptEnd::Preempted)
    );
    assert_eq!(w.slots_gpus(), (0, 0));
    assert_eq!(w.state.preempting().count(), 0);
}

#[test]
fn suspending_every_victim_assigns_the_task_in_the_same_entry_and_resume_follows_its_end() {
    let mut w = world();
    let (v, tv) = w.running(Priority::Nearline, 3, 1, suspendable());
    let (other, _) = w.running(Priority::Offline, 1, 0, TaskOptions::default());
    let online = w.submit(Priority::Online, 2, 1, TaskOptions::default());
    let r = w.preempt(online, vec![(v, tv)]);
    let Response::Preempted {
        granted: Some(g),
        suspended,
        stopping,
        ..
    } = r
    else {
        panic!("{r:?}");
    };
    assert_eq!(suspended, vec![(v, tv)]);
    assert!(stopping.is_empty());
    assert_eq!(g.task, online);
    // The victim's slots are free, its GPU is not: 1 + 2 slots, 1 + 1 GPUs.
    assert_eq!(w.slots_gpus(), (3, 2));
    let life = w.state.lifecycle().task(v).unwrap();
    assert_eq!(life.suspended.as_ref().unwrap().by, online);
    assert_eq!(life.preempted, 1);
    assert!(
        life.attempts.last().unwrap().end.is_none(),
        "the attempt goes on"
    );
    // Not while the preemptor runs here.
    assert!(matches!(
        w.apply(Command::Resume(vec![v])),
        Response::Items(ref r) if r[0].is_err()
    ));
    let done = |task, token| {
        Command::Complete(vec![Completion {
            task,
            token,
            outcome: Outcome {
                success: true,
                result: vec![],
                error: String::new(),
                exit_code: 0,
            },
        }])
    };
    w.apply(done(online, g.token));
    assert_eq!(w.slots_gpus(), (1, 1));
    assert_eq!(
        w.apply(Command::Resume(vec![v, other])),
        Response::Items(vec![
            Ok(()),
            Err(Rejection::WrongState {
                task: other,
                state: "running and not suspended".into()
            })
        ])
    );
    assert_eq!(w.slots_gpus(), (4, 1));
    assert!(w.state.lifecycle().task(v).unwrap().suspended.is_none());
    assert_eq!(w.state.suspended().count(), 0);
    w.apply(done(v, tv));
    assert_eq!(w.slots_gpus(), (1, 0));
}

#[test]
fn resume_waits_for_room() {
    let mut w = world();
    let (v, tv) = w.running(Priority::Offline, 3, 0, suspendable());
    let online = w.submit(Priority::Online, 4, 0, TaskOptions::default());
    let Response::Preempted {
        granted: Some(g), ..
    } = w.preempt(online, vec![(v, tv)])
    else {
        panic!()
    };
    w.apply(Command::Cancel { task: online });
    assert_eq!(w.slots_gpus(), (0, 0));
    // Other work took the slots meanwhile.
    let (filler, tf) = w.running(Priority::Offline, 2, 0, TaskOptions::default());
    let r = w.apply(Command::Resume(vec![v]));
    assert!(
        matches!(&r, Response::Items(x) if matches!(x[0], Err(Rejection::Ineligible { .. }))),
        "{r:?} (granted {g:?})"
    );
    w.apply(Command::Stopped(vec![(filler, tf)]));
    assert_eq!(
        w.apply(Command::Resume(vec![v])),
        Response::Items(vec![Ok(())])
    );
    assert_eq!(w.slots_gpus(), (3, 0));
}

#[test]
fn a_suspended_task_that_ends_otherwise_releases_what_it_holds() {
    for how in ["cancel", "down", "fail", "regrant"] {
        let mut w = world();
        let (v, tv) = w.running(Priority::Offline, 2, 2, suspendable());
        let online = w.submit(Priority::Online, 3, 0, TaskOptions::default());
        let r = w.preempt(online, vec![(v, tv)]);
        assert!(
            matches!(
                r,
                Response::Preempted {
                    granted: Some(_),
                    ..
                }
            ),
            "{how}: {r:?}"
        );
        assert_eq!(w.slots_gpus(), (3, 2), "{how}");
        match how {
            "cancel" => {
                w.apply(Command::Cancel { task: v });
                assert_eq!(w.slots_gpus(), (3, 0));
            }
            "down" => {
                w.apply(Command::AgentDown { agent: "a1".into() });
                assert_eq!(w.slots_gpus(), (0, 0));
            }
            "fail" => {
                w.apply(Command::Complete(vec![Completion {
                    task: v,
                    token: tv,
                    outcome: Outcome {
                        success: false,
                        result: vec![],
                        error: "killed".into(),
                        exit_code: 9,
                    },
                }]));
                assert_eq!(w.slots_gpus(), (3, 0));
            }
            _ => {
                // Its agent lost it: granted anew only if it fits (it does
                // not: the online task has 3 of 4 slots).
                w.apply(Command::Regrant {
                    agent: "a1".into(),
                    tasks: vec![(v, tv)],
                });
                assert_eq!(w.slots_gpus(), (3, 0));
            }
        }
        let life = w.state.lifecycle().task(v).unwrap();
        assert!(
            life.suspended.is_none() && life.preempting.is_none(),
            "{how}"
        );
        assert_eq!(w.state.suspended().count(), 0, "{how}");
    }
}

#[test]
fn preempt_is_all_or_nothing() {
    let mut w = world();
    let (near, tn) = w.running(Priority::Nearline, 1, 0, TaskOptions::default());
    let (opt_out, to) = w.running(
        Priority::Offline,
        1,
        0,
        TaskOptions {
            preemptible: false,
            ..TaskOptions::default()
        },
    );
    let (online_run, tr) = w.running(Priority::Online, 1, 0, TaskOptions::default());
    let online = w.submit(Priority::Online, 2, 0, TaskOptions::default());
    let nearline = w.submit(Priority::Nearline, 1, 0, TaskOptions::default());
    let before = w.state.clone();
    let cases: Vec<(TaskId, Vec<(TaskId, u64)>)> = vec![
        // A victim that opted out spoils the whole entry.
        (online, vec![(near, tn), (opt_out, to)]),
        // Online work is never a victim.
        (online, vec![(near, tn), (online_run, tr)]),
        // A stale token.
        (online, vec![(near, tn + 100)]),
        // Named twice.
        (online, vec![(near, tn), (near, tn)]),
        // No victim.
        (online, vec![]),
        // Only online work preempts.
        (nearline, vec![(near, tn)]),
        // The preemptor must be Pending.
        (online_run, vec![(near, tn)]),
        // Unknown task.
        (TaskId(999), vec![(near, tn)]),
    ];
    for (task, victims) in cases {
        let r = w.preempt(task, victims.clone());
        assert!(
            matches!(r, Response::Rejected(_)),
            "{task} {victims:?}: {r:?}"
        );
        assert_eq!(w.state.digest(), before.digest(), "{task} {victims:?}");
    }
    // An agent that does not exist or is not Ready.
    let r = w.apply(Command::Preempt {
        task: online,
        agent: "nope".into(),
        victims: vec![(near, tn)],
    });
    assert!(matches!(r, Response::Rejected(Rejection::AgentNotFound(_))));
    w.apply(Command::DrainAgent {
        agent: "a1".into(),
        deadline_ms: None,
    });
    assert!(matches!(
        w.preempt(online, vec![(near, tn)]),
        Response::Rejected(Rejection::Ineligible { .. })
    ));
}

#[test]
fn a_mixed_preemption_keeps_the_suspended_ones_until_the_task_ran() {
    let mut w = world();
    let (s, ts) = w.running(Priority::Offline, 2, 0, suspendable());
    let (k, tk) = w.running(Priority::Offline, 2, 0, TaskOptions::default());
    let online = w.submit(Priority::Online, 4, 0, TaskOptions::default());
    let r = w.preempt(online, vec![(s, ts), (k, tk)]);
    assert!(
        matches!(&r, Response::Preempted { granted: None, suspended, stopping, .. }
            if suspended.len() == 1 && stopping.len() == 1),
        "{r:?}"
    );
    assert_eq!(w.slots_gpus(), (2, 0));
    // The stopped victim has not stopped: the suspended one stays.
    assert!(w.state.check_resume(s).is_err());
    w.apply(Command::Stopped(vec![(k, tk)]));
    assert_eq!(w.slots_gpus(), (0, 0));
    // Now the preemptor is pending with nothing left to wait for here; the
    // dispatcher places it (here by hand) and the suspension holds.
    let Response::Assigned { granted, .. } = w.apply(Command::Assign(vec![(online, "a1".into())]))
    else {
        panic!()
    };
    assert_eq!(granted.len(), 1);
    assert!(w.state.check_resume(s).is_err());
    w.apply(Command::Cancel { task: online });
    assert!(w.state.check_resume(s).is_ok());
}

#[test]
fn below_version_4_preempt_is_refused() {
    let mut state = State::new();
    let env = crate::command::Envelope::new(
        1,
        Command::Preempt {
            task: TaskId(1),
            agent: "a1".into(),
            victims: vec![],
        },
    );
    let r = state.apply_envelope(env, 1, LIFECYCLE_VERSION).unwrap();
    assert!(matches!(
        r,
        Response::Rejected(Rejection::NeedsClusterVersion { needed: 4, .. })
    ));
}

#[test]
fn a_victim_whose_preemptor_no_longer_waits_may_be_taken_again() {
    let mut w = world();
    let (v, tv) = w.running(Priority::Offline, 4, 0, TaskOptions::default());
    let first = w.submit(Priority::Online, 2, 0, TaskOptions::default());
    let second = w.submit(Priority::Online, 2, 0, TaskOptions::default());
    assert!(matches!(
        w.preempt(first, vec![(v, tv)]),
        Response::Preempted { .. }
    ));
    // While the first still waits, the victim is its own.
    assert!(w.state.preemptor_waits(first));
    assert!(matches!(
        w.preempt(second, vec![(v, tv)]),
        Response::Rejected(Rejection::Invalid(_))
    ));
    // The first is cancelled: its victim was told to stop for nothing, and
    // the second may take it; the marker names the second now.
    w.apply(Command::Cancel { task: first });
    assert!(!w.state.preemptor_waits(first));
    assert!(matches!(
        w.preempt(second, vec![(v, tv)]),
        Response::Preempted { .. }
    ));
    let life = w.state.lifecycle().task(v).unwrap();
    assert_eq!(life.preempting.as_ref().map(|p| p.by), Some(second));
    assert_eq!(
        w.apply(Command::Stopped(vec![(v, tv)])),
        Response::Stopped(vec![Ok(())])
    );
    assert_eq!(w.state.task(v).unwrap().state, TaskState::Pending);
    assert_eq!(w.state.lifecycle().task(v).unwrap().preempted, 1);
}
