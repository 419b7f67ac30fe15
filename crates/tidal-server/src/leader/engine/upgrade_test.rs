//! Table test of `version_to_raise`: which version every member supports, counting only fresh replies.

use super::{version_to_raise, MemberFormat};

fn m(id: u64, format: Option<(u8, u64)>) -> MemberFormat {
    MemberFormat { id, format }
}

/// (this node supports, current, the others, fresh within, expected)
type Row = (u8, u8, Vec<MemberFormat>, u64, Option<u8>);

#[test]
fn the_version_rises_only_to_what_every_fresh_member_supports() {
    let table: Vec<Row> = vec![
        // Alone: up to what this node supports.
        (2, 1, vec![], 600, Some(2)),
        // Already there.
        (2, 2, vec![], 600, None),
        // Every member supports 2.
        (
            2,
            1,
            vec![m(2, Some((2, 100))), m(3, Some((3, 0)))],
            600,
            Some(2),
        ),
        // One member (a voter or a learner alike) still at 1 holds it.
        (
            2,
            1,
            vec![m(2, Some((2, 100))), m(3, Some((1, 0)))],
            600,
            None,
        ),
        // A member that never replied holds it.
        (2, 1, vec![m(2, Some((2, 100))), m(3, None)], 600, None),
        // A stale reply (older than the election timeout) holds it...
        (2, 1, vec![m(2, Some((2, 601)))], 600, None),
        // ...one just within it counts.
        (2, 1, vec![m(2, Some((2, 600)))], 600, Some(2)),
        // This node's own limit (--max-format-version) caps it.
        (1, 1, vec![m(2, Some((2, 0)))], 600, None),
        // The lowest of the members wins when above current.
        (
            3,
            1,
            vec![m(2, Some((2, 0))), m(3, Some((3, 0)))],
            600,
            Some(2),
        ),
    ];
    for (i, (supported, current, others, fresh, want)) in table.into_iter().enumerate() {
        assert_eq!(
            version_to_raise(supported, current, &others, fresh),
            want,
            "row {i}"
        );
    }
}
