//! Outbox tests: completions until acked, checkpoints while held.

use super::*;

fn cp(id: &str, token: u64, seq: u64, data: &[u8]) -> v1::TaskCheckpoint {
    v1::TaskCheckpoint {
        task_id: id.into(),
        token,
        data: data.to_vec(),
        seq,
    }
}

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
fn a_checkpoint_is_kept_while_its_task_is_held() {
    let mut o = Outbox::new();
    let now = Instant::now();
    o.checkpoint(cp("t1", 5, 1, b"one"), now);
    o.checkpoint(cp("t1", 5, 2, b"two"), now);
    o.checkpoint(cp("t2", 6, 3, b"x"), now);
    let data: Vec<&[u8]> = o.checkpoints().map(|c| c.data.as_slice()).collect();
    assert_eq!(data, [b"two".as_slice(), b"x"], "only the newest per task");
    // t1 ended (its completion pending), t2 was killed.
    o.push(done("t1", 5, true));
    o.retain_checkpoints(|_, _| false);
    let ids: Vec<&str> = o.checkpoints().map(|c| c.task_id.as_str()).collect();
    assert_eq!(ids, ["t1"]);
    o.ack("t1", 5);
    o.retain_checkpoints(|_, _| false);
    assert_eq!(o.checkpoints().count(), 0);
    o.checkpoint(cp("t3", 7, 4, b"y"), now);
    o.retain_checkpoints(|t, k| t == "t3" && k == 7);
    assert_eq!(o.checkpoints().count(), 1, "still running");
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

#[test]
fn an_unanswered_checkpoint_goes_again_with_backoff_a_bounded_number_of_times() {
    let mut o = Outbox::new();
    let t0 = Instant::now();
    let s = Duration::from_secs;
    o.checkpoint(cp("t1", 5, 1, b"one"), t0);
    assert_eq!(o.next_checkpoint_resend(), Some(t0 + s(1)));
    assert!(o
        .checkpoints_due(t0 + Duration::from_millis(999))
        .is_empty());
    // Due 1, 2, 4, 8 and 16 s apart: at 1, 3, 7, 15 and 31 s; then no more.
    let mut at = Vec::new();
    let mut now = t0;
    while let Some(next) = o.next_checkpoint_resend() {
        now = next;
        let due = o.checkpoints_due(now);
        assert_eq!(due, [cp("t1", 5, 1, b"one")], "the same seq goes again");
        at.push((now - t0).as_secs());
    }
    assert_eq!(at, [1, 3, 7, 15, 31]);
    assert_eq!(o.checkpoints().count(), 1, "kept for the next reconnect");
    // A reconnect sends it again and starts the count over.
    assert_eq!(o.checkpoints_resent(now), [cp("t1", 5, 1, b"one")]);
    assert_eq!(o.next_checkpoint_resend(), Some(now + s(1)));
}

#[test]
fn only_the_answer_to_the_latest_checkpoint_settles_it() {
    let mut o = Outbox::new();
    let t0 = Instant::now();
    o.checkpoint(cp("t1", 5, 1, b"one"), t0);
    o.checkpoint(cp("t1", 5, 2, b"two"), t0 + Duration::from_millis(500));
    assert!(!o.checkpoint_answered("t1", 5, 1), "an older one's answer");
    assert!(!o.checkpoint_answered("t1", 4, 2), "another token's");
    assert!(!o.checkpoint_answered("t9", 5, 2), "another task's");
    assert_eq!(
        o.next_checkpoint_resend(),
        Some(t0 + Duration::from_millis(1500)),
        "the newest's own schedule"
    );
    assert!(o.checkpoint_answered("t1", 5, 2));
    assert_eq!(o.checkpoints().count(), 0);
    assert_eq!(o.next_checkpoint_resend(), None);
    assert!(o.checkpoints_due(t0 + Duration::from_secs(60)).is_empty());
}
