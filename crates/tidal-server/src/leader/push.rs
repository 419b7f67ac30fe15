//! Hands committed assignments to the leader engine, which pushes each on its agent's session.

use tidal_core::command::Granted;

use super::engine::Event;
use super::leadership::Leadership;

/// Pushes each granted assignment to its agent's session (the engine's
/// `Granted`). An agent without a session never receives this token: when
/// it registers, the session's reconcile finds the task held and not
/// running and regrants it under a new token.
pub fn push(leadership: &Leadership, granted: &[Granted]) {
    if !granted.is_empty() {
        leadership.notify(Event::Granted(granted.to_vec()));
    }
}
