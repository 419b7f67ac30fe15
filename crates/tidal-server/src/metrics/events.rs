//! The families recorded as the store tells them ([`tidal_store::events`]):
//! tasks' submit-to-assigned and submit-to-finished times, agents' lease
//! expiries, and the time of each Raft log append until it is durable.
//!
//! Tasks' times come from the committed entries (the entry's time, the
//! leader's clock when it proposed it, minus the task's `created_ms`), not
//! from this node's clock, so every node records the same values for the
//! same entries. Every node records what it applies (each node applies
//! every entry): sum over one node, not over the cluster. They count from
//! the metrics listener's start: a restart starts them at zero, and the
//! entries openraft re-applies while the node starts (up to the committed
//! index this node had saved) are not counted again; those after it, which
//! the node learns are committed once it runs, are. Nothing is counted for
//! a snapshot installed from the leader.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tidal_core::model::TaskStateKind;
use tidal_store::StoreEvents;

/// Labels: (name, value) pairs (as the scrape's).
type Labels = Vec<(String, String)>;

/// Bounds of the tasks' histograms, in seconds: from 1 ms (a task placed
/// by the entry that submits it waits 0 ms; the times are whole ms) through
/// the seconds a queue usually takes to the hour a GPU task may run or
/// wait behind others; longer ones land in +Inf (and in `_sum`).
const TASK_BUCKETS: [f64; 18] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];

/// Bounds of the log append histogram, in seconds: from 100 µs (a write
/// and an fdatasync on a fast local NVMe) to 1 s (a disk that stalls so long
/// the node's Raft falls silent; the store logs a sync over 100 ms).
const APPEND_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

fn task_histogram() -> Histogram {
    Histogram::new(TASK_BUCKETS)
}

type TaskFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// The families the store's events feed; clones share them.
#[derive(Clone)]
pub struct Events {
    assign: TaskFamily,
    finish: TaskFamily,
    lease_expiries: Counter,
    append: Histogram,
    fsync: Histogram,
    /// The last committed index the log store saved (0: none since the
    /// listener started).
    committed: Arc<AtomicU64>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            assign: Family::new_with_constructor(task_histogram),
            finish: Family::new_with_constructor(task_histogram),
            lease_expiries: Counter::default(),
            append: Histogram::new(APPEND_BUCKETS),
            fsync: Histogram::new(APPEND_BUCKETS),
            committed: Arc::default(),
        }
    }
}

impl Events {
    /// The last committed index this node's log store saved since the
    /// listener started (0: none yet).
    pub fn committed_index(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Adds the families to a scrape's registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "task_assign_seconds",
            "Time from a task's submission to each of its assignments to an agent (every \
             attempt counts, and each regrant under a new token after its agent reconnected), \
             from the committed entries' times, as this node applied them",
            self.assign.clone(),
        );
        registry.register(
            "task_finish_seconds",
            "Time from a task's submission to its end (outcome: succeeded, failed or cancelled; \
             for a task forwarded to another DC, how it ended there), from the committed \
             entries' times, as this node applied them",
            self.finish.clone(),
        );
        registry.register(
            "lease_expiries",
            "Agents marked down because their lease lapsed, one per agent, as this node applied \
             them",
            self.lease_expiries.clone(),
        );
        registry.register(
            "raft_append_seconds",
            "Time of each Raft log append on this node from the store's call until it is \
             durable (written and fdatasync'd)",
            self.append.clone(),
        );
        registry.register(
            "raft_fsync_seconds",
            "Time of each fdatasync of this node's Raft log files (one sync makes every append \
             written before it durable)",
            self.fsync.clone(),
        );
    }
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

impl StoreEvents for Events {
    fn task_assigned(&self, queue: &str, waited_ms: u64) {
        self.assign
            .get_or_create(&vec![("queue".into(), queue.into())])
            .observe(seconds(waited_ms));
    }

    fn task_finished(&self, queue: &str, outcome: TaskStateKind, took_ms: u64) {
        self.finish
            .get_or_create(&vec![
                ("queue".into(), queue.into()),
                ("outcome".into(), outcome.as_str().into()),
            ])
            .observe(seconds(took_ms));
    }

    fn agent_expired(&self) {
        self.lease_expiries.inc();
    }

    fn append_durable(&self, took: Duration) {
        self.append.observe(took.as_secs_f64());
    }

    fn log_synced(&self, took: Duration, _appends: usize) {
        self.fsync.observe(took.as_secs_f64());
    }

    fn committed(&self, index: u64) {
        self.committed.fetch_max(index, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn events_show_under_the_names_and_labels_dashboards_use() {
        let events = Events::default();
        events.task_assigned("q1", 0);
        events.task_assigned("q1", 2_000);
        events.task_finished("q1", TaskStateKind::Succeeded, 90_000);
        events.agent_expired();
        events.append_durable(Duration::from_micros(300));
        events.log_synced(Duration::from_micros(200), 3);
        events.committed(7);
        events.committed(5);
        assert_eq!(events.committed_index(), 7, "never moves back");
        let mut registry = Registry::with_prefix("tidal");
        events.register(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            r#"tidal_task_assign_seconds_count{queue="q1"} 2"#,
            r#"tidal_task_assign_seconds_sum{queue="q1"} 2.0"#,
            r#"tidal_task_assign_seconds_bucket{le="0.001",queue="q1"} 1"#,
            r#"tidal_task_finish_seconds_count{queue="q1",outcome="succeeded"} 1"#,
            r#"tidal_task_finish_seconds_bucket{le="60.0",queue="q1",outcome="succeeded"} 0"#,
            r#"tidal_task_finish_seconds_bucket{le="120.0",queue="q1",outcome="succeeded"} 1"#,
            "tidal_lease_expiries_total 1",
            "tidal_raft_append_seconds_count 1",
            r#"tidal_raft_append_seconds_bucket{le="0.00025"} 0"#,
            r#"tidal_raft_append_seconds_bucket{le="0.0005"} 1"#,
            "tidal_raft_fsync_seconds_count 1",
            r#"tidal_raft_fsync_seconds_bucket{le="0.00025"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }
}
