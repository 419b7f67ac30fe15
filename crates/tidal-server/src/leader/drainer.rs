//! The drain driver: once a draining agent's deadline has passed (read from
//! the state, so a new leader carries on an old leader's drain), tells the
//! agent to stop each task it still holds. The agent reports each stopped
//! task (`TaskCompleted.stopped`), which the session commits as
//! `Command::Stopped`. Only a session that holds the task (reported it
//! running when it registered, or had it pushed) is told. Which stops are due is tidal-core's pure
//! [`tidal_core::drain::due_stops`]; this loop only sends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tidal_core::drain::{due_stops, next_deadline, DueStop};
use tidal_core::model::TaskId;
use tidal_proto::v1;

use super::leadership::Leadership;
use super::sessions::StopSent;
use crate::node::Node;

/// The longest the loop sleeps without looking: a new session of a
/// draining agent past its deadline is told within this.
const LOOK_EVERY: Duration = Duration::from_millis(250);

pub async fn run(node: Arc<Node>, leadership: Arc<Leadership>) {
    // (task, token) -> the session generation the stop went out on: sent
    // again only on a newer session (the old one may have lost it).
    let mut sent: HashMap<(TaskId, u64), u64> = HashMap::new();
    while leadership.is_alive() {
        let now = crate::clock::now_ms();
        let (due, next) = {
            let applied = node.state.read();
            (
                due_stops(&applied.state, now),
                next_deadline(&applied.state, now),
            )
        };
        sent.retain(|(task, token), _| due.iter().any(|d| d.task == *task && d.token == *token));
        for stop in &due {
            tell(&leadership, stop, &mut sent);
        }
        let wait = next
            .map(|d| Duration::from_millis(d.saturating_sub(now)))
            .unwrap_or(LOOK_EVERY)
            .min(LOOK_EVERY);
        let _ = tokio::time::timeout(wait, leadership.drain_wake.notified()).await;
    }
}

fn tell(leadership: &Leadership, stop: &DueStop, sent: &mut HashMap<(TaskId, u64), u64>) {
    let Some(generation) = leadership.sessions.generation(&stop.agent) else {
        // Not connected: told when it reconnects, or its lease runs out
        // and the agent is marked down (its tasks requeued then).
        return;
    };
    let key = (stop.task, stop.token);
    if sent.get(&key) == Some(&generation) {
        return;
    }
    let msg = v1::ServerMessage {
        msg: Some(v1::server_message::Msg::Stop(v1::StopTask {
            task_id: stop.task.to_string(),
            token: stop.token,
            reason: "the agent's drain deadline passed".into(),
        })),
    };
    // Only the session that holds the assignment is told: a process that
    // took the id over (or the first session after an election) did not
    // report it running, so another process may still run it; the session's
    // delayed Regrant settles it once that process's lease has ended.
    match leadership
        .sessions
        .send_stop(&stop.agent, stop.task, stop.token, msg)
    {
        StopSent::Sent(generation) => {
            tracing::info!(
                agent_id = %stop.agent,
                task_id = %stop.task,
                token = stop.token,
                "drain deadline passed: told the agent to stop the task"
            );
            sent.insert(key, generation);
        }
        StopSent::NotHeld(generation) => {
            tracing::info!(
                agent_id = %stop.agent,
                task_id = %stop.task,
                token = stop.token,
                "drain deadline passed, but the agent's session does not run the task (another process \
                 under this id may still run it): not stopping it here; it is requeued once that \
                 process's lease has ended"
            );
            sent.insert(key, generation);
        }
        StopSent::NoSession => {}
    }
}
