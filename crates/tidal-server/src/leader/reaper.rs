//! The lease reaper: commits `AgentDown` for agents whose lease ran out, which
//! requeues their tasks (attempt + 1 on the next assignment).

use std::sync::Arc;
use std::time::Instant;

use tidal_core::command::{Command, Response};
use tidal_core::model::AgentState;

use super::leadership::Leadership;
use crate::node::Node;

pub async fn run(node: Arc<Node>, leadership: Arc<Leadership>) {
    let mut tick = tokio::time::interval(node.config.heartbeat_interval / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while leadership.is_alive() {
        tick.tick().await;
        for agent in leadership.sessions.expired(Instant::now()) {
            let live = {
                let applied = node.state.read();
                applied
                    .state
                    .agent(&agent)
                    .is_some_and(|a| a.state != AgentState::Down)
            };
            if !live {
                leadership.sessions.forget(&agent);
                continue;
            }
            match node
                .propose(Command::AgentDown {
                    agent: agent.clone(),
                })
                .await
            {
                Ok((Response::AgentDown { requeued, failed }, index)) => {
                    tracing::info!(
                        agent_id = %agent,
                        log_index = index,
                        requeued = requeued.len(),
                        failed = failed.len(),
                        "agent lease expired: marked down"
                    );
                    leadership.sessions.forget(&agent);
                    leadership.wake.notify_one();
                }
                Ok((other, _)) => {
                    tracing::warn!(agent_id = %agent, response = ?other, "agent down not applied");
                    leadership.sessions.forget(&agent);
                }
                Err(e) => {
                    tracing::warn!(agent_id = %agent, error = %e, "could not commit agent down");
                }
            }
        }
    }
}
