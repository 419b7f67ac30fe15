//! Completions kept until the leader acknowledges them, and the latest
//! checkpoint of each task held.

use std::collections::BTreeMap;

use tidal_proto::v1;

/// Completions in the order they happened. An entry leaves only on a
/// `CompletionAck` for its task and token (accepted or not); everything left
/// is sent again after a reconnect.
///
/// Checkpoints are a latest value: one per task (the newest replaces the
/// one before), sent again after every reconnect (they have no ack) while
/// the task is held: running here, or its completion not yet acknowledged
/// (see [`Outbox::retain_checkpoints`]).
#[derive(Debug, Default, Clone)]
pub struct Outbox {
    items: Vec<v1::TaskCompleted>,
    checkpoints: BTreeMap<String, v1::TaskCheckpoint>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// Keeps a completion; one with the same task and token replaces it.
    pub fn push(&mut self, c: v1::TaskCompleted) {
        match self
            .items
            .iter_mut()
            .find(|i| i.task_id == c.task_id && i.token == c.token)
        {
            Some(slot) => *slot = c,
            None => self.items.push(c),
        }
    }

    /// The leader acknowledged this completion: forget it. Returns false when
    /// nothing matched (e.g. an ack for an older token).
    pub fn ack(&mut self, task_id: &str, token: u64) -> bool {
        let before = self.items.len();
        self.items
            .retain(|i| !(i.task_id == task_id && i.token == token));
        self.items.len() != before
    }

    /// The completion of this task under this token, if still pending.
    pub fn get(&self, task_id: &str, token: u64) -> Option<&v1::TaskCompleted> {
        self.items
            .iter()
            .find(|i| i.task_id == task_id && i.token == token)
    }

    /// Everything not yet acknowledged, oldest first: what to (re)send.
    pub fn pending(&self) -> impl Iterator<Item = &v1::TaskCompleted> {
        self.items.iter()
    }

    /// The tasks whose completion is pending, reported as still held at
    /// registration so the leader neither resends them nor requeues them
    /// before their completion arrives.
    pub fn held(&self) -> impl Iterator<Item = v1::RunningTask> + '_ {
        self.items.iter().map(|i| v1::RunningTask {
            task_id: i.task_id.clone(),
            token: i.token,
        })
    }

    /// Keeps a task's newest checkpoint, replacing the one before (of any
    /// token: a newer attempt's supersedes).
    pub fn checkpoint(&mut self, c: v1::TaskCheckpoint) {
        self.checkpoints.insert(c.task_id.clone(), c);
    }

    /// The latest checkpoint of each task held: what to (re)send.
    pub fn checkpoints(&self) -> impl Iterator<Item = &v1::TaskCheckpoint> {
        self.checkpoints.values()
    }

    /// Forgets the checkpoints of attempts neither `running` (task, token)
    /// nor with a completion pending here.
    pub fn retain_checkpoints(&mut self, running: impl Fn(&str, u64) -> bool) {
        let items = &self.items;
        self.checkpoints.retain(|task_id, c| {
            running(task_id, c.token)
                || items
                    .iter()
                    .any(|i| i.task_id == *task_id && i.token == c.token)
        });
    }

    /// Number of pending completions.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
#[path = "outbox_test.rs"]
mod tests;
