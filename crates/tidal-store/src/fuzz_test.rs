//! The store's fuzz targets on stable Rust: the committed corpora, the
//! regressions and a fixed set of mutations of them; and the generator of
//! the seed corpora (`TIDAL_WRITE_FUZZ_SEEDS=1 cargo test -p tidal-store fuzz_seeds`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::replay::{files, fuzz_dir, replay};
use super::samples;
use super::*;
use crate::codec::encode;
use crate::Applied;

/// Mutations per target: a few seconds in all.
const CASES: u32 = 2_000;

/// Writes `seeds` to fuzz/corpus/<target> when TIDAL_WRITE_FUZZ_SEEDS is
/// set; in any case runs each through `run`, and checks with `decodes`
/// that it is a valid input (so the corpus starts from real values).
pub(crate) fn seeds(
    target: &str,
    seeds: Vec<(String, Vec<u8>)>,
    run: fn(&[u8]),
    decodes: impl Fn(&[u8]) -> bool,
) {
    let dir = fuzz_dir().join("corpus").join(target);
    let write = std::env::var_os("TIDAL_WRITE_FUZZ_SEEDS").is_some();
    if write {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for (name, bytes) in seeds {
        assert!(decodes(&bytes), "seed {target}/{name} does not decode");
        run(&bytes);
        if write {
            std::fs::write(dir.join(format!("seed-{name}")), &bytes).unwrap();
        }
    }
}

fn entry_seeds() -> Vec<(String, Vec<u8>)> {
    samples::entries()
        .iter()
        .map(|e| {
            (
                format!("entry-{}", e.log_id.index),
                encode("entry", e).unwrap(),
            )
        })
        .collect()
}

fn segment_seeds() -> Vec<(String, Vec<u8>)> {
    let record = |e: &Entry| {
        let value = encode("entry", e).unwrap();
        let mut out = (value.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&value);
        out
    };
    let entries = samples::entries();
    let whole: Vec<u8> = entries.iter().flat_map(record).collect();
    let few: Vec<u8> = entries[..3].iter().flat_map(record).collect();
    let tail: Vec<u8> = entries[10..].iter().flat_map(record).collect();
    let mut torn = few.clone();
    torn.extend_from_slice(&record(&entries[3])[..20]);
    vec![
        ("segment-all".into(), whole),
        ("segment-3".into(), few),
        ("segment-tail".into(), tail),
        ("segment-torn".into(), torn),
    ]
}

fn golden_snapshot() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/testdata/state-v1.snapshot"))
        .expect("the checked-in snapshot")
}

fn snapshot_seeds() -> Vec<(String, Vec<u8>)> {
    let applied = samples::applied();
    let mut v1 = applied.clone();
    v1.state.restore_cluster_version(1);
    vec![
        ("golden-v1".into(), golden_snapshot()),
        (
            "every-kind-v2".into(),
            crate::encode_snapshot(&applied).unwrap(),
        ),
        ("every-kind-v1".into(), crate::encode_snapshot(&v1).unwrap()),
        (
            "empty".into(),
            crate::encode_snapshot(&Applied::default()).unwrap(),
        ),
    ]
}

/// A backup as store format 1 wrote it: (term, node) leader ids.
fn format_1_backup() -> Vec<u8> {
    let applied = samples::applied();
    let log_id = |id: LogId| ((id.leader_id.term, 1u64), id.index);
    let m = applied.membership.membership();
    let configs: Vec<BTreeSet<u64>> = m.get_joint_config().clone();
    let nodes: BTreeMap<u64, openraft::BasicNode> =
        m.nodes().map(|(id, n)| (*id, n.clone())).collect();
    let value = (
        &applied.state,
        applied.last_applied.map(log_id),
        (applied.membership.log_id().map(log_id), (configs, nodes)),
    );
    let body = bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap();
    let mut out = vec![1u8];
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

#[test]
fn fuzz_seeds() {
    seeds("store_entry", entry_seeds(), store_entry, |b| {
        codec::decode::<Entry>("entry", b).is_ok()
    });
    let vote = openraft::Vote::new_committed(3, 2);
    seeds(
        "store_value",
        vec![
            ("vote".into(), encode("vote", &Vote::new(3, 2)).unwrap()),
            ("vote-committed".into(), encode("vote", &vote).unwrap()),
            (
                "log-id".into(),
                encode("id", &samples::log_id(4, 17)).unwrap(),
            ),
            (
                "committed".into(),
                encode("id", &Some(samples::log_id(4, 17))).unwrap(),
            ),
            ("none".into(), encode("id", &None::<LogId>).unwrap()),
        ],
        store_value,
        |b| {
            codec::decode::<Vote>("v", b).is_ok()
                || codec::decode::<LogId>("v", b).is_ok()
                || codec::decode::<Option<LogId>>("v", b).is_ok()
        },
    );
    seeds("wal_segment", segment_seeds(), wal_segment, |b| {
        crate::wal::parse_segment(b, 1, true).is_ok()
            || crate::wal::parse_segment(b, 11, true).is_ok()
    });
    seeds("snapshot", snapshot_seeds(), snapshot, |b| {
        crate::decode_snapshot(b).is_ok()
    });
    let mut backups = snapshot_seeds();
    backups.retain(|(name, _)| name != "empty");
    backups.push(("format-1".into(), format_1_backup()));
    seeds("backup_restore", backups, backup_restore, |b| {
        crate::upgrade::decode_backup(b).is_ok()
    });
}

#[test]
fn store_entry_replays() {
    replay("store_entry", store_entry, CASES);
}

#[test]
fn store_value_replays() {
    replay("store_value", store_value, CASES);
}

#[test]
fn wal_segment_replays() {
    replay("wal_segment", wal_segment, CASES);
}

#[test]
fn snapshot_replays() {
    replay("snapshot", snapshot, CASES / 4);
}

#[test]
fn backup_restore_replays() {
    replay("backup_restore", backup_restore, CASES / 4);
}

/// Every backup of the corpus and the regressions restores into an empty
/// store, or is refused with an error.
#[test]
fn backups_of_the_corpus_restore_or_are_refused() {
    let inputs = files("corpus", "backup_restore")
        .into_iter()
        .chain(files("regressions", "backup_restore"));
    let mut restored = 0;
    for (path, bytes) in inputs {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        match crate::restore(&store, &bytes, 1, "127.0.0.1:7001") {
            Ok(_) => restored += 1,
            Err(e) => assert!(
                crate::upgrade::decode_backup(&bytes).is_err(),
                "{} decodes but does not restore: {e}",
                path.display()
            ),
        }
    }
    assert!(restored > 0, "the seeds restore");
}
