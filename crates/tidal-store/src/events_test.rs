//! The events [`Watch`] reads match a full comparison of the state before
//! and after each entry, for a command of every kind.

use openraft::EntryPayload;
use tidal_core::command::ApplyCtx;
use tidal_core::model::{AgentState, TaskStateKind};
use tidal_core::{Body, Command, State, TaskId};

use super::{Seen, Watch};
use crate::fuzz::samples;

/// What an entry did, from every task and agent before and after it.
fn oracle(before: &State, after: &State, command: &Command, index: u64, time: u64) -> Vec<Seen> {
    let mut seen = Vec::new();
    for task in after.tasks_after(None) {
        let since = time.saturating_sub(task.created_ms);
        if task.state.holder().is_some_and(|(_, t)| t == index) {
            seen.push(Seen::Assigned {
                queue: task.spec.queue.clone(),
                waited_ms: since,
            });
        }
        let had_ended = before.task(task.id).is_some_and(|t| t.state.is_terminal());
        if task.state.is_terminal() && !had_ended {
            seen.push(Seen::Finished {
                queue: task.spec.queue.clone(),
                outcome: super::outcome(&task.state),
                took_ms: since,
            });
        }
    }
    if let Command::AgentDown { agent } = command {
        let was = before.agent(agent).map(|a| a.state);
        let is = after.agent(agent).map(|a| a.state);
        if was.is_some_and(|s| s != AgentState::Down) && is == Some(AgentState::Down) {
            seen.push(Seen::AgentExpired);
        }
    }
    seen
}

fn sorted(mut seen: Vec<Seen>) -> Vec<String> {
    let mut out: Vec<String> = seen.drain(..).map(|s| format!("{s:?}")).collect();
    out.sort();
    out
}

/// Applies `commands` as entries from index 3 on, checking each against
/// the oracle; returns everything seen.
fn run(commands: Vec<Command>) -> Vec<Seen> {
    let mut state = State::new();
    let mut all = Vec::new();
    for (i, command) in commands.into_iter().enumerate() {
        let index = 3 + i as u64;
        let time = 1_000 + 10 * index;
        let watch = Watch::before(&state, &command, index, time);
        let before = state.clone();
        // As the samples build their state: every command of every version.
        state.apply(
            command.clone(),
            ApplyCtx {
                log_index: index,
                time_ms: time,
            },
        );
        let seen = watch.after(&state);
        assert_eq!(
            sorted(seen.clone()),
            sorted(oracle(&before, &state, &command, index, time)),
            "entry {index}: {command:?}"
        );
        all.extend(seen);
    }
    all
}

#[test]
fn every_sample_command_is_seen_as_a_full_comparison_sees_it() {
    let commands = samples::entries()
        .into_iter()
        .filter_map(|e| match e.payload {
            EntryPayload::Normal(env) => match env.body {
                Body::Command(c) => Some(c),
                Body::Undecoded { .. } => None,
            },
            _ => None,
        })
        .collect();
    let seen = run(commands);
    // The samples assign and lose an agent (their completions carry
    // tokens of another log): each is seen.
    assert!(seen.iter().any(|s| matches!(s, Seen::Assigned { .. })));
    assert!(seen.contains(&Seen::AgentExpired));
}

fn outcome(success: bool) -> tidal_core::Outcome {
    tidal_core::Outcome {
        success,
        result: Vec::new(),
        error: String::new(),
        exit_code: if success { 0 } else { 1 },
    }
}

#[test]
fn assignments_and_ends_are_timed_from_the_submission_by_the_entries_clock() {
    let agent = "agent-a".to_string();
    let spec = tidal_core::TaskSpec {
        task_type: "t2i".into(),
        queue: "default".into(),
        max_attempts: 1,
        ..Default::default()
    };
    let q1 = tidal_core::TaskSpec {
        queue: "q1".into(),
        ..spec.clone()
    };
    // Entry i (from 3) has time 1000 + 10 * i.
    let seen = run(vec![
        Command::SetQueue {
            name: "q1".into(),
            weight: 1,
            strategy: tidal_core::Strategy::LeastLoaded,
        },
        Command::RegisterAgent(tidal_core::AgentSpec {
            id: agent.clone(),
            task_types: ["t2i".to_string()].into(),
            slots: 8,
            weight: 1,
            ..Default::default()
        }),
        // 5: tasks 1 to 4.
        Command::Submit(vec![spec.clone(), spec.clone(), spec.clone(), spec]),
        // 6: tasks 1 to 4 assigned (token 6).
        Command::Assign((1..=4).map(|t| (TaskId(t), agent.clone())).collect()),
        // 7: task 5, assigned as it is submitted (token 7).
        Command::SubmitPlaced {
            specs: vec![q1],
            place: vec![(0, agent.clone())],
        },
        Command::StartedBatch(vec![(TaskId(1), 6), (TaskId(2), 6), (TaskId(5), 7)]),
        // 9: task 1 succeeds, task 5 fails (its one attempt used).
        Command::Complete(vec![
            tidal_core::Completion {
                task: TaskId(1),
                token: 6,
                outcome: outcome(true),
            },
            tidal_core::Completion {
                task: TaskId(5),
                token: 7,
                outcome: outcome(false),
            },
        ]),
        // 10: task 3 cancelled; a second cancel ends nothing.
        Command::Cancel { task: TaskId(3) },
        Command::Cancel { task: TaskId(3) },
        // 12: tasks 2 and 4 fail: their one attempt is used.
        Command::AgentDown {
            agent: agent.clone(),
        },
        Command::AgentDown { agent },
    ]);
    let assigned = |queue: &str, waited_ms| Seen::Assigned {
        queue: queue.into(),
        waited_ms,
    };
    let finished = |queue: &str, outcome, took_ms| Seen::Finished {
        queue: queue.into(),
        outcome,
        took_ms,
    };
    assert_eq!(
        seen,
        vec![
            assigned("default", 10),
            assigned("default", 10),
            assigned("default", 10),
            assigned("default", 10),
            assigned("q1", 0),
            finished("default", TaskStateKind::Succeeded, 40),
            finished("q1", TaskStateKind::Failed, 20),
            finished("default", TaskStateKind::Cancelled, 50),
            finished("default", TaskStateKind::Failed, 70),
            finished("default", TaskStateKind::Failed, 70),
            // The second AgentDown finds the agent down already.
            Seen::AgentExpired,
        ]
    );
}
