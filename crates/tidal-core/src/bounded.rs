//! bincode decoding from a slice with a limit on what one decode may allocate.
//!
//! bincode 2 allocates a string's or a byte string's buffer from its length
//! prefix before it reads the bytes: without a limit, a corrupt or hostile
//! prefix of 2^60 aborts the process instead of failing the decode. With a
//! limit, bincode checks each length against what is left of the limit
//! first. The limit counts the in-memory size of every decoded value, which
//! is at most 16 times the bytes it was encoded in (a u128 in one varint
//! byte), so a limit of 16 times the input (rounded up to one of a few fixed
//! tiers, as bincode's limit is a constant) never refuses a valid value.
//! The encoding is unchanged: the limit only decides when to stop.

use bincode::error::DecodeError;
use serde::de::DeserializeOwned;

/// How many bytes of the limit one input byte may use (see the module docs).
const CLAIM_PER_BYTE: usize = 16;

/// Decodes a `T` from the front of `bytes` with bincode's standard
/// configuration; returns it and the bytes it used.
pub fn decode_from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), DecodeError> {
    use bincode::config::standard;
    use bincode::serde::decode_from_slice as decode;
    let claims = bytes.len().saturating_mul(CLAIM_PER_BYTE);
    if claims <= 1 << 20 {
        decode(bytes, standard().with_limit::<{ 1 << 20 }>())
    } else if claims <= 1 << 26 {
        decode(bytes, standard().with_limit::<{ 1 << 26 }>())
    } else if claims <= 1 << 32 {
        decode(bytes, standard().with_limit::<{ 1 << 32 }>())
    } else {
        decode(bytes, standard().with_limit::<{ usize::MAX }>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_length_prefix_fails_without_allocating_it() {
        // A string of 2^62 bytes: varint marker 0xfd, then a u64.
        let mut bytes = vec![0xfd];
        bytes.extend_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(matches!(
            decode_from_slice::<String>(&bytes),
            Err(DecodeError::LimitExceeded)
        ));
        assert!(decode_from_slice::<Vec<String>>(&[1, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0x40]).is_err());
    }

    #[test]
    fn values_decode_as_without_a_limit() {
        let value = (
            u128::MAX,
            vec![0u128; 1000],
            "x".repeat(100_000),
            vec![Some(1u64); 3000],
        );
        let bytes = bincode::serde::encode_to_vec(&value, bincode::config::standard()).unwrap();
        let (back, used) = decode_from_slice::<(u128, Vec<u128>, String, Vec<Option<u64>>)>(&bytes)
            .expect("a valid value decodes");
        assert_eq!((back, used), (value, bytes.len()));
    }
}
