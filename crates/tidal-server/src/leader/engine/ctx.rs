//! What a handler is given when it acts, and where it writes: the time, the applied state, the settings, the actions and the proposals in flight.

use std::collections::BTreeMap;

use tidal_core::command::Command;
use tidal_core::forwarding::DcName;
use tidal_core::model::{AgentId, FencingToken, TaskId};
use tidal_core::State;

use super::action::{Action, View};
use super::config::EngineConfig;
use super::event::{Now, ProposalId};

/// Which handler proposed a command (and what it needs to handle the answer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    // One variant per proposing handler.
    /// An `Expire` batch; `full` if it held [`EXPIRE_BATCH`] tasks.
    Expire { full: bool },
    /// A `SetClusterVersion` from one version to another.
    RaiseVersion { from: u8, to: u8 },
    /// A `Forward` round.
    Forward,
    /// A `ForwardAck` of a peer's verdicts.
    ForwardAck(DcName),
    /// The reaper's `AgentDown` of this agent.
    AgentDown { agent: AgentId },
    /// A dispatch round's `Assign`.
    Assign,
    /// A regrant's `StartedBatch` of the tasks another process held (then
    /// the `Regrant` of them).
    RegrantStarted {
        agent: AgentId,
        tasks: Vec<(TaskId, FencingToken)>,
    },
    /// A `Regrant` of `held` tasks of this agent.
    Regrant { agent: AgentId, held: usize },
    /// A `Stopped` of a stop report.
    Stopped(StopReport),
    /// The bootstrap token's `CreateToken`.
    Bootstrap,
    /// A `Wake` batch (tasks whose retry backoff ended).
    Wake,
    /// A `DeadlineMissed` batch.
    DeadlineMissed,
    /// A `Preempt` (`preempt.rs`).
    Preempt,
    /// A `Resume` batch (`preempt.rs`).
    Resume,
    /// The configured GPU weights' `SetGpuWeights` (`gpu_weights.rs`).
    SetGpuWeights,
}

/// A stop report, as its `Stopped` proposal carries it to the answer (`stop.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StopReport {
    pub(crate) agent: AgentId,
    pub(crate) generation: u64,
    /// The task id as the agent named it (the answer repeats it).
    pub(crate) task_id: String,
    pub(crate) task: TaskId,
    pub(crate) token: FencingToken,
}

/// What a handler is given: the time, the applied state, the settings, and where to write.
pub(crate) struct Ctx<'a> {
    pub(crate) now: Now,
    pub(crate) state: &'a State,
    pub(crate) cfg: &'a EngineConfig,
    pub(crate) out: &'a mut Output,
}

/// Where handlers write: the actions for the driver, the proposals in
/// flight, the view as last published, and whether the dispatcher is woken.
#[derive(Debug, Default)]
pub(crate) struct Output {
    actions: Vec<Action>,
    next_id: ProposalId,
    inflight: BTreeMap<ProposalId, Purpose>,
    view: View,
    wake_dispatch: bool,
}

impl Output {
    /// Proposes `command` for `purpose`; returns its id.
    pub(crate) fn propose(&mut self, purpose: Purpose, command: Command) -> ProposalId {
        self.next_id += 1;
        let id = self.next_id;
        self.inflight.insert(id, purpose);
        self.actions.push(Action::Propose { id, command });
        id
    }

    pub(crate) fn push(&mut self, action: Action) {
        self.actions.push(action);
    }

    /// Publishes the view with `change` made to it.
    pub(crate) fn publish(&mut self, change: impl FnOnce(&mut View)) {
        change(&mut self.view);
        self.actions.push(Action::Publish(self.view.clone()));
    }

    /// Capacity came free or tasks are pending again: the dispatcher plans
    /// a round before the step ends.
    pub(crate) fn wake_dispatch(&mut self) {
        self.wake_dispatch = true;
    }

    /// Whether the dispatcher was woken since the last call.
    pub(crate) fn take_wake_dispatch(&mut self) -> bool {
        std::mem::take(&mut self.wake_dispatch)
    }

    /// What `id` was proposed for, forgetting it: it has been answered.
    pub(crate) fn answered(&mut self, id: ProposalId) -> Option<Purpose> {
        self.inflight.remove(&id)
    }

    /// The actions since the last call, in the order they were decided.
    pub(crate) fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// Proposals sent and not answered yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.inflight.len()
    }
}
