//! [`Failures`]: the first write the store could not make (disk full, I/O
//! error), kept so the server can say which directory and which operation
//! before it stops.
//!
//! openraft stops its core on any storage error and reports only its own
//! wrapping of it; this record is what the server turns into its last word
//! (DESIGN.md, Storage: a node that cannot write exits non-zero).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use tidal_core::CannotApply;

use crate::wal::LOG_DIR;
use crate::StoreError;

/// One failed write: what the store was doing, where, and the cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteFailure {
    /// The operation, e.g. "write the Raft log".
    pub operation: &'static str,
    /// The directory written to.
    pub dir: PathBuf,
    /// The cause, e.g. "No space left on device (os error 28)".
    pub cause: String,
}

impl fmt::Display for WriteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot {} in {}: {}",
            self.operation,
            self.dir.display(),
            self.cause
        )
    }
}

/// The store's first write failure, shared by the log store, the state
/// machine store and the server. Later failures are usually consequences of
/// the first (a sync after a failed write), so only the first is kept.
#[derive(Clone, Debug)]
pub struct Failures {
    store_dir: PathBuf,
    first: Arc<OnceLock<WriteFailure>>,
    halted: Arc<OnceLock<CannotApply>>,
}

impl Failures {
    pub(crate) fn new(store_dir: &Path) -> Failures {
        Failures {
            store_dir: store_dir.to_path_buf(),
            first: Arc::new(OnceLock::new()),
            halted: Arc::new(OnceLock::new()),
        }
    }

    /// Why apply stopped: an entry or a snapshot of a cluster format version
    /// this node does not support (README: Rolling upgrade), if it did.
    pub fn halted(&self) -> Option<CannotApply> {
        self.halted.get().cloned()
    }

    /// Records that apply stopped, and why; the first reason is kept.
    pub(crate) fn halt(&self, why: CannotApply) {
        let _ = self.halted.set(why);
    }

    /// The first write failure, if any.
    pub fn first(&self) -> Option<WriteFailure> {
        self.first.get().cloned()
    }

    /// Records a failed write of the Raft log's segment files.
    pub(crate) fn log(&self, operation: &'static str, err: &StoreError) {
        self.record(operation, self.store_dir.join(LOG_DIR), err);
    }

    /// Records a failed write of the sled database (vote, purge, snapshots).
    pub(crate) fn db(&self, operation: &'static str, err: &StoreError) {
        self.record(operation, self.store_dir.clone(), err);
    }

    fn record(&self, operation: &'static str, dir: PathBuf, err: &StoreError) {
        let failure = WriteFailure {
            operation,
            dir,
            cause: cause(err),
        };
        let _ = self.first.set(failure);
    }
}

/// The innermost useful cause: the OS error of an I/O failure (the path is
/// in the failure's directory), else the whole error.
fn cause(err: &StoreError) -> String {
    match err {
        StoreError::Io { source, .. } => source.to_string(),
        StoreError::Sled(sled::Error::Io(source)) => source.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_names_the_directory_the_operation_and_the_os_error() {
        let failures = Failures::new(Path::new("/data/node2/raft"));
        assert_eq!(failures.first(), None);
        let enospc = std::io::Error::from_raw_os_error(28);
        failures.log(
            "write the Raft log",
            &StoreError::Io {
                op: "write log segment",
                path: PathBuf::from("/data/node2/raft/log/00000000000000000001.wal"),
                source: enospc,
            },
        );
        failures.db(
            "save the vote",
            &StoreError::Background("later".to_string()),
        );
        let first = failures.clone().first().expect("recorded");
        assert_eq!(
            first.to_string(),
            "cannot write the Raft log in /data/node2/raft/log: No space left on device (os error 28)"
        );
    }
}
