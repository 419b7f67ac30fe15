//! The leader engine's driver: one task per leadership that runs the [`Engine`] and does its I/O.
//!
//! It steps the engine with each event (under a brief read of the applied
//! state, never held across an await), carries out the actions, and sleeps
//! until the next event or the engine's next timer. Proposals run as spawned
//! tasks whose results come back as events, so the engine never waits.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tidal_core::forwarding::DcName;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::engine::{
    Action, Engine, EngineConfig, Event, ForwardPolicy, Handler, LinkNews, Now, PeerReply,
    PeerSummary, ProposeError,
};
use super::leadership::Leadership;
use super::session_input::{Opened, Outbound, SessionInput};
use crate::clock::now_ms;
use crate::error::ServerError;
use crate::links::{PeerLink, Summary};
use crate::node::Node;

/// Where events for a leadership's engine go.
pub type Inbox = mpsc::UnboundedSender<Event>;

/// The engine's settings from the server's configuration. Every handler the
/// engine has is on: no other task of the leader does a handler's work.
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
        bootstrap: node.bootstrap_token.clone(),
        gpu_weights_milli: c.placement.gpu_weights_milli.clone(),
        warm_weight_milli: c.placement.warm_weight_milli,
    }
}

/// One leadership's engine and the I/O ends it acts through.
struct Driver {
    node: Arc<Node>,
    leadership: Arc<Leadership>,
    engine: Engine,
    inbox: Inbox,
    /// One per peer DC; an exchange holds its link until it is answered.
    links: BTreeMap<DcName, Arc<Mutex<Box<dyn PeerLink>>>>,
    /// The live session of each agent, by generation.
    outbound: HashMap<String, (u64, Outbound)>,
    /// Sessions stepped as opened, until the engine answers.
    opening: HashMap<String, (Outbound, oneshot::Sender<Opened>)>,
}

/// Runs `leadership`'s engine until the leadership ends; `events` is the
/// receiving end of its [`Inbox`].
pub async fn run(
    node: Arc<Node>,
    leadership: Arc<Leadership>,
    mut events: mpsc::UnboundedReceiver<Event>,
) {
    let Some(mut sessions) = leadership
        .session_inputs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    else {
        return;
    };
    let mut d = Driver {
        engine: Engine::new(config(&node)),
        inbox: leadership.inbox(),
        links: node
            .config
            .peers
            .iter()
            .map(|p| {
                (
                    p.dc.clone(),
                    Arc::new(Mutex::new((node.dial_peer)(
                        &node.config,
                        node.tls.as_ref(),
                        p,
                    ))),
                )
            })
            .collect(),
        node,
        leadership,
        outbound: HashMap::new(),
        opening: HashMap::new(),
    };
    let since = tokio::time::Instant::from_std(d.leadership.since);
    let mut event = Some(Event::Established);
    let mut input = None;
    loop {
        let round = std::time::Instant::now();
        if let Some(e) = event.take() {
            d.step(e);
        }
        if let Some(i) = input.take() {
            d.session(i);
        }
        // Whatever else arrived meanwhile, before sleeping again.
        while let Ok(more) = events.try_recv() {
            d.step(more);
        }
        while let Ok(more) = sessions.try_recv() {
            d.session(more);
        }
        let wake = d
            .engine
            .next_wake()
            .map(|ms| since + Duration::from_millis(ms));
        crate::metrics::rounds::observe(round.elapsed());
        tokio::select! {
            received = events.recv() => match received {
                Some(e) => event = Some(e),
                None => return,
            },
            received = sessions.recv() => match received {
                Some(i) => input = Some(i),
                None => return,
            },
            _ = sleep_until(wake) => {
                // What the timers read besides the state, as of now.
                d.step(Event::MemberFormats(d.node.member_formats()));
                if !d.node.config.peers.is_empty() {
                    d.step(Event::PeerSummaries(peer_summaries(&d.node)));
                }
                event = Some(Event::Tick);
            }
            _ = d.leadership.ended() => return,
        }
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

impl Driver {
    fn now(&self) -> Now {
        Now {
            mono_ms: tokio::time::Instant::from_std(self.leadership.since)
                .elapsed()
                .as_millis() as u64,
            wall_ms: now_ms(),
        }
    }

    fn step(&mut self, event: Event) {
        self.step_with(|_| event);
    }

    /// Steps the event made from the applied index of the state the step
    /// reads (under one read of it).
    fn step_with(&mut self, event: impl FnOnce(u64) -> Event) {
        let now = self.now();
        {
            let applied = self.node.state.read();
            let index = applied.last_applied.map(|l| l.index).unwrap_or(0);
            self.engine.step(now, &applied.state, event(index));
        }
        for action in self.engine.take_actions() {
            self.perform(action);
        }
    }

    fn session(&mut self, input: SessionInput) {
        match input {
            SessionInput::Open {
                agent,
                peer,
                reported,
                fenced,
                warm_models,
                outbound,
                reply,
            } => {
                self.opening.insert(agent.clone(), (outbound, reply));
                self.step_with(|attached_at| Event::SessionOpened {
                    agent,
                    peer,
                    reported,
                    fenced,
                    attached_at,
                    warm_models,
                });
            }
            SessionInput::Heartbeat {
                agent,
                generation,
                seq,
                warm_models,
            } => {
                // Guarantee 6: looked at as the renewal is decided.
                let lease_holds = self.node.lease_holds(&self.leadership);
                self.step(Event::Heartbeat {
                    agent,
                    generation,
                    seq,
                    lease_holds,
                    warm_models,
                });
            }
            SessionInput::Closed { agent, generation } => {
                self.step(Event::SessionClosed { agent, generation })
            }
            SessionInput::StopReported {
                agent,
                generation,
                task_id,
                token,
            } => self.step(Event::StopReported {
                agent,
                generation,
                task_id,
                token,
            }),
            SessionInput::HoldsAll {
                agent,
                generation,
                items,
                reply,
            } => {
                let held = {
                    let applied = self.node.state.read();
                    let table = self.engine.sessions();
                    items
                        .iter()
                        .map(|(task, token)| {
                            table.may_report(&applied.state, &agent, generation, *task, *token)
                        })
                        .collect()
                };
                let _ = reply.send(held);
            }
            SessionInput::WasDisplaced {
                agent,
                instance,
                reply,
            } => {
                let _ = reply.send(self.engine.sessions().was_displaced(&agent, &instance));
            }
        }
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Propose { id, command } => {
                let (node, inbox) = (self.node.clone(), self.inbox.clone());
                tokio::spawn(async move {
                    let event = match node.propose(command).await {
                        Ok((response, index)) => Event::Committed {
                            id,
                            index,
                            response,
                        },
                        Err(e) => Event::NotCommitted {
                            id,
                            error: ProposeError {
                                text: e.to_string(),
                                failed_precondition: matches!(
                                    e,
                                    ServerError::FailedPrecondition(_)
                                ),
                            },
                        },
                    };
                    // A leadership that ended has no engine to tell.
                    let _ = inbox.send(event);
                });
            }
            Action::Attached {
                agent,
                generation,
                displaced,
            } => {
                let Some((outbound, reply)) = self.opening.remove(&agent) else {
                    return;
                };
                self.outbound.insert(agent.clone(), (generation, outbound));
                let opened = Opened {
                    generation,
                    displaced,
                };
                if reply.send(opened).is_err() {
                    // The session went away before it heard: it will not
                    // say it ended.
                    self.step(Event::SessionClosed { agent, generation });
                }
            }
            Action::Close {
                agent,
                generation,
                why,
            } => {
                if self
                    .outbound
                    .get(&agent)
                    .is_some_and(|(g, _)| *g == generation)
                {
                    if let Some((_, out)) = self.outbound.remove(&agent) {
                        out.close.send_replace(Some(why));
                    }
                }
            }
            Action::Detach { agent, generation } => {
                if self
                    .outbound
                    .get(&agent)
                    .is_some_and(|(g, _)| *g == generation)
                {
                    self.outbound.remove(&agent);
                }
            }
            Action::Send {
                agent,
                generation,
                msg,
            } => {
                if let Some((g, out)) = self.outbound.get(&agent) {
                    if *g == generation {
                        let _ = out.tx.send(msg);
                    }
                }
            }
            Action::Publish(view) => {
                self.leadership.view.send_replace(view);
            }
            Action::Exchange { dc, records } => {
                let Some(link) = self.links.get(&dc).cloned() else {
                    return;
                };
                // Only for an exchange: it walks every agent.
                let summary = Summary::of(&self.node.state.read().state);
                let inbox = self.inbox.clone();
                let leadership = self.leadership.clone();
                tokio::spawn(async move {
                    let mut link = link.lock().await;
                    // An exchange ends with the leadership that sent it.
                    let answer = tokio::select! {
                        answer = link.exchange(summary, records) => answer,
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
                LinkNews::Up => self.node.peers.up(&dc),
                LinkNews::Down(why) => self.node.peers.down(&dc, why),
                LinkNews::Summary(s) => self.node.peers.summary(
                    &dc,
                    Summary {
                        capabilities: s.capabilities,
                        pending: s.pending,
                    },
                ),
            },
        }
    }
}
