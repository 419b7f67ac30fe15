//! Power-loss test (feature `failpoints`): a child process appends and
//! syncs, saves a vote, then writes more without syncing (the flusher is
//! held at its crash point, so those appends are never made durable) and
//! saves a second vote whose sync is interrupted by a simulated power loss
//! (`store::vote::before_sync=return(power-loss)`). The process drops every
//! unsynced write and aborts. The parent reopens the store: the synced
//! entries and vote are there, the unsynced ones are not, and the store
//! takes new appends. A committed id that sled's own background flush
//! wrote to its file (no fsync) is gone too: sled's files are put back as
//! of the store's last durability sync.
//!
//! Unlike SIGKILL (`crash.rs`), which keeps the page cache, this checks
//! the fsyncs themselves: what survives is only what the store synced.

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::process::{Command as Process, Stdio};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, RaftLogReader};
use tidal_store::Vote;

use crate::common;

const DIR_ENV: &str = "TIDAL_STORE_POWER_LOSS_DIR";

fn vote(term: u64) -> Vote {
    Vote::new_committed(term, 1)
}

/// Polls `fut` once: enough for an append, which writes its entries before
/// it waits for the flush.
fn start<F: Future>(fut: F) {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        matches!(fut.as_mut().poll(&mut cx), Poll::Pending),
        "the append waits for a flush that never comes"
    );
}

/// Child mode: does something only when the parent set `DIR_ENV` (run
/// without it, as part of the suite, it passes at once).
#[test]
fn power_loss_child() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (mut log, _sm) = common::open(Path::new(&dir));
        common::append(&mut log, common::entries(1, 10)).await;
        log.save_vote(&vote(1)).await.expect("save vote 1");

        // From here on nothing of the log is synced.
        tidal_store::crash::arm("store::flush::before_sync", "pause").expect("arm");
        start(log.blocking_append(common::entries(11, 20)));
        let mut reader = log.get_log_reader().await;
        let written = reader.try_get_log_entries(..).await.expect("read");
        assert_eq!(written.len(), 20, "entries 11..=20 written, not synced");
        // Not synced by the store, but written to sled's file by sled's own
        // background flush (its `sync_file_range` is no fsync): wait until
        // it is there, so the power loss has something of sled's to drop.
        let committed = common::log_id(1, 10);
        log.save_committed(Some(committed))
            .await
            .expect("save committed");
        let encoded = tidal_store::codec::encode("committed", &committed).expect("encode");
        let db = Path::new(&dir).join("db");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read(&db)
            .expect("read sled's file")
            .windows(encoded.len())
            .any(|w| w == encoded)
        {
            assert!(
                Instant::now() < deadline,
                "sled never wrote the committed id"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Written to sled, not synced: the power loss hits before the sync.
        tidal_store::crash::arm(
            "store::vote::before_sync",
            &format!("return({})", tidal_store::crash::POWER_LOSS_ARG),
        )
        .expect("arm");
        let _ = log.save_vote(&vote(2)).await;
        unreachable!("the power loss aborts the process");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_loss_drops_unsynced_writes_and_keeps_synced_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    let out = Process::new(exe)
        .args([
            "power_loss::power_loss_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_ENV, dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run the child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc_sigabrt()),
        "the child aborts: {}\n{stderr}",
        out.status
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with("power loss: the log"))
        .unwrap_or_else(|| panic!("the child reports its power loss:\n{stderr}"));
    assert!(
        line.contains("entries up to 20 written, up to 10 kept"),
        "{line}"
    );
    eprintln!("{line}");

    let (mut log, _sm) = common::reopen(dir.path());
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(
        state.last_log_id,
        Some(common::log_id(1, 10)),
        "synced entries kept, unsynced ones dropped"
    );
    let entries = common::read_all(&mut log).await;
    assert_eq!(
        entries.iter().map(|e| e.log_id).collect::<Vec<_>>(),
        common::entries(1, 10)
            .iter()
            .map(|e| e.log_id)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        log.read_vote().await.expect("read vote"),
        Some(vote(1)),
        "the synced vote, not the one whose sync was cut"
    );
    assert_eq!(
        log.read_committed().await.expect("read committed"),
        None,
        "the committed id was written to sled's file but never synced"
    );

    // The store works on: appends in a new term, durable across a reopen.
    let next: Vec<_> = (11..=12)
        .map(|i| {
            let mut e = common::entries(i, i).remove(0);
            e.log_id.leader_id = CommittedLeaderId::new(3, 1);
            e
        })
        .collect();
    common::append(&mut log, next).await;
    log.save_vote(&vote(3)).await.expect("save vote 3");
    drop(log);
    drop(_sm);
    let (mut log, _sm) = common::reopen(dir.path());
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_log_id.map(|id| id.index), Some(12));
    assert_eq!(log.read_vote().await.expect("read vote"), Some(vote(3)));
}

/// SIGABRT (6 on Linux, and every platform this builds for).
fn libc_sigabrt() -> i32 {
    6
}
