//! The leader engine's driver: one task per leadership that runs the [`Engine`] and does its I/O.
//!
//! It steps the engine with each event (under a brief read of the applied
//! state, never held across an await), carries out the actions, and sleeps
//! until the next event or the engine's next timer. Proposals run as spawned
//! tasks whose results come back as events, so the engine never waits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};

use tidal_core::forwarding::DcName;

use super::engine::{
    Action, Engine, EngineConfig, Event, ForwardPolicy, Handler, LinkNews, Now, PeerReply,
    PeerSummary, ProposeError,
};
use super::leadership::Leadership;
use super::link::Link;
use crate::clock::now_ms;
use crate::links::Summary;
use crate::node::Node;

/// Where events for a leadership's engine go.
pub type Inbox = mpsc::UnboundedSender<Event>;

/// The engine's settings from the server's configuration. Every handler the
/// engine has is on: each took over a loop that no longer runs elsewhere.
pub fn config(node: &Node) -> EngineConfig {
    let c = &node.config;
    EngineConfig {
        node_id: node.id,
        handlers: Handler::ALL.iter().copied().collect(),
        seed: rand::random(),
        agent_ttl_ms: c.agent_ttl.as_millis() as u64,
        heartbeat_interval_ms: c.heartbeat_interval.as_millis() as u64,
        retain_finished_ms: c.retain_finished.as_millis() as u64,
        raft_heartbeat_ms: c.raft_heartbeat_ms,
        election_timeout_max_ms: c.election_timeout.1,
        supported_format: node.supported_format_version(),
        ship_bytes: crate::batcher::MAX_ENTRY_BYTES,
        peers: c.peers.iter().map(|p| p.dc.clone()).collect(),
        forwarding: ForwardPolicy {
            forward_after_ms: c.forwarding.forward_after_ms,
            outbox_limit: c.forwarding.outbox_limit,
            queues: c.forwarding.queues.clone(),
        },
    }
}

/// Runs `leadership`'s engine until the leadership ends; `events` is the
/// receiving end of its [`Inbox`].
pub async fn run(
    node: Arc<Node>,
    leadership: Arc<Leadership>,
    mut events: mpsc::UnboundedReceiver<Event>,
) {
    let mut engine = Engine::new(config(&node));
    let io = Io {
        inbox: leadership.inbox(),
        links: node
            .config
            .peers
            .iter()
            .map(|p| (p.dc.clone(), Arc::new(Mutex::new(Link::new(&node, p)))))
            .collect(),
        node,
        leadership,
    };
    let (node, leadership) = (&io.node, &io.leadership);
    let since = tokio::time::Instant::from_std(leadership.since);
    let clock = || Now {
        mono_ms: since.elapsed().as_millis() as u64,
        wall_ms: now_ms(),
    };
    let mut event = Event::Established;
    loop {
        step(&io, &mut engine, clock(), event);
        // Whatever else arrived meanwhile, before sleeping again.
        while let Ok(more) = events.try_recv() {
            step(&io, &mut engine, clock(), more);
        }
        let wake = engine
            .next_wake()
            .map(|ms| since + Duration::from_millis(ms));
        event = tokio::select! {
            received = events.recv() => match received {
                Some(e) => e,
                None => return,
            },
            _ = sleep_until(wake) => {
                // What the timers read besides the state, as of now.
                step(&io, &mut engine, clock(), Event::MemberFormats(node.member_formats()));
                if !node.config.peers.is_empty() {
                    step(&io, &mut engine, clock(), Event::PeerSummaries(peer_summaries(node)));
                }
                Event::Tick
            }
            _ = leadership.ended() => return,
        };
    }
}

/// What the peer DCs last said of themselves (in an answer to this node's
/// exchange or in their own).
fn peer_summaries(node: &Node) -> Vec<(DcName, Option<PeerSummary>)> {
    node.peers
        .peers()
        .iter()
        .map(|p| {
            let summary = node.peers.get(&p.dc).summary.map(|(s, _)| PeerSummary {
                capabilities: s.capabilities,
                pending: s.pending,
            });
            (p.dc.clone(), summary)
        })
        .collect()
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What the driver acts on.
struct Io {
    node: Arc<Node>,
    leadership: Arc<Leadership>,
    inbox: Inbox,
    /// One per peer DC; an exchange holds its link until it is answered.
    links: BTreeMap<DcName, Arc<Mutex<Link>>>,
}

fn step(io: &Io, engine: &mut Engine, now: Now, event: Event) {
    {
        let applied = io.node.state.read();
        engine.step(now, &applied.state, event);
    }
    for action in engine.take_actions() {
        perform(io, action);
    }
}

fn perform(io: &Io, action: Action) {
    let node = &io.node;
    match action {
        Action::Propose { id, command } => {
            let (node, inbox) = (node.clone(), io.inbox.clone());
            tokio::spawn(async move {
                let event = match node.propose(command).await {
                    Ok((response, index)) => Event::Committed {
                        id,
                        index,
                        response,
                    },
                    Err(e) => Event::NotCommitted {
                        id,
                        error: ProposeError(e.to_string()),
                    },
                };
                // A leadership that ended has no engine to tell.
                let _ = inbox.send(event);
            });
        }
        Action::Exchange { dc, records } => {
            let Some(link) = io.links.get(&dc).cloned() else {
                return;
            };
            // Only for an exchange: it walks every agent.
            let summary = Summary::of(&node.state.read().state);
            let (node, inbox) = (node.clone(), io.inbox.clone());
            let leadership = io.leadership.clone();
            tokio::spawn(async move {
                let mut link = link.lock().await;
                // An exchange ends with the leadership that sent it.
                let answer = tokio::select! {
                    answer = link.exchange(&node, summary, records) => answer,
                    _ = leadership.ended() => return,
                };
                let answer = answer.map(|r| PeerReply {
                    summary: PeerSummary {
                        capabilities: r.summary.capabilities,
                        pending: r.summary.pending,
                    },
                    verdicts: r.verdicts,
                    hwm: r.hwm,
                });
                let _ = inbox.send(Event::PeerAnswer { dc, answer });
            });
        }
        Action::PeerLink { dc, news } => match news {
            LinkNews::Up => node.peers.up(&dc),
            LinkNews::Down(why) => node.peers.down(&dc, why),
            LinkNews::Summary(s) => node.peers.summary(
                &dc,
                Summary {
                    capabilities: s.capabilities,
                    pending: s.pending,
                },
            ),
        },
        Action::WakeDispatcher => io.leadership.wake.notify_one(),
    }
}
