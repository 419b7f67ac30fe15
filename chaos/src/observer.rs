//! The observer: polls every node's own status on its private port (never
//! faulted) and records each change of term, role or leader, and the applied
//! index now and then, for the leader and convergence checkers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tidal_client::Client;
use tokio::task::JoinHandle;

use crate::history::{Event, Recorder};

pub fn start(
    admin: Client,
    nodes: Vec<(u64, SocketAddr)>,
    incarnations: Arc<Vec<AtomicU32>>,
    history: Recorder,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Per node: (term, role, leader, incarnation) last recorded, and when.
        type Seen = (u64, String, u64, u32, u64);
        let mut last: Vec<Option<Seen>> = vec![None; nodes.len()];
        loop {
            for (i, (id, addr)) in nodes.iter().enumerate() {
                let addr = addr.to_string();
                // With the digest: the states of a chaos run are small.
                let fut = admin.status_digest_of(&addr);
                let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(300), fut).await else {
                    continue;
                };
                let inc = incarnations[i].load(Ordering::Relaxed);
                let now = history.now();
                let key = (s.term, s.role.clone(), s.leader_id, inc);
                let changed = match &last[i] {
                    None => true,
                    Some((t, r, l, n, at)) => {
                        (t, r, l, n) != (&key.0, &key.1, &key.2, &key.3) || now - at > 1_000_000_000
                    }
                };
                if changed {
                    last[i] = Some((key.0, key.1, key.2, key.3, now));
                    history.record(Event {
                        node: Some(*id),
                        term: Some(s.term),
                        role: Some(s.role),
                        applied: Some(s.applied_index),
                        last_log: Some(s.last_log_index),
                        digest: Some(s.state_digest),
                        incarnation: Some(inc),
                        detail: Some(format!("leader {}", s.leader_id)),
                        ..Event::new("observer", "event", "status")
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}
