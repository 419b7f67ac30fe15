//! The lowercase names users see for API enums (`pending`, `succeeded`, ...),
//! shared by the CLI's output and the chaos harness's history.

use tidal_proto::v1;

/// The name of a `TaskState` value; `unspecified` for unknown numbers.
pub fn task_state_name(s: i32) -> &'static str {
    match v1::TaskState::try_from(s).unwrap_or(v1::TaskState::Unspecified) {
        v1::TaskState::Unspecified => "unspecified",
        v1::TaskState::Pending => "pending",
        v1::TaskState::Assigned => "assigned",
        v1::TaskState::Running => "running",
        v1::TaskState::Succeeded => "succeeded",
        v1::TaskState::Failed => "failed",
        v1::TaskState::Cancelled => "cancelled",
        v1::TaskState::Forwarded => "forwarded",
    }
}

/// Whether a `TaskState` value is final: succeeded, failed or cancelled (a
/// forwarded task shows the final state of the DC that ran it).
pub fn is_terminal(s: i32) -> bool {
    matches!(
        v1::TaskState::try_from(s),
        Ok(v1::TaskState::Succeeded | v1::TaskState::Failed | v1::TaskState::Cancelled)
    )
}
