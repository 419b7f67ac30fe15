//! tidal-core: tidal's domain and its replicated state machine — pure,
//! deterministic, no I/O.
//!
//! Every change to a DC's state is a [`Command`] in a committed Raft entry,
//! applied by [`State::apply`] on every replica. Apply reads time and the
//! fencing token from the entry ([`ApplyCtx`]), iterates in a fixed order and
//! rejects invalid input as data ([`Rejection`]), so replicas that apply the
//! same log end equal (compare them with [`State::digest`]). The leader's
//! dispatcher ([`dispatch::plan`]) is a pure function over the same state.
//!
//! # Modules
//!
//! - [`model`]: the domain nouns — tasks, agents, queues, fencing tokens.
//! - [`command`]: commands (Raft entry payloads), their responses and rejections.
//! - [`state`]: [`State`], the state machine: `apply` and the reads the server needs.
//! - [`access`]: tokens (hashes only), roles, tenants' limits and usage, and
//!   who submitted what: the replicated part of authentication (version 3).
//! - [`lifecycle`]: tasks' declared lives and histories: retries with
//!   backoff, dead letters and replay, deadlines, checkpoints, headroom
//!   (version 4).
//! - [`dispatch`]: the planner: weighted queues, placement strategies, and the
//!   eligibility predicate shared with `Assign` at apply.
//! - [`drain`]: which tasks of draining agents are due to be stopped.
//! - [`reconcile`]: what a registering agent's session regrants and cancels.
//! - [`forwarding`]: cross-DC outboxes, ingest and acks in the state, the
//!   capability summary peers exchange, and the forwarding policy.
//! - [`bounded`]: bincode decoding with a limit on allocation, for bytes from disk or the network.
//! - [`collections`]: the state's persistent ordered maps and sets (O(1) copies).
//! - [`limits`]: stateless size and name checks run at the API edge.
//! - `invariants`: [`State::check_invariants`], the checker tests run after every apply.
//! - `digest`: a hand-written FNV-1a hasher for [`State::digest`].
//! - `testing` (tests and the `testing` feature only): the driver of
//!   scenario files, shared with tidal-server's engine scenarios.
//!
//! # Dependency rule
//!
//! This crate depends on serde, thiserror and imbl (persistent collections) only. It never depends on tokio,
//! tonic, sled, openraft or tracing, never reads a clock, a file or a socket,
//! and uses no randomness outside tests: whatever it needs from the outside
//! world arrives in a command or its [`ApplyCtx`].

pub mod access;
pub mod bounded;
pub mod collections;
pub mod command;
mod digest;
pub mod dispatch;
pub mod drain;
pub mod forwarding;
mod invariants;
pub mod lifecycle;
pub mod limits;
pub mod model;
pub mod placement;
pub mod reconcile;
pub mod state;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod golden_test;
#[cfg(test)]
mod proptests;

pub use command::{
    ApplyCtx, Body, CannotApply, Command, Completion, Envelope, Finished, Granted, Rejection,
    Response, Submitted, FORMAT_VERSION_MAX, FORMAT_VERSION_MIN,
};
pub use dispatch::{plan, DispatchCursor};
pub use limits::Limits;
pub use model::{
    Agent, AgentId, AgentSpec, AgentState, FencingToken, Gpu, Outcome, Priority, Queue, RemoteView,
    Strategy, Task, TaskId, TaskSpec, TaskState, TaskStateKind,
};
pub use state::State;
