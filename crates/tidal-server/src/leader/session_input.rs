//! What an agent session asks of its leadership's driver, and the sending ends it hands over.

use std::time::Instant;

use tidal_core::model::{FencingToken, TaskId};
use tokio::sync::{mpsc, oneshot, watch};

use super::engine::{Closed, Peer, ToAgent};

/// The sending ends of one agent session: its messages, and its close.
#[derive(Debug)]
pub struct Outbound {
    pub tx: mpsc::UnboundedSender<ToAgent>,
    /// Becomes `Some` when the leader closes the session.
    pub close: watch::Sender<Option<Closed>>,
}

/// A session just attached (the engine's `Attached`).
#[derive(Debug)]
pub struct Opened {
    pub generation: u64,
    /// The other agent process whose live session this one displaced.
    pub displaced: Option<Peer>,
    /// Assignments of this agent that the process did not report running:
    /// to regrant under new tokens.
    pub regrant: Vec<(TaskId, FencingToken)>,
    /// Another process may still run them until then: regrant no earlier.
    pub regrant_at: Option<Instant>,
    /// Another known agent process held the id: count them as started first.
    pub taken_over: bool,
}

/// What an agent session asks of the driver; answers come on the oneshots.
#[derive(Debug)]
pub enum SessionInput {
    /// The agent registered: attach its session (answered with [`Opened`]).
    Open {
        agent: String,
        peer: Peer,
        /// The runs the process reported, task ids as it sent them.
        reported: Vec<(String, FencingToken)>,
        outbound: Outbound,
        reply: oneshot::Sender<Opened>,
    },
    /// A heartbeat: renewed (and acknowledged on the session) only while a
    /// majority heard this leader within its lease.
    Heartbeat {
        agent: String,
        generation: u64,
        seq: u64,
    },
    /// The session ended on its own.
    Closed { agent: String, generation: u64 },
    /// Whether the session holds the assignment (reported or pushed on it).
    Holds {
        agent: String,
        generation: u64,
        task: TaskId,
        token: FencingToken,
        reply: oneshot::Sender<bool>,
    },
    /// Whether this agent process was displaced by another under its id.
    WasDisplaced {
        agent: String,
        instance: String,
        reply: oneshot::Sender<bool>,
    },
}
