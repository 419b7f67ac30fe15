//! [`StoreError`], the one error of this crate, and its mapping to openraft's `StorageError`.

use std::path::PathBuf;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};

use crate::NodeId;

/// Everything that can go wrong in the store. The `Corrupt*` variants mean
/// the data on disk cannot be trusted: the node must not serve; wipe it and
/// re-add it so it catches up through a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),

    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{what} has store format version {found}, this build reads version {expected}{}",
        version_hint(*found, *expected)
    )]
    UnsupportedVersion {
        what: String,
        found: u8,
        expected: u8,
    },

    #[error(
        "corrupt store: {what} fails its checksum (stored {stored:#010x}, computed {computed:#010x})"
    )]
    Checksum {
        what: String,
        stored: u32,
        computed: u32,
    },

    #[error("corrupt store: {what}: {reason}")]
    Corrupt { what: String, reason: String },

    #[error("cannot encode {what}: {reason}")]
    Encode { what: String, reason: String },

    #[error("store background task failed: {0}")]
    Background(String),

    /// Data of a cluster format version this node does not support: it was
    /// written by a cluster upgraded past this build (README: Rolling upgrade).
    #[error(
        "{what} needs cluster format version {needed}; this node supports versions 1 to \
         {supported}: run a tidal that supports version {needed} (README: Rolling upgrade)"
    )]
    NeedsFormatVersion {
        what: String,
        needed: u8,
        supported: u8,
    },
}

impl StoreError {
    /// True if the data on disk is damaged (as opposed to an I/O failure).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            StoreError::UnsupportedVersion { .. }
                | StoreError::Checksum { .. }
                | StoreError::Corrupt { .. }
        )
    }

    pub(crate) fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Self {
        StoreError::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Converts into openraft's error, naming what was being read or written.
    pub(crate) fn into_storage(
        self,
        subject: ErrorSubject<NodeId>,
        verb: ErrorVerb,
    ) -> openraft::StorageError<NodeId> {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }
}

/// Runs blocking work (sled flush, fsync, big encodes) off the async runtime's
/// worker threads, so the Raft core and the server keep running meanwhile.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Background(e.to_string()))?
}

/// What to do about a value of another format version.
fn version_hint(found: u8, expected: u8) -> &'static str {
    if found == 1 && expected == 2 {
        ": it was written by a tidal from before format 2 (standard Raft leader ids). \
         Such a data directory cannot be opened; restore a backup instead \
         (README.md, \"Upgrading from store format 1\")"
    } else if found > expected {
        ": it was written by a newer tidal"
    } else {
        ""
    }
}
