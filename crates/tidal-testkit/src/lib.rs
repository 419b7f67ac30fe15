//! Real `tidal` processes for tests, the chaos harness, tidal-bench and
//! `tidal dev`: one launcher, given the path of the `tidal` binary.
//!
//! Module map:
//! - [`proc`]: one child process: spawned with its output in a log file,
//!   optionally inside a network namespace, killed by the kernel when the
//!   launcher's process dies; killed, terminated, signalled, paused and
//!   resumed, waited for; its log searched.
//! - [`ports`]: server ports that are held, never guessed; `listen.addr`.
//! - [`pki`]: a throwaway CA and certificates (`tidal cert`) for TLS clusters.
//! - [`spec`]: the arguments of `tidal server` and `tidal agent`.
//! - [`cluster`]: N servers in a directory, started, joined, restarted,
//!   with agents; waits for a leader, a caught-up node, connected agents.
//!   By default as users run theirs: mutual TLS ([`ClusterSpec::tls`]) and
//!   `--auth tokens` with an admin and an agent token
//!   ([`ClusterSpec::tokens`]); without tokens it passes `--auth none`, so
//!   it never depends on the server's default.
//! - [`supervisor`]: long-running children stopped agents first, then servers.
//!
//! Depends on tidal-client only (it launches the binary; no server internals).

pub mod cluster;
pub mod pki;
pub mod ports;
pub mod proc;
pub mod spec;
pub mod supervisor;

pub use cluster::{Cluster, ClusterSpec, Node};
pub use pki::Pki;
pub use ports::Port;
pub use proc::Proc;
pub use spec::{AgentSpec, ServerSpec};
pub use supervisor::{Kind, Supervisor};
