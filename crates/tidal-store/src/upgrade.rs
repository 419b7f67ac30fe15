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
    let (old, used): (AppliedV1, usize) =
        bincode::serde::decode_from_slice(body, bincode::config::standard())
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
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Serialize)]
    struct LeaderIdV1Out {
        term: u64,
        node_id: u64,
    }
    #[derive(Serialize)]
    struct LogIdV1Out {
        leader_id: LeaderIdV1Out,
        index: u64,
    }
    #[derive(Serialize)]
    struct MembershipV1Out {
        configs: Vec<BTreeSet<u64>>,
        nodes: BTreeMap<u64, BasicNode>,
    }
    #[derive(Serialize)]
    struct StoredMembershipV1Out {
        log_id: Option<LogIdV1Out>,
        membership: MembershipV1Out,
    }
    #[derive(Serialize)]
    struct AppliedV1Out {
        state: State,
        last_applied: Option<LogIdV1Out>,
        membership: StoredMembershipV1Out,
    }

    /// What format 1 wrote: the header, then bincode of openraft's types
    /// with (term, node) leader ids, written here field by field.
    fn format_1_backup(state: &State) -> Vec<u8> {
        let log_id = |term, index| LogIdV1Out {
            leader_id: LeaderIdV1Out { term, node_id: 3 },
            index,
        };
        let value = AppliedV1Out {
            state: state.clone(),
            last_applied: Some(log_id(4, 17)),
            membership: StoredMembershipV1Out {
                log_id: Some(log_id(2, 9)),
                membership: MembershipV1Out {
                    configs: vec![BTreeSet::from([1, 2, 3])],
                    nodes: BTreeMap::from([
                        (1, BasicNode::new("a:1")),
                        (2, BasicNode::new("a:2")),
                        (3, BasicNode::new("a:3")),
                    ]),
                },
            },
        };
        let body = bincode::serde::encode_to_vec(&value, bincode::config::standard()).unwrap();
        let mut out = vec![1u8];
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn a_format_1_backup_is_converted() {
        let mut state = State::new();
        state.apply(
            tidal_core::command::Command::SetQueue {
                name: "vip".into(),
                weight: 8,
                strategy: Default::default(),
            },
            tidal_core::command::ApplyCtx {
                log_index: 5,
                time_ms: 1,
            },
        );
        let applied = decode_backup(&format_1_backup(&state)).unwrap();
        assert_eq!(applied.state.digest(), state.digest());
        assert_eq!(
            applied.last_applied,
            Some(LogId::new(CommittedLeaderId::new(4, 0), 17))
        );
        assert_eq!(
            applied.membership.log_id(),
            &Some(LogId::new(CommittedLeaderId::new(2, 0), 9))
        );
        assert_eq!(
            applied
                .membership
                .membership()
                .voter_ids()
                .collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        // This format's own backups decode as they are.
        let again = crate::snapshot::encode_snapshot(&applied).unwrap();
        assert_eq!(decode_backup(&again).unwrap(), applied);
    }

    #[test]
    fn a_damaged_format_1_backup_is_an_error() {
        let mut bytes = format_1_backup(&State::new());
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        assert!(matches!(
            decode_backup(&bytes),
            Err(StoreError::Checksum { .. })
        ));
    }
}
