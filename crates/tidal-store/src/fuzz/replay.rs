//! Replays a fuzz target's committed corpus and regressions, and a fixed
//! set of mutations of them, through the target: what the tests run on
//! stable Rust (the long, coverage-guided runs use cargo-fuzz; fuzz/README.md).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// The workspace's `fuzz/` directory.
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `fuzz/<kind>/<target>` (kind: corpus or regressions), in
/// name order; none if the directory does not exist.
pub fn files(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(items) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, Vec<u8>)> = items
        .map(|item| {
            let path = item.expect("list the corpus").path();
            let bytes = std::fs::read(&path).expect("read a corpus file");
            (path, bytes)
        })
        .collect();
    out.sort();
    out
}

/// One change to an input; positions are taken modulo the input's length.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(usize, u8),
    /// Sets a byte to a value that often starts something in bincode (a
    /// varint marker, a large length, an enum tag) or in a frame header.
    SetByte(usize, u8),
    Truncate(usize),
    Remove(usize, usize),
    Insert(usize, Vec<u8>),
    /// Copies a piece of another input over this one at a position.
    Splice {
        other: usize,
        from: usize,
        len: usize,
        at: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let special = prop::sample::select(vec![0u8, 1, 2, 0x7f, 0x80, 0xfa, 0xfb, 0xfc, 0xfd, 0xff]);
    prop_oneof![
        3 => (any::<usize>(), 0u8..8).prop_map(|(p, b)| Mutation::FlipBit(p, b)),
        3 => (any::<usize>(), special).prop_map(|(p, v)| Mutation::SetByte(p, v)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), 1usize..16).prop_map(|(p, n)| Mutation::Remove(p, n)),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..9))
            .prop_map(|(p, b)| Mutation::Insert(p, b)),
        1 => (any::<usize>(), any::<usize>(), 1usize..64, any::<usize>()).prop_map(
            |(other, from, len, at)| Mutation::Splice { other, from, len, at }
        ),
    ]
}

fn apply(input: &[u8], mutations: &[Mutation], inputs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for m in mutations {
        let at = |p: usize, len: usize| if len == 0 { 0 } else { p % len };
        match m {
            Mutation::FlipBit(p, b) if !out.is_empty() => {
                let i = at(*p, out.len());
                out[i] ^= 1 << b;
            }
            Mutation::SetByte(p, v) if !out.is_empty() => {
                let i = at(*p, out.len());
                out[i] = *v;
            }
            Mutation::Truncate(p) => out.truncate(at(*p, out.len() + 1)),
            Mutation::Remove(p, n) if !out.is_empty() => {
                let i = at(*p, out.len());
                let end = (i + n).min(out.len());
                out.drain(i..end);
            }
            Mutation::Insert(p, bytes) => {
                let i = at(*p, out.len() + 1);
                out.splice(i..i, bytes.iter().copied());
            }
            Mutation::Splice {
                other,
                from,
                len,
                at: to,
            } => {
                let src = &inputs[other % inputs.len()];
                if src.is_empty() {
                    continue;
                }
                let from = from % src.len();
                let piece = &src[from..(from + len).min(src.len())];
                let to = at(*to, out.len() + 1);
                let end = (to + piece.len()).min(out.len());
                out.splice(to..end, piece.iter().copied());
            }
            _ => {}
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs every file of `fuzz/corpus/<target>` and `fuzz/regressions/<target>`
/// through `run`, then `cases` mutations of them (a fixed seed: the same
/// inputs every time). A panic fails the test and names the input (in hex,
/// shrunk to the fewest mutations): write it to fuzz/regressions/<target>/.
pub fn replay(target: &str, run: fn(&[u8]), cases: u32) {
    let corpus = files("corpus", target);
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target} is empty: write the seeds (fuzz/README.md)"
    );
    let regressions = files("regressions", target);
    for (path, bytes) in corpus.iter().chain(&regressions) {
        if catch_unwind(AssertUnwindSafe(|| run(bytes))).is_err() {
            panic!("target {target} panicked on {}", path.display());
        }
    }
    let inputs: Vec<Vec<u8>> = corpus
        .into_iter()
        .chain(regressions)
        .map(|(_, b)| b)
        .collect();
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let strategy = (0..inputs.len(), prop::collection::vec(mutation(), 1..5));
    let result = runner.run(&strategy, |(k, mutations)| {
        let input = apply(&inputs[k], &mutations, &inputs);
        if catch_unwind(AssertUnwindSafe(|| run(&input))).is_err() {
            return Err(TestCaseError::fail(format!(
                "target {target} panicked on {} bytes: {}",
                input.len(),
                hex(&input)
            )));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
