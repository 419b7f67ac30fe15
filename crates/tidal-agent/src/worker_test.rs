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

#[test]
fn time_paused_does_not_count() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut c = RunClock::start(Some(ms(500)), t0);
    c.pause(t0 + ms(100));
    assert_eq!(c.deadline(), None, "no deadline while paused");
    assert_eq!(c.used(t0 + ms(900)), ms(100));
    c.pause(t0 + ms(200));
    assert_eq!(
        c.used(t0 + ms(900)),
        ms(100),
        "a second pause changes nothing"
    );
    c.resume(t0 + ms(1000));
    c.resume(t0 + ms(1100));
    assert_eq!(
        c.used(t0 + ms(1200)),
        ms(300),
        "a second resume changes nothing"
    );
    assert_eq!(
        c.deadline(),
        Some(t0 + ms(1400)),
        "the 400 ms left, counted from the resume"
    );
}
