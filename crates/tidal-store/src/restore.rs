//! Disaster recovery: seeds an empty store with a backup (snapshot data made
//! by the `Backup` RPC) so that the node starts as the only member of a new
//! cluster, with every task, agent and queue of the backup.
//!
//! The backup's membership is replaced by this one node; the log starts
//! purged up to the backup's index; the vote is set to the backup's term,
//! so the node's first election opens a later term and its first entry
//! follows the backup's last one in log order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use openraft::BasicNode;

use crate::durability::Durability;
use crate::snapshot::{encode_snapshot, SnapshotStore};
use crate::{
    codec, log_store, LogId, Membership, SnapshotMeta, StoreError, StoredMembership, Vote,
};

/// Writes `backup` into the empty store at `dir` for node `node_id` at
/// `addr` (the member's address as the membership stores it: `CLIENT`, or
/// `CLIENT|PEER` for a node with a peer listener); returns the log index
/// the restored state is at.
pub fn restore(dir: &Path, backup: &[u8], node_id: u64, addr: &str) -> Result<u64, StoreError> {
    let mut applied = crate::upgrade::decode_backup(backup)?;
    let last: LogId = applied
        .last_applied
        .ok_or_else(|| StoreError::corrupt("backup", "it covers no log entry"))?;
    if std::fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
    {
        return Err(StoreError::corrupt(
            format!("store {}", dir.display()),
            "a restore needs an empty data directory; this one has a store",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
        op: "create directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let membership = Membership::new(
        vec![BTreeSet::from([node_id])],
        BTreeMap::from([(
            node_id,
            BasicNode {
                addr: addr.to_string(),
            },
        )]),
    );
    applied.membership = StoredMembership::new(Some(last), membership);
    let data = encode_snapshot(&applied)?;
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: applied.membership.clone(),
        snapshot_id: format!("restored-{}-{}", last.leader_id.term, last.index),
    };
    let db = crate::open_sled(sled::Config::new().path(dir))?;
    let durability = Arc::new(Durability::open(db.clone(), dir, None)?);
    let (snapshots, _) = SnapshotStore::open(&db, durability.clone())?;
    snapshots.save(&meta, &data, false)?;
    let meta_tree = db.open_tree(log_store::META_TREE)?;
    meta_tree.insert(
        log_store::LAST_PURGED_KEY,
        codec::encode("last purged log id", &last)?,
    )?;
    let vote = Vote::new(last.leader_id.term, node_id);
    meta_tree.insert(log_store::VOTE_KEY, codec::encode("vote", &vote)?)?;
    durability.sync()?;
    Ok(last.index)
}
