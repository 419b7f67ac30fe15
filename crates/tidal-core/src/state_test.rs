//! Unit tests of each command's semantics and rejections.

use super::*;
use crate::model::{Gpu, Outcome};

/// A state plus a log index that increases with every apply, like Raft's.
pub(crate) struct Log {
    pub(crate) state: State,
    pub(crate) index: u64,
}

impl Log {
    pub(crate) fn new() -> Log {
        Log {
            state: State::new(),
            index: 0,
        }
    }
    pub(crate) fn apply(&mut self, cmd: Command) -> Response {
        self.index += 1;
        let r = self.state.apply(
            cmd,
            ApplyCtx {
                log_index: self.index,
                time_ms: 1000 + self.index,
            },
        );
        self.state
            .check_invariants()
            .unwrap_or_else(|e| panic!("after {r:?}: {e}"));
        r
    }
    pub(crate) fn submit(&mut self, spec: TaskSpec) -> Result<Submitted, Rejection> {
        match self.apply(Command::Submit(vec![spec])) {
            Response::Submitted(mut v) => v.remove(0),
            other => panic!("{other:?}"),
        }
    }
    pub(crate) fn register(&mut self, spec: AgentSpec) -> Response {
        self.apply(Command::RegisterAgent(spec))
    }
    pub(crate) fn assign(&mut self, task: TaskId, agent: &str) -> Result<Granted, Rejection> {
        match self.apply(Command::Assign(vec![(task, agent.to_string())])) {
            Response::Assigned {
                mut granted,
                mut rejected,
            } => match (granted.pop(), rejected.pop()) {
                (Some(g), None) => Ok(g),
                (None, Some((_, r))) => Err(r),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }
    pub(crate) fn complete(
        &mut self,
        task: TaskId,
        token: u64,
        success: bool,
    ) -> Result<(), Rejection> {
        let outcome = Outcome {
            success,
            result: b"out".to_vec(),
            error: String::new(),
            exit_code: 0,
        };
        match self.apply(Command::Complete(vec![Completion {
            task,
            token,
            outcome,
        }])) {
            Response::Completed(mut v) => v.remove(0),
            other => panic!("{other:?}"),
        }
    }
}

pub(crate) fn task(t: &str) -> TaskSpec {
    TaskSpec {
        task_type: t.into(),
        ..TaskSpec::default()
    }
}

pub(crate) fn agent(id: &str, slots: u32) -> AgentSpec {
    AgentSpec {
        id: id.into(),
        dc: "dc1".into(),
        task_types: ["t2i".to_string()].into(),
        slots,
        weight: 1,
        ..AgentSpec::default()
    }
}

fn state_of(log: &Log, id: TaskId) -> TaskState {
    log.state.task(id).unwrap().state.clone()
}

#[test]
fn new_state_has_default_queue_and_first_id_1() {
    let mut log = Log::new();
    let q = log.state.queue("default").unwrap();
    assert_eq!((q.weight, q.strategy), (1, Strategy::LeastLoaded));
    assert_eq!(
        log.submit(task("t2i")),
        Ok(Submitted {
            id: TaskId(1),
            existed: false
        })
    );
    assert_eq!(State::default().queues().count(), 1);
}

#[test]
fn submit_normalizes_and_records_context() {
    let mut log = Log::new();
    log.apply(Command::Noop);
    let id = log.submit(task("t2i")).unwrap().id;
    let t = log.state.task(id).unwrap();
    assert_eq!(t.spec.queue, "default");
    assert_eq!(t.spec.max_attempts, 3);
    assert_eq!(t.spec.slots, 1);
    assert_eq!(t.state, TaskState::Pending);
    assert_eq!(
        (t.attempt, t.submitted_index, t.created_ms, t.updated_ms),
        (0, 2, 1002, 1002)
    );
    assert_eq!(log.state.pending_in_queue("default"), 1);
    assert_eq!(log.state.pending_total(), 1);
}

#[test]
fn submit_to_unknown_queue_is_rejected_alone() {
    let mut log = Log::new();
    let r = log.apply(Command::Submit(vec![
        TaskSpec {
            queue: "nope".into(),
            ..task("t2i")
        },
        task("t2i"),
        TaskSpec {
            task_type: String::new(),
            ..task("t2i")
        },
    ]));
    let Response::Submitted(v) = r else { panic!() };
    assert_eq!(v[0], Err(Rejection::QueueNotFound("nope".into())));
    assert_eq!(
        v[1],
        Ok(Submitted {
            id: TaskId(1),
            existed: false
        })
    );
    assert!(matches!(v[2], Err(Rejection::Invalid(_))));
    assert_eq!(log.state.tasks_after(None).count(), 1);
}

#[test]
fn idempotency_key_returns_the_existing_task_also_within_a_batch() {
    let mut log = Log::new();
    let keyed = TaskSpec {
        idempotency_key: Some("k1".into()),
        ..task("t2i")
    };
    let r = log.apply(Command::Submit(vec![keyed.clone(), keyed.clone()]));
    assert_eq!(
        r,
        Response::Submitted(vec![
            Ok(Submitted {
                id: TaskId(1),
                existed: false
            }),
            Ok(Submitted {
                id: TaskId(1),
                existed: true
            }),
        ])
    );
    assert_eq!(
        log.submit(keyed),
        Ok(Submitted {
            id: TaskId(1),
            existed: true
        })
    );
    assert_eq!(log.state.task_by_key("k1"), Some(TaskId(1)));
    assert_eq!(log.state.tasks_after(None).count(), 1);
    // A rejected item does not take the key.
    let bad = TaskSpec {
        idempotency_key: Some("k2".into()),
        queue: "nope".into(),
        ..task("t2i")
    };
    assert!(log.submit(bad).is_err());
    assert_eq!(log.state.task_by_key("k2"), None);
}

#[test]
fn a_known_key_with_another_spec_is_a_conflict_naming_the_task() {
    let mut log = Log::new();
    log.apply(Command::SetQueue {
        name: "vip".into(),
        weight: 2,
        strategy: Strategy::LeastLoaded,
    });
    let keyed = TaskSpec {
        idempotency_key: Some("k1".into()),
        models: vec!["m1".into(), "m2".into()],
        payload: b"p".to_vec(),
        ..task("t2i")
    };
    let first = log.submit(keyed.clone()).unwrap();
    let before = log.state.clone();
    let conflict = |id| {
        Err(Rejection::KeyConflict {
            key: "k1".into(),
            existing: id,
        })
    };
    // Every field counts: each of these is another task under the same key.
    let others = [
        TaskSpec {
            payload: b"q".to_vec(),
            ..keyed.clone()
        },
        TaskSpec {
            task_type: "tts".into(),
            ..keyed.clone()
        },
        TaskSpec {
            pipeline: "p1".into(),
            ..keyed.clone()
        },
        TaskSpec {
            models: vec!["m1".into()],
            ..keyed.clone()
        },
        TaskSpec {
            queue: "vip".into(),
            ..keyed.clone()
        },
        TaskSpec {
            max_attempts: 7,
            ..keyed.clone()
        },
        TaskSpec {
            priority: Priority::Online,
            ..keyed.clone()
        },
        TaskSpec {
            slots: 2,
            ..keyed.clone()
        },
        TaskSpec {
            gpus: 1,
            ..keyed.clone()
        },
        TaskSpec {
            gpu_memory_mb: 10,
            ..keyed.clone()
        },
        TaskSpec {
            tenant: "u1".into(),
            ..keyed.clone()
        },
    ];
    for other in others {
        assert_eq!(log.submit(other.clone()), conflict(first.id), "{other:?}");
    }
    // Also within one batch, after the first item took the key.
    let r = log.apply(Command::Submit(vec![
        TaskSpec {
            idempotency_key: Some("k3".into()),
            ..task("t2i")
        },
        TaskSpec {
            idempotency_key: Some("k3".into()),
            ..task("tts")
        },
    ]));
    let Response::Submitted(v) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        v[1],
        Err(Rejection::KeyConflict {
            key: "k3".into(),
            existing: v[0].clone().unwrap().id
        })
    );
    assert_eq!(log.state.task(first.id), before.task(first.id), "unchanged");
    // Normalised the same: explicit defaults and model order or repeats do
    // not make another spec.
    let same = TaskSpec {
        queue: DEFAULT_QUEUE.into(),
        max_attempts: DEFAULT_MAX_ATTEMPTS,
        slots: 1,
        priority: Priority::Nearline,
        models: vec!["m2".into(), "m1".into(), "m2".into()],
        ..keyed.clone()
    };
    assert_eq!(
        log.submit(same),
        Ok(Submitted {
            id: first.id,
            existed: true
        })
    );
    let message = Rejection::KeyConflict {
        key: "k1".into(),
        existing: first.id,
    }
    .to_string();
    assert!(
        message.contains("\"k1\"") && message.contains("t0000000001"),
        "{message}"
    );
}

#[test]
fn assign_grants_with_the_log_index_as_token() {
    let mut log = Log::new();
    log.register(agent("a1", 2));
    let id = log.submit(task("t2i")).unwrap().id;
    let g = log.assign(id, "a1").unwrap();
    assert_eq!(
        g,
        Granted {
            task: id,
            agent: "a1".into(),
            token: 3,
            attempt: 1
        }
    );
    assert_eq!(
        state_of(&log, id),
        TaskState::Assigned {
            agent: "a1".into(),
            token: 3
        }
    );
    let a = log.state.agent("a1").unwrap();
    assert_eq!((a.slots_in_use, a.tasks.get(&id)), (1, Some(&3)));
    assert_eq!(log.state.pending_total(), 0);
    // Not Pending any more.
    assert!(matches!(
        log.assign(id, "a1"),
        Err(Rejection::WrongState { .. })
    ));
}

#[test]
fn assign_rejections() {
    let mut log = Log::new();
    log.register(agent("a1", 1));
    let t1 = log.submit(task("t2i")).unwrap().id;
    let t2 = log.submit(task("t2i")).unwrap().id;
    let tts = log.submit(task("tts")).unwrap().id;
    assert_eq!(
        log.assign(TaskId(99), "a1"),
        Err(Rejection::TaskNotFound(TaskId(99)))
    );
    assert_eq!(
        log.assign(t1, "zz"),
        Err(Rejection::AgentNotFound("zz".into()))
    );
    assert!(
        matches!(log.assign(tts, "a1"), Err(Rejection::Ineligible { reason, .. }) if reason.contains("tts"))
    );
    // Both in one entry: the second does not fit (invariant 3).
    let r = log.apply(Command::Assign(vec![(t1, "a1".into()), (t2, "a1".into())]));
    let Response::Assigned { granted, rejected } = r else {
        panic!()
    };
    assert_eq!(granted.len(), 1);
    assert!(
        matches!(&rejected[..], [(t, Rejection::Ineligible { reason, .. })] if *t == t2 && reason.contains("0 free slots"))
    );
    // A down agent takes nothing.
    log.apply(Command::AgentDown { agent: "a1".into() });
    assert!(
        matches!(log.assign(t2, "a1"), Err(Rejection::Ineligible { reason, .. }) if reason == "is down")
    );
}

#[test]
fn assign_checks_gpus_and_memory() {
    let mut log = Log::new();
    let mut a = agent("g", 8);
    a.gpus = vec![
        Gpu {
            model: "A100".into(),
            memory_mb: 80_000,
        },
        Gpu {
            model: "A40".into(),
            memory_mb: 48_000,
        },
    ];
    log.register(a);
    let big = log
        .submit(TaskSpec {
            gpus: 1,
            gpu_memory_mb: 60_000,
            ..task("t2i")
        })
        .unwrap()
        .id;
    let two = log
        .submit(TaskSpec {
            gpus: 2,
            ..task("t2i")
        })
        .unwrap()
        .id;
    let one = log
        .submit(TaskSpec {
            gpus: 1,
            ..task("t2i")
        })
        .unwrap()
        .id;
    log.assign(big, "g").unwrap();
    assert_eq!(log.state.agent("g").unwrap().gpus_in_use, 1);
    assert!(
        matches!(log.assign(two, "g"), Err(Rejection::Ineligible { reason, .. }) if reason.contains("1 free GPUs"))
    );
    log.assign(one, "g").unwrap();
    assert_eq!(log.state.agent("g").unwrap().gpus_in_use, 2);
}

#[test]
fn started_checks_the_token() {
    let mut log = Log::new();
    log.register(agent("a1", 1));
    let id = log.submit(task("t2i")).unwrap().id;
    assert!(matches!(
        log.apply(Command::Started { task: id, token: 1 }),
        Response::Rejected(Rejection::WrongState { .. })
    ));
    let token = log.assign(id, "a1").unwrap().token;
    assert_eq!(
        log.apply(Command::Started {
            task: id,
            token: token + 7
        }),
        Response::Rejected(Rejection::StaleToken {
            task: id,
            presented: token + 7,
            current: Some(token)
        })
    );
    assert_eq!(
        log.apply(Command::Started { task: id, token }),
        Response::Ok
    );
    assert_eq!(
        state_of(&log, id),
        TaskState::Running {
            agent: "a1".into(),
            token
        }
    );
    assert_eq!(
        log.apply(Command::Started { task: id, token }),
        Response::Ok,
        "idempotent"
    );
    assert_eq!(
        log.apply(Command::Started {
            task: TaskId(9),
            token
        }),
        Response::Rejected(Rejection::TaskNotFound(TaskId(9)))
    );
}

#[test]
fn complete_success_and_failure_free_capacity() {
    let mut log = Log::new();
    log.register(agent("a1", 2));
    let ok = log.submit(task("t2i")).unwrap().id;
    let bad = log.submit(task("t2i")).unwrap().id;
    let t_ok = log.assign(ok, "a1").unwrap().token;
    let t_bad = log.assign(bad, "a1").unwrap().token;
    log.apply(Command::Started {
        task: ok,
        token: t_ok,
    });
    assert_eq!(log.complete(ok, t_ok, true), Ok(()));
    assert_eq!(
        state_of(&log, ok),
        TaskState::Succeeded {
            agent: "a1".into(),
            token: t_ok
        }
    );
    assert_eq!(log.state.task(ok).unwrap().result, b"out");
    assert_eq!(log.complete(bad, t_bad, false), Ok(()));
    assert_eq!(
        state_of(&log, bad),
        TaskState::Failed {
            agent: Some("a1".into()),
            token: t_bad
        }
    );
    let a = log.state.agent("a1").unwrap();
    assert_eq!((a.slots_in_use, a.tasks.len()), (0, 0));
    // No automatic retry of a failed exit code.
    assert_eq!(log.state.pending_total(), 0);
}

#[test]
fn of_two_completions_in_one_entry_the_first_wins_and_alone_is_accepted() {
    let mut log = Log::new();
    log.register(agent("a1", 1));
    let id = log.submit(task("t2i")).unwrap().id;
    let token = log.assign(id, "a1").unwrap().token;
    let outcome = |success: bool| Outcome {
        success,
        result: if success { b"yes".to_vec() } else { Vec::new() },
        error: if success { String::new() } else { "no".into() },
        exit_code: i32::from(!success),
    };
    let r = log.apply(Command::Complete(vec![
        Completion {
            task: id,
            token,
            outcome: outcome(true),
        },
        Completion {
            task: id,
            token,
            outcome: outcome(false),
        },
    ]));
    assert_eq!(
        r,
        Response::Completed(vec![
            Ok(()),
            Err(Rejection::Finished {
                task: id,
                state: "succeeded".into()
            })
        ])
    );
    let t = log.state.task(id).unwrap();
    assert_eq!((t.result.as_slice(), t.exit_code), (&b"yes"[..], 0));
    // A cancelled task refuses its holder's late completion the same way.
    let id = log.submit(task("t2i")).unwrap().id;
    let token = log.assign(id, "a1").unwrap().token;
    log.apply(Command::Cancel { task: id });
    assert_eq!(
        log.complete(id, token, true),
        Err(Rejection::Finished {
            task: id,
            state: "cancelled".into()
        })
    );
}

#[test]
fn complete_is_fenced_and_idempotent() {
    let mut log = Log::new();
    log.register(agent("a1", 1));
    log.register(agent("a2", 1));
    let id = log.submit(task("t2i")).unwrap().id;
    let old = log.assign(id, "a1").unwrap().token;
    log.apply(Command::AgentDown { agent: "a1".into() });
    // Invariant 1: the old holder's completion is stale once requeued...
    assert_eq!(
        log.complete(id, old, true),
        Err(Rejection::StaleToken {
            task: id,
            presented: old,
            current: None
        })
    );
    let new = log.assign(id, "a2").unwrap().token;
    assert!(new > old);
    assert_eq!(log.state.task(id).unwrap().attempt, 2);
    // ...and after reassignment.
    assert_eq!(
        log.complete(id, old, true),
        Err(Rejection::StaleToken {
            task: id,
            presented: old,
            current: Some(new)
        })
    );
    assert_eq!(log.complete(id, new, true), Ok(()));
    let before = log.state.clone();
    let refusal = Rejection::Finished {
        task: id,
        state: "succeeded".into(),
    };
    let finished = Err(refusal.clone());
    // One completion per attempt is accepted: a resend, another outcome and
    // an old holder's are all refused, and change nothing.
    assert_eq!(log.complete(id, new, true), finished, "a resend");
    assert_eq!(log.complete(id, new, false), finished, "another outcome");
    assert_eq!(log.complete(id, old, true), finished, "an old holder");
    assert_eq!(log.state, before, "without changing anything");
    assert_eq!(
        refusal.to_string(),
        format!("task {id} already finished as succeeded")
    );
    assert_eq!(
        log.complete(TaskId(42), 1, true),
        Err(Rejection::TaskNotFound(TaskId(42)))
    );
}

#[test]
fn cancel_pending_assigned_and_terminal() {
    let mut log = Log::new();
    log.register(agent("a1", 1));
    let p = log.submit(task("t2i")).unwrap().id;
    let r = log.submit(task("t2i")).unwrap().id;
    assert_eq!(
        log.apply(Command::Cancel { task: p }),
        Response::Cancelled {
            task: p,
            holder: None
        }
    );
    assert_eq!(
        state_of(&log, p),
        TaskState::Cancelled {
            agent: None,
            token: 0
        }
    );
    assert_eq!(log.state.pending_total(), 1);
    let token = log.assign(r, "a1").unwrap().token;
    assert_eq!(
        log.apply(Command::Cancel { task: r }),
        Response::Cancelled {
            task: r,
            holder: Some(("a1".into(), token))
        }
    );
    assert_eq!(log.state.agent("a1").unwrap().slots_in_use, 0);
    assert!(matches!(
        log.apply(Command::Cancel { task: r }),
        Response::Rejected(Rejection::WrongState { .. })
    ));
    assert_eq!(
        log.apply(Command::Cancel { task: TaskId(77) }),
        Response::Rejected(Rejection::TaskNotFound(TaskId(77)))
    );
    // The cancelled holder's late completion is refused and changes nothing.
    assert_eq!(
        log.complete(r, token, true),
        Err(Rejection::Finished {
            task: r,
            state: "cancelled".into()
        })
    );
    assert_eq!(
        state_of(&log, r),
        TaskState::Cancelled {
            agent: Some("a1".into()),
            token
        }
    );
}

#[test]
fn agent_down_requeues_until_max_attempts() {
    let mut log = Log::new();
    log.register(agent("a1", 4));
    let id = log
        .submit(TaskSpec {
            max_attempts: 2,
            ..task("t2i")
        })
        .unwrap()
        .id;
    let other = log.submit(task("t2i")).unwrap().id;
    log.assign(id, "a1").unwrap();
    log.assign(other, "a1").unwrap();
    let r = log.apply(Command::AgentDown { agent: "a1".into() });
    assert_eq!(
        r,
        Response::AgentDown {
            requeued: vec![id, other],
            failed: vec![]
        }
    );
    assert_eq!(
        log.state.task(id).unwrap().attempt,
        1,
        "kept until the next assign"
    );
    assert_eq!(log.state.agent("a1").unwrap().state, AgentState::Down);
    assert_eq!(log.state.agent("a1").unwrap().slots_in_use, 0);
    log.register(agent("a1", 4));
    let token = log.assign(id, "a1").unwrap().token;
    let r = log.apply(Command::AgentDown { agent: "a1".into() });
    assert_eq!(
        r,
        Response::AgentDown {
            requeued: vec![],
            failed: vec![id]
        }
    );
    let t = log.state.task(id).unwrap();
    assert_eq!(
        t.state,
        TaskState::Failed {
            agent: Some("a1".into()),
            token
        }
    );
    assert_eq!(t.error, "agent a1 down; max_attempts 2 reached");
    assert_eq!(
        log.apply(Command::AgentDown { agent: "zz".into() }),
        Response::Rejected(Rejection::AgentNotFound("zz".into()))
    );
}

#[test]
fn register_upserts_and_keeps_tasks() {
    let mut log = Log::new();
    assert!(matches!(
        log.register(agent("a1", 0)),
        Response::Rejected(Rejection::Invalid(_))
    ));
    let mut spec = agent("a1", 2);
    spec.weight = 0;
    assert_eq!(log.register(spec), Response::Ok);
    assert_eq!(log.state.agent("a1").unwrap().spec.weight, 1);
    assert_eq!(log.state.agent("a1").unwrap().registered_ms, 1002);
    let t1 = log.submit(task("t2i")).unwrap().id;
    let t2 = log.submit(task("t2i")).unwrap().id;
    log.assign(t1, "a1").unwrap();
    log.assign(t2, "a1").unwrap();
    let t3 = log.submit(task("t2i")).unwrap().id;
    // Shrinking below what is in use is accepted; it only blocks new work.
    log.state.apply(
        Command::RegisterAgent(agent("a1", 1)),
        ApplyCtx {
            log_index: 50,
            time_ms: 5,
        },
    );
    let a = log.state.agent("a1").unwrap();
    assert_eq!(
        (a.tasks.len(), a.slots_in_use, a.spec.slots, a.state),
        (2, 2, 1, AgentState::Ready)
    );
    assert!(
        log.state
            .check_invariants()
            .unwrap_err()
            .contains("invariant 3"),
        "a shrink is reported"
    );
    let r = log.state.apply(
        Command::Assign(vec![(t3, "a1".into())]),
        ApplyCtx {
            log_index: 51,
            time_ms: 6,
        },
    );
    assert!(matches!(r, Response::Assigned { granted, .. } if granted.is_empty()));
}

#[test]
fn deregister_requeues_then_removes() {
    let mut log = Log::new();
    log.register(agent("a1", 1));
    let id = log.submit(task("t2i")).unwrap().id;
    log.assign(id, "a1").unwrap();
    let r = log.apply(Command::DeregisterAgent { agent: "a1".into() });
    assert_eq!(
        r,
        Response::AgentDown {
            requeued: vec![id],
            failed: vec![]
        }
    );
    assert!(log.state.agent("a1").is_none());
    assert_eq!(state_of(&log, id), TaskState::Pending);
    let r = log.apply(Command::DeregisterAgent { agent: "a1".into() });
    assert_eq!(r, Response::Rejected(Rejection::AgentNotFound("a1".into())));
}

#[test]
fn set_queue_validates_and_upserts() {
    let mut log = Log::new();
    let set = |name: &str, weight| Command::SetQueue {
        name: name.into(),
        weight,
        strategy: Strategy::WeightedRoundRobin,
    };
    assert!(matches!(
        log.apply(set("vip", 0)),
        Response::Rejected(Rejection::Invalid(_))
    ));
    assert!(matches!(
        log.apply(set("vip", 1001)),
        Response::Rejected(Rejection::Invalid(_))
    ));
    assert!(matches!(
        log.apply(set("", 5)),
        Response::Rejected(Rejection::Invalid(_))
    ));
    assert_eq!(log.apply(set("vip", 8)), Response::Ok);
    assert_eq!(log.apply(set("vip", 9)), Response::Ok);
    assert_eq!(log.state.queue("vip").unwrap().weight, 9);
    assert_eq!(
        log.state
            .queues()
            .map(|q| q.name.as_str())
            .collect::<Vec<_>>(),
        ["default", "vip"]
    );
    assert!(log
        .submit(TaskSpec {
            queue: "vip".into(),
            ..task("t2i")
        })
        .is_ok());
    assert_eq!(log.state.pending_in_queue("vip"), 1);
}

#[test]
fn envelope_version_is_checked() {
    let mut s = State::new();
    // An entry of a version above what the node supports cannot be applied:
    // the state is untouched and the caller must stop, not skip it.
    let mut env = Envelope::new(7, Command::Submit(vec![task("t2i")]));
    env.version = 2;
    let before = s.digest();
    let err = s.apply_envelope(env.clone(), 1, 1).unwrap_err();
    assert_eq!((err.needed, err.supported), (2, 1));
    assert!(
        err.to_string().contains("needs cluster format version 2"),
        "{err}"
    );
    assert_eq!(s.digest(), before);
    // A node that knows version 2 applies it.
    assert!(matches!(
        s.apply_envelope(env, 2, FORMAT_VERSION_MAX),
        Ok(Response::Submitted(_))
    ));
    let env = Envelope::new(7, Command::Submit(vec![task("t2i")]));
    assert!(matches!(
        s.apply_envelope(env, 3, 1),
        Ok(Response::Submitted(_))
    ));
    let t = s.task(TaskId(2)).unwrap();
    assert_eq!((t.submitted_index, t.created_ms), (3, 7));
    assert_eq!(
        s.apply_envelope(Envelope::new(8, Command::Noop), 4, 1),
        Ok(Response::Ok)
    );
}

#[test]
fn an_undecoded_command_cannot_be_applied() {
    let mut s = State::new();
    // Of a version above this build's.
    let future = FORMAT_VERSION_MAX + 1;
    let env = Envelope {
        version: future,
        time_ms: 1,
        body: crate::command::Body::Undecoded {
            bytes: vec![99, 1, 2],
            reason: "unknown".into(),
        },
    };
    let err = s.apply_envelope(env, 5, FORMAT_VERSION_MAX).unwrap_err();
    assert_eq!(err.needed, future);
    assert!(
        err.to_string()
            .contains(&format!("entry 5 needs cluster format version {future}")),
        "{err}"
    );
}

#[test]
fn the_cluster_version_gates_commands() {
    let mut s = State::new();
    assert_eq!(s.cluster_version(), 1);
    // Every existing command is version 1; raising the version is version 2.
    assert_eq!(Command::Noop.required_version(), 1);
    let raise = |v| Command::SetClusterVersion { version: v };
    assert_eq!(raise(2).required_version(), 2);
    assert_eq!(raise(3).required_version(), 3);
    // A version-2 command below version 2 is refused alike on every replica.
    let mut env = Envelope::new(1, Command::Noop);
    env.body = crate::command::Body::Command(raise(2));
    env.version = 1;
    assert_eq!(
        s.apply_envelope(env, 1, FORMAT_VERSION_MAX),
        Ok(Response::Rejected(Rejection::UnsupportedVersion(1)))
    );
    assert_eq!(
        s.apply_envelope(Envelope::new(2, raise(2)), 2, FORMAT_VERSION_MAX),
        Ok(Response::Ok)
    );
    assert_eq!(s.cluster_version(), 2);
    assert!(matches!(
        s.apply_envelope(Envelope::new(3, raise(2)), 3, FORMAT_VERSION_MAX),
        Ok(Response::Rejected(Rejection::Invalid(_)))
    ));
    assert_eq!(s.cluster_version(), 2);
}

#[test]
fn envelopes_round_trip_and_version_1_keeps_the_old_layout() {
    let config = bincode::config::standard();
    // What builds before format versions wrote: the derived encoding.
    #[derive(serde::Serialize)]
    struct Legacy {
        version: u8,
        time_ms: u64,
        command: Command,
    }
    let legacy = Legacy {
        version: 1,
        time_ms: 42,
        command: Command::Cancel { task: TaskId(9) },
    };
    let old = bincode::serde::encode_to_vec(&legacy, config).unwrap();
    let env = Envelope::new(42, Command::Cancel { task: TaskId(9) });
    assert_eq!(bincode::serde::encode_to_vec(&env, config).unwrap(), old);
    let (back, _): (Envelope, _) = bincode::serde::decode_from_slice(&old, config).unwrap();
    assert_eq!(back, env);
    // Version 2: the command as a byte string; it round-trips.
    let env = Envelope::new(43, Command::SetClusterVersion { version: 2 });
    assert_eq!(env.version, 2);
    let bytes = bincode::serde::encode_to_vec(&env, config).unwrap();
    let (back, used): (Envelope, _) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
    assert_eq!((back, used), (env, bytes.len()));
}

#[test]
fn an_entry_of_an_unknown_version_decodes_as_undecoded_and_reencodes_unchanged() {
    let config = bincode::config::standard();
    // A future build's entry: version 9, a variant index this build lacks.
    #[derive(serde::Serialize)]
    struct Future {
        version: u8,
        time_ms: u64,
        #[serde(with = "serde_bytes")]
        command: Vec<u8>,
    }
    let future = Future {
        version: 9,
        time_ms: 5,
        command: vec![200, 1, 7, 7],
    };
    let bytes = bincode::serde::encode_to_vec(&future, config).unwrap();
    let (env, used): (Envelope, _) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(env.version, 9);
    match &env.body {
        crate::command::Body::Undecoded { reason, .. } => {
            assert!(
                reason.contains("needs cluster format version 9"),
                "{reason}"
            )
        }
        other => panic!("decoded {other:?}"),
    }
    assert_eq!(bincode::serde::encode_to_vec(&env, config).unwrap(), bytes);
    // A known version whose command does not decode is undecoded too.
    let garbage = Future {
        version: 2,
        time_ms: 5,
        command: vec![200, 1],
    };
    let bytes = bincode::serde::encode_to_vec(&garbage, config).unwrap();
    let (env, _): (Envelope, _) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
    assert!(env.command().is_none());
    let mut s = State::new();
    let err = s.apply_envelope(env, 7, FORMAT_VERSION_MAX).unwrap_err();
    assert!(err.to_string().contains("does not decode"), "{err}");
}

#[test]
fn reads_and_counts() {
    let mut log = Log::new();
    log.register(agent("a1", 1));
    for _ in 0..3 {
        log.submit(task("t2i")).unwrap();
    }
    log.assign(TaskId(2), "a1").unwrap();
    let ids: Vec<u64> = log
        .state
        .tasks_after(Some(TaskId(1)))
        .map(|t| t.id.0)
        .collect();
    assert_eq!(ids, [2, 3]);
    let counts = log.state.counts_by_state();
    assert_eq!(counts[&TaskStateKind::Pending], 2);
    assert_eq!(counts[&TaskStateKind::Assigned], 1);
    assert_eq!(counts[&TaskStateKind::Failed], 0);
    assert_eq!(log.state.agents().count(), 1);
    let order: Vec<u64> = log
        .state
        .pending_in_order("default")
        .map(|t| t.id.0)
        .collect();
    assert_eq!(order, [1, 3]);
    assert_eq!(log.state.next_task_id(), TaskId(4));
}

#[test]
fn pending_order_is_priority_then_age() {
    let mut log = Log::new();
    log.submit(TaskSpec {
        priority: Priority::Offline,
        ..task("t2i")
    })
    .unwrap();
    log.submit(task("t2i")).unwrap();
    log.submit(TaskSpec {
        priority: Priority::Online,
        ..task("t2i")
    })
    .unwrap();
    log.submit(TaskSpec {
        priority: Priority::Online,
        ..task("t2i")
    })
    .unwrap();
    let order: Vec<u64> = log
        .state
        .pending_in_order("default")
        .map(|t| t.id.0)
        .collect();
    assert_eq!(order, [3, 4, 2, 1]);
}

#[test]
fn digest_is_deterministic_and_sensitive() {
    let mut a = Log::new();
    let mut b = Log::new();
    for log in [&mut a, &mut b] {
        log.register(agent("a1", 2));
        log.submit(task("t2i")).unwrap();
        log.assign(TaskId(1), "a1").unwrap();
    }
    assert_eq!(a.state, b.state);
    assert_eq!(a.state.digest(), b.state.digest());
    // Two independently built fresh states agree too.
    assert_eq!(State::new().digest(), State::new().digest());
    b.complete(TaskId(1), 3, true).unwrap();
    assert_ne!(a.state.digest(), b.state.digest());
}

/// The state's digest covers each replicated field: two states that differ
/// in any one of them hash differently, so `status --digest` equality and
/// chaos's convergence check mean equal replicated state.
#[test]
fn digest_differs_when_a_replicated_field_differs() {
    let mut base = Log::new();
    base.register(agent("a1", 2));
    base.submit(task("t2i")).unwrap();
    let d = base.state.digest();

    let mut other = base.state.clone();
    other.next_id += 1;
    assert_ne!(other.digest(), d, "next_id");

    let mut other = base.state.clone();
    other.keys.insert("k".into(), TaskId(1));
    assert_ne!(other.digest(), d, "keys");

    let mut other = base.state.clone();
    other.queues.get_mut(DEFAULT_QUEUE).unwrap().weight += 1;
    assert_ne!(other.digest(), d, "queues");

    let mut other = base.state.clone();
    other.pending.clear();
    assert_ne!(other.digest(), d, "pending");

    let mut other = base.state.clone();
    other.agents.clear();
    assert_ne!(other.digest(), d, "agents");

    let mut other = base.state.clone();
    other.tasks.get_mut(&TaskId(1)).unwrap().attempt += 1;
    assert_ne!(other.digest(), d, "tasks");

    // A raised format version is replicated state too.
    let mut other = base.state.clone();
    assert!(matches!(
        other.apply(
            Command::SetClusterVersion { version: 2 },
            ApplyCtx {
                log_index: 100,
                time_ms: 2000,
            },
        ),
        Response::Ok
    ));
    assert_eq!(other.cluster_version(), 2);
    assert_ne!(other.digest(), d, "cluster_version");
}

/// The `finished` index is derived from the tasks: it does not enter the
/// digest (a state rebuilt from its encoding hashes the same), and a state
/// at format version 1 hashes as the derived `Hash` of builds before the
/// index and format versions did, so a mixed cluster compares equal.
#[test]
fn digest_leaves_out_the_derived_index_and_version_1() {
    let mut log = Log::new();
    log.register(agent("a1", 2));
    log.submit(task("t2i")).unwrap();
    log.assign(TaskId(1), "a1").unwrap();
    log.complete(TaskId(1), 3, true).unwrap();
    assert!(!log.state.finished.is_empty());
    let d = log.state.digest();

    let mut other = log.state.clone();
    other.finished.clear();
    assert_eq!(other.digest(), d);

    // What the earlier builds' `#[derive(Hash)]` over the encoded fields gave.
    #[derive(Hash)]
    struct Earlier<'a> {
        tasks: &'a BTreeMap<TaskId, Task>,
        keys: &'a BTreeMap<String, TaskId>,
        queues: &'a BTreeMap<String, Queue>,
        pending: &'a BTreeMap<String, std::collections::BTreeSet<(Priority, TaskId)>>,
        agents: &'a BTreeMap<AgentId, Agent>,
        next_id: &'a u64,
        links: &'a Links,
    }
    let s = &log.state;
    assert_eq!(s.cluster_version(), FORMAT_VERSION_MIN);
    // Those builds' maps were std's: the persistent ones must hash alike.
    fn std<K: Ord + Clone, V: Clone>(m: &crate::collections::Map<K, V>) -> BTreeMap<K, V> {
        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
    let pending: BTreeMap<String, std::collections::BTreeSet<(Priority, TaskId)>> = s
        .pending
        .iter()
        .map(|(q, p)| (q.clone(), p.iter().copied().collect()))
        .collect();
    let mut h = Fnv64::default();
    Earlier {
        tasks: &std(&s.tasks),
        keys: &std(&s.keys),
        queues: &std(&s.queues),
        pending: &pending,
        agents: &std(&s.agents),
        next_id: &s.next_id,
        links: &s.links,
    }
    .hash(&mut h);
    assert_eq!(h.finish(), d);
}

#[test]
fn started_batch_checks_each_report_on_its_own() {
    let mut log = Log::new();
    log.register(agent("a1", 2));
    let a = log.submit(task("t2i")).unwrap().id;
    let b = log.submit(task("t2i")).unwrap().id;
    let ta = log.assign(a, "a1").unwrap().token;
    let tb = log.assign(b, "a1").unwrap().token;
    let r = log.apply(Command::StartedBatch(vec![
        (a, ta),
        (b, tb + 1),
        (TaskId(99), 1),
    ]));
    let Response::StartedBatch(results) = r else {
        panic!("unexpected {r:?}")
    };
    assert_eq!(results[0], Ok(()));
    assert!(matches!(results[1], Err(Rejection::StaleToken { .. })));
    assert!(matches!(results[2], Err(Rejection::TaskNotFound(_))));
    assert_eq!(
        state_of(&log, a),
        TaskState::Running {
            agent: "a1".into(),
            token: ta
        }
    );
    assert_eq!(
        state_of(&log, b),
        TaskState::Assigned {
            agent: "a1".into(),
            token: tb
        }
    );
}

#[test]
fn regrant_gives_a_new_token_and_keeps_the_attempt_of_an_unstarted_task() {
    let mut log = Log::new();
    log.register(agent("a1", 2));
    let id = log.submit(task("t2i")).unwrap().id;
    let first = log.assign(id, "a1").unwrap();
    assert_eq!(first.attempt, 1);
    let r = log.apply(Command::Regrant {
        agent: "a1".into(),
        tasks: vec![(id, first.token)],
    });
    let Response::Regranted {
        granted,
        requeued,
        failed,
        rejected,
    } = r
    else {
        panic!("{r:?}")
    };
    assert!(requeued.is_empty() && failed.is_empty() && rejected.is_empty());
    assert_eq!(granted.len(), 1);
    let second = &granted[0];
    assert!(second.token > first.token, "a new, higher token");
    assert_eq!(second.attempt, 1, "no attempt was spent");
    assert_eq!(log.state.agent("a1").unwrap().slots_in_use, 1);
    // The old token is dead: its completion is refused, the new one's taken.
    assert!(matches!(
        log.complete(id, first.token, true),
        Err(Rejection::StaleToken { .. })
    ));
    // Naming the old token again changes nothing.
    let again = log.apply(Command::Regrant {
        agent: "a1".into(),
        tasks: vec![(id, first.token)],
    });
    assert!(
        matches!(&again, Response::Regranted { granted, rejected, .. } if granted.is_empty() && rejected.len() == 1),
        "{again:?}"
    );
    log.complete(id, second.token, true).unwrap();
}

#[test]
fn regrant_of_a_started_task_spends_an_attempt_and_fails_when_none_is_left() {
    let mut log = Log::new();
    log.register(agent("a1", 2));
    let id = log
        .submit(TaskSpec {
            max_attempts: 2,
            ..task("t2i")
        })
        .unwrap()
        .id;
    let g = log.assign(id, "a1").unwrap();
    log.apply(Command::Started {
        task: id,
        token: g.token,
    });
    let r = log.apply(Command::Regrant {
        agent: "a1".into(),
        tasks: vec![(id, g.token)],
    });
    let Response::Regranted { granted, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(granted[0].attempt, 2);
    let token = granted[0].token;
    log.apply(Command::Started { task: id, token });
    let r = log.apply(Command::Regrant {
        agent: "a1".into(),
        tasks: vec![(id, token)],
    });
    assert!(
        matches!(&r, Response::Regranted { failed, granted, .. } if failed == &vec![id] && granted.is_empty()),
        "{r:?}"
    );
    assert_eq!(log.state.agent("a1").unwrap().slots_in_use, 0);
    assert!(matches!(
        log.state.task(id).unwrap().state,
        TaskState::Failed { .. }
    ));
}

#[test]
fn regrant_to_an_agent_that_can_no_longer_take_the_task_requeues_it() {
    let mut log = Log::new();
    log.register(agent("a1", 2));
    let id = log.submit(task("t2i")).unwrap().id;
    let g = log.assign(id, "a1").unwrap();
    // The agent re-registers without t2i.
    log.register(AgentSpec {
        task_types: ["tts".to_string()].into(),
        ..agent("a1", 2)
    });
    let r = log.apply(Command::Regrant {
        agent: "a1".into(),
        tasks: vec![(id, g.token)],
    });
    assert!(
        matches!(&r, Response::Regranted { requeued, .. } if requeued == &vec![id]),
        "{r:?}"
    );
    let t = log.state.task(id).unwrap();
    assert_eq!(t.state, TaskState::Pending);
    assert_eq!(t.attempt, 0, "the next assignment is attempt 1 again");
}

#[test]
fn expire_removes_finished_tasks_and_keys_by_the_entrys_cut_off() {
    let mut log = Log::new();
    log.register(agent("a1", 2));
    let keyed = |k: &str| TaskSpec {
        idempotency_key: Some(k.into()),
        ..task("t2i")
    };
    let done = log.submit(keyed("k-done")).unwrap().id;
    let token = log.assign(done, "a1").unwrap().token;
    log.complete(done, token, true).unwrap();
    let done_at = log.state.task(done).unwrap().updated_ms;
    let cancelled = log.submit(keyed("k-cancel")).unwrap().id;
    log.apply(Command::Cancel { task: cancelled });
    let running = log.submit(keyed("k-run")).unwrap().id;
    log.assign(running, "a1").unwrap();
    assert_eq!(log.state.finished_before(done_at, 10), vec![done]);
    assert_eq!(
        log.state.finished_before(u64::MAX, 10),
        vec![done, cancelled]
    );

    // A cut-off after the entry's own time is refused whole.
    let now = 1000 + log.index + 1;
    assert!(matches!(
        log.apply(Command::Expire {
            before_ms: now + 1,
            tasks: vec![done],
        }),
        Response::Rejected(Rejection::Invalid(_))
    ));
    // Only what finished by the cut-off goes; the rest is refused by name.
    let r = log.apply(Command::Expire {
        before_ms: done_at,
        tasks: vec![done, cancelled, running, TaskId(99)],
    });
    let Response::Expired { removed, rejected } = r else {
        panic!("{r:?}")
    };
    assert_eq!(removed, vec![done]);
    let refused: Vec<TaskId> = rejected.iter().map(|(id, _)| *id).collect();
    assert_eq!(refused, vec![cancelled, running, TaskId(99)]);
    assert!(log.state.task(done).is_none());
    assert!(log.state.expired(done), "an expired id is told apart");
    assert!(
        !log.state.expired(TaskId(99)),
        "from one that never existed"
    );
    assert!(!log.state.expired(running));
    assert_eq!(log.state.task_by_key("k-done"), None);
    assert_eq!(log.state.task_by_key("k-cancel"), Some(cancelled));
    // The key is free again: a new task, with a new id.
    let again = log.submit(keyed("k-done")).unwrap();
    assert!(!again.existed && again.id > running, "{again:?}");
    assert_eq!(log.state.finished_before(u64::MAX, 10), vec![cancelled]);
}

#[test]
fn replicas_that_expire_by_the_same_entries_stay_equal() {
    let (mut a, mut b) = (Log::new(), Log::new());
    for log in [&mut a, &mut b] {
        log.register(agent("a1", 4));
        for i in 0..6u64 {
            let id = log.submit(task("t2i")).unwrap().id;
            let token = log.assign(id, "a1").unwrap().token;
            log.complete(id, token, i % 2 == 0).unwrap();
        }
    }
    let cut = a.state.task(TaskId(3)).unwrap().updated_ms;
    let pick = a.state.finished_before(cut, 100);
    assert_eq!(pick, vec![TaskId(1), TaskId(2), TaskId(3)]);
    for log in [&mut a, &mut b] {
        log.apply(Command::Expire {
            before_ms: cut,
            tasks: pick.clone(),
        });
    }
    assert_eq!(a.state, b.state);
    assert_eq!(a.state.digest(), b.state.digest());
    assert_eq!(a.state.finished_count(), 3);
}

#[test]
fn the_dispatch_index_counts_its_tasks_per_class() {
    let mut s = State::new();
    let spec = |p: Priority| TaskSpec {
        task_type: "t2i".into(),
        priority: p,
        ..TaskSpec::default()
    };
    s.apply(
        Command::Submit(vec![
            spec(Priority::Online),
            spec(Priority::Offline),
            spec(Priority::Offline),
        ]),
        ApplyCtx {
            log_index: 1,
            time_ms: 1,
        },
    );
    assert_eq!(s.pending_by_tenant.counts(), [1, 0, 2]);
    assert_eq!(s.pending_by_tenant.of_class(Priority::Offline), 2);
    s.apply(
        Command::Cancel { task: TaskId(2) },
        ApplyCtx {
            log_index: 2,
            time_ms: 2,
        },
    );
    assert_eq!(s.pending_by_tenant.counts(), [1, 0, 1]);
    s.check_invariants().expect("invariants hold");
    // A count out of step with the sets is caught.
    s.pending_by_tenant.per_class[1] += 1;
    let e = s.check_invariants().unwrap_err();
    assert!(e.contains("per class"), "{e}");
}
