//! Tests of the wire forms of the engine's messages for agents.

use tidal_core::lifecycle::Notice;
use tidal_core::model::TaskId;
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
