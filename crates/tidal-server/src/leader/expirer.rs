//! Retention: the leader commits `Expire` entries for tasks that finished
//! more than `retain_finished` ago, in bounded batches, so the state (and
//! every snapshot) holds only recent finished tasks.

use std::sync::Arc;
use std::time::Duration;

use tidal_core::command::{Command, Response};

use super::leadership::Leadership;
use crate::clock::now_ms;
use crate::node::Node;

/// Tasks per `Expire` entry: 8 bytes each, so an entry stays small and the
/// state is held for writing only briefly per entry.
pub const EXPIRE_BATCH: usize = 2_000;
/// How often the leader looks for expired tasks.
pub const EXPIRE_EVERY: Duration = Duration::from_millis(500);

pub async fn run(node: Arc<Node>, leadership: Arc<Leadership>) {
    let retain = node.config.retain_finished.as_millis() as u64;
    let mut tick = tokio::time::interval(EXPIRE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // `Expire` is of cluster format version 2: a cluster still at 1 (an
    // upgrade under way, README: Rolling upgrade) keeps its finished tasks
    // until every member supports it.
    let needed = Command::Expire {
        before_ms: 0,
        tasks: Vec::new(),
    }
    .required_version();
    while leadership.is_alive() {
        tick.tick().await;
        if node.state.read().state.cluster_version() < needed {
            continue;
        }
        // Batches back to back until nothing old enough is left.
        while leadership.is_alive() {
            let before_ms = now_ms().saturating_sub(retain);
            let tasks = {
                let applied = node.state.read();
                // A cluster still on a format version without `Expire`
                // (mid rolling upgrade) keeps its finished tasks until it
                // moves up.
                let needed = Command::Expire {
                    before_ms,
                    tasks: Vec::new(),
                }
                .required_version();
                if applied.state.cluster_version() < needed {
                    break;
                }
                applied.state.finished_before(before_ms, EXPIRE_BATCH)
            };
            if tasks.is_empty() {
                break;
            }
            let n = tasks.len();
            match node.propose(Command::Expire { before_ms, tasks }).await {
                Ok((Response::Expired { removed, rejected }, index)) => {
                    tracing::debug!(
                        log_index = index,
                        removed = removed.len(),
                        refused = rejected.len(),
                        "expired finished tasks"
                    );
                    if removed.is_empty() || n < EXPIRE_BATCH {
                        break;
                    }
                }
                Ok((other, _)) => {
                    tracing::warn!(response = ?other, "expiry not applied");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not commit an expiry");
                    break;
                }
            }
        }
    }
}
