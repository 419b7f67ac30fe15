//! A store with events set tells what it applies and when its appends are
//! durable.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidal_core::model::TaskStateKind;
use tidal_core::{AgentSpec, Command, Completion, Outcome, TaskId, TaskSpec};
use tidal_store::StoreEvents;

use openraft::storage::RaftLogStorage;

use crate::common::{append, apply, blank, log_id, membership, normal, open};

#[derive(Default)]
struct Recorded {
    told: Mutex<Vec<String>>,
    appends: Mutex<Vec<Duration>>,
    committed: Mutex<Vec<u64>>,
    synced: Mutex<Vec<usize>>,
}

impl StoreEvents for Recorded {
    fn task_assigned(&self, queue: &str, waited_ms: u64) {
        self.told
            .lock()
            .unwrap()
            .push(format!("assigned {queue} {waited_ms}"));
    }
    fn task_finished(&self, queue: &str, outcome: TaskStateKind, took_ms: u64) {
        self.told
            .lock()
            .unwrap()
            .push(format!("finished {queue} {} {took_ms}", outcome.as_str()));
    }
    fn agent_expired(&self) {
        self.told.lock().unwrap().push("agent expired".into());
    }
    fn append_durable(&self, took: Duration) {
        self.appends.lock().unwrap().push(took);
    }
    fn committed(&self, index: u64) {
        self.committed.lock().unwrap().push(index);
    }
    fn log_synced(&self, _took: Duration, appends: usize) {
        self.synced.lock().unwrap().push(appends);
    }
}

#[tokio::test]
async fn applied_entries_and_durable_appends_are_told_once_events_are_set() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut sm) = open(dir.path());
    let agent = || "agent-a".to_string();
    let spec = TaskSpec {
        task_type: "t2i".into(),
        ..Default::default()
    };
    // Entry i has time 1000 + i.
    let entries = [
        membership(1, 1, &[1]),
        blank(1, 2),
        normal(
            1,
            3,
            Command::RegisterAgent(AgentSpec {
                id: agent(),
                task_types: ["t2i".to_string()].into(),
                slots: 2,
                weight: 1,
                ..Default::default()
            }),
        ),
        normal(1, 4, Command::Submit(vec![spec.clone(), spec])),
    ];
    // Nothing is told before events are set.
    append(&mut log, entries[..2].to_vec()).await;
    apply(&mut sm, entries[..2].to_vec()).await;
    let events = Arc::new(Recorded::default());
    assert!(sm.handle().set_events(events.clone()));
    assert!(!sm.handle().set_events(Arc::new(Recorded::default())));
    append(&mut log, entries[2..].to_vec()).await;
    apply(&mut sm, entries[2..].to_vec()).await;
    let rest = [
        normal(
            1,
            7,
            Command::Assign(vec![(TaskId(1), agent()), (TaskId(2), agent())]),
        ),
        normal(
            1,
            9,
            Command::Complete(vec![Completion {
                task: TaskId(1),
                token: 7,
                outcome: Outcome {
                    success: true,
                    result: Vec::new(),
                    error: String::new(),
                    exit_code: 0,
                },
            }]),
        ),
        normal(1, 12, Command::AgentDown { agent: agent() }),
    ];
    // Indexes as the log holds them: fill the gaps with blank entries.
    let mut logged = Vec::new();
    for i in 5..=12 {
        logged.push(
            rest.iter()
                .find(|e| e.log_id.index == i)
                .cloned()
                .unwrap_or_else(|| blank(1, i)),
        );
    }
    append(&mut log, logged.clone()).await;
    apply(&mut sm, logged).await;
    assert_eq!(
        *events.told.lock().unwrap(),
        [
            "assigned default 3",
            "assigned default 3",
            "finished default succeeded 5",
            // Task 2 goes back to Pending (its attempt left), the agent is down.
            "agent expired",
        ]
    );
    // One per append made after events were set.
    assert_eq!(events.appends.lock().unwrap().len(), 2);
    // Each sync made at least one of them durable, and every one was.
    let synced = events.synced.lock().unwrap().clone();
    assert!(synced.iter().all(|n| *n >= 1), "{synced:?}");
    assert_eq!(synced.iter().sum::<usize>(), 2, "{synced:?}");
    // The committed index openraft saves is told (clamped to what is durable).
    log.save_committed(Some(log_id(1, 12))).await.unwrap();
    assert_eq!(*events.committed.lock().unwrap(), [12]);
}
