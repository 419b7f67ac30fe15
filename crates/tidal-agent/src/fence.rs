//! The agent-side lease: when the agent must stop its work (self-fence).
//!
//! Invariant 6: an agent that cannot renew stops its tasks before the server's
//! lease expires. The server's lease starts when it *receives* a heartbeat (or
//! the registration); the agent measures from when it *sent* it, which is
//! earlier, and uses a shorter TTL. So the agent's deadline is always before
//! the server's.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Send times of heartbeats in flight and the current deadline. Pure: the
/// caller passes every instant, so tests need no clock.
#[derive(Debug, Clone)]
pub struct Lease {
    ttl: Duration,
    in_flight: VecDeque<(u64, Instant)>,
    deadline: Option<Instant>,
}

/// Heartbeats remembered while unacknowledged; older ones are forgotten (an
/// ack of a newer one renews at least as far).
const MAX_IN_FLIGHT: usize = 1024;

impl Lease {
    /// An unarmed lease (no deadline until [`Lease::renewed_from`]).
    pub fn new(ttl: Duration) -> Lease {
        Lease {
            ttl,
            in_flight: VecDeque::new(),
            deadline: None,
        }
    }

    /// The agent-side TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Sets the TTL (learned at registration); the deadline is unchanged.
    pub fn set_ttl(&mut self, ttl: Duration) {
        self.ttl = ttl;
    }

    /// The server confirmed something the agent sent at `sent_at` (the session
    /// opened then, or a heartbeat sent then was acked): the lease holds until
    /// `sent_at + ttl`. Never moves the deadline back.
    pub fn renewed_from(&mut self, sent_at: Instant) {
        let d = sent_at + self.ttl;
        match self.deadline {
            Some(cur) if cur >= d => {}
            _ => self.deadline = Some(d),
        }
    }

    /// A heartbeat `seq` was sent at `at`.
    pub fn sent(&mut self, seq: u64, at: Instant) {
        self.in_flight.push_back((seq, at));
        while self.in_flight.len() > MAX_IN_FLIGHT {
            self.in_flight.pop_front();
        }
    }

    /// The server acked heartbeat `seq`: renew from its send time. Returns
    /// false for an ack of an unknown (forgotten or never sent) heartbeat.
    pub fn acked(&mut self, seq: u64) -> bool {
        let Some(at) = self
            .in_flight
            .iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, at)| *at)
        else {
            return false;
        };
        self.in_flight.retain(|(s, _)| *s > seq);
        self.renewed_from(at);
        true
    }

    /// The session that carried the heartbeats in flight is gone: their acks
    /// can no longer come. The deadline is unchanged.
    pub fn abandon_in_flight(&mut self) {
        self.in_flight.clear();
    }

    /// When the oldest heartbeat still unacknowledged was sent.
    pub fn oldest_unacked(&self) -> Option<Instant> {
        self.in_flight.front().map(|(_, at)| *at)
    }

    /// When the agent must have stopped its work, if the lease is armed.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// True once the deadline has passed.
    pub fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }

    /// Disarms the lease (after self-fencing, or when a session ends cleanly
    /// with nothing running). Heartbeats in flight no longer count.
    pub fn reset(&mut self) {
        self.deadline = None;
        self.in_flight.clear();
    }
}

#[cfg(test)]
mod tests {
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
}
