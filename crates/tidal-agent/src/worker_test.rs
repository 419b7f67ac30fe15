//! Worker tests: the run clock (time passed in). Supervision with real
//! children is tested through the executor (`executor_test.rs`).

use std::time::Duration;

use tokio::time::Instant;

use super::*;

#[test]
fn the_clock_reaches_its_limit_after_the_running_time() {
    let t0 = Instant::now();
    let c = RunClock::start(Some(Duration::from_millis(500)), t0);
    assert_eq!(c.deadline(), Some(t0 + Duration::from_millis(500)));
    let none = RunClock::start(None, t0);
    assert_eq!(none.deadline(), None, "no limit, no deadline");
}
