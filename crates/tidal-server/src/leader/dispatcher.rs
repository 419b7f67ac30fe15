//! The leader's dispatch loop: plans a round with tidal-core's pure
//! dispatcher, commits it as one `Assign` entry, then pushes the granted
//! assignments on the agents' sessions.

use std::sync::Arc;
use std::time::Duration;

use tidal_core::command::{Command, Response};
use tidal_core::dispatch::{plan, DispatchCursor, InFlight};

use super::leadership::Leadership;
use super::push::push;
use crate::node::Node;

/// At most this many assignments per entry.
const MAX_ROUND: usize = 4096;

pub async fn run(node: Arc<Node>, leadership: Arc<Leadership>) {
    let mut cursor = DispatchCursor::default();
    while leadership.is_alive() {
        let (round, in_flight) = {
            let applied = node.state.read();
            let connected = leadership.connected();
            let round = plan(&applied.state, &connected, MAX_ROUND, &mut cursor);
            let in_flight = InFlight::of(&applied.state, &round);
            (round, in_flight)
        };
        if round.is_empty() {
            // Wait for new work or capacity; the timeout is a safety net only.
            let _ =
                tokio::time::timeout(Duration::from_millis(500), leadership.wake.notified()).await;
            continue;
        }
        set_dispatching(&leadership, in_flight);
        let committed = node.propose(Command::Assign(round)).await;
        set_dispatching(&leadership, InFlight::default());
        match committed {
            Ok((Response::Assigned { granted, rejected }, index)) => {
                if !rejected.is_empty() {
                    tracing::debug!(
                        log_index = index,
                        rejected = rejected.len(),
                        "assignments rejected at apply"
                    );
                }
                push(&leadership, &granted);
            }
            Ok((other, _)) => tracing::warn!(response = ?other, "unexpected response to assign"),
            Err(e) => {
                tracing::warn!(error = %e, "dispatch round not committed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn set_dispatching(leadership: &Leadership, round: InFlight) {
    *leadership
        .dispatching
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = round;
}
