//! Random idempotency keys for submits that carry none, so a retried submit
//! cannot create a second task.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// 64 unpredictable bits: std's `RandomState` is seeded from the OS once per
/// thread (and stepped per instance); mixing in a counter, the time and the
/// pid keeps keys distinct within and across processes.
pub(crate) fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// A fresh key: `auto-` and 128 random bits in hex.
pub fn auto_key() -> String {
    format!("auto-{:016x}{:016x}", random_u64(), random_u64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn keys_are_well_formed_and_distinct() {
        let keys: HashSet<String> = (0..10_000).map(|_| auto_key()).collect();
        assert_eq!(keys.len(), 10_000);
        for k in keys.iter().take(10) {
            assert_eq!(k.len(), 5 + 32);
            assert!(k.starts_with("auto-"));
            assert!(k[5..].chars().all(|c| c.is_ascii_hexdigit()));
        }
    }
}
