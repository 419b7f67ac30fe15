//! Tests of the wire forms of the engine's messages for agents.

use tidal_core::command::{ApplyCtx, Command, Finished, Response};
use tidal_core::lifecycle::{Notice, TaskOptions, DEFAULT_PREEMPT_GRACE_MS, LIFECYCLE_VERSION};
use tidal_core::model::{AgentSpec, Outcome, TaskId, TaskSpec};
use tidal_core::State;
use tidal_proto::v1::{self, server_message::Msg};

use super::to_agent;
use crate::leader::engine::ToAgent;

fn wire(msg: ToAgent) -> Msg {
    to_agent(&State::new(), msg)
        .and_then(|m| m.msg)
        .expect("a message")
}

#[test]
fn a_drain_stop_is_no_preemption() {
    let m = wire(ToAgent::Stop {
        task: TaskId(7),
        token: 3,
        reason: "drain deadline passed".into(),
        preempt: None,
    });
    assert_eq!(
        m,
        Msg::Stop(v1::StopTask {
            task_id: TaskId(7).to_string(),
            token: 3,
            reason: "drain deadline passed".into(),
            preempt: false,
            grace_ms: 0,
            notice: v1::PreemptNotice::Unspecified as i32,
        })
    );
}

#[test]
fn a_preempting_stop_carries_its_notice_and_grace() {
    for (notice, wire_notice) in [
        (Notice::Signal, v1::PreemptNotice::Signal),
        (Notice::File, v1::PreemptNotice::File),
    ] {
        let m = wire(ToAgent::Stop {
            task: TaskId(7),
            token: 3,
            reason: "preempted".into(),
            preempt: Some((notice, 2_500)),
        });
        assert_eq!(
            m,
            Msg::Stop(v1::StopTask {
                task_id: TaskId(7).to_string(),
                token: 3,
                reason: "preempted".into(),
                preempt: true,
                grace_ms: 2_500,
                notice: wire_notice as i32,
            })
        );
    }
}

#[test]
fn suspend_and_resume_name_the_task_and_token() {
    assert_eq!(
        wire(ToAgent::Suspend {
            task: TaskId(9),
            token: 4
        }),
        Msg::Suspend(v1::SuspendTask {
            task_id: TaskId(9).to_string(),
            token: 4,
        })
    );
    assert_eq!(
        wire(ToAgent::Resume {
            task: TaskId(9),
            token: 4
        }),
        Msg::Resume(v1::ResumeTask {
            task_id: TaskId(9).to_string(),
            token: 4,
        })
    );
}

/// A state at `version` with agent a1 and one task submitted (with `opts`
/// from version 4) and assigned to a1; its id and token.
fn assigned(version: u8, opts: TaskOptions) -> (State, TaskId, u64) {
    let mut state = State::new();
    state.restore_cluster_version(version);
    let mut index = 0;
    let mut apply = |state: &mut State, cmd: Command| {
        index += 1;
        state.apply(
            cmd,
            ApplyCtx {
                log_index: index,
                time_ms: 1_000 + index,
            },
        )
    };
    apply(
        &mut state,
        Command::RegisterAgent(AgentSpec {
            id: "a1".into(),
            dc: "dc1".into(),
            task_types: ["t2i".to_string()].into(),
            slots: 2,
            weight: 1,
            ..AgentSpec::default()
        }),
    );
    let spec = TaskSpec {
        task_type: "t2i".into(),
        max_attempts: 3,
        ..TaskSpec::default()
    };
    let submit = if version >= LIFECYCLE_VERSION {
        Command::SubmitWith {
            specs: vec![spec],
            place: vec![],
            by: vec![],
            opts: vec![opts],
        }
    } else {
        Command::Submit(vec![spec])
    };
    let id = match apply(&mut state, submit) {
        Response::SubmittedPlaced { submitted, .. } => submitted[0].as_ref().unwrap().id,
        Response::Submitted(submitted) => submitted[0].as_ref().unwrap().id,
        other => panic!("{other:?}"),
    };
    let token = match apply(&mut state, Command::Assign(vec![(id, "a1".into())])) {
        Response::Assigned { granted, .. } => granted[0].token,
        other => panic!("{other:?}"),
    };
    (state, id, token)
}

fn assignment_of(state: &State, task: TaskId, token: u64) -> v1::Assignment {
    match to_agent(state, ToAgent::Assign { task, token }).and_then(|m| m.msg) {
        Some(Msg::Assignment(a)) => a,
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_assignment_carries_the_tasks_lifecycle_options() {
    let opts = TaskOptions {
        max_run_ms: Some(5_000),
        notice: Notice::File,
        preempt_grace_ms: 1_500,
        ..TaskOptions::default()
    };
    let (state, id, token) = assigned(LIFECYCLE_VERSION, opts);
    let a = assignment_of(&state, id, token);
    assert_eq!(a.task_id, id.to_string());
    assert_eq!(a.token, token);
    assert_eq!(a.max_run_ms, 5_000);
    assert_eq!(a.preempt_notice, v1::PreemptNotice::File as i32);
    assert_eq!(a.preempt_grace_ms, 1_500);
    assert!(a.checkpoint.is_empty());
}

#[test]
fn an_assignment_fills_in_the_default_grace_and_no_max_run() {
    let (state, id, token) = assigned(LIFECYCLE_VERSION, TaskOptions::default());
    let a = assignment_of(&state, id, token);
    assert_eq!(a.max_run_ms, 0);
    assert_eq!(a.preempt_notice, v1::PreemptNotice::Signal as i32);
    assert_eq!(a.preempt_grace_ms, DEFAULT_PREEMPT_GRACE_MS);
}

#[test]
fn a_retry_carries_the_last_committed_checkpoint() {
    let (mut state, id, token) = assigned(LIFECYCLE_VERSION, TaskOptions::default());
    // Entry i at 2 s + i, or (from 2 on) after any backoff.
    let ctx = |i: u64| ApplyCtx {
        log_index: 100 + i,
        time_ms: if i < 2 { 2_000 + i } else { 10_000_000 + i },
    };
    let r = state.apply(
        Command::Checkpoint(vec![(id, token, b"step 7".to_vec())]),
        ctx(0),
    );
    assert_eq!(r, Response::Items(vec![Ok(())]));
    let r = state.apply(
        Command::Finished(vec![Finished {
            task: id,
            token,
            outcome: Outcome {
                success: false,
                result: vec![],
                error: "exit 1".into(),
                exit_code: 1,
            },
            timed_out: false,
        }]),
        ctx(1),
    );
    assert_eq!(r, Response::Completed(vec![Ok(())]));
    // Out of backoff, assigned again.
    let woken = state.lifecycle().wakes_due(u64::MAX, 10);
    assert_eq!(woken, vec![id]);
    state.apply(Command::Wake(woken), ctx(2));
    let retry = match state.apply(Command::Assign(vec![(id, "a1".into())]), ctx(3)) {
        Response::Assigned { granted, .. } => granted[0].token,
        other => panic!("{other:?}"),
    };
    let a = assignment_of(&state, id, retry);
    assert_eq!(a.attempt, 2);
    assert_eq!(a.checkpoint, b"step 7".to_vec());
}

#[test]
fn an_assignment_below_version_4_has_no_lifecycle_fields() {
    let (state, id, token) = assigned(3, TaskOptions::default());
    let a = assignment_of(&state, id, token);
    assert_eq!(
        (
            a.max_run_ms,
            a.preempt_notice,
            a.preempt_grace_ms,
            a.checkpoint.len()
        ),
        (0, 0, 0, 0)
    );
}

#[test]
fn an_assignment_of_a_task_gone_is_not_sent() {
    assert!(to_agent(
        &State::new(),
        ToAgent::Assign {
            task: TaskId(5),
            token: 1
        }
    )
    .is_none());
}
