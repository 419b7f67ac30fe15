//! A table of held × reported × current holder -> what a new session regrants and cancels.

use super::*;
use crate::command::{Command, Response};
use crate::state::tests::{agent, task, Log};

/// a1 holds t1 (assigned) and t2 (running); a2 holds t3; t4 is pending;
/// t5 finished on a1. Returns the log and each task's id and token.
fn fixture() -> (Log, [(TaskId, u64); 5]) {
    let mut log = Log::new();
    log.register(agent("a1", 4));
    log.register(agent("a2", 4));
    let ids: Vec<TaskId> = (0..5)
        .map(|_| log.submit(task("t2i")).unwrap().id)
        .collect();
    let t1 = log.assign(ids[0], "a1").unwrap().token;
    let t2 = log.assign(ids[1], "a1").unwrap().token;
    assert_eq!(
        log.apply(Command::Started {
            task: ids[1],
            token: t2
        }),
        Response::Ok
    );
    let t3 = log.assign(ids[2], "a2").unwrap().token;
    let t5 = log.assign(ids[4], "a1").unwrap().token;
    log.complete(ids[4], t5, true).unwrap();
    (
        log,
        [
            (ids[0], t1),
            (ids[1], t2),
            (ids[2], t3),
            (ids[3], 0),
            (ids[4], t5),
        ],
    )
}

#[test]
fn settle_table() {
    let (log, t) = fixture();
    let [t1, t2, t3, t4, t5] = t;
    let id = |(task, _): (TaskId, u64)| task.to_string();
    let rep = |(task, token): (TaskId, u64)| (task.to_string(), token);
    // (what the row shows, agent, reported, regrant, cancel)
    type Row = (
        &'static str,
        &'static str,
        Vec<(String, u64)>,
        Vec<(TaskId, u64)>,
        Vec<(String, u64)>,
    );
    let rows: Vec<Row> = vec![
        (
            "reports everything it holds: nothing to do",
            "a1",
            vec![rep(t1), rep(t2)],
            vec![],
            vec![],
        ),
        (
            "reports nothing (a process that took the id over, or lost its tasks): all regranted",
            "a1",
            vec![],
            vec![t1, t2],
            vec![],
        ),
        (
            "reports one of two: the other regranted",
            "a1",
            vec![rep(t2)],
            vec![t1],
            vec![],
        ),
        (
            "runs a stale token of a task it holds: regranted under a new one, the stale run cancelled",
            "a1",
            vec![(id(t1), t1.1 - 1), rep(t2)],
            vec![t1],
            vec![(id(t1), t1.1 - 1)],
        ),
        (
            "runs a task another agent holds: cancelled, and what it holds is regranted",
            "a1",
            vec![rep(t3)],
            vec![t1, t2],
            vec![rep(t3)],
        ),
        (
            "runs a pending task, a finished one, and one that does not exist: all cancelled",
            "a1",
            vec![rep(t1), rep(t2), rep(t4), rep(t5), ("t0000000999".into(), 7)],
            vec![],
            vec![rep(t4), rep(t5), ("t0000000999".into(), 7)],
        ),
        (
            "an id that does not parse is cancelled as sent",
            "a1",
            vec![rep(t1), rep(t2), ("garbage".into(), 3)],
            vec![],
            vec![("garbage".into(), 3)],
        ),
        (
            "a parseable id not in canonical form is no report of the held task, and not cancelled",
            "a1",
            vec![(t1.0 .0.to_string(), t1.1), rep(t2)],
            vec![t1],
            vec![],
        ),
        (
            "an agent the state does not know holds nothing: what it runs is cancelled",
            "a9",
            vec![rep(t1)],
            vec![],
            vec![rep(t1)],
        ),
        (
            "a run reported twice is cancelled twice, in the order reported",
            "a2",
            vec![rep(t1), rep(t3), rep(t1)],
            vec![],
            vec![rep(t1), rep(t1)],
        ),
    ];
    for (what, agent, reported, regrant, cancel) in rows {
        assert_eq!(
            settle(&log.state, agent, &reported),
            Settlement { regrant, cancel },
            "{what}"
        );
    }
}

#[test]
fn fenced_runs_among_the_regrant_are_those_named_with_their_token() {
    let regrant = vec![(TaskId(1), 3), (TaskId(2), 3), (TaskId(4), 8)];
    let fenced = vec![
        (TaskId(2).to_string(), 3),
        (TaskId(1).to_string(), 2),
        ("x".to_string(), 3),
        (TaskId(9).to_string(), 8),
    ];
    assert_eq!(ran_here(&regrant, &fenced), vec![(TaskId(2), 3)]);
    assert_eq!(ran_here(&regrant, &[]), vec![]);
}
