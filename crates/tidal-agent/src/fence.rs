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
#[path = "fence_test.rs"]
mod tests;
