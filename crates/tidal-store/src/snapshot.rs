//! Snapshots: their encoding, the one stored snapshot, and [`SnapshotBuilder`].
//!
//! A snapshot's data is an [`Applied`] (the state, the last applied log id and
//! the membership) in the [`codec`] format, so it carries its own version and
//! checksum wherever it travels (to a follower, to a backup). The store keeps
//! only the latest snapshot: tree `snapshot`, keys `meta` and `data`, written
//! in one atomic batch and synced before the snapshot is reported.

use std::io::Cursor;
use std::sync::{Arc, Mutex, PoisonError};

use openraft::storage::RaftSnapshotBuilder;
use openraft::{ErrorSubject, ErrorVerb};

use tidal_core::access::{Access, ACCESS_VERSION};
use tidal_core::lifecycle::{Lifecycle, LIFECYCLE_VERSION};
use tidal_core::placement::types::{Placement, PLACEMENT_VERSION};
use tidal_core::{FORMAT_VERSION_MAX, FORMAT_VERSION_MIN};

use crate::applied::{Applied, ApplyPauses};
use crate::codec;
use crate::durability::Durability;
use crate::error::blocking;
use crate::failure::Failures;
use crate::{LogId, Snapshot, SnapshotMeta, StorageError, StoreError, TypeConfig};

const SNAPSHOT_TREE: &str = "snapshot";
const META_KEY: &[u8] = b"meta";
const DATA_KEY: &[u8] = b"data";

/// Encodes an applied state as snapshot data (versioned and checksummed).
///
/// The body is the [`Applied`] and, when the cluster's format version is
/// above 1, that version as one byte after it; from version 3
/// ([`ACCESS_VERSION`]) the state's [`Access`] follows the byte, and from
/// version 4 ([`LIFECYCLE_VERSION`]) its [`Lifecycle`] follows that, and from
/// version 5 ([`PLACEMENT_VERSION`]) its [`Placement`] follows that. A state of
/// cluster version 1 encodes exactly as builds from before format versions
/// wrote it, so they can still install it, and one of version 2 exactly as
/// builds of version 2 write it.
pub fn encode_snapshot(applied: &Applied) -> Result<Vec<u8>, StoreError> {
    let version = applied.state.cluster_version();
    if version <= FORMAT_VERSION_MIN {
        return codec::encode("snapshot data", applied);
    }
    if version < ACCESS_VERSION {
        return codec::encode("snapshot data", &(applied, version));
    }
    if version < LIFECYCLE_VERSION {
        return codec::encode("snapshot data", &(applied, version, applied.state.access()));
    }
    if version < PLACEMENT_VERSION {
        return codec::encode(
            "snapshot data",
            &(
                applied,
                version,
                applied.state.access(),
                applied.state.lifecycle(),
            ),
        );
    }
    codec::encode(
        "snapshot data",
        &(
            applied,
            version,
            applied.state.access(),
            applied.state.lifecycle(),
            applied.state.placement(),
        ),
    )
}

/// Decodes snapshot data, verifying its version and checksum. Data of a
/// cluster format version above this build's is
/// [`StoreError::NeedsFormatVersion`].
pub fn decode_snapshot(bytes: &[u8]) -> Result<Applied, StoreError> {
    const WHAT: &str = "snapshot data";
    let body = codec::verify(WHAT, bytes)?;
    let (mut applied, used): (Applied, usize) = tidal_core::bounded::decode_from_slice(body)
        .map_err(|e| StoreError::corrupt(WHAT, format!("cannot decode: {e}")))?;
    let version = match &body[used..] {
        [] => FORMAT_VERSION_MIN,
        [version, ..] if *version > FORMAT_VERSION_MAX => {
            return Err(StoreError::NeedsFormatVersion {
                what: "the snapshot".into(),
                needed: *version,
                supported: FORMAT_VERSION_MAX,
            })
        }
        [version] if *version > FORMAT_VERSION_MIN && *version < ACCESS_VERSION => *version,
        [version, section @ ..] if *version >= ACCESS_VERSION => {
            let (access, used): (Access, usize) = tidal_core::bounded::decode_from_slice(section)
                .map_err(|e| {
                StoreError::corrupt(WHAT, format!("cannot decode the access section: {e}"))
            })?;
            let rest = &section[used..];
            if *version >= LIFECYCLE_VERSION {
                let (lifecycle, used): (Lifecycle, usize) =
                    tidal_core::bounded::decode_from_slice(rest).map_err(|e| {
                        StoreError::corrupt(
                            WHAT,
                            format!("cannot decode the lifecycle section: {e}"),
                        )
                    })?;
                let rest = &rest[used..];
                let (placement, used) = if *version >= PLACEMENT_VERSION {
                    let (placement, used): (Placement, usize) =
                        tidal_core::bounded::decode_from_slice(rest).map_err(|e| {
                            StoreError::corrupt(
                                WHAT,
                                format!("cannot decode the placement section: {e}"),
                            )
                        })?;
                    (Some(placement), used)
                } else {
                    (None, 0)
                };
                if used != rest.len() {
                    return Err(StoreError::corrupt(
                        WHAT,
                        format!(
                            "{} trailing bytes after the {} section",
                            rest.len() - used,
                            if placement.is_some() {
                                "placement"
                            } else {
                                "lifecycle"
                            }
                        ),
                    ));
                }
                applied.state.restore_access(access);
                applied.state.restore_lifecycle(lifecycle);
                if let Some(placement) = placement {
                    applied.state.restore_placement(placement);
                }
                applied.state.restore_cluster_version(*version);
                return Ok(applied);
            }
            if !rest.is_empty() {
                return Err(StoreError::corrupt(
                    WHAT,
                    format!("{} trailing bytes after the access section", rest.len()),
                ));
            }
            applied.state.restore_access(access);
            *version
        }
        rest => {
            return Err(StoreError::corrupt(
                WHAT,
                format!("{} trailing bytes after the value", rest.len()),
            ))
        }
    };
    applied.state.restore_cluster_version(version);
    Ok(applied)
}

/// Decodes `data` and checks it is the snapshot `meta` describes.
pub(crate) fn decode_for(meta: &SnapshotMeta, data: &[u8]) -> Result<Applied, StoreError> {
    let applied = decode_snapshot(data)?;
    if applied.last_applied != meta.last_log_id || applied.membership != meta.last_membership {
        return Err(StoreError::corrupt(
            format!("snapshot {}", meta.snapshot_id),
            format!(
                "its data is at {:?} with membership {}, its meta says {:?} with {}",
                applied.last_applied, applied.membership, meta.last_log_id, meta.last_membership
            ),
        ));
    }
    Ok(applied)
}

/// The latest snapshot in sled.
pub(crate) struct SnapshotStore {
    db: sled::Db,
    tree: sled::Tree,
    durability: Arc<Durability>,
    /// Serializes saves (check-then-write) and keeps loads from seeing the
    /// meta of one snapshot with the data of another.
    lock: Mutex<()>,
}

impl SnapshotStore {
    /// Opens the tree and verifies the stored snapshot; returns the applied
    /// state it holds, to restore the state machine from.
    pub(crate) fn open(
        db: &sled::Db,
        durability: Arc<Durability>,
    ) -> Result<(Self, Option<Applied>), StoreError> {
        let tree = db.open_tree(SNAPSHOT_TREE)?;
        let store = SnapshotStore {
            db: db.clone(),
            tree,
            durability,
            lock: Mutex::new(()),
        };
        let started = std::time::Instant::now();
        let restored = match store.load_unverified()? {
            Some((meta, data)) => {
                let read = started.elapsed();
                let applied = decode_for(&meta, &data)?;
                tracing::info!(
                    snapshot = %meta.snapshot_id,
                    bytes = data.len(),
                    read_ms = read.as_millis() as u64,
                    decode_ms = (started.elapsed() - read).as_millis() as u64,
                    "snapshot restored"
                );
                Some(applied)
            }
            None => None,
        };
        Ok((store, restored))
    }

    /// The stored snapshot's meta and data, both verified.
    pub(crate) fn load(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StoreError> {
        let Some((meta, data)) = self.load_unverified()? else {
            return Ok(None);
        };
        codec::verify("snapshot data", &data)?;
        Ok(Some((meta, data.to_vec())))
    }

    /// The stored snapshot's meta, verified, and its data as sled holds it,
    /// not yet verified (decoding verifies it).
    fn load_unverified(&self) -> Result<Option<(SnapshotMeta, sled::IVec)>, StoreError> {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let meta = self.tree.get(META_KEY)?;
        let data = self.tree.get(DATA_KEY)?;
        match (meta, data) {
            (None, None) => Ok(None),
            (Some(meta), Some(data)) => {
                let meta: SnapshotMeta = codec::decode("snapshot meta", &meta)?;
                Ok(Some((meta, data)))
            }
            (meta, _) => Err(StoreError::corrupt(
                "snapshot",
                if meta.is_some() {
                    "meta without data"
                } else {
                    "data without meta"
                },
            )),
        }
    }

    /// A snapshot id unique in this store: `{term}-{index}-{counter}`, the
    /// counter from sled's persistent id generator.
    pub(crate) fn new_id(&self, last: Option<LogId>) -> Result<String, StoreError> {
        let counter = self.db.generate_id()?;
        Ok(match last {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, counter),
            None => format!("0-none-{counter}"),
        })
    }

    /// Stores `meta` + `data` as the current snapshot and syncs. With
    /// `only_if_newer`, keeps a stored snapshot that is further along (a
    /// build that raced with an install) and returns false. Blocking.
    pub(crate) fn save(
        &self,
        meta: &SnapshotMeta,
        data: &[u8],
        only_if_newer: bool,
    ) -> Result<bool, StoreError> {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if only_if_newer {
            if let Some(current) = self.tree.get(META_KEY)? {
                let current: SnapshotMeta = codec::decode("snapshot meta", &current)?;
                if current.last_log_id > meta.last_log_id {
                    return Ok(false);
                }
            }
        }
        let mut batch = sled::Batch::default();
        batch.insert(META_KEY, codec::encode("snapshot meta", meta)?);
        batch.insert(DATA_KEY, data);
        self.tree.apply_batch(batch)?;
        self.durability.sync()?;
        Ok(true)
    }
}

/// Builds a snapshot on a blocking thread from a copy of the applied state
/// taken between two applies (O(1): the state's maps share their nodes), so
/// it encodes and stores with no lock held while apply and reads go on. The
/// memory it adds is the encoding plus the nodes apply copies meanwhile.
/// "snapshot built" logs the longest pause of one entry's apply during the
/// build (`apply_pause_max_ms`).
pub struct SnapshotBuilder {
    pub(crate) applied: Applied,
    pub(crate) store: Arc<SnapshotStore>,
    pub(crate) failures: Failures,
    pub(crate) pauses: Arc<ApplyPauses>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let applied = self.applied.clone();
        let store = self.store.clone();
        self.pauses.take();
        let (meta, data) = blocking(move || {
            let data = encode_snapshot(&applied)?;
            let (last_applied, membership) = (applied.last_applied, applied.membership.clone());
            drop(applied);
            let meta = SnapshotMeta {
                last_log_id: last_applied,
                last_membership: membership,
                snapshot_id: store.new_id(last_applied)?,
            };
            if !store.save(&meta, &data, true)? {
                tracing::info!(snapshot = %meta, "a newer snapshot is already stored; not replacing it");
            }
            Ok((meta, data))
        })
        .await
        .map_err(|e| {
            self.failures.db("write a snapshot", &e);
            e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Write)
        })?;
        let apply_pause_max_ms = self.pauses.take() as f64 / 1000.0;
        tracing::info!(snapshot = %meta, bytes = data.len(), apply_pause_max_ms, "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
