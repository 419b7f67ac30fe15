//! Unit tests of `fence.rs`.

use super::*;

const MS: Duration = Duration::from_millis(1);

#[test]
fn unarmed_never_expires() {
    let t0 = Instant::now();
    let l = Lease::new(600 * MS);
    assert_eq!(l.deadline(), None);
    assert!(!l.expired(t0 + 3600 * 1000 * MS));
}

#[test]
fn deadline_counts_from_send_time_not_ack_time() {
    let t0 = Instant::now();
    let mut l = Lease::new(600 * MS);
    l.renewed_from(t0);
    assert_eq!(l.deadline(), Some(t0 + 600 * MS));
    l.sent(1, t0 + 200 * MS);
    // The ack arrives late (at t0+500ms): the lease runs from t0+200ms.
    assert!(l.acked(1));
    assert_eq!(l.deadline(), Some(t0 + 800 * MS));
    assert!(!l.expired(t0 + 799 * MS));
    assert!(l.expired(t0 + 800 * MS));
}

#[test]
fn unacked_heartbeats_do_not_renew() {
    let t0 = Instant::now();
    let mut l = Lease::new(600 * MS);
    l.renewed_from(t0);
    for seq in 1..=5 {
        l.sent(seq, t0 + seq as u32 * 200 * MS);
    }
    assert!(l.expired(t0 + 600 * MS));
}

#[test]
fn out_of_order_and_unknown_acks() {
    let t0 = Instant::now();
    let mut l = Lease::new(600 * MS);
    l.renewed_from(t0);
    l.sent(1, t0 + 100 * MS);
    l.sent(2, t0 + 200 * MS);
    l.sent(3, t0 + 300 * MS);
    assert!(l.acked(2));
    assert_eq!(l.deadline(), Some(t0 + 800 * MS));
    // Acking 2 forgot 1: a late ack of 1 renews nothing.
    assert!(!l.acked(1));
    assert!(!l.acked(99));
    assert_eq!(l.deadline(), Some(t0 + 800 * MS));
    assert!(l.acked(3));
    assert_eq!(l.deadline(), Some(t0 + 900 * MS));
}

#[test]
fn the_oldest_unacked_heartbeat_is_tracked() {
    let t0 = Instant::now();
    let mut l = Lease::new(600 * MS);
    assert_eq!(l.oldest_unacked(), None);
    l.sent(1, t0);
    l.sent(2, t0 + 100 * MS);
    assert_eq!(l.oldest_unacked(), Some(t0));
    l.acked(1);
    assert_eq!(l.oldest_unacked(), Some(t0 + 100 * MS));
    l.acked(2);
    assert_eq!(l.oldest_unacked(), None);
}

#[test]
fn never_moves_back_and_reset_disarms() {
    let t0 = Instant::now();
    let mut l = Lease::new(600 * MS);
    l.renewed_from(t0 + 500 * MS);
    l.renewed_from(t0);
    assert_eq!(l.deadline(), Some(t0 + 1100 * MS));
    l.sent(7, t0 + 600 * MS);
    l.reset();
    assert_eq!(l.deadline(), None);
    assert!(
        !l.acked(7),
        "heartbeats sent before a fence must not re-arm it"
    );
}
