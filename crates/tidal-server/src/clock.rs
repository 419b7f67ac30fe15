//! The leader's wall clock, in milliseconds since the Unix epoch.

/// The leader's clock, written into every entry it proposes.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
