//! Reading what an earlier store format wrote.
//!
//! Format 1 ran openraft with its default leader ids, a (term, node) pair
//! that allows several leaders per term; format 2 runs standard Raft's
//! (openraft's `single-term-leader`: one leader per term), whose log ids
//! carry the term alone. The two encodings of a log id differ, so a data
//! directory of format 1 is refused when it opens (its vote and log were
//! made under the other rules). A backup of format 1 is converted when it
//! is restored: its state is the same, and its log ids only lose the node.

use std::collections::{BTreeMap, BTreeSet};

use openraft::{BasicNode, CommittedLeaderId};
use serde::Deserialize;
use tidal_core::state::State;

use crate::applied::Applied;
use crate::{codec, LogId, Membership, StoreError, StoredMembership};

#[derive(Deserialize)]
struct LeaderIdV1 {
    term: u64,
    #[allow(dead_code)]
    node_id: u64,
}

#[derive(Deserialize)]
struct LogIdV1 {
    leader_id: LeaderIdV1,
    index: u64,
}

impl From<LogIdV1> for LogId {
    fn from(l: LogIdV1) -> LogId {
        LogId::new(CommittedLeaderId::new(l.leader_id.term, 0), l.index)
    }
}

#[derive(Deserialize)]
struct MembershipV1 {
    configs: Vec<BTreeSet<u64>>,
    nodes: BTreeMap<u64, BasicNode>,
}

#[derive(Deserialize)]
struct StoredMembershipV1 {
    log_id: Option<LogIdV1>,
    membership: MembershipV1,
}

#[derive(Deserialize)]
struct AppliedV1 {
    state: State,
    last_applied: Option<LogIdV1>,
    membership: StoredMembershipV1,
}

/// Decodes backup (snapshot) data of this format or of format 1.
pub fn decode_backup(bytes: &[u8]) -> Result<Applied, StoreError> {
    if codec::version_of(bytes) != Some(1) {
        return crate::snapshot::decode_snapshot(bytes);
    }
    let what = "backup (store format 1)";
    let body = codec::verify_version(what, bytes, 1)?;
    let (old, used): (AppliedV1, usize) = tidal_core::bounded::decode_from_slice(body)
        .map_err(|e| StoreError::corrupt(what, format!("cannot decode: {e}")))?;
    if used != body.len() {
        return Err(StoreError::corrupt(
            what,
            format!("{} trailing bytes after the value", body.len() - used),
        ));
    }
    Ok(Applied {
        state: old.state,
        last_applied: old.last_applied.map(LogId::from),
        membership: StoredMembership::new(
            old.membership.log_id.map(LogId::from),
            Membership::new(
                old.membership.membership.configs,
                old.membership.membership.nodes,
            ),
        ),
    })
}

#[cfg(test)]
#[path = "upgrade_test.rs"]
mod tests;
