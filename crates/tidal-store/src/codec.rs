//! The encoding of every stored value: format version, crc32, bincode body.
//!
//! Layout: `[version: u8][crc32 of body: u32 little-endian][body]`, where the
//! body is bincode 2 (serde, `config::standard()`). A value with another
//! version or a failing checksum is an error, never a silent load
//! (RELIABILITY.md: sled has no checksums of its own on our values).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Entry, LogId, StoreError};

/// The format version this build writes and reads. Format 1 stored openraft
/// log ids with a (term, node) leader id; format 2 stores standard Raft's,
/// the term alone (openraft's `single-term-leader`). See [`crate::upgrade`].
pub const FORMAT_VERSION: u8 = 2;

const HEADER_LEN: usize = 1 + 4;

/// Encodes `value` behind the version byte and checksum. `what` names the
/// value in errors.
pub fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    let body = bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| {
        StoreError::Encode {
            what: what.to_string(),
            reason: e.to_string(),
        }
    })?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Checks the version and checksum of `bytes`, then decodes the body; the
/// body must be consumed exactly. `what` names the value in errors.
pub fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    let body = verify(what, bytes)?;
    let (value, used) = tidal_core::bounded::decode_from_slice::<T>(body)
        .map_err(|e| StoreError::corrupt(what, format!("cannot decode: {e}")))?;
    if used != body.len() {
        return Err(StoreError::corrupt(
            what,
            format!("{} trailing bytes after the value", body.len() - used),
        ));
    }
    Ok(value)
}

/// Checks the header of `bytes` and returns the body.
pub fn verify<'a>(what: &str, bytes: &'a [u8]) -> Result<&'a [u8], StoreError> {
    verify_version(what, bytes, FORMAT_VERSION)
}

/// The format version a value was written with (its first byte).
pub fn version_of(bytes: &[u8]) -> Option<u8> {
    bytes.first().copied()
}

/// Checks the header of `bytes` for format `version` and returns the body.
pub fn verify_version<'a>(
    what: &str,
    bytes: &'a [u8],
    version: u8,
) -> Result<&'a [u8], StoreError> {
    if bytes.len() < HEADER_LEN {
        return Err(StoreError::corrupt(
            what,
            format!(
                "{} bytes is shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            ),
        ));
    }
    let (header, body) = bytes.split_at(HEADER_LEN);
    if header[0] != version {
        return Err(StoreError::UnsupportedVersion {
            what: what.to_string(),
            found: header[0],
            expected: version,
        });
    }
    let stored = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(StoreError::Checksum {
            what: what.to_string(),
            stored,
            computed,
        });
    }
    Ok(body)
}

/// Decodes a stored entry and checks it sits under its own index.
pub(crate) fn decode_entry(index: u64, bytes: &[u8]) -> Result<Entry, StoreError> {
    let what = format!("log entry {index}");
    let entry: Entry = decode(&what, bytes)?;
    if entry.log_id.index != index {
        return Err(StoreError::corrupt(
            what,
            format!("holds the entry of index {}", entry.log_id.index),
        ));
    }
    Ok(entry)
}

/// Checks an entry's version, checksum and index and returns its log id
/// without decoding its payload (which may hold thousands of tasks).
pub(crate) fn entry_log_id(index: u64, bytes: &[u8]) -> Result<LogId, StoreError> {
    let what = || format!("log entry {index}");
    let body = verify(&what(), bytes)?;
    // An entry encodes its log id first, so decoding only that reads a prefix.
    #[derive(serde::Deserialize)]
    struct Head {
        log_id: LogId,
    }
    let (head, _): (Head, usize) = tidal_core::bounded::decode_from_slice(body)
        .map_err(|e| StoreError::corrupt(what(), format!("cannot decode: {e}")))?;
    if head.log_id.index != index {
        return Err(StoreError::corrupt(
            what(),
            format!("holds the entry of index {}", head.log_id.index),
        ));
    }
    Ok(head.log_id)
}

#[cfg(test)]
#[path = "codec_test.rs"]
mod tests;
