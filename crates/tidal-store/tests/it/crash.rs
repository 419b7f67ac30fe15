//! Crash test: a child process appends and reports each acknowledged index;
//! the parent SIGKILLs it mid-stream, reopens the store and checks that every
//! acknowledged entry is there and decodes.
//!
//! SIGKILL loses what the process had not written yet but not the kernel's
//! page cache, so this checks the protocol (acknowledge only after the write
//! and flush), not the fsync against power loss.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command as Process, Stdio};

use openraft::storage::RaftLogStorage;
use openraft::EntryPayload;
use tidal_core::{Command, TaskSpec};
use tidal_store::Entry;

use crate::common;

const DIR_ENV: &str = "TIDAL_STORE_CRASH_DIR";
const ACK: &str = "ACK ";
const BATCH: u64 = 3;
/// Crash rounds on the same store, each killing the child after this many
/// acknowledged batches; each round resumes where the last one's log ends.
const KILL_AFTER: [usize; 3] = [40, 7, 25];

/// The entry at `index`; every 10th is larger than sled's blob threshold
/// (segment size / 4 = 128 KiB), so sled's blob files are exercised too.
fn crash_entry(index: u64) -> Entry {
    let size = if index % 10 == 9 { 200 * 1024 } else { 64 };
    let payload: Vec<u8> = (0..size).map(|i| (index as usize + i) as u8).collect();
    common::normal(
        1,
        index,
        Command::Submit(vec![TaskSpec {
            task_type: "t2i".to_string(),
            payload,
            ..Default::default()
        }]),
    )
}

/// Child mode: only does something when the parent set `DIR_ENV` (in a
/// plain test run it returns at once and passes).
#[test]
fn crash_child_appender() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (mut log, _sm) = common::open(Path::new(&dir));
        let mut out = std::io::stdout().lock();
        let state = log.get_log_state().await.expect("log state");
        let mut next = state.last_log_id.map_or(1, |id| id.index + 1);
        // Bounded, in case the parent never kills us.
        for _ in 0..10_000 {
            let batch: Vec<Entry> = (next..next + BATCH).map(crash_entry).collect();
            next += BATCH;
            common::append(&mut log, batch).await;
            // Printed only after the callback fired (blocking_append waits).
            writeln!(out, "{ACK}{}", next - 1).expect("stdout");
            out.flush().expect("stdout");
        }
    });
}

/// Runs the child until it has acknowledged `kill_after` batches, SIGKILLs
/// it, and returns the highest acknowledged index.
fn crash_round(dir: &Path, kill_after: usize) -> u64 {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Process::new(exe)
        .args([
            "crash::crash_child_appender",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();

    let mut acked = 0u64;
    let mut seen = 0;
    for line in lines.by_ref() {
        let line = line.expect("read child stdout");
        if let Some(n) = line.strip_prefix(ACK) {
            acked = n.trim().parse().expect("an index");
            seen += 1;
            if seen == kill_after {
                break;
            }
        }
    }
    assert_eq!(
        seen, kill_after,
        "the child stopped early (acked up to {acked})"
    );
    child.kill().expect("SIGKILL the child");
    // Acks printed before the kill are acknowledged too.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(n) = line.strip_prefix(ACK) {
            acked = n.trim().parse().expect("an index");
        }
    }
    child.wait().expect("reap the child");
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_keeps_every_acknowledged_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    for kill_after in KILL_AFTER {
        let acked = crash_round(dir.path(), kill_after);

        let (mut log, _sm) = common::reopen(dir.path());
        let state = log.get_log_state().await.expect("log state");
        let last = state.last_log_id.expect("a non-empty log").index;
        assert!(
            last >= acked,
            "acknowledged up to {acked} but the log ends at {last}"
        );
        let entries = common::read_all(&mut log).await;
        assert_eq!(
            entries.len() as u64,
            last,
            "entries 1..={last} without holes"
        );
        for (i, entry) in entries.iter().enumerate() {
            let expected = crash_entry(i as u64 + 1);
            assert_eq!(entry.log_id, expected.log_id);
            match (&entry.payload, &expected.payload) {
                (EntryPayload::Normal(got), EntryPayload::Normal(want)) => assert_eq!(got, want),
                _ => panic!("entry {} has the wrong payload kind", i + 1),
            }
        }
        eprintln!("crash round: acknowledged {acked}, recovered {last}");
    }
    let blobs = std::fs::read_dir(dir.path().join("blobs"))
        .expect("sled's blob dir")
        .count();
    eprintln!("crash test: {blobs} sled blob files");
}
