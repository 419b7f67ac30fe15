//! Fuzz targets of the store's decoders: bytes from the disk or a backup.
//!
//! Each target takes any bytes and must return without panicking, without
//! allocating more than its input warrants and without looping. The
//! cargo-fuzz crate `fuzz/` calls them (feature `fuzzing`), and the tests
//! replay the committed corpora through them ([`replay`]; fuzz/README.md).
//! Stored values carry a crc32, so each target also decodes its input with
//! the checksums made right: a mutation then reaches the bincode body
//! instead of stopping at the checksum.

use crate::codec::{self, decode_entry, entry_log_id};
use crate::{Entry, LogId, Vote};

#[cfg(any(test, feature = "fuzz-replay"))]
pub mod replay;
#[cfg(any(test, feature = "fuzz-replay"))]
pub mod samples;

#[cfg(test)]
#[path = "fuzz_test.rs"]
mod tests;

/// `bytes` with the crc32 of a stored value's header recomputed over its
/// body (unchanged if it is shorter than the header).
pub fn with_checksum(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.len() >= 5 {
        let crc = crc32fast::hash(&out[5..]).to_le_bytes();
        out[1..5].copy_from_slice(&crc);
    }
    out
}

/// Both the input as it is and with its checksum made right.
fn both(bytes: &[u8], mut run: impl FnMut(&[u8])) {
    run(bytes);
    let fixed = with_checksum(bytes);
    if fixed != bytes {
        run(&fixed);
    }
}

/// Target `store_entry`: a stored log entry (the codec value of an
/// [`Entry`], whose payload's `Envelope` decodes its command itself). An
/// entry that decodes encodes again and decodes to the same log id.
pub fn store_entry(bytes: &[u8]) {
    both(bytes, |b| {
        let head = codec::verify("fuzz", b)
            .ok()
            .and_then(|body| tidal_core::bounded::decode_from_slice::<LogId>(body).ok());
        let index = head.map_or(0, |(id, _)| id.index);
        let id = entry_log_id(index, b);
        if let Ok(entry) = decode_entry(index, b) {
            assert_eq!(id.as_ref().ok(), Some(&entry.log_id), "the head agrees");
            let again = codec::encode("fuzz", &entry).expect("a decoded entry encodes");
            let back: Entry = codec::decode("fuzz", &again).expect("and decodes again");
            assert_eq!(back.log_id, entry.log_id);
        }
    });
}

/// Target `store_value`: the meta values in sled (the vote, the last
/// purged and the committed log id).
pub fn store_value(bytes: &[u8]) {
    both(bytes, |b| {
        let _ = codec::decode::<Vote>("vote", b);
        let _ = codec::decode::<LogId>("last purged log id", b);
        let _ = codec::decode::<Option<LogId>>("committed log id", b);
    });
}

/// Target `wal_segment`: a log segment file's records, as the last segment
/// and as an earlier one. The first index is the first record's own.
pub fn wal_segment(bytes: &[u8]) {
    let fixed = with_record_checksums(bytes);
    for b in [bytes, &fixed[..]] {
        let first = b
            .get(4..)
            .and_then(|v| codec::verify("fuzz", v).ok())
            .and_then(|body| tidal_core::bounded::decode_from_slice::<LogId>(body).ok())
            .map_or(1, |(id, _)| id.index);
        for is_last in [true, false] {
            if let Ok(parsed) = crate::wal::parse_segment(b, first, is_last) {
                assert!(parsed.len <= b.len());
                assert!(parsed.torn.is_none() || is_last);
                assert_eq!(parsed.last.is_some(), !parsed.offsets.is_empty());
            }
        }
    }
}

/// A segment's bytes with the checksum of every whole record made right.
fn with_record_checksums(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut pos = 0usize;
    while let Some(head) = out.get(pos..pos + 4) {
        let len = u32::from_le_bytes(head.try_into().expect("4 bytes")) as usize;
        let Some(end) = (pos + 4).checked_add(len).filter(|&e| e <= out.len()) else {
            break;
        };
        let fixed = with_checksum(&out[pos + 4..end]);
        out[pos + 4..end].copy_from_slice(&fixed);
        pos = end;
    }
    out
}

/// Target `snapshot`: snapshot data (as installed from a leader or read
/// from sled), including the cluster format version byte after it. Data
/// that decodes encodes again to data that decodes to the same.
pub fn snapshot(bytes: &[u8]) {
    both(bytes, |b| {
        if let Ok(applied) = crate::decode_snapshot(b) {
            let again = crate::encode_snapshot(&applied).expect("a decoded snapshot encodes");
            let back = crate::decode_snapshot(&again).expect("and decodes again");
            assert_eq!(back.last_applied, applied.last_applied);
            assert_eq!(back.state.digest(), applied.state.digest());
        }
    });
}

/// Target `backup_restore`: a backup as `--restore` reads it (this store
/// format or format 1). The tests also restore each corpus file into a
/// temporary directory ([`crate::restore`]); the fuzzer only decodes.
pub fn backup_restore(bytes: &[u8]) {
    let fixed = with_checksum(bytes);
    let mut as_v1 = fixed.clone();
    if let Some(v) = as_v1.first_mut() {
        // Format 1's header is checked the same way.
        *v = 1;
    }
    for b in [bytes, &fixed[..], &as_v1[..]] {
        if let Ok(applied) = crate::upgrade::decode_backup(b) {
            let again = crate::encode_snapshot(&applied).expect("a decoded backup encodes");
            crate::decode_snapshot(&again).expect("and decodes as a snapshot");
        }
    }
}
