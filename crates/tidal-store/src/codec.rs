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
    let (value, used) =
        bincode::serde::decode_from_slice::<T, _>(body, bincode::config::standard())
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
    let (head, _): (Head, usize) =
        bincode::serde::decode_from_slice(body, bincode::config::standard())
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
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = (7u64, "seven".to_string(), Some(vec![1u8, 2, 3]));
        let bytes = encode("test value", &v).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: (u64, String, Option<Vec<u8>>) = decode("test value", &bytes).unwrap();
        assert_eq!(back, v);
    }

    /// Payloads and results are written as byte strings (serde_bytes), which
    /// in bincode are the same bytes as the sequence of u8 written before:
    /// logs and snapshots from either read the same.
    #[test]
    fn byte_strings_encode_like_sequences_of_u8() {
        #[derive(serde::Serialize)]
        struct AsBytes(#[serde(with = "serde_bytes")] Vec<u8>, u64);
        #[derive(serde::Serialize)]
        struct AsSeq(Vec<u8>, u64);
        let payload: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(AsBytes(payload.clone(), 7), config).unwrap();
        let seq = bincode::serde::encode_to_vec(AsSeq(payload.clone(), 7), config).unwrap();
        assert_eq!(bytes, seq);
        let spec = tidal_core::TaskSpec {
            payload,
            ..Default::default()
        };
        let back: tidal_core::TaskSpec = decode("spec", &encode("spec", &spec).unwrap()).unwrap();
        assert_eq!(back, spec);
    }

    /// The state's finished-task index is derived, not encoded: a state
    /// encodes exactly as it did before the index existed (its encoded
    /// fields, in order), and decoding rebuilds the index.
    #[test]
    fn the_finished_index_is_rebuilt_on_decode_and_not_encoded() {
        use tidal_core::command::{ApplyCtx, Command, Completion};
        use tidal_core::model::{AgentSpec, Outcome, TaskId};
        let mut state = tidal_core::State::new();
        let mut index = 0;
        let mut apply = |state: &mut tidal_core::State, cmd| {
            index += 1;
            state.apply(
                cmd,
                ApplyCtx {
                    log_index: index,
                    time_ms: 1000 + index,
                },
            )
        };
        apply(
            &mut state,
            Command::RegisterAgent(AgentSpec {
                id: "a1".into(),
                task_types: ["t2i".to_string()].into(),
                slots: 1,
                ..Default::default()
            }),
        );
        apply(
            &mut state,
            Command::Submit(vec![tidal_core::TaskSpec {
                task_type: "t2i".into(),
                ..Default::default()
            }]),
        );
        apply(&mut state, Command::Assign(vec![(TaskId(1), "a1".into())]));
        apply(
            &mut state,
            Command::Complete(vec![Completion {
                task: TaskId(1),
                token: 3,
                outcome: Outcome {
                    success: true,
                    result: vec![],
                    error: String::new(),
                    exit_code: 0,
                },
            }]),
        );
        assert_eq!(state.finished_before(u64::MAX, 10), vec![TaskId(1)]);
        let bytes = encode("state", &state).unwrap();
        let back: tidal_core::State = decode("state", &bytes).unwrap();
        assert_eq!(back, state);
        assert_eq!(back.finished_before(u64::MAX, 10), vec![TaskId(1)]);
        back.check_invariants().unwrap();
        assert_eq!(encode("state", &back).unwrap(), bytes);
    }

    #[test]
    fn flipped_body_byte_fails_checksum() {
        let mut bytes = encode("v", &123456789u64).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        let err = decode::<u64>("v", &bytes).unwrap_err();
        assert!(matches!(err, StoreError::Checksum { .. }), "{err}");
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn wrong_version_is_rejected() {
        let mut bytes = encode("v", &1u64).unwrap();
        bytes[0] = 9;
        let err = decode::<u64>("v", &bytes).unwrap_err();
        assert!(
            matches!(err, StoreError::UnsupportedVersion { found: 9, .. }),
            "{err}"
        );
    }

    #[test]
    fn truncated_value_is_rejected() {
        let err = decode::<u64>("v", &[FORMAT_VERSION, 0, 0]).unwrap_err();
        assert!(err.is_corruption(), "{err}");
        let mut bytes = encode("v", &(1u64, 2u64)).unwrap();
        bytes.truncate(bytes.len() - 1);
        assert!(decode::<(u64, u64)>("v", &bytes)
            .unwrap_err()
            .is_corruption());
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        // A body with a valid checksum but more bytes than the value.
        let mut body = bincode::serde::encode_to_vec(1u64, bincode::config::standard()).unwrap();
        body.push(0);
        let mut bytes = vec![FORMAT_VERSION];
        bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        let err = decode::<u64>("v", &bytes).unwrap_err();
        assert!(err.to_string().contains("trailing"), "{err}");
    }
}
