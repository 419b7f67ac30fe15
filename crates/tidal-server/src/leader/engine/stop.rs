//! Stop reports: a task its draining agent stopped is requeued without spending an attempt, on the word of the session that holds it only.
//!
//! A stop report counts only from the session that holds the assignment
//! (reported it running when it registered, or had it pushed): one from a
//! process that never ran it proves nothing about the process that may (the
//! one whose id it took over, or the one an earlier leadership knew), so it
//! is refused without a proposal; the session's delayed regrant
//! (`regrant.rs`) settles that task once that process's lease has
//! ended. A held one is proposed as `Stopped`, and the agent hears the
//! entry's verdict as a `CompletionAck`.

use tidal_core::command::{Command, Response};
use tidal_core::model::{AgentId, FencingToken, TaskId};

use super::action::{Action, ToAgent};
use super::ctx::{Ctx, Purpose, StopReport as Report};
use super::event::ProposeError;
use super::sessions::SessionTable;

/// The answer to a report on the session it came on.
fn ack(
    cx: &mut Ctx,
    agent: AgentId,
    generation: u64,
    task_id: String,
    token: FencingToken,
    accepted: bool,
    reason: String,
) {
    cx.out.push(Action::Send {
        agent,
        generation,
        msg: ToAgent::CompletionAck {
            task_id,
            token,
            accepted,
            reason,
        },
    });
}

/// The agent's session `generation` reports the task `task_id` under
/// `token` stopped: proposed as `Stopped` if that session holds it,
/// refused otherwise.
pub(crate) fn reported(
    cx: &mut Ctx,
    table: &SessionTable,
    agent: AgentId,
    generation: u64,
    task_id: String,
    token: FencingToken,
) {
    let Ok(task) = task_id.parse::<TaskId>() else {
        let reason = format!("invalid task id {task_id:?}");
        ack(cx, agent, generation, task_id, token, false, reason);
        return;
    };
    if !table.holds(&agent, generation, task, token) {
        tracing::warn!(agent_id = %agent, task_id = %task, token, "refusing a stop report for a task this session never held");
        let reason = format!(
            "this session never held task {task} under token {token}: a stop report counts only from \
             the session that runs it"
        );
        ack(cx, agent, generation, task_id, token, false, reason);
        return;
    }
    cx.out.propose(
        Purpose::Stopped(Report {
            agent,
            generation,
            task_id,
            task,
            token,
        }),
        Command::Stopped(vec![(task, token)]),
    );
}

/// The `Stopped` entry committed: the agent hears its verdict, and the
/// dispatcher looks (the task may be pending again).
pub(crate) fn committed(cx: &mut Ctx, report: Report, index: u64, response: Response) {
    let Report {
        agent,
        generation,
        task_id,
        task,
        token,
    } = report;
    let Response::Stopped(mut results) = response else {
        tracing::warn!(task_id = %task, response = ?response, "unexpected response to stopped");
        return;
    };
    let (accepted, reason) = match results.pop() {
        Some(Ok(())) => {
            tracing::info!(task_id = %task, token, log_index = index, "task stopped by its draining agent: requeued without spending an attempt");
            (true, String::new())
        }
        Some(Err(r)) => (false, r.to_string()),
        None => (false, "no result".into()),
    };
    ack(cx, agent, generation, task_id, token, accepted, reason);
    cx.out.wake_dispatch();
}

/// The `Stopped` entry did not commit. Refused for good when the cluster's
/// format version lacks stops (an agent draining itself during a rolling
/// upgrade), so the agent does not hold the report forever: the task stays
/// held until the agent's lease ends, then is requeued. Otherwise no answer:
/// the agent resends the report on its next session.
pub(crate) fn not_committed(cx: &mut Ctx, report: Report, error: &ProposeError) {
    let Report {
        agent,
        generation,
        task_id,
        task,
        token,
    } = report;
    if error.failed_precondition {
        tracing::info!(task_id = %task, reason = %error, "stop report refused");
        ack(
            cx,
            agent,
            generation,
            task_id,
            token,
            false,
            error.text.clone(),
        );
    } else {
        tracing::debug!(task_id = %task, error = %error, "stop report not committed");
    }
}
