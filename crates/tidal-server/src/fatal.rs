//! [`StorageFailed`]: why a server stops when its store cannot write, and
//! [`core_stopped`], which notices it.
//!
//! openraft 0.9 answers any storage error by stopping its core: the metrics
//! then show the state `Shutdown` and `running_state` an error, and every
//! later request fails. A server in that state must not linger answering
//! (DESIGN.md, Storage): `run` stops serving as soon as this is seen and
//! returns [`StorageFailed`], which the binary turns into its exit code.

use std::fmt;

use openraft::error::Fatal;
use openraft::RaftMetrics;
use tidal_store::Failures;

/// The server stopped because its store could not write (disk full, I/O
/// error), or the Raft core stopped on another fatal error. The message
/// names the directory and the operation when the store recorded them.
#[derive(Debug, thiserror::Error)]
#[error("{0}; this server stops")]
pub struct StorageFailed(pub String);

/// Waits until the Raft core has stopped on its own (not by `shutdown`),
/// and returns why, in the store's words when it recorded a failed write.
pub async fn core_stopped(
    mut metrics: tokio::sync::watch::Receiver<RaftMetrics<u64, openraft::BasicNode>>,
    failures: Failures,
) -> StorageFailed {
    let reason = loop {
        if let Err(fatal) = &metrics.borrow_and_update().running_state {
            if !matches!(fatal, Fatal::Stopped) {
                break fatal.to_string();
            }
        }
        // The sender is dropped only when the core's task ended (a panic).
        if metrics.changed().await.is_err() {
            break "the Raft core ended unexpectedly".to_string();
        }
    };
    StorageFailed(match failures.first() {
        Some(failure) => failure.to_string(),
        None => format!("the Raft core stopped: {reason}"),
    })
}

/// The server stopped because it met an entry or a snapshot of a cluster
/// format version it does not support, or one that does not decode (README:
/// Rolling upgrade). It applied everything before it and skipped nothing:
/// started again with a tidal that supports `needed`, it goes on from there.
#[derive(Debug, thiserror::Error)]
pub struct NeedsVersion {
    /// The format version the entry or snapshot needs.
    pub needed: u8,
    /// The highest version this server supports.
    pub supported: u8,
    /// What was met, e.g. "entry 42 needs cluster format version 2; ...".
    pub reason: String,
}

impl fmt::Display for NeedsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; this server stops without applying it: run a tidal that supports cluster \
             format version {} (README: Rolling upgrade)",
            self.reason, self.needed
        )
    }
}

impl From<tidal_core::CannotApply> for NeedsVersion {
    fn from(c: tidal_core::CannotApply) -> Self {
        NeedsVersion {
            needed: c.needed,
            supported: c.supported,
            reason: c.reason,
        }
    }
}
