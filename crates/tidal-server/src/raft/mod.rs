//! Raft beside openraft: the transport, elections with a pre-vote, leadership transfer, check-quorum.
//!
//! | file | what it is | with openraft 0.10 |
//! |---|---|---|
//! | `pre_vote.rs` | the pre-vote's rules: a pure state machine, `tick(now)` / `step(outcome)`, the time in ms and a seed passed in | goes: `Config::enable_pre_vote` |
//! | `elections.rs` | the driver of `pre_vote.rs`: reads openraft's state, sends and answers pre-votes, starts openraft's election; openraft's own election timer is off (`enable_elect = false`, node.rs) | goes: openraft elects on its own timer again (`enable_elect` back on) |
//! | [`transfer`] | handing leadership over (`tidal cluster transfer-leader`, a leader's graceful shutdown): holds the other voters' elections, asks the target to campaign | its mechanism goes (`Raft::trigger().transfer_leader`, `Raft::handle_transfer_leader` on the target); the choice of a target ([`transfer::best_target`]) and the write gate stay |
//! | [`quorum`] | check-quorum and the leader's lease, which tidal's leader-only memory (agent leases) rests on | stays |
//! | [`network`] | openraft's RPCs over tonic, client side; when each peer last accepted this node's entries | stays (adds the transfer RPC) |
//! | [`alive`] | a leader whose core waits for its disk (openraft 0.9 waits for each append's sync) tells its voters it lives (`Raft/LeaderAlive`), so a disk stall costs no election | goes: openraft 0.10 does not wait for the disk in its core (`IOFlushed`) |
//! | [`vote_gate`] | a node that started on an empty store votes only once it holds what was committed when it came back | stays |
//! | [`contact`] | when this node last heard from a leader (openraft's metrics do not say) | stays |
//! | [`member_addr`] | a member's client and peer addresses in `BasicNode.addr` (`CLIENT` or `CLIENT\|PEER`) | stays |
//!
//! `pre_vote.rs`, `elections.rs` and `transfer.rs` are workarounds for
//! openraft 0.9, which has neither a pre-vote nor a leadership transfer.
//! So are the hooks in `grpc::raft_service` (the server side of the
//! transport): its `pre_vote`, `hold_elections` and `campaign` handlers
//! (and their messages in proto/raft.proto) and the `may_vote` check before
//! a vote call into [`Elections`]; with 0.10 the first three give way to
//! openraft's own messages and the check stays with the vote gate. Its
//! `append_entries` handler feeds the [`vote_gate`] and touches the
//! [`contact`]; both stay. openraft 0.10 needs Rust 1.88, the workspace's
//! `rust-version` already.
//!
//! The fence: of elections and transfer, outside this folder only
//! [`Elections`] (made in node.rs, run by lib.rs, called by
//! `grpc::raft_service`), [`openraft_timeouts`] and [`transfer`]'s entry
//! points are used (the transfer, its choice of a target, the reach bound,
//! and `peer`, a client of another server's Raft service that also tells a
//! removed node). `elections` and `pre_vote` are private modules, so
//! nothing outside `raft/` names them; nothing in `raft/` imports
//! `crate::leader` or `crate::grpc`.

pub mod alive;
pub mod contact;
mod elections;
pub mod member_addr;
pub mod network;
mod pre_vote;
pub mod quorum;
pub mod transfer;
pub mod vote_gate;

pub use elections::{openraft_timeouts, Elections};
