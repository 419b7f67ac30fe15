//! Unit tests of `upgrade.rs`.

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
