//! Unit tests of `codec.rs`.

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
