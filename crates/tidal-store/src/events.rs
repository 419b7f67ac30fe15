//! What the store tells as it applies entries and makes log appends
//! durable, for the server's metrics: [`StoreEvents`], set once on a store
//! through [`EventsSlot`] (reached from [`crate::StateHandle::set_events`]).
//!
//! Apply's events come from the committed entries only: a task's wait is
//! the entry's time (the leader's clock when it proposed the entry) minus
//! the task's `created_ms`, both from the log, never from this node's
//! clock, so every node and every replay of the log gives the same values.
//! Which tasks an entry may have assigned or finished is read from its
//! command (and, for an agent's commands, the tasks the agent held before
//! the entry); each of those is then compared before and after the entry.
//!
//! Every node tells what it applies (each node applies every entry), and
//! nothing is told for a snapshot installed from the leader. Events set
//! after the store opened miss what was applied before they were set (a
//! server sets them once its Raft has started: openraft's `Raft::new`
//! re-applies the entries up to the committed id the log store saved before
//! a restart before it returns). The store holds no counter of its own;
//! without events set, apply does no extra work.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tidal_core::forwarding::Record;
use tidal_core::model::{AgentState, TaskState, TaskStateKind};
use tidal_core::{Command, State, TaskId};

/// Receives the store's events. Called on the thread that applies entries
/// (after the entry's write lock is released) or on the log's flusher
/// thread: keep it short and never block.
pub trait StoreEvents: Send + Sync {
    /// An applied entry assigned a task of `queue` to an agent (a new
    /// fencing token: each attempt's assignment, and a regrant after its
    /// agent's session restarted), `waited_ms` after the task's submission.
    fn task_assigned(&self, queue: &str, waited_ms: u64);
    /// An applied entry ended a task of `queue` with `outcome`
    /// (succeeded, failed or cancelled; for a task forwarded to another
    /// DC, how it ended there), `took_ms` after its submission.
    fn task_finished(&self, queue: &str, outcome: TaskStateKind, took_ms: u64);
    /// An applied entry marked an agent down because its lease lapsed.
    fn agent_expired(&self);
    /// A log append became durable (its fdatasync done) `took` after the
    /// Raft core handed it to the store.
    fn append_durable(&self, took: Duration);
    /// openraft saved `index` as the log's committed index on this node (a
    /// leader once a quorum has it; a follower as the leader tells it).
    /// Called on the Raft core's task; by default nothing.
    fn committed(&self, _index: u64) {}
    /// One fdatasync of the log files succeeded after `took`, making
    /// `appends` appends durable at once. Called on the flusher thread; by
    /// default nothing.
    fn log_synced(&self, _took: Duration, _appends: usize) {}
}

/// Where a store's [`StoreEvents`] go once set; cheap to clone, shared by
/// the log store and the state machine.
#[derive(Clone, Default)]
pub struct EventsSlot(Arc<OnceLock<Arc<dyn StoreEvents>>>);

impl EventsSlot {
    /// Sets the events; false (and nothing changes) if they were set.
    pub fn set(&self, events: Arc<dyn StoreEvents>) -> bool {
        self.0.set(events).is_ok()
    }

    /// The events, once set.
    pub fn get(&self) -> Option<&Arc<dyn StoreEvents>> {
        self.0.get()
    }
}

impl std::fmt::Debug for EventsSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("EventsSlot")
            .field(&self.0.get().map(|_| "set"))
            .finish()
    }
}

/// One thing an applied entry did, to tell once apply's lock is released.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    Assigned {
        queue: String,
        waited_ms: u64,
    },
    Finished {
        queue: String,
        outcome: TaskStateKind,
        took_ms: u64,
    },
    AgentExpired,
}

impl Seen {
    pub(crate) fn tell(self, events: &dyn StoreEvents) {
        match self {
            Seen::Assigned { queue, waited_ms } => events.task_assigned(&queue, waited_ms),
            Seen::Finished {
                queue,
                outcome,
                took_ms,
            } => events.task_finished(&queue, outcome, took_ms),
            Seen::AgentExpired => events.agent_expired(),
        }
    }
}

/// What an entry may change, read from the state before it is applied.
pub(crate) struct Watch {
    log_index: u64,
    time_ms: u64,
    /// The first id a task created by the entry gets.
    next_id: TaskId,
    /// Tasks the entry may assign or end, and whether each had ended.
    tasks: BTreeMap<TaskId, bool>,
    /// For `AgentDown`: the agent, if it was not down yet.
    going_down: Option<String>,
}

impl Watch {
    /// Reads, before `command` is applied to `state` as entry `log_index`
    /// of time `time_ms`, the tasks it may assign or end.
    pub(crate) fn before(state: &State, command: &Command, log_index: u64, time_ms: u64) -> Watch {
        let mut ids: Vec<TaskId> = Vec::new();
        let mut going_down = None;
        let held = |agent: &str| -> Vec<TaskId> {
            state
                .agent(agent)
                .map(|a| a.tasks.keys().copied().collect())
                .unwrap_or_default()
        };
        match command {
            Command::Cancel { task } => ids.push(*task),
            Command::AgentDown { agent } => {
                ids.extend(held(agent));
                if state
                    .agent(agent)
                    .is_some_and(|a| a.state != AgentState::Down)
                {
                    going_down = Some(agent.clone());
                }
            }
            Command::DeregisterAgent { agent } | Command::DrainAgent { agent, .. } => {
                ids.extend(held(agent))
            }
            Command::Regrant { agent, tasks } => {
                ids.extend(held(agent));
                ids.extend(tasks.iter().map(|(t, _)| *t));
            }
            Command::Assign(pairs) => ids.extend(pairs.iter().map(|(t, _)| *t)),
            Command::Complete(list) => ids.extend(list.iter().map(|c| c.task)),
            Command::Finished(list) => ids.extend(list.iter().map(|f| f.task)),
            Command::Stopped(list) | Command::StartedBatch(list) => {
                ids.extend(list.iter().map(|(t, _)| *t))
            }
            Command::Checkpoint(list) => ids.extend(list.iter().map(|(t, _, _)| *t)),
            Command::Started { task, .. } => ids.push(*task),
            Command::Wake(list)
            | Command::DeadlineMissed(list)
            | Command::Replay(list)
            | Command::Resume(list) => ids.extend(list.iter().copied()),
            Command::Preempt { task, victims, .. } => {
                ids.push(*task);
                ids.extend(victims.iter().map(|(t, _)| *t));
            }
            Command::Forward(pairs) => ids.extend(pairs.iter().map(|(t, _)| *t)),
            Command::Ingest { origin, records } => {
                let inbound = state.inbound(origin);
                for (_, record) in records {
                    match record {
                        Record::Task { .. } => {} // a new task: after `next_id`
                        Record::Cancel { origin_task } => {
                            ids.extend(inbound.and_then(|i| i.tasks.get(origin_task)).copied())
                        }
                        Record::Status(status) => ids.push(status.origin_task),
                    }
                }
            }
            Command::ForwardAck { peer, verdicts } => {
                if let Some(outbox) = state.outbox(peer) {
                    for (seq, _) in verdicts {
                        if let Some((_, Record::Task { origin_task, .. })) = outbox.records.get(seq)
                        {
                            ids.push(*origin_task);
                        }
                    }
                }
            }
            // Submits create tasks (after `next_id`), some assigned at once.
            Command::Submit(_)
            | Command::SubmitPlaced { .. }
            | Command::SubmitAs { .. }
            | Command::SubmitWith { .. }
            | Command::SubmitWithPlacement { .. } => {}
            // None of these assigns or ends a task.
            Command::RegisterAgent(_)
            | Command::RegisterAgentAs { .. }
            | Command::UndrainAgent { .. }
            | Command::SetQueue { .. }
            | Command::SetQueueWith { .. }
            | Command::Noop
            | Command::Expire { .. }
            | Command::SetClusterVersion { .. }
            | Command::CreateToken { .. }
            | Command::RevokeToken { .. }
            | Command::SetTenant { .. }
            | Command::RemoveTenant { .. }
            | Command::SetHeadroom { .. }
            | Command::SetGpuWeights(_) => {}
        }
        let tasks = ids
            .into_iter()
            .map(|id| (id, state.task(id).is_some_and(|t| t.state.is_terminal())))
            .collect();
        Watch {
            log_index,
            time_ms,
            next_id: state.next_task_id(),
            tasks,
            going_down,
        }
    }

    /// What the entry did, read from `state` after it was applied.
    pub(crate) fn after(self, state: &State) -> Vec<Seen> {
        let mut seen = Vec::new();
        let created = (self.next_id.0..state.next_task_id().0).map(|id| (TaskId(id), false));
        for (id, had_ended) in self.tasks.into_iter().chain(created) {
            let Some(task) = state.task(id) else {
                continue;
            };
            let since = self.time_ms.saturating_sub(task.created_ms);
            // A token is the index of the entry that granted it.
            if task
                .state
                .holder()
                .is_some_and(|(_, token)| token == self.log_index)
            {
                seen.push(Seen::Assigned {
                    queue: task.spec.queue.clone(),
                    waited_ms: since,
                });
            }
            if !had_ended && task.state.is_terminal() {
                seen.push(Seen::Finished {
                    queue: task.spec.queue.clone(),
                    outcome: outcome(&task.state),
                    took_ms: since,
                });
            }
        }
        if let Some(agent) = self.going_down {
            if state
                .agent(&agent)
                .is_some_and(|a| a.state == AgentState::Down)
            {
                seen.push(Seen::AgentExpired);
            }
        }
        seen
    }
}

/// How an ended task ended: its state's kind, or for a forwarded task the
/// kind the DC that ran it reported.
fn outcome(state: &TaskState) -> TaskStateKind {
    match state {
        TaskState::Forwarded {
            remote: Some(r), ..
        } => r.state,
        other => other.kind(),
    }
}

#[cfg(test)]
#[path = "events_test.rs"]
mod tests;
