//! Helpers shared by the test modules: entries, stores, sample commands.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::storage::{RaftLogStorageExt, RaftStateMachine};
use openraft::{BasicNode, CommittedLeaderId, EntryPayload};
use tidal_core::{AgentSpec, Command, Envelope, Strategy, TaskSpec};
use tidal_store::{Entry, LogId, LogStore, Membership, StateMachineStore, StoreOptions};

pub fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

pub fn normal(term: u64, index: u64, command: Command) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Envelope::new(1_000 + index, command)),
    }
}

pub fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

pub fn membership(term: u64, index: u64, voters: &[u64]) -> Entry {
    let voters: BTreeSet<u64> = voters.iter().copied().collect();
    let nodes: BTreeMap<u64, BasicNode> = voters
        .iter()
        .map(|id| (*id, BasicNode::new(format!("127.0.0.1:{}", 7000 + id))))
        .collect();
    let m = Membership::new(vec![voters], nodes);
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(m),
    }
}

/// The command of test entry `index`: a deterministic mix of queue updates,
/// agent registrations and submits, so the applied state is not trivial.
pub fn command(index: u64) -> Command {
    match index % 4 {
        0 => Command::SetQueue {
            name: format!("q{}", index % 3),
            weight: (index % 7 + 1) as u32,
            strategy: Strategy::WeightedRoundRobin,
        },
        1 => Command::RegisterAgent(AgentSpec {
            id: format!("agent-{}", index % 5),
            dc: "dc1".to_string(),
            task_types: ["t2i".to_string()].into_iter().collect(),
            slots: 4,
            weight: 1,
            ..Default::default()
        }),
        _ => Command::Submit(vec![TaskSpec {
            task_type: "t2i".to_string(),
            idempotency_key: Some(format!("key-{index}")),
            payload: index.to_be_bytes().to_vec(),
            tenant: "alice".to_string(),
            ..Default::default()
        }]),
    }
}

/// Test entries `from..=to` in term 1: entry 1 a membership entry, entry 2
/// the leader's blank entry, the rest commands.
pub fn entries(from: u64, to: u64) -> Vec<Entry> {
    (from..=to)
        .map(|i| match i {
            1 => membership(1, 1, &[1, 2, 3]),
            2 => blank(1, 2),
            _ => normal(1, i, command(i)),
        })
        .collect()
}

pub fn open(dir: &Path) -> (LogStore, StateMachineStore) {
    tidal_store::open(dir, StoreOptions::default()).expect("open the store")
}

pub async fn append(log: &mut LogStore, entries: Vec<Entry>) {
    log.blocking_append(entries).await.expect("append");
}

pub async fn apply(sm: &mut StateMachineStore, entries: Vec<Entry>) {
    let n = entries.len();
    let responses = sm.apply(entries).await.expect("apply");
    assert_eq!(responses.len(), n);
}

pub async fn read_all(log: &mut LogStore) -> Vec<Entry> {
    use openraft::RaftLogReader;
    log.try_get_log_entries(..).await.expect("read the log")
}

/// Reopening in the same process needs sled's file lock, which the dropped
/// handles release asynchronously on some paths: retry briefly.
pub fn reopen(dir: &Path) -> (LogStore, StateMachineStore) {
    let mut last_err = None;
    for _ in 0..50 {
        match tidal_store::open(dir, StoreOptions::default()) {
            Ok(stores) => return stores,
            Err(e) if e.to_string().contains("lock") => {
                last_err = Some(e);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!("reopen: {e}"),
        }
    }
    panic!("reopen: {last_err:?}")
}
