//! [`StateMachineStore`]: the applied [`State`](tidal_core::State) in memory, restored from the
//! latest snapshot at open; [`StateHandle`]: the server's read access to it.

use std::io::Cursor;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb};
use tidal_core::{CannotApply, Response};

use crate::applied::{Applied, ApplyPauses};
use crate::durability::Durability;
use crate::error::blocking;
use crate::events::{EventsSlot, StoreEvents, Watch};
use crate::failure::Failures;
use crate::snapshot::{decode_for, SnapshotBuilder, SnapshotStore};
use crate::{
    Entry, LogId, NodeId, Snapshot, SnapshotMeta, StorageError, StoreError, StoredMembership,
    TypeConfig,
};

/// A cheap, cloneable read handle to the applied state.
#[derive(Clone)]
pub struct StateHandle {
    applied: Arc<RwLock<Applied>>,
    events: EventsSlot,
}

impl StateHandle {
    /// Read access to the applied state. Hold the guard briefly and never
    /// across an `.await`: apply waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        // A poisoned lock means an apply panicked; openraft stops the node on
        // that, and readers keep the last state rather than panicking too.
        self.applied.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Has the store tell `events` what it applies and when its log
    /// appends are durable ([`crate::events`]), from now on; false (and
    /// nothing changes) if events were set before.
    pub fn set_events(&self, events: Arc<dyn StoreEvents>) -> bool {
        self.events.set(events)
    }
}

/// The Raft state machine: applies entries to the in-memory [`State`](tidal_core::State);
/// durability comes from snapshots plus the log.
pub struct StateMachineStore {
    applied: Arc<RwLock<Applied>>,
    snapshots: Arc<SnapshotStore>,
    failures: Failures,
    /// The highest cluster format version this node supports.
    supported: u8,
    pauses: Arc<ApplyPauses>,
    /// Shared with the log store.
    events: EventsSlot,
}

impl StateMachineStore {
    /// Opens the snapshot tree and restores the state it holds. A snapshot
    /// of a cluster format version above `supported` is
    /// [`StoreError::NeedsFormatVersion`].
    pub(crate) fn open(
        db: &sled::Db,
        durability: Arc<Durability>,
        failures: Failures,
        supported: u8,
        events: EventsSlot,
    ) -> Result<Self, StoreError> {
        let (snapshots, restored) = SnapshotStore::open(db, durability)?;
        if let Some(applied) = &restored {
            check_supported("the stored snapshot", applied, supported)?;
        }
        Ok(StateMachineStore {
            applied: Arc::new(RwLock::new(restored.unwrap_or_default())),
            snapshots: Arc::new(snapshots),
            failures,
            supported,
            pauses: Arc::default(),
            events,
        })
    }

    /// The highest cluster format version this node supports.
    pub fn supported_format_version(&self) -> u8 {
        self.supported
    }

    /// Stops apply for good: records why (the server exits saying so) and
    /// returns the error that stops openraft's core.
    fn halt(&self, why: CannotApply, subject: ErrorSubject<NodeId>) -> StorageError {
        tracing::error!(error = %why, "stopping apply: an entry or snapshot of an unsupported format version");
        self.failures.halt(why.clone());
        StoreError::NeedsFormatVersion {
            what: match &subject {
                ErrorSubject::Apply(log_id) => format!("entry {}", log_id.index),
                _ => "an entry".to_string(),
            },
            needed: why.needed,
            supported: why.supported,
        }
        .into_storage(subject, ErrorVerb::Read)
    }

    /// The store's first write failure, shared with the log store.
    pub fn failures(&self) -> Failures {
        self.failures.clone()
    }

    /// A read handle for the server.
    pub fn handle(&self) -> StateHandle {
        StateHandle {
            applied: self.applied.clone(),
            events: self.events.clone(),
        }
    }

    fn write(&self) -> RwLockWriteGuard<'_, Applied> {
        self.applied.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.handle();
        let applied = applied.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    /// Applies each entry under its own short write lock, so readers wait at
    /// most one entry. With events set, tells them what each entry did once
    /// its lock is released.
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries = entries.into_iter();
        let mut responses = Vec::with_capacity(entries.size_hint().0);
        let events = self.events.get().cloned();
        for entry in entries {
            let log_id = entry.log_id;
            let started = Instant::now();
            let mut seen = None;
            let mut applied = self.write();
            let response = match entry.payload {
                EntryPayload::Blank => Response::Ok,
                // The entry's index becomes the fencing token of assignments.
                // One this node cannot apply stops apply here, before the
                // entry: it is never skipped (README: Rolling upgrade).
                EntryPayload::Normal(envelope) => {
                    let watch = match (&events, envelope.command()) {
                        (Some(_), Some(command)) => Some(Watch::before(
                            &applied.state,
                            command,
                            log_id.index,
                            envelope.time_ms,
                        )),
                        _ => None,
                    };
                    match applied
                        .state
                        .apply_envelope(envelope, log_id.index, self.supported)
                    {
                        Ok(response) => {
                            seen = watch.map(|w| w.after(&applied.state));
                            response
                        }
                        Err(why) => {
                            drop(applied);
                            return Err(self.halt(why, ErrorSubject::Apply(log_id)));
                        }
                    }
                }
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(log_id), membership);
                    Response::Ok
                }
            };
            applied.last_applied = Some(log_id);
            drop(applied);
            self.pauses.record(started);
            if let Some(events) = &events {
                for s in seen.into_iter().flatten() {
                    s.tell(events.as_ref());
                }
            }
            responses.push(response);
        }
        Ok(responses)
    }

    /// openraft calls this between two applies: the copy is the applied
    /// state at one log id, and costs O(1) (the state's maps share their
    /// nodes with it; apply copies a node on its first write after this).
    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            applied: self.handle().read().clone(),
            store: self.snapshots.clone(),
            failures: self.failures.clone(),
            pauses: self.pauses.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// Verifies the data, stores it durably as the current snapshot, then
    /// replaces the in-memory state.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let store = self.snapshots.clone();
        let owned_meta = meta.clone();
        let supported = self.supported;
        let applied = blocking(move || {
            let applied = decode_for(&owned_meta, &data)?;
            check_supported(
                &format!("snapshot {}", owned_meta.snapshot_id),
                &applied,
                supported,
            )?;
            crate::crash::point("store::snapshot::before_save");
            store.save(&owned_meta, &data, false)?;
            crate::crash::point("store::snapshot::after_save");
            Ok(applied)
        })
        .await
        .map_err(|e| {
            if let StoreError::NeedsFormatVersion {
                what,
                needed,
                supported,
            } = &e
            {
                self.failures.halt(CannotApply {
                    needed: *needed,
                    supported: *supported,
                    reason: format!(
                        "{what} needs cluster format version {needed}; this node supports \
                         versions 1 to {supported}"
                    ),
                });
            } else if !e.is_corruption() {
                self.failures.db("write a received snapshot", &e);
            }
            e.into_storage(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
            )
        })?;
        *self.write() = applied;
        tracing::info!(snapshot = %meta, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let stored = self
            .snapshots
            .load()
            .map_err(|e| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Read))?;
        Ok(stored.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// A snapshot's state of a cluster format version above `supported` is
/// [`StoreError::NeedsFormatVersion`].
fn check_supported(what: &str, applied: &Applied, supported: u8) -> Result<(), StoreError> {
    let needed = applied.state.cluster_version();
    if needed > supported {
        return Err(StoreError::NeedsFormatVersion {
            what: what.to_string(),
            needed,
            supported,
        });
    }
    Ok(())
}
