//! Parent-death signals: a process started from a thread that then ends
//! keeps running, because the kit's spawner thread forked it.

use std::os::unix::process::ExitStatusExt;

use super::*;

#[tokio::test]
async fn a_process_started_from_a_thread_that_ends_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sleep.log");
    let (mut p, tid) = std::thread::spawn(move || {
        let mut p = Proc::new("sleep", Path::new("sleep"), vec!["60".into()], &log);
        p.start().unwrap();
        // SAFETY: gettid(2) has no memory effects.
        (p, unsafe { libc::gettid() })
    })
    .join()
    .unwrap();
    // The kernel sends the parent-death signals of a thread's children
    // before it removes the thread's /proc entry.
    let task = PathBuf::from(format!("/proc/self/task/{tid}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while task.exists() {
        assert!(Instant::now() < deadline, "thread {tid} never went away");
        sleep(EXIT_POLL).await;
    }
    // Had the thread's end sent SIGKILL, it would be the cause of death.
    p.terminate();
    let status = p.wait_exit(Duration::from_secs(10)).await.expect("exits");
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
}
