//! The server's fuzz targets on stable Rust: the committed corpora, the
//! regressions and a fixed set of mutations of them; and the generator of
//! the seed corpora (`TIDAL_WRITE_FUZZ_SEEDS=1 cargo test -p tidal-server fuzz_seeds`).

use openraft::error::Fatal;
use openraft::{CommittedLeaderId, SnapshotMeta, Vote};
use tidal_core::forwarding::{Record, Verdict};
use tidal_store::fuzz::replay::{fuzz_dir, replay};
use tidal_store::fuzz::samples;

use super::*;
use crate::links::{ExchangeBody, ExchangeReply, Summary};
use crate::raft::network::encode;

/// Mutations per target: a few seconds in all.
pub(crate) const CASES: u32 = 2_000;

/// Named seed inputs of one target.
pub(crate) type Seeds = Vec<(String, Vec<u8>)>;

/// Writes `seeds` to fuzz/corpus/<target> when TIDAL_WRITE_FUZZ_SEEDS is
/// set; in any case runs each through `run`, and checks with `valid` that
/// it is a valid input (so the corpus starts from real values).
pub(crate) fn seeds(
    target: &str,
    seeds: Vec<(String, Vec<u8>)>,
    run: fn(&[u8]),
    valid: impl Fn(&[u8]) -> bool,
) {
    let dir = fuzz_dir().join("corpus").join(target);
    let write = std::env::var_os("TIDAL_WRITE_FUZZ_SEEDS").is_some();
    if write {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for (name, bytes) in seeds {
        assert!(valid(&bytes), "seed {target}/{name} is not a valid input");
        run(&bytes);
        if write {
            std::fs::write(dir.join(format!("seed-{name}")), &bytes).unwrap();
        }
    }
}

fn vote() -> Vote<u64> {
    Vote::new_committed(2, 1)
}

fn raft_seeds() -> [Seeds; 4] {
    let entries = samples::entries();
    let append = |prev: usize, n: usize| AppendEntriesRequest::<TypeConfig> {
        vote: vote(),
        prev_log_id: prev.checked_sub(1).map(|i| entries[i].log_id),
        entries: entries[prev..prev + n].to_vec(),
        leader_commit: Some(entries[prev].log_id),
    };
    let appends = vec![
        ("heartbeat".into(), encode(&append(4, 0)).unwrap()),
        ("first-3".into(), encode(&append(0, 3)).unwrap()),
        (
            "every-kind".into(),
            encode(&append(2, entries.len() - 2)).unwrap(),
        ),
        ("one".into(), encode(&append(7, 1)).unwrap()),
    ];
    let last = Some(samples::log_id(2, 9));
    let votes = vec![
        (
            "vote".into(),
            encode(&VoteRequest::new(Vote::new(3, 2), last)).unwrap(),
        ),
        (
            "vote-empty-log".into(),
            encode(&VoteRequest::<u64>::new(Vote::new(1, 1), None)).unwrap(),
        ),
    ];
    let applied = samples::applied();
    let meta = SnapshotMeta {
        last_log_id: applied.last_applied,
        last_membership: applied.membership.clone(),
        snapshot_id: "2-9-1".into(),
    };
    let data = tidal_store::encode_snapshot(&applied).unwrap();
    let snapshot = |offset: u64, data: Vec<u8>, done| InstallSnapshotRequest::<TypeConfig> {
        vote: vote(),
        meta: meta.clone(),
        offset,
        data,
        done,
    };
    let snapshots = vec![
        (
            "whole".into(),
            encode(&snapshot(0, data.clone(), true)).unwrap(),
        ),
        (
            "chunk".into(),
            encode(&snapshot(64, data[64..200].to_vec(), false)).unwrap(),
        ),
    ];
    type Append = Result<AppendEntriesResponse<u64>, RaftError<u64>>;
    type Voted = Result<VoteResponse<u64>, RaftError<u64>>;
    type Installed = Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>;
    let replies = vec![
        (
            "append-success".into(),
            encode(&Append::Ok(AppendEntriesResponse::Success)).unwrap(),
        ),
        (
            "append-partial".into(),
            encode(&Append::Ok(AppendEntriesResponse::PartialSuccess(last))).unwrap(),
        ),
        (
            "append-conflict".into(),
            encode(&Append::Ok(AppendEntriesResponse::Conflict)).unwrap(),
        ),
        (
            "append-higher".into(),
            encode(&Append::Ok(AppendEntriesResponse::HigherVote(Vote::new(
                4, 3,
            ))))
            .unwrap(),
        ),
        (
            "append-stopped".into(),
            encode(&Append::Err(RaftError::Fatal(Fatal::Stopped))).unwrap(),
        ),
        (
            "vote-granted".into(),
            encode(&Voted::Ok(VoteResponse {
                vote: Vote::new(3, 2),
                vote_granted: true,
                last_log_id: last,
            }))
            .unwrap(),
        ),
        (
            "installed".into(),
            encode(&Installed::Ok(InstallSnapshotResponse { vote: vote() })).unwrap(),
        ),
    ];
    [appends, votes, snapshots, replies]
}

fn exchange_seeds() -> (Seeds, Seeds) {
    let applied = samples::applied();
    let summary = Summary::of(&applied.state);
    let spec = tidal_core::TaskSpec {
        task_type: "t2i".into(),
        payload: b"prompt".to_vec(),
        tenant: "alice".into(),
        ..Default::default()
    };
    let body = ExchangeBody {
        summary: summary.clone(),
        records: vec![
            (
                1,
                Record::Task {
                    origin_task: tidal_core::TaskId(7),
                    spec,
                },
            ),
            (
                2,
                Record::Cancel {
                    origin_task: tidal_core::TaskId(8),
                },
            ),
        ],
    };
    let empty = ExchangeBody {
        summary: summary.clone(),
        records: vec![],
    };
    let reply = ExchangeReply {
        summary,
        verdicts: vec![
            (
                1,
                Verdict::Accepted {
                    remote_task: Some(tidal_core::TaskId(70)),
                },
            ),
            (
                2,
                Verdict::Rejected {
                    reason: "no agent runs t2i".into(),
                },
            ),
        ],
        hwm: 2,
    };
    let encode_reply = |r: &ExchangeReply| tidal_store::codec::encode("reply", r).unwrap();
    (
        vec![
            ("records".into(), body.encode().unwrap()),
            ("summary-only".into(), empty.encode().unwrap()),
        ],
        vec![("verdicts".into(), encode_reply(&reply))],
    )
}

/// The example configs of cluster/ and cluster/two-dc/.
fn config_seeds() -> Seeds {
    let root = fuzz_dir().join("../cluster");
    let mut out = Vec::new();
    for dir in [root.clone(), root.join("two-dc")] {
        for item in std::fs::read_dir(&dir).unwrap() {
            let path = item.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                out.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    assert!(out.len() >= 6, "the example configs");
    out
}

#[test]
fn fuzz_seeds() {
    let [appends, votes, snapshots, replies] = raft_seeds();
    seeds("raft_append", appends, raft_append, |b| {
        decode::<AppendEntriesRequest<TypeConfig>>(b).is_ok()
    });
    seeds("raft_vote", votes, raft_vote, |b| {
        decode::<VoteRequest<u64>>(b).is_ok()
    });
    seeds("raft_snapshot", snapshots, raft_snapshot, |b| {
        decode::<InstallSnapshotRequest<TypeConfig>>(b).is_ok()
    });
    seeds("raft_replies", replies, raft_replies, |b| {
        decode::<Result<AppendEntriesResponse<u64>, RaftError<u64>>>(b).is_ok()
            || decode::<Result<VoteResponse<u64>, RaftError<u64>>>(b).is_ok()
    });
    let log_ids = vec![
        (
            "some".into(),
            encode(&Some(samples::log_id(3, 120))).unwrap(),
        ),
        (
            "none".into(),
            encode(&None::<openraft::LogId<u64>>).unwrap(),
        ),
        (
            "large".into(),
            encode(&Some(openraft::LogId::new(
                CommittedLeaderId::new(u64::MAX, 0),
                u64::MAX,
            )))
            .unwrap(),
        ),
    ];
    seeds("pre_vote_log_id", log_ids, pre_vote_log_id, |b| {
        crate::raft::Elections::decode_last_log_id(b).is_ok()
    });
    let (bodies, replies) = exchange_seeds();
    seeds("exchange_body", bodies, exchange_body, |b| {
        tidal_store::codec::decode::<ExchangeBody>("x", b).is_ok()
    });
    seeds("exchange_reply", replies, exchange_reply, |b| {
        tidal_store::codec::decode::<ExchangeReply>("x", b).is_ok()
    });
    seeds("config_toml", config_seeds(), config_toml, |b| {
        let raw: crate::config::RawConfig =
            toml::from_str(std::str::from_utf8(b).unwrap()).unwrap();
        raw.validate().is_ok()
    });
    seeds("member_addr", member_addr_seeds(), member_addr, |b| {
        crate::raft::member_addr::MemberAddr::parse(std::str::from_utf8(b).unwrap()).is_ok()
    });
    seeds("token", token_seeds(), token, |b| {
        let s = std::str::from_utf8(b).unwrap();
        crate::auth::token::Token::parse(s).is_ok()
            || crate::auth::token::parse_bearer(s).is_ok()
            || crate::auth::token::parse_ttl(s).is_ok()
    });
    seeds("tls_identity", tls_identity_seeds(), tls_identity, |b| {
        tidal_tls::CertIdentity::from_der(b).is_ok()
            || std::str::from_utf8(b).is_ok_and(|s| tidal_tls::CertIdentity::from_uri(s).is_ok())
    });
}

/// A fixed token (no real secret), its `authorization` header, and TTLs.
fn token_seeds() -> Seeds {
    let t = format!("tdl_0123456789abcdef_{}", "A_-z".repeat(10) + "abc");
    [
        ("token", t.clone()),
        ("bearer", format!("Bearer {t}")),
        ("ttl-days", "30d".to_string()),
        ("ttl-seconds", "90s".to_string()),
    ]
    .into_iter()
    .map(|(name, text)| (name.to_string(), text.into_bytes()))
    .collect()
}

/// Members' addresses as `--init`, `add-learner` and `--restore` store them.
fn member_addr_seeds() -> Seeds {
    [
        ("client", "127.0.0.1:7001"),
        ("client-peer", "127.0.0.11:7001|127.0.0.11:7101"),
        ("names", "node-1.dc1.example:7001|node-1.internal:7101"),
        ("ipv6", "[::1]:7001|[::1]:7101"),
    ]
    .into_iter()
    .map(|(name, addr)| (name.to_string(), addr.as_bytes().to_vec()))
    .collect()
}

/// Certificates of each role as `tidal cert issue` writes them (DER), and
/// identity URIs with percent-encoded segments.
fn tls_identity_seeds() -> Seeds {
    use tidal_tls::issue::{issue, new_ca, Request, Validity};
    use tidal_tls::rustls::pki_types::{pem::PemObject, CertificateDer};
    use tidal_tls::{CertIdentity, Role};

    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    new_ca(&ca, "fuzz-ca", Validity::days(30)).unwrap();
    let mut out = Vec::new();
    for (name, role, dc, holder) in [
        ("server", Role::Server, Some("dc1"), "1"),
        ("agent", Role::Agent, Some("dc/2"), "gpu-node:7"),
        ("client", Role::Client, None, "alice"),
    ] {
        let identity = CertIdentity::new(role, dc, holder).unwrap();
        let dir = tmp.path().join(name);
        let req = Request {
            identity: identity.clone(),
            hosts: Vec::new(),
            validity: Validity::days(10),
        };
        issue(&ca, &req, &dir).unwrap();
        let pem = std::fs::read(dir.join(tidal_tls::files::CERT_FILE)).unwrap();
        let der = CertificateDer::from_pem_slice(&pem).unwrap();
        out.push((format!("{name}.der"), der.to_vec()));
        out.push((format!("{name}.uri"), identity.to_uri().into_bytes()));
    }
    out
}

macro_rules! replays {
    ($($name:ident: $target:ident,)*) => {$(
        #[test]
        fn $name() {
            replay(stringify!($target), $target, CASES);
        }
    )*};
}

replays! {
    raft_append_replays: raft_append,
    raft_vote_replays: raft_vote,
    raft_snapshot_replays: raft_snapshot,
    raft_replies_replays: raft_replies,
    pre_vote_log_id_replays: pre_vote_log_id,
    exchange_body_replays: exchange_body,
    exchange_reply_replays: exchange_reply,
    config_toml_replays: config_toml,
    member_addr_replays: member_addr,
    tls_identity_replays: tls_identity,
    token_replays: token,
}
