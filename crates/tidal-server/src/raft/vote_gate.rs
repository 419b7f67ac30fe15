//! The vote gate: a node that started on an empty store votes only once it
//! holds what was committed when it came back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Keeps a node that started on an empty store from voting until it holds
/// everything committed when it came back. A member restarted on a wiped
/// disk has lost entries it acknowledged; if its empty log helped elect a
/// candidate that misses them, committed entries would be lost. So such a
/// node votes only once it has applied the commit index of the first
/// leader it hears from (a brand-new learner waits the same way, harmlessly).
pub struct VoteGate {
    open: AtomicBool,
    /// The first leader commit index heard since start (`u64::MAX`: none yet).
    target: AtomicU64,
}

impl VoteGate {
    /// Closed for a node that started on an empty store, open otherwise.
    pub fn new(started_empty: bool) -> VoteGate {
        VoteGate {
            open: AtomicBool::new(!started_empty),
            target: AtomicU64::new(u64::MAX),
        }
    }

    pub(crate) fn saw_leader_commit(&self, commit: Option<u64>) {
        if !self.open.load(Ordering::Relaxed) {
            let _ = self.target.compare_exchange(
                u64::MAX,
                commit.unwrap_or(0),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    pub(crate) fn check(&self, applied: u64) -> Result<(), String> {
        if self.open.load(Ordering::Relaxed) {
            return Ok(());
        }
        match self.target.load(Ordering::Relaxed) {
            u64::MAX => Err("this node started on an empty store and has not heard from a leader yet; it does not vote".into()),
            t if applied >= t => {
                self.open.store(true, Ordering::Relaxed);
                tracing::info!(log_index = applied, "caught up after starting empty; this node votes again");
                Ok(())
            }
            t => Err(format!(
                "this node started on an empty store and has applied {applied} of the {t} entries committed when it \
                 came back; it does not vote until it has them all"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::VoteGate;

    #[test]
    fn an_empty_start_votes_only_after_applying_the_first_leader_commit() {
        let gate = VoteGate::new(true);
        assert!(gate.check(0).is_err(), "no leader heard yet");
        gate.saw_leader_commit(Some(40));
        gate.saw_leader_commit(Some(90)); // the first commit index heard is the target
        assert!(gate.check(39).unwrap_err().contains("applied 39 of the 40"));
        assert!(gate.check(40).is_ok());
        assert!(gate.check(0).is_ok(), "once open, it stays open");
    }

    #[test]
    fn a_node_with_state_votes_at_once() {
        assert!(VoteGate::new(false).check(0).is_ok());
    }
}
