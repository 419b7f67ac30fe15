//! Pushes committed assignments to the agents' sessions, and the message
//! that carries one.

use tidal_core::command::Granted;
use tidal_proto::v1;
use tidal_store::StateHandle;

use super::leadership::Leadership;
use crate::grpc::convert;

/// Sends each granted assignment to its agent. An agent without a session
/// never receives this token: when it registers, the session's reconcile
/// finds the task held and not running and regrants it under a new token.
pub fn push(state: &StateHandle, leadership: &Leadership, granted: &[Granted]) {
    let messages: Vec<(String, u64, v1::ServerMessage)> = {
        let applied = state.read();
        granted
            .iter()
            .filter_map(|g| {
                let task = applied.state.task(g.task)?;
                Some((g.agent.clone(), g.token, assignment(task, g.token)))
            })
            .collect()
    };
    for (agent, token, msg) in messages {
        leadership.sessions.send_assignment(&agent, token, msg);
    }
}

/// The message that hands a task to its agent.
pub fn assignment(task: &tidal_core::model::Task, token: u64) -> v1::ServerMessage {
    v1::ServerMessage {
        msg: Some(v1::server_message::Msg::Assignment(v1::Assignment {
            task_id: task.id.to_string(),
            token,
            attempt: task.attempt,
            spec: Some(convert::spec_to(&task.spec, true)),
        })),
    }
}
