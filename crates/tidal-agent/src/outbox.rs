//! Completions kept until the leader acknowledges them.

use tidal_proto::v1;

/// Completions in the order they happened. An entry leaves only on a
/// `CompletionAck` for its task and token (accepted or not); everything left
/// is sent again after a reconnect.
#[derive(Debug, Default, Clone)]
pub struct Outbox {
    items: Vec<v1::TaskCompleted>,
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
mod tests {
    use super::*;

    fn done(id: &str, token: u64, success: bool) -> v1::TaskCompleted {
        v1::TaskCompleted {
            task_id: id.into(),
            token,
            success,
            ..Default::default()
        }
    }

    #[test]
    fn keeps_until_acked_and_resends_in_order() {
        let mut o = Outbox::new();
        o.push(done("t1", 5, true));
        o.push(done("t2", 6, false));
        o.push(done("t3", 7, true));
        // Session lost before any ack: all three are resent, oldest first.
        let ids: Vec<&str> = o.pending().map(|c| c.task_id.as_str()).collect();
        assert_eq!(ids, ["t1", "t2", "t3"]);
        assert!(o.ack("t2", 6));
        let ids: Vec<&str> = o.pending().map(|c| c.task_id.as_str()).collect();
        assert_eq!(ids, ["t1", "t3"]);
        let held: Vec<(String, u64)> = o.held().map(|r| (r.task_id, r.token)).collect();
        assert_eq!(held, [("t1".to_string(), 5), ("t3".to_string(), 7)]);
    }

    #[test]
    fn ack_needs_the_same_token() {
        let mut o = Outbox::new();
        o.push(done("t1", 5, true));
        assert!(!o.ack("t1", 4));
        assert!(!o.ack("t9", 5));
        assert_eq!(o.len(), 1);
        assert!(o.get("t1", 5).is_some());
        assert!(o.ack("t1", 5));
        assert!(o.is_empty());
        assert!(!o.ack("t1", 5), "a second ack is harmless");
    }

    #[test]
    fn same_task_and_token_is_replaced_not_duplicated() {
        let mut o = Outbox::new();
        o.push(done("t1", 5, false));
        o.push(done("t1", 5, true));
        o.push(done("t1", 8, true));
        assert_eq!(o.len(), 2);
        assert!(o.get("t1", 5).is_some_and(|c| c.success));
    }
}
