//! Tests of the folds: what command a batch of agents' reports becomes.

use tidal_core::command::{Command, Completion, Finished, Rejection, Response};
use tidal_core::model::{Outcome, TaskId};

use super::{CheckpointsFold, CompletionsFold, Fold, Report};

fn outcome(success: bool) -> Outcome {
    Outcome {
        success,
        result: b"r".to_vec(),
        error: if success { "" } else { "exit 1" }.into(),
        exit_code: if success { 0 } else { 1 },
    }
}

fn finished(task: u64, timed_out: bool) -> Report {
    Report::Finished(Finished {
        task: TaskId(task),
        token: task + 10,
        outcome: outcome(false),
        timed_out,
    })
}

fn complete(task: u64) -> Report {
    Report::Complete(Completion {
        task: TaskId(task),
        token: task + 10,
        outcome: outcome(true),
    })
}

#[test]
fn completions_from_version_4_are_finished_with_their_timeout() {
    let cmd = CompletionsFold.command(vec![finished(1, true), finished(2, false)]);
    let Command::Finished(list) = cmd else {
        panic!("{cmd:?}")
    };
    assert_eq!(
        list.iter()
            .map(|f| (f.task, f.token, f.timed_out, f.outcome.exit_code))
            .collect::<Vec<_>>(),
        vec![(TaskId(1), 11, true, 1), (TaskId(2), 12, false, 1)]
    );
}

#[test]
fn completions_below_version_4_stay_complete() {
    let cmd = CompletionsFold.command(vec![complete(1), complete(2)]);
    assert_eq!(
        cmd,
        Command::Complete(vec![
            Completion {
                task: TaskId(1),
                token: 11,
                outcome: outcome(true),
            },
            Completion {
                task: TaskId(2),
                token: 12,
                outcome: outcome(true),
            },
        ])
    );
}

#[test]
fn the_two_kinds_of_completion_never_share_an_entry() {
    assert!(CompletionsFold::joins(&complete(1), &complete(2)));
    assert!(CompletionsFold::joins(
        &finished(1, false),
        &finished(2, true)
    ));
    assert!(!CompletionsFold::joins(&complete(1), &finished(2, false)));
    assert!(!CompletionsFold::joins(&finished(1, false), &complete(2)));
    // Both are answered per item.
    let answer = vec![Ok(()), Err(Rejection::TaskNotFound(TaskId(2)))];
    assert_eq!(
        CompletionsFold.results(Response::Completed(answer.clone())),
        Some(answer)
    );
}

#[test]
fn checkpoints_become_one_checkpoint_entry() {
    let items = vec![(TaskId(1), 5, b"a".to_vec()), (TaskId(2), 6, vec![0; 100])];
    assert_eq!(CheckpointsFold::size(&items[1]), 124);
    assert_eq!(
        CheckpointsFold.command(items.clone()),
        Command::Checkpoint(items)
    );
    assert_eq!(
        CheckpointsFold.results(Response::Items(vec![Ok(())])),
        Some(vec![Ok(())])
    );
    assert_eq!(CheckpointsFold.results(Response::Ok), None);
}
