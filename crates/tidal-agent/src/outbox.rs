//! Completions kept until the leader acknowledges them, and the latest
//! unanswered checkpoint of each task held, with when to send it again.

use std::collections::BTreeMap;
use std::time::Duration;

use tidal_proto::v1;
use tokio::time::Instant;

/// A checkpoint unanswered this long after it was sent goes again; the
/// wait doubles after each resend.
pub const CHECKPOINT_RESEND_FIRST: Duration = Duration::from_secs(1);
/// How many times one checkpoint goes again on one session (1, 2, 4, 8
/// and 16 s apart); a reconnect sends it once more and starts the count
/// again.
pub const CHECKPOINT_RESENDS: u32 = 5;

/// Completions in the order they happened. An entry leaves only on a
/// `CompletionAck` for its task and token (accepted or not); everything left
/// is sent again after a reconnect.
///
/// Checkpoints are a latest value: one per task (the newest replaces the
/// one before), kept until the leader answers it (`CheckpointAck` naming
/// its token and seq) while the task is held: running here, or its
/// completion not yet acknowledged (see [`Outbox::retain_checkpoints`]).
/// One unanswered goes again on the same session after
/// [`CHECKPOINT_RESEND_FIRST`], doubling, [`CHECKPOINT_RESENDS`] times at
/// most, and after every reconnect. Time is passed in.
#[derive(Debug, Default, Clone)]
pub struct Outbox {
    items: Vec<v1::TaskCompleted>,
    checkpoints: BTreeMap<String, Unanswered>,
}

/// A checkpoint sent and not answered yet.
#[derive(Debug, Clone)]
struct Unanswered {
    c: v1::TaskCheckpoint,
    /// Times sent again since it was sent (on this session).
    resends: u32,
    /// When it goes again; None once the resends are used up.
    next_at: Option<Instant>,
}

impl Unanswered {
    /// Sent at `now` (first, or after a reconnect): the resends start over.
    fn sent(c: v1::TaskCheckpoint, now: Instant) -> Unanswered {
        Unanswered {
            c,
            resends: 0,
            next_at: Some(now + CHECKPOINT_RESEND_FIRST),
        }
    }
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

    /// Keeps a task's newest checkpoint, sent at `now`, replacing the one
    /// before (of any token: a newer attempt's supersedes).
    pub fn checkpoint(&mut self, c: v1::TaskCheckpoint, now: Instant) {
        self.checkpoints
            .insert(c.task_id.clone(), Unanswered::sent(c, now));
    }

    /// The leader answered this task's checkpoint `seq` under `token`
    /// (committed or refused for good): forget it. An answer for an older
    /// one (another token or seq) settles nothing. Returns whether it did.
    pub fn checkpoint_answered(&mut self, task_id: &str, token: u64, seq: u64) -> bool {
        let answered = self
            .checkpoints
            .get(task_id)
            .is_some_and(|u| u.c.token == token && u.c.seq == seq);
        if answered {
            self.checkpoints.remove(task_id);
        }
        answered
    }

    /// The latest unanswered checkpoint of each task held: what to send
    /// again after a reconnect, which happens at `now` (their resends
    /// start over).
    pub fn checkpoints_resent(&mut self, now: Instant) -> Vec<v1::TaskCheckpoint> {
        self.checkpoints
            .values_mut()
            .map(|u| {
                *u = Unanswered::sent(u.c.clone(), now);
                u.c.clone()
            })
            .collect()
    }

    /// The checkpoints due to go again at `now`, counted as sent.
    pub fn checkpoints_due(&mut self, now: Instant) -> Vec<v1::TaskCheckpoint> {
        let mut due = Vec::new();
        for u in self.checkpoints.values_mut() {
            if u.next_at.is_some_and(|at| at <= now) {
                u.resends += 1;
                u.next_at = (u.resends < CHECKPOINT_RESENDS)
                    .then(|| now + CHECKPOINT_RESEND_FIRST * 2u32.pow(u.resends));
                due.push(u.c.clone());
            }
        }
        due
    }

    /// When the next checkpoint is due to go again, if any.
    pub fn next_checkpoint_resend(&self) -> Option<Instant> {
        self.checkpoints.values().filter_map(|u| u.next_at).min()
    }

    /// The latest unanswered checkpoint of each task held.
    pub fn checkpoints(&self) -> impl Iterator<Item = &v1::TaskCheckpoint> {
        self.checkpoints.values().map(|u| &u.c)
    }

    /// Forgets the checkpoints of attempts neither `running` (task, token)
    /// nor with a completion pending here.
    pub fn retain_checkpoints(&mut self, running: impl Fn(&str, u64) -> bool) {
        let items = &self.items;
        self.checkpoints.retain(|task_id, u| {
            let c = &u.c;
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
