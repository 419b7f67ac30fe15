//! openraft's own storage test suite, run against a fresh store in a temp dir.

use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use tempfile::TempDir;
use tidal_store::{LogStore, StateMachineStore, StorageError, StoreOptions, TypeConfig};

/// Builds a store in a new temp dir; the dir is the guard, removed when the
/// suite's test drops it.
struct TempStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let fail = |e: &dyn std::fmt::Display| -> StorageError {
            StorageIOError::new(ErrorSubject::Store, ErrorVerb::Write, AnyError::error(e)).into()
        };
        let dir = tempfile::tempdir().map_err(|e| fail(&e))?;
        let (log, sm) =
            tidal_store::open(dir.path(), StoreOptions::default()).map_err(|e| fail(&e))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(TempStoreBuilder).expect("openraft storage suite");
}
