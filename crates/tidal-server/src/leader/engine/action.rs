//! What the engine leaves for its driver to do, and what it publishes for the rest of the node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tidal_core::command::Command;
use tidal_core::dispatch::InFlight;
use tidal_core::forwarding::{DcName, Record};
use tidal_core::lifecycle::Notice;
use tidal_core::model::{AgentId, FencingToken, TaskId};

use super::event::{PeerSummary, ProposalId};
use super::sessions::{Closed, Peer};

/// A message for an agent's session; the gRPC edge builds its wire form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToAgent {
    /// Run the task under `token` (the edge reads its spec and attempt from
    /// the applied state).
    Assign { task: TaskId, token: FencingToken },
    /// Stop running the task under `token`, for good (`task_id` as the agent
    /// named it, or the task's id).
    Cancel {
        task_id: String,
        token: FencingToken,
        reason: String,
    },
    /// Stop the task and report it stopped: a drain's deadline passed
    /// (`preempt` is `None`), or online work preempts it (`preempt` says
    /// how its worker is told, and its grace in ms, defaults filled in).
    Stop {
        task: TaskId,
        token: FencingToken,
        reason: String,
        preempt: Option<(Notice, u64)>,
    },
    /// Pause the task running under `token` in place (SIGSTOP of its
    /// process group) for the online work that preempted it.
    Suspend { task: TaskId, token: FencingToken },
    /// Continue the task suspended under `token` (SIGCONT).
    Resume { task: TaskId, token: FencingToken },
    /// The heartbeat `seq` renewed the lease.
    HeartbeatAck { seq: u64 },
    /// The answer to a completion (or stop) report of the task (`task_id` as
    /// the agent named it) under `token`.
    CompletionAck {
        task_id: String,
        token: FencingToken,
        accepted: bool,
        reason: String,
    },
    /// The answer to the checkpoint `seq` of the task (`task_id` as the
    /// agent named it) under `token`: committed, or refused for good.
    CheckpointAck {
        task_id: String,
        token: FencingToken,
        seq: u64,
        accepted: bool,
        reason: String,
    },
}

/// What the rest of the node reads of the engine between events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// Agents with a live session: the only ones placement may use.
    pub connected: Arc<BTreeSet<AgentId>>,
    /// The dispatch round proposed and not answered yet (empty if none),
    /// for eager placement to plan around: published before it is proposed.
    pub dispatching: Arc<InFlight>,
    /// Per connected agent, the models it reported warm (loaded now) in its
    /// latest heartbeat or registration.
    pub warm: Arc<BTreeMap<AgentId, BTreeSet<String>>>,
    /// Per queue, assignments committed per second over the last minute, in
    /// thousandths (for `task explain`'s estimated start).
    pub queue_rate_milli: Arc<BTreeMap<String, u64>>,
    /// Per queue, the latest dispatch round's picks and the queue's share of
    /// that round: (picked, share).
    pub last_round: Arc<BTreeMap<String, (u32, u32)>>,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Propose `command`; answer with `Committed` or `NotCommitted` and `id`.
    Propose { id: ProposalId, command: Command },
    /// Send these outbox records (maybe none) to a peer DC, with this DC's
    /// summary; answer with [`Event::PeerAnswer`].
    Exchange {
        dc: DcName,
        records: Vec<(u64, Record)>,
    },
    /// Record what the link to a peer DC learned (the node's peer table).
    PeerLink { dc: DcName, news: LinkNews },
    // Handlers add their actions below this line: to agent sessions (Send,
    // Close, Attached), to peer DCs (Exchange, PeerLink), Publish.
    /// The answer to `SessionOpened`: the session's generation, and the
    /// process it displaced.
    Attached {
        agent: AgentId,
        generation: u64,
        displaced: Option<Peer>,
    },
    /// Close the agent's session of `generation` (it ends with `why`).
    Close {
        agent: AgentId,
        generation: u64,
        why: Closed,
    },
    /// The agent's session of `generation` ended on its own: drop its
    /// sending end.
    Detach { agent: AgentId, generation: u64 },
    /// Send `msg` on the agent's session of `generation` (dropped if that
    /// session is gone).
    Send {
        agent: AgentId,
        generation: u64,
        msg: ToAgent,
    },
    /// The view changed: publish it.
    Publish(View),
}

/// What the link to a peer DC learned (for the node's peer table).
#[derive(Clone, Debug, PartialEq)]
pub enum LinkNews {
    /// The peer answered.
    Up,
    /// The exchange failed, or the peer lost records: why.
    Down(String),
    /// Its summary, from its answer.
    Summary(PeerSummary),
}
