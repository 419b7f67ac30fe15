//! The leader engine: what a leadership decides between entries, as a pure step function.
//!
//! In the shape of openraft's `Engine` and raft-rs's `RawNode`: the driver
//! ([`crate::leader::driver`]) feeds it [`Event`]s with the time passed in
//! ([`Now`]) and the applied state to read, and carries out the [`Action`]s it
//! leaves behind ([`Engine::take_actions`]). It then sleeps until
//! [`Engine::next_wake`] or the next event, whichever comes first.
//!
//! ```text
//!            events (Established, Tick, Work, Committed, NotCommitted, ...)
//!   driver ───────────────────────────────────────────────────▶ Engine::step
//!     ▲                                                            │
//!     └──────────── take_actions (Propose, ...), next_wake ◀──────┘
//! ```
//!
//! Nothing here is async, reads a clock, draws a random number or does I/O:
//! a handler that needs randomness takes it from [`EngineConfig::seed`].
//! Each handler lives in its own file beside this one, with a scenario file
//! under `testdata/engine/` (run by `scenario_test.rs`).
//!
//! A proposal is answered by `Committed` or `NotCommitted` with the id the
//! engine gave it; the engine remembers which handler proposed what
//! ([`Purpose`]) and routes the answer there.

pub mod sessions;

mod action;
mod config;
mod ctx;
mod event;

mod bootstrap;
mod dispatch;
mod drain;
mod expiry;
mod forward;
mod gpu_weights;
mod leases;
mod lifecycle;
mod preempt;
mod regrant;
mod ship;
mod stop;
mod upgrade;

use std::collections::BTreeMap;

use tidal_core::forwarding::DcName;
use tidal_core::State;

pub use action::{Action, LinkNews, ToAgent, View};
pub use config::{EngineConfig, ForwardPolicy, Handler};
pub(crate) use ctx::{Ctx, Output, Purpose};
pub use event::{Event, MemberFormat, Now, PeerReply, PeerSummary, ProposalId, ProposeError, Work};
pub use sessions::{Closed, Peer};

pub use drain::LOOK_EVERY_MS as DRAIN_LOOK_EVERY_MS;
pub use expiry::{EXPIRE_BATCH, EXPIRE_EVERY_MS};
pub use gpu_weights::weights_to_set;
pub use ship::SHIP_BATCH;
pub use upgrade::version_to_raise;

/// The leader engine of one leadership.
pub struct Engine {
    cfg: EngineConfig,
    established: bool,
    out: Output,
    expiry: expiry::Expiry,
    upgrade: upgrade::Upgrade,
    forward: forward::Forward,
    shippers: BTreeMap<DcName, ship::Shipper>,
    leases: leases::Leases,
    regrants: regrant::Regrants,
    drain: drain::Drain,
    dispatch: dispatch::Dispatch,
    bootstrap: bootstrap::Bootstrap,
    lifecycle: lifecycle::Lifecycle,
    preempt: preempt::Preempt,
    gpu_weights: gpu_weights::GpuWeights,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine {
            established: false,
            out: Output::default(),
            expiry: expiry::Expiry::default(),
            upgrade: upgrade::Upgrade::default(),
            forward: forward::Forward::default(),
            shippers: BTreeMap::new(),
            leases: leases::Leases::new(cfg.agent_ttl_ms),
            regrants: regrant::Regrants::default(),
            drain: drain::Drain::default(),
            dispatch: dispatch::Dispatch::default(),
            bootstrap: bootstrap::Bootstrap::default(),
            lifecycle: lifecycle::Lifecycle::default(),
            preempt: preempt::Preempt::default(),
            gpu_weights: gpu_weights::GpuWeights::default(),
            cfg,
        }
    }

    /// The agent sessions and leases, for the driver's questions between events.
    pub fn sessions(&self) -> &sessions::SessionTable {
        &self.leases.table
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Takes in one event at `now`, reading `state` (the applied state); then
    /// fires every timer that is due. The actions wait in
    /// [`Engine::take_actions`].
    pub fn step(&mut self, now: Now, state: &State, event: Event) {
        let mut cx = Ctx {
            now,
            state,
            cfg: &self.cfg,
            out: &mut self.out,
        };
        match event {
            Event::Established => {
                self.established = true;
                let on = |h| cx.cfg.handlers.contains(&h);
                if on(Handler::Expiry) {
                    self.expiry.start(now);
                }
                if on(Handler::Upgrade) {
                    self.upgrade.start(now);
                }
                if on(Handler::Forward) && !cx.cfg.peers.is_empty() {
                    self.forward.start(now);
                }
                if on(Handler::Ship) {
                    for dc in &cx.cfg.peers {
                        let mut shipper = ship::Shipper::new(dc.clone());
                        shipper.start(now);
                        self.shippers.insert(dc.clone(), shipper);
                    }
                }
                if on(Handler::Leases) {
                    self.leases.start(&mut cx);
                }
                if on(Handler::Drain) {
                    self.drain.start(now);
                }
                if on(Handler::Dispatch) {
                    self.dispatch.start(now);
                }
                if on(Handler::Bootstrap) {
                    self.bootstrap.start(&cx);
                }
                if on(Handler::Lifecycle) {
                    self.lifecycle.start(now);
                }
                if on(Handler::Preempt) {
                    self.preempt.start(now);
                }
                if on(Handler::GpuWeights) {
                    self.gpu_weights.look(now);
                }
            }
            Event::Tick => {}
            Event::Work(work) => {
                if work == Work::Submitted {
                    self.forward.work(now);
                }
                if work == Work::DrainChanged {
                    self.drain.changed(now);
                }
                // Any of them may bring tasks to place or free capacity.
                self.dispatch.work(now);
                self.preempt.look(now);
            }
            Event::Committed {
                id,
                index,
                response,
            } => match cx.out.answered(id) {
                Some(Purpose::Expire { full }) => {
                    self.expiry.committed(full, index, response, &mut cx)
                }
                Some(Purpose::RaiseVersion { from, to }) => {
                    self.upgrade.committed((from, to), index, response, cx.cfg);
                    self.bootstrap.raised(&cx);
                    if self.established && cx.cfg.handlers.contains(&Handler::GpuWeights) {
                        self.gpu_weights.look(now);
                    }
                }
                Some(Purpose::Forward) => self.forward.committed(index, response, now),
                Some(Purpose::ForwardAck(dc)) => {
                    if let Some(shipper) = self.shippers.get_mut(&dc) {
                        // Tasks a peer refused are pending here again.
                        if shipper.committed(index, response, &mut cx) {
                            cx.out.wake_dispatch();
                        }
                    }
                }
                Some(Purpose::AgentDown { agent }) => {
                    self.leases.committed(&mut cx, agent, index, response)
                }
                Some(Purpose::Assign) => {
                    let granted = self.dispatch.committed(&mut cx, index, response);
                    self.leases.granted(&mut cx, granted);
                }
                Some(Purpose::RegrantStarted { agent, tasks }) => {
                    self.regrants.started(&mut cx, agent, tasks, response)
                }
                Some(Purpose::Regrant { agent, held }) => {
                    if let Some(granted) = self.regrants.committed(agent, held, index, response) {
                        self.leases.granted(&mut cx, granted);
                        cx.out.wake_dispatch();
                    }
                }
                Some(Purpose::Stopped(report)) => stop::committed(&mut cx, report, index, response),
                Some(Purpose::Bootstrap) => self.bootstrap.committed(index, response, &cx),
                Some(p @ (Purpose::Wake | Purpose::DeadlineMissed)) => {
                    self.lifecycle.committed(&p, index, response, &mut cx)
                }
                Some(Purpose::Preempt) => {
                    let granted =
                        self.preempt
                            .preempted(&mut cx, &mut self.leases.table, index, response);
                    self.leases.granted(&mut cx, granted);
                }
                Some(Purpose::Resume) => self.preempt.resumed(&mut cx, index, response),
                Some(Purpose::SetGpuWeights) => self.gpu_weights.committed(index, response),
                None => {}
            },
            Event::NotCommitted { id, error } => match cx.out.answered(id) {
                Some(Purpose::Expire { .. }) => self.expiry.not_committed(&error),
                Some(Purpose::RaiseVersion { to, .. }) => {
                    self.upgrade.not_committed(to, &error, cx.cfg)
                }
                Some(Purpose::Forward) => self.forward.not_committed(&error, now),
                Some(Purpose::ForwardAck(dc)) => {
                    if let Some(shipper) = self.shippers.get_mut(&dc) {
                        shipper.not_committed(&error, &mut cx);
                    }
                }
                Some(Purpose::AgentDown { agent }) => {
                    self.leases.not_committed(&mut cx, agent, &error)
                }
                Some(Purpose::Assign) => self.dispatch.not_committed(&mut cx, &error),
                Some(Purpose::RegrantStarted { agent, .. }) => {
                    self.regrants.not_started(agent, &error)
                }
                Some(Purpose::Regrant { agent, .. }) => self.regrants.not_committed(agent, &error),
                Some(Purpose::Stopped(report)) => stop::not_committed(&mut cx, report, &error),
                Some(Purpose::Bootstrap) => self.bootstrap.not_committed(&error, &cx),
                Some(p @ (Purpose::Wake | Purpose::DeadlineMissed)) => {
                    self.lifecycle.not_committed(&p, &error)
                }
                Some(p @ (Purpose::Preempt | Purpose::Resume)) => {
                    self.preempt.not_committed(&mut cx, &p, &error)
                }
                Some(Purpose::SetGpuWeights) => self.gpu_weights.not_committed(&cx, &error),
                None => {}
            },
            Event::MemberFormats(formats) => self.upgrade.told(&formats, &mut cx),
            Event::PeerSummaries(peers) => self.forward.told(&peers, &mut cx),
            Event::PeerAnswer { dc, answer } => {
                if let Some(shipper) = self.shippers.get_mut(&dc) {
                    shipper.answered(answer, &mut cx);
                }
            }
            // Sessions open only once the leadership acts.
            _ if !self.established || !cx.cfg.handlers.contains(&Handler::Leases) => {}
            Event::SessionOpened {
                agent,
                peer,
                reported,
                fenced,
                attached_at,
                warm_models,
            } => {
                let held = self.leases.opened(
                    &mut cx,
                    agent.clone(),
                    peer,
                    reported,
                    fenced,
                    attached_at,
                    warm_models,
                );
                self.regrants.add(&mut cx, agent, held);
                // The connected agents changed.
                self.dispatch.work(now);
                // A new session is told the preemption orders it holds.
                self.preempt.look(now);
            }
            Event::SessionClosed { agent, generation } => {
                self.leases.closed(&mut cx, agent, generation);
                self.dispatch.work(now);
            }
            Event::Heartbeat {
                agent,
                generation,
                seq,
                lease_holds,
                warm_models,
            } => self
                .leases
                .heartbeat(&mut cx, agent, generation, seq, lease_holds, warm_models),
            Event::Forgotten { agent } => {
                self.leases.forget(&mut cx, &agent);
                self.dispatch.work(now);
            }
            Event::Granted(granted) => self.leases.granted(&mut cx, granted),
            Event::Cancelled {
                agent,
                task,
                token,
                reason,
            } => self.leases.cancelled(&mut cx, agent, task, token, reason),
            Event::StopReported {
                agent,
                generation,
                task_id,
                token,
            } => stop::reported(
                &mut cx,
                &self.leases.table,
                agent,
                generation,
                task_id,
                token,
            ),
            Event::TokenRevoked => self.leases.tokens_changed(&mut cx),
        }
        if self.established {
            // Each enabled handler whose timer is due at `now` (a handler
            // that was not started has none).
            self.expiry.fire(&mut cx);
            for shipper in self.shippers.values_mut() {
                shipper.fire(&mut cx);
            }
            self.leases.fire(&mut cx);
            self.regrants.fire(&mut cx);
            self.lifecycle.fire(&mut cx);
            self.drain.fire(&mut cx, &self.leases.table);
            if cx.out.take_wake_dispatch() {
                self.dispatch.work(now);
            }
            self.dispatch.fire(&mut cx, &mut self.leases.table);
            self.preempt.fire(&mut cx, &mut self.leases.table);
            self.bootstrap.fire(&mut cx);
            self.gpu_weights.fire(&mut cx);
        }
    }

    /// The actions since the last call, in the order they were decided.
    pub fn take_actions(&mut self) -> Vec<Action> {
        self.out.take_actions()
    }

    /// The earliest `mono_ms` at which a timer is due, if any: the driver
    /// steps a [`Event::Tick`] then (or earlier, with another event).
    pub fn next_wake(&self) -> Option<u64> {
        let wakes = [
            self.expiry.next_wake(),
            self.upgrade.next_wake(),
            self.forward.next_wake(),
            self.leases.next_wake(),
            self.regrants.next_wake(),
            self.drain.next_wake(),
            self.dispatch.next_wake(),
            self.bootstrap.next_wake(),
            self.lifecycle.next_wake(),
            self.preempt.next_wake(),
            self.gpu_weights.next_wake(),
        ];
        let ships = self.shippers.values().map(ship::Shipper::next_wake);
        wakes.into_iter().chain(ships).flatten().min()
    }

    /// Proposals sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.out.in_flight()
    }
}

#[cfg(test)]
mod scenario_test;
