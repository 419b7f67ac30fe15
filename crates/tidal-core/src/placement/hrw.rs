//! Rendezvous (highest-random-weight) hashing for the consistent-hash
//! strategy: a task's key goes to the agent with the highest score among
//! those that can take it. When an agent joins or leaves, only the keys whose
//! best agent it is (about 1/n of them) move. The hashes are fixed (FNV-1a
//! and splitmix64), never std's randomly keyed ones, so every leader and
//! every replica computes the same scores.

use std::hash::Hasher;

use crate::digest::Fnv64;

/// FNV-1a of a string (a key or an agent id).
pub fn hash_str(s: &str) -> u64 {
    let mut h = Fnv64::default();
    h.write(s.as_bytes());
    h.finish()
}

/// The score of an agent (its `hash_str`) for a key (its `hash_str`).
pub fn score(key: u64, agent: u64) -> u64 {
    splitmix64(key ^ agent)
}

/// The agent a key goes to among `agents`: the highest score, ties (not
/// seen in practice) to the smaller id. `None` when there is no agent.
pub fn best<'a>(key: &str, agents: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let k = hash_str(key);
    agents
        .into_iter()
        .map(|a| (score(k, hash_str(a)), std::cmp::Reverse(a)))
        .max()
        .map(|(_, std::cmp::Reverse(a))| a)
}

/// splitmix64's finaliser: spreads the bits of its input over the output.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
#[path = "hrw_test.rs"]
mod tests;
