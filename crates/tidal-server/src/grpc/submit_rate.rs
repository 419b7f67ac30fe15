//! Tenants' submit rates: a token bucket per tenant, kept by the leader in memory and checked before a submit is proposed.
//!
//! A rate is admission control, not state: the buckets live in the leader's
//! memory only, start full and are dropped when the leadership changes (a
//! failover refills them). Each submitted item takes one token; the items
//! of a tenant past its bucket are refused with RESOURCE_EXHAUSTED naming
//! the rate and when to retry. Followers redirect submits to the leader, so
//! only the leader counts.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use tidal_core::access::SubmitRate;

/// One tenant's bucket, in thousandths of a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    tokens_milli: u64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket at `now_ms`.
    pub fn full(rate: SubmitRate, now_ms: u64) -> TokenBucket {
        TokenBucket {
            tokens_milli: u64::from(rate.burst.max(1)) * 1000,
            last_ms: now_ms,
        }
    }

    /// Refills for the time since the last call (up to the burst), then
    /// takes up to `n` whole tokens. Returns how many it took and, if fewer
    /// than `n`, in how many ms the next token is there.
    pub fn take(&mut self, n: u64, now_ms: u64, rate: SubmitRate) -> (u64, Option<u64>) {
        let per_s = u64::from(rate.per_s.max(1));
        let cap = u64::from(rate.burst.max(1)) * 1000;
        let elapsed = now_ms.saturating_sub(self.last_ms);
        // per_s tokens a second = per_s milli-tokens a millisecond.
        self.tokens_milli = cap.min(
            self.tokens_milli
                .saturating_add(elapsed.saturating_mul(per_s)),
        );
        self.last_ms = self.last_ms.max(now_ms);
        let taken = n.min(self.tokens_milli / 1000);
        self.tokens_milli -= taken * 1000;
        if taken == n {
            return (taken, None);
        }
        let missing = 1000 - self.tokens_milli % 1000;
        (taken, Some(missing.div_ceil(per_s)))
    }
}

/// The leader's buckets, per tenant, for one leadership term.
#[derive(Debug)]
pub struct SubmitRates {
    start: Instant,
    inner: Mutex<(u64, BTreeMap<String, TokenBucket>)>,
}

impl Default for SubmitRates {
    fn default() -> Self {
        SubmitRates {
            start: Instant::now(),
            inner: Mutex::new((0, BTreeMap::new())),
        }
    }
}

impl SubmitRates {
    /// Takes up to `n` tokens from `tenant`'s bucket under `rate`, as the
    /// leader of `term` (the buckets of an earlier term are dropped: a new
    /// leadership starts with full buckets). Returns how many it took and,
    /// if fewer, when to retry (ms).
    pub fn take(&self, term: u64, tenant: &str, n: u64, rate: SubmitRate) -> (u64, Option<u64>) {
        let now_ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut inner = self.inner.lock().expect("submit rates lock poisoned");
        let (at_term, buckets) = &mut *inner;
        if *at_term != term {
            *at_term = term;
            buckets.clear();
        }
        buckets
            .entry(tenant.to_string())
            .or_insert_with(|| TokenBucket::full(rate, now_ms))
            .take(n, now_ms, rate)
    }
}

/// The message of an item refused for its tenant's submit rate.
pub fn over_rate(tenant: &str, rate: SubmitRate, retry_ms: u64) -> String {
    format!(
        "tenant {tenant} is over its submit rate of {}/s (burst {}); retry in {retry_ms} ms \
         (tidal tenant set {tenant} --submit-rate)",
        rate.per_s, rate.burst
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: SubmitRate = SubmitRate {
        per_s: 10,
        burst: 3,
    };

    #[test]
    fn a_full_bucket_gives_its_burst_then_refills_at_the_rate() {
        let mut b = TokenBucket::full(RATE, 0);
        assert_eq!(b.take(2, 0, RATE), (2, None));
        // One left: a third and fourth item get one; the next token comes
        // in 100 ms at 10/s.
        assert_eq!(b.take(2, 0, RATE), (1, Some(100)));
        assert_eq!(b.take(1, 40, RATE), (0, Some(60)));
        assert_eq!(b.take(1, 100, RATE), (1, None));
        // Never more than the burst, however long it waited.
        assert_eq!(b.take(10, 1_000_000, RATE), (3, Some(100)));
        // A clock that goes back changes nothing.
        assert_eq!(b.take(1, 5, RATE), (0, Some(100)));
    }

    #[test]
    fn a_new_term_starts_with_full_buckets_and_tenants_are_apart() {
        let rates = SubmitRates::default();
        assert_eq!(rates.take(1, "acme", 3, RATE).0, 3);
        assert_eq!(rates.take(1, "acme", 1, RATE).0, 0);
        assert_eq!(rates.take(1, "beta", 3, RATE).0, 3);
        assert_eq!(rates.take(2, "acme", 3, RATE).0, 3);
    }

    #[test]
    fn the_message_names_the_rate_and_the_wait() {
        assert_eq!(
            over_rate("acme", RATE, 40),
            "tenant acme is over its submit rate of 10/s (burst 3); retry in 40 ms \
             (tidal tenant set acme --submit-rate)"
        );
    }
}
