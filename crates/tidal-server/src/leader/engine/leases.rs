//! Agent sessions and leases: attach with reconcile, renew on a heartbeat only under a quorum, mark down when a lease ends.
//!
//! A new leadership gives every agent in the state a full TTL of grace
//! (RELIABILITY.md, I7: a failover causes no mass requeue). A heartbeat
//! renews the lease only when the driver found that a majority heard this
//! leader within its lease (invariant 6: a deposed leader keeps no lease
//! alive); otherwise it goes unanswered and the agent's own, shorter
//! deadline keeps running. When a lease ends the reaper proposes
//! `AgentDown` (one at a time, in agent order), never before the deadline;
//! the commit closes the agent's session as expired.
//!
//! A session that opened with a token lasts while the token is active: the
//! first heartbeat after the token was revoked or expired (or the revoke's
//! commit, when the leader hears of it) closes it as
//! [`Closed::Revoked`], without renewing its lease, which then runs out like
//! any lost agent's: its tasks are granted again under higher tokens.

use std::collections::{BTreeMap, BTreeSet};

use tidal_core::access::TokenId;
use tidal_core::command::{Command, Granted, Response};
use tidal_core::model::{AgentId, AgentState, FencingToken, TaskId};
use tidal_core::reconcile::{ran_here, settle};

use super::action::{Action, ToAgent};
use super::ctx::{Ctx, Purpose};
use super::event::ProposeError;
use super::regrant::Held;
use super::sessions::{Closed, Peer, SessionTable};

/// The reason a reconcile's cancel gives the agent.
const STALE_TOKEN: &str = "the task is no longer assigned to this agent under this token";

/// The session table, and the reaper's proposal in flight.
#[derive(Debug)]
pub(crate) struct Leases {
    pub(crate) table: SessionTable,
    started: bool,
    /// The agent whose `AgentDown` is proposed and not answered yet.
    downing: Option<AgentId>,
    /// Agents whose `AgentDown` did not commit: not proposed again before then.
    retry_at: BTreeMap<AgentId, u64>,
}

impl Leases {
    pub(crate) fn new(ttl_ms: u64) -> Leases {
        Leases {
            table: SessionTable::new(ttl_ms),
            started: false,
            downing: None,
            retry_at: BTreeMap::new(),
        }
    }

    /// The leadership acts: every agent in the state gets a full TTL, held
    /// by no known instance.
    pub(crate) fn start(&mut self, cx: &mut Ctx) {
        self.started = true;
        for agent in cx.state.agents() {
            self.table.grace(&agent.spec.id, cx.now.mono_ms);
        }
    }

    fn publish(&mut self, cx: &mut Ctx) {
        let connected = self.table.connected();
        let warm = self.table.warm();
        cx.out.publish(|view| {
            view.connected = connected;
            view.warm = warm;
        });
    }

    /// A session opened (its agent registered at `attached_at`, the applied
    /// index of the state read now): attach it, closing an older one, and
    /// settle what the agent id holds against what the process reported
    /// running and fenced, and keep the models it has warm. Returns what is
    /// left to regrant (`regrant.rs`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn opened(
        &mut self,
        cx: &mut Ctx,
        agent: AgentId,
        peer: Peer,
        reported: Vec<(String, FencingToken)>,
        fenced: Vec<(String, FencingToken)>,
        attached_at: u64,
        warm_models: Vec<String>,
    ) -> Held {
        let held: BTreeSet<(TaskId, FencingToken)> = reported
            .iter()
            .filter_map(|(id, token)| Some((id.parse::<TaskId>().ok()?, *token)))
            .collect();
        let a = self
            .table
            .attach(&agent, peer, attached_at, held, cx.now.mono_ms);
        self.table
            .set_warm(&agent, a.generation, warm_models.into_iter().collect());
        if let Some((generation, why)) = a.closed {
            cx.out.push(Action::Close {
                agent: agent.clone(),
                generation,
                why,
            });
        }
        let settlement = settle(cx.state, &agent, &reported);
        // Published before the answer: eager placement may use the agent
        // once it is registered.
        self.publish(cx);
        cx.out.push(Action::Attached {
            agent: agent.clone(),
            generation: a.generation,
            displaced: a.displaced,
        });
        for (task_id, token) in settlement.cancel {
            cx.out.push(Action::Send {
                agent: agent.clone(),
                generation: a.generation,
                msg: ToAgent::Cancel {
                    task_id,
                    token,
                    reason: STALE_TOKEN.into(),
                },
            });
        }
        Held {
            ran: ran_here(&settlement.regrant, &fenced),
            tasks: settlement.regrant,
            at: a.regrant_at,
            taken_over: a.taken_over,
        }
    }

    /// The session of `generation` ended on its own.
    pub(crate) fn closed(&mut self, cx: &mut Ctx, agent: AgentId, generation: u64) {
        if self.table.detach(&agent, generation) {
            cx.out.push(Action::Detach { agent, generation });
            self.publish(cx);
        }
    }

    /// A heartbeat on session `generation`; `lease_holds`: a majority heard
    /// this leader within its lease when the driver looked; `warm_models`:
    /// the models the agent has loaded now (published when they changed).
    pub(crate) fn heartbeat(
        &mut self,
        cx: &mut Ctx,
        agent: AgentId,
        generation: u64,
        seq: u64,
        lease_holds: bool,
        warm_models: Vec<String>,
    ) {
        if let Some(token) = self.table.token(&agent, generation) {
            if !cx.state.access().token_active(token, cx.now.wall_ms) {
                let token = token.clone();
                self.revoked(cx, agent, generation, token);
                return;
            }
        }
        // What the agent has loaded is news whatever the lease: it steers
        // placement only (apply never reads it).
        if self
            .table
            .set_warm(&agent, generation, warm_models.into_iter().collect())
        {
            self.publish(cx);
        }
        // Invariant 6: a renewal counts only while a majority's recent
        // contact proves no other leader exists; otherwise the heartbeat
        // goes unanswered and the agent's own deadline keeps running.
        if !lease_holds {
            tracing::debug!(agent_id = %agent, seq, "heartbeat not acknowledged: no majority heard this leader within its lease");
            return;
        }
        if self.table.renew(&agent, generation, cx.now.mono_ms) {
            cx.out.push(Action::Send {
                agent,
                generation,
                msg: ToAgent::HeartbeatAck { seq },
            });
        }
    }

    /// A token was revoked: every session that opened with a token no longer
    /// active closes now rather than at its next heartbeat.
    pub(crate) fn tokens_changed(&mut self, cx: &mut Ctx) {
        let now = cx.now.wall_ms;
        let access = cx.state.access();
        let inactive: Vec<(AgentId, u64, TokenId)> = self
            .table
            .with_tokens()
            .filter(|(_, _, token)| !access.token_active(token, now))
            .map(|(agent, generation, token)| (agent.clone(), generation, token.clone()))
            .collect();
        for (agent, generation, token) in inactive {
            self.revoked(cx, agent, generation, token);
        }
    }

    /// The session's token is no longer active: close the session and
    /// renew nothing; the lease runs out as it would for a lost agent.
    fn revoked(&mut self, cx: &mut Ctx, agent: AgentId, generation: u64, token: TokenId) {
        if !self.table.detach(&agent, generation) {
            return;
        }
        tracing::info!(
            agent_id = %agent,
            token_id = %token,
            "agent session closed: its token was revoked or expired; \
             its tasks are granted again once its lease runs out"
        );
        cx.out.push(Action::Close {
            agent,
            generation,
            why: Closed::Revoked { token },
        });
        self.publish(cx);
        // No more work for it: dispatch without it.
        cx.out.wake_dispatch();
    }

    /// Forgets an agent (deregistered, or marked down): its session ends as expired.
    pub(crate) fn forget(&mut self, cx: &mut Ctx, agent: &str) {
        self.retry_at.remove(agent);
        if let Some(generation) = self.table.forget(agent) {
            cx.out.push(Action::Close {
                agent: agent.to_string(),
                generation,
                why: Closed::Expired,
            });
        }
        self.publish(cx);
    }

    /// Committed assignments: each goes to its agent's session, unless that
    /// session's reconcile settled it (see [`SessionTable::assignment_target`]).
    /// An agent without a session never receives this token: when it
    /// registers, the reconcile finds the task held and not running and
    /// regrants it under a new token.
    pub(crate) fn granted(&mut self, cx: &mut Ctx, granted: Vec<Granted>) {
        for g in granted {
            if cx.state.task(g.task).is_none() {
                continue;
            }
            if let Some(generation) = self.table.assignment_target(&g.agent, g.token) {
                cx.out.push(Action::Send {
                    agent: g.agent,
                    generation,
                    msg: ToAgent::Assign {
                        task: g.task,
                        token: g.token,
                    },
                });
            }
        }
    }

    /// A committed cancel of a task the agent held: tell its session.
    pub(crate) fn cancelled(
        &mut self,
        cx: &mut Ctx,
        agent: AgentId,
        task: TaskId,
        token: FencingToken,
        reason: String,
    ) {
        if let Some(generation) = self.table.generation(&agent) {
            cx.out.push(Action::Send {
                agent,
                generation,
                msg: ToAgent::Cancel {
                    task_id: task.to_string(),
                    token,
                    reason,
                },
            });
        }
    }

    /// When the reaper next has something to do: the earliest lease end
    /// (not before a failed proposal's retry), none while a proposal is in
    /// flight (its answer comes first).
    pub(crate) fn next_wake(&self) -> Option<u64> {
        if !self.started || self.downing.is_some() {
            return None;
        }
        let mut wake: Option<u64> = None;
        for (deadline, agent) in self.table.deadlines() {
            if wake.is_some_and(|w| w <= deadline) {
                break;
            }
            let at = match self.retry_at.get(agent) {
                Some(r) => deadline.max(*r),
                None => deadline,
            };
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
        wake
    }

    /// Proposes `AgentDown` for the first agent, in id order, whose lease
    /// ended; forgets one the state already has down (or does not know).
    pub(crate) fn fire(&mut self, cx: &mut Ctx) {
        if !self.started || self.downing.is_some() {
            return;
        }
        let now = cx.now.mono_ms;
        for agent in self.table.expired(now) {
            if self.retry_at.get(&agent).is_some_and(|r| *r > now) {
                continue;
            }
            let live = cx
                .state
                .agent(&agent)
                .is_some_and(|a| a.state != AgentState::Down);
            if !live {
                self.forget(cx, &agent);
                continue;
            }
            cx.out.propose(
                Purpose::AgentDown {
                    agent: agent.clone(),
                },
                Command::AgentDown {
                    agent: agent.clone(),
                },
            );
            self.downing = Some(agent);
            return;
        }
    }

    pub(crate) fn committed(
        &mut self,
        cx: &mut Ctx,
        agent: AgentId,
        index: u64,
        response: Response,
    ) {
        self.downing = None;
        match response {
            Response::AgentDown { requeued, failed } => {
                tracing::info!(
                    agent_id = %agent,
                    log_index = index,
                    requeued = requeued.len(),
                    failed = failed.len(),
                    "agent lease expired: marked down"
                );
                self.forget(cx, &agent);
                cx.out.wake_dispatch();
            }
            other => {
                tracing::warn!(agent_id = %agent, response = ?other, "agent down not applied");
                self.forget(cx, &agent);
            }
        }
    }

    /// The `AgentDown` did not commit: looked at again after half a
    /// heartbeat interval.
    pub(crate) fn not_committed(&mut self, cx: &mut Ctx, agent: AgentId, error: &ProposeError) {
        self.downing = None;
        tracing::warn!(agent_id = %agent, error = %error, "could not commit agent down");
        self.retry_at
            .insert(agent, cx.now.mono_ms + cx.cfg.heartbeat_interval_ms / 2);
    }
}
