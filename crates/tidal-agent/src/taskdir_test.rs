//! Task directory tests: real files in a real temporary directory.

use std::sync::Arc;

use super::*;

#[test]
fn a_task_directory_holds_its_checkpoint_and_goes_with_its_parent() {
    let run = Arc::new(RunDir::create().unwrap());
    let base = run.path().to_path_buf();
    let mode = fs::metadata(&base).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o700, "the agent's user only");
    let a = run.task("t/../1", 5, b"state").unwrap();
    let b = run.task("t/../1", 5, b"").unwrap();
    assert_ne!(a.path(), b.path(), "no two attempts share a directory");
    assert_eq!(a.path().parent(), Some(base.as_path()), "no escape by name");
    assert_eq!(fs::read(a.checkpoint_file()).unwrap(), b"state");
    assert!(!b.checkpoint_file().exists(), "no checkpoint, no file");
    assert!(!a.preempt_file().exists());
    a.notify_preempt(1_700_000_000_123).unwrap();
    assert_eq!(
        fs::read_to_string(a.preempt_file()).unwrap(),
        "1700000000123\n"
    );
    a.notify_suspend(true).unwrap();
    assert_eq!(fs::read_to_string(a.preempt_file()).unwrap(), "suspend\n");
    a.notify_suspend(false).unwrap();
    assert_eq!(fs::read_to_string(a.preempt_file()).unwrap(), "resume\n");
    a.remove();
    assert!(!a.path().exists());
    drop((a, run));
    assert!(base.exists(), "held by the other task's directory");
    drop(b);
    assert!(!base.exists(), "removed with the last one");
}

#[test]
fn the_watch_sees_each_new_checkpoint_once() {
    let run = Arc::new(RunDir::create().unwrap());
    let dir = run.task("t1", 1, b"start").unwrap();
    let path = dir.checkpoint_file();
    let mut w = CheckpointWatch::new(path.clone(), b"start");
    assert_eq!(w.poll(), Seen::Nothing, "what the agent wrote is not news");
    // Written aside and renamed into place, as workers should.
    let aside = dir.path().join("aside");
    fs::write(&aside, b"one").unwrap();
    fs::rename(&aside, &path).unwrap();
    assert_eq!(w.poll(), Seen::New(b"one".to_vec()));
    assert_eq!(w.poll(), Seen::Nothing);
    fs::write(&path, vec![7u8; CHECKPOINT_MAX_BYTES + 1]).unwrap();
    assert_eq!(w.poll(), Seen::TooLarge(CHECKPOINT_MAX_BYTES as u64 + 1));
    fs::write(&path, b"two").unwrap();
    assert_eq!(w.poll(), Seen::New(b"two".to_vec()));
    fs::write(&path, b"").unwrap();
    assert_eq!(
        w.poll(),
        Seen::Nothing,
        "empty: no checkpoint (being rewritten)"
    );
    fs::remove_file(&path).unwrap();
    assert_eq!(w.poll(), Seen::Nothing, "gone: nothing new");
    fs::write(&path, b"two").unwrap();
    assert_eq!(w.poll(), Seen::Nothing, "the same contents again");
}

#[test]
fn an_agent_removes_what_agents_that_are_gone_left_behind() {
    let ns = pid_namespace().expect("a pid namespace in /proc");
    let base = tempfile::tempdir().unwrap();
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let me = std::process::id();
    let stale = base.path().join(format!("tidal-agent-{ns}-{dead_pid}-1f"));
    fs::create_dir(&stale).unwrap();
    fs::write(stale.join("checkpoint"), b"left").unwrap();
    // Kept: a live agent's (this process, and pid 1), another pid
    // namespace's, names that are not an agent's.
    let kept = [
        base.path().join(format!("tidal-agent-{ns}-{me}-2a")),
        base.path().join(format!("tidal-agent-{ns}-1-3b")),
        base.path()
            .join(format!("tidal-agent-{}-{dead_pid}-5d", ns + 1)),
        base.path().join(format!("tidal-agent-{ns}-{dead_pid}-zz")),
        base.path().join(format!("tidal-agent-{ns}-{dead_pid}")),
    ];
    for k in &kept {
        fs::create_dir(k).unwrap();
    }
    let file = base.path().join(format!("tidal-agent-{ns}-{dead_pid}-4c"));
    fs::write(&file, b"").unwrap();
    let run = RunDir::create_in(base.path()).unwrap();
    assert!(!stale.exists(), "a gone agent's directory is removed");
    for k in &kept {
        assert!(k.exists(), "{} kept", k.display());
    }
    assert!(file.exists(), "only directories");
    let own = run.path().file_name().unwrap().to_str().unwrap();
    assert!(own.starts_with(&format!("tidal-agent-{ns}-{me}-")), "{own}");
}
