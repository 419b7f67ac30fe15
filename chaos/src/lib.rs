//! tidal-chaos: a fault-injection harness in the shape of etcd's robustness
//! tests and Jepsen. It runs real `tidal` processes (servers and agents)
//! behind a fault proxy, drives a workload of clients that records every
//! operation, plays one scenario's faults, heals, and checks the recorded
//! history offline against the invariants of RELIABILITY.md.
//!
//! # Modules
//!
//! - [`proxy`]: the fault layer, a TCP proxy in front of every node that
//!   blocks, delays or stalls each directed link.
//! - [`netns`]: the other fault layer (`--net netns`, root): every node and
//!   agent in its own network namespace, faults as nftables rules that drop
//!   packets silently.
//! - [`cluster`]: the node and agent processes; kill, pause, restart.
//! - [`sink`]: the token-checking resource the workers write to.
//! - [`forger`]: forged peer traffic with the wrong certificates (S29).
//! - [`workload`]: clients submitting, reading and cancelling tasks.
//! - [`observer`]: every node's status over time.
//! - [`history`]: the JSON-lines history of all of the above.
//! - [`scenarios`]: the scenarios and the nemesis that plays them.
//! - [`check`]: the checkers, one file per invariant.
//! - [`runner`]: one run from start to report.
//!
//! # Dependency rule
//!
//! Speaks to tidal only through `tidal-client` and the `tidal` binary, as a
//! user's own harness would, and, for S29's forged peer traffic, through
//! `tidal-proto`'s Raft client (what anyone can build from proto/raft.proto);
//! never depends on the server or the core.

pub mod check;
pub mod cluster;
pub mod forger;
pub mod history;
pub mod link;
pub mod net;
pub mod netns;
pub mod observer;
pub mod proxy;
pub mod runner;
pub mod scenarios;
pub mod sink;
pub mod workload;

pub use runner::{run, Report, RunOptions};
pub use scenarios::{find, Scenario, ALL as SCENARIOS};
