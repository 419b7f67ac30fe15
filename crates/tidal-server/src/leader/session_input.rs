//! What an agent session asks of its leadership's driver, and the sending ends it hands over.

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
        /// The runs the process killed when it fenced itself (Register.fenced).
        fenced: Vec<(String, FencingToken)>,
        /// The models the process has loaded (Register.warm_models,
        /// validated and bounded).
        warm_models: Vec<String>,
        outbound: Outbound,
        reply: oneshot::Sender<Opened>,
    },
    /// A heartbeat: renewed (and acknowledged on the session) only while a
    /// majority heard this leader within its lease.
    Heartbeat {
        agent: String,
        generation: u64,
        seq: u64,
        /// The models the agent has loaded now (validated and bounded).
        warm_models: Vec<String>,
    },
    /// The session ended on its own.
    Closed { agent: String, generation: u64 },
    /// The agent reports the task (`task_id` as it named it) under `token`
    /// stopped: the engine answers on the session.
    StopReported {
        agent: String,
        generation: u64,
        task_id: String,
        token: FencingToken,
    },
    /// Which of these assignments the agent's session `generation` holds
    /// (reported in its Register or pushed on it): the only ones whose
    /// start or completion it may report. Answered in order.
    HoldsAll {
        agent: String,
        generation: u64,
        items: Vec<(TaskId, FencingToken)>,
        reply: oneshot::Sender<Vec<bool>>,
    },
    /// Whether this agent process was displaced by another under its id.
    WasDisplaced {
        agent: String,
        instance: String,
        reply: oneshot::Sender<bool>,
    },
}
