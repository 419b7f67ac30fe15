//! Notices when this server's runtime stalls (the machine starved it of CPU,
//! or the process was paused) and says so in its log. A leader stalled
//! beyond the election timeout loses its leadership through no fault of the
//! network: the chaos harness reads these lines to tell such an election
//! from a spurious one.

use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

/// How often the watch wakes.
const TICK: Duration = Duration::from_millis(10);

/// Wakes every [`TICK`] and logs a warning when a wake-up came later than
/// `report` after it was due.
pub async fn watch(node_id: u64, report: Duration) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut due = Instant::now();
    loop {
        tick.tick().await;
        let now = Instant::now();
        let late = now.saturating_duration_since(due + TICK);
        if late >= report {
            tracing::warn!(
                node_id,
                stalled_ms = late.as_millis() as u64,
                "this server's runtime stalled (CPU starvation or a pause); a stall beyond the \
                 election timeout can cost the leader its leadership"
            );
        }
        due = now;
    }
}
