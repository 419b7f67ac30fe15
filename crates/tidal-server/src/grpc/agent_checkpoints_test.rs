//! Tests of a session's waiting checkpoints: latest wins, bounded.

use tidal_core::lifecycle::MAX_CHECKPOINT_BYTES;
use tidal_core::model::TaskId;

use super::{Pending, Put, MAX_PENDING_CHECKPOINT_BYTES, OVERHEAD};

#[test]
fn the_latest_checkpoint_of_a_task_wins() {
    let mut p = Pending::default();
    assert_eq!(p.put(TaskId(2), 5, 0, b"one".to_vec()), Put::First);
    assert_eq!(p.put(TaskId(2), 5, 3, b"three".to_vec()), Put::Kept);
    assert_eq!(p.put(TaskId(1), 4, 0, b"x".to_vec()), Put::Kept);
    // A newer attempt's replaces an older one's.
    assert_eq!(p.put(TaskId(1), 9, 8, b"yy".to_vec()), Put::Kept);
    assert_eq!(p.bytes(), 2 * OVERHEAD + 7);
    assert_eq!(
        p.take(),
        vec![
            (TaskId(1), 9, 8, b"yy".to_vec()),
            (TaskId(2), 5, 3, b"three".to_vec())
        ]
    );
    assert_eq!(p.bytes(), 0);
    assert!(p.take().is_empty());
    // Taken: the next one wakes the proposer again.
    assert_eq!(p.put(TaskId(2), 5, 0, b"four".to_vec()), Put::First);
}

#[test]
fn a_session_keeps_a_bounded_amount_waiting() {
    let mut p = Pending::default();
    let full = vec![7u8; MAX_CHECKPOINT_BYTES];
    let fits = MAX_PENDING_CHECKPOINT_BYTES / (OVERHEAD + MAX_CHECKPOINT_BYTES);
    assert_eq!(p.put(TaskId(0), 1, 0, b"small".to_vec()), Put::First);
    for i in 1..fits {
        assert_eq!(p.put(TaskId(i as u64), 1, 0, full.clone()), Put::Kept);
    }
    // Replacing the small one with a full one fits exactly ...
    assert_eq!(p.put(TaskId(0), 2, 0, full.clone()), Put::Kept);
    assert_eq!(p.bytes(), MAX_PENDING_CHECKPOINT_BYTES);
    // ... and then nothing more: neither another task's ...
    assert_eq!(p.put(TaskId(10_000), 1, 0, Vec::new()), Put::Full);
    // ... while a smaller one of a task waiting replaces it and makes room.
    assert_eq!(p.put(TaskId(1), 1, 0, b"x".to_vec()), Put::Kept);
    assert_eq!(p.put(TaskId(10_000), 1, 0, b"y".to_vec()), Put::Kept);
    let taken = p.take();
    assert_eq!(taken.len(), fits + 1);
    assert_eq!(taken[0], (TaskId(0), 2, 0, full));
    assert_eq!(taken[1], (TaskId(1), 1, 0, b"x".to_vec()));
}
