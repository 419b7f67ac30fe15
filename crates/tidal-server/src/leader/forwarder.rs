//! The leader's forwarding loop: asks tidal-core's policy
//! ([`plan_forwards`]) which pending tasks should go to which peer DC, and
//! commits them as one `Forward` entry. The shippers take it from there.

use std::sync::Arc;
use std::time::Duration;

use tidal_core::command::{Command, Response};
use tidal_core::forwarding::{plan_forwards, PeerView, Record};

use super::leadership::Leadership;
use crate::node::Node;

/// At most this many tasks per `Forward` entry.
const MAX_ROUND: usize = 1024;
/// How often pending work is looked at for forwarding (for `forward_after`
/// and new peer summaries); new submits wake the loop sooner, but rounds
/// are at least [`GAP`] apart, so a flood of submits does not turn into
/// back-to-back scans.
const EVERY: Duration = Duration::from_millis(200);
const GAP: Duration = Duration::from_millis(20);

pub async fn run(node: Arc<Node>, leadership: Arc<Leadership>) {
    let fwd = &node.config.forwarding;
    while leadership.is_alive() {
        let _ = tokio::time::timeout(EVERY, leadership.forward_wake.notified()).await;
        tokio::time::sleep(GAP).await;
        let round = {
            let applied = node.state.read();
            let state = &applied.state;
            let mut peers: Vec<PeerView> = node
                .peers
                .each(state)
                .map(|(p, info, outbox)| {
                    let depth = outbox.map_or(0, |o| o.records.len());
                    let in_flight = outbox.map_or(0, |o| {
                        o.records
                            .values()
                            .filter(|(_, r)| matches!(r, Record::Task { .. }))
                            .count()
                    }) as u32;
                    PeerView {
                        dc: p.dc.clone(),
                        room: info
                            .summary
                            .as_ref()
                            .map_or(0, |(s, _)| s.room().saturating_sub(in_flight)),
                        summary: info.summary.map(|(s, _)| s.capabilities),
                        outbox_room: fwd.outbox_limit.saturating_sub(depth),
                    }
                })
                .collect();
            plan_forwards(
                state,
                &mut peers,
                |q| fwd.policy(q),
                crate::clock::now_ms(),
                MAX_ROUND,
            )
        };
        if round.is_empty() {
            continue;
        }
        match node.propose(Command::Forward(round)).await {
            Ok((Response::Forwarded(results), index)) => {
                let refused = results.iter().filter(|r| r.is_err()).count();
                tracing::debug!(
                    log_index = index,
                    forwarded = results.len() - refused,
                    refused,
                    "forward round committed"
                );
            }
            Ok((other, _)) => tracing::warn!(response = ?other, "unexpected answer to forward"),
            Err(e) => tracing::warn!(error = %e, "forward round not committed"),
        }
    }
}
