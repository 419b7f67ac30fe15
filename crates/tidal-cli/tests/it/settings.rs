//! `tidal server` settings through the binary: file, variables and flags in
//! that order of precedence, and `--print-config` read back by `--config`.

use std::path::Path;
use std::process::Command;

use tidal_server::config::RawConfig;

/// `tidal server ARGS --print-config` with only the variables `env`; its stdout.
fn print_config(args: &[&str], env: &[(&str, &str)]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_tidal"))
        .arg("server")
        .args(args)
        .arg("--print-config")
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run the tidal binary");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{args:?} {env:?}: {stderr}");
    String::from_utf8(o.stdout).expect("UTF-8 settings")
}

fn parse(printed: &str) -> RawConfig {
    toml::from_str(printed).unwrap_or_else(|e| panic!("{e}: {printed}"))
}

const REQUIRED: [&str; 6] = ["--id", "1", "--dc", "dc1", "--listen", "127.0.0.1:7001"];

#[test]
fn a_flag_overrides_its_variable_which_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(
        &file,
        "snapshot_every = 1\nagent_ttl_ms = 12000\n[forwarding]\noutbox_limit = 11\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut args = REQUIRED.to_vec();
    args.extend(["--data", data.to_str().unwrap()]);
    args.extend(["--config", file.to_str().unwrap()]);
    let with_flag = [args.clone(), vec!["--snapshot-every", "3"]].concat();
    let env = [
        ("TIDAL_SNAPSHOT_EVERY", "2"),
        ("TIDAL_OUTBOX_LIMIT", "12"),
        (
            "TIDAL_PEERS",
            "dc2=127.0.0.1:7101,127.0.0.1:7102;dc3=127.0.0.1:7201",
        ),
        // An empty variable counts as unset.
        ("TIDAL_ADVERTISE", ""),
    ];

    let file_only = parse(&print_config(&args, &[]));
    assert_eq!(file_only.snapshot_every, Some(1));
    assert_eq!(file_only.forwarding.outbox_limit, Some(11));
    assert_eq!(file_only.peers, Some(vec![]));

    let file_env = parse(&print_config(&args, &env));
    assert_eq!(file_env.snapshot_every, Some(2));
    assert_eq!(file_env.forwarding.outbox_limit, Some(12));
    assert_eq!(
        file_env.agent_ttl_ms,
        Some(12_000),
        "the file's, unset elsewhere"
    );
    assert_eq!(file_env.advertise.as_deref(), Some("127.0.0.1:7001"));
    let peers: Vec<(&str, usize)> = file_env
        .peers
        .iter()
        .flatten()
        .map(|p| (p.dc.as_str(), p.endpoints.len()))
        .collect();
    assert_eq!(peers, [("dc2", 2), ("dc3", 1)]);

    let all = parse(&print_config(&with_flag, &env));
    assert_eq!(all.snapshot_every, Some(3));
    assert_eq!(all.forwarding.outbox_limit, Some(12));
    assert!(!data.exists(), "--print-config starts nothing");
}

#[test]
fn printed_settings_read_back_to_the_same_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut args = REQUIRED.to_vec();
    args.extend(["--data", data.to_str().unwrap(), "--init"]);
    args.extend(["--peer", "dc2=127.0.0.1:7101", "--forward-after-ms", "500"]);
    let printed = print_config(&args, &[("TIDAL_SOURCE_IP", "127.0.0.1")]);
    let file = dir.path().join("printed.toml");
    std::fs::write(&file, &printed).unwrap();
    let again = print_config(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(again, printed);
    let config = |p: &Path| RawConfig::from_file(p).unwrap().validate().unwrap();
    let from_flags = parse(&printed).validate().unwrap();
    assert_eq!(config(&file), from_flags);
    assert_eq!(from_flags.snapshot_every, 20_000, "defaults are filled in");
    assert!(from_flags.init);
    assert!(!data.exists(), "--print-config starts nothing");
}

/// `tidal server ARGS --print-config` with only the variables `env`, which
/// must be a usage error (exit 2); its stderr.
fn usage_error(args: &[&str], env: &[(&str, &str)]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_tidal"))
        .arg("server")
        .args(args)
        .arg("--print-config")
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run the tidal binary");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
    stderr
}

#[test]
fn a_value_that_does_not_parse_is_named_by_where_it_came_from() {
    let bad = [("TIDAL_AGENT_TTL_MS", "ten")];
    let e = usage_error(&REQUIRED, &bad);
    assert!(
        e.contains("invalid value 'ten' for 'TIDAL_AGENT_TTL_MS'"),
        "{e}"
    );
    for (var, value) in [
        ("TIDAL_OUTBOX_LIMIT", "-1"),
        ("TIDAL_INIT", "maybe"),
        ("TIDAL_ID", "one"),
    ] {
        let e = usage_error(&REQUIRED[2..], &[(var, value)]);
        assert!(e.contains(&format!("'{value}' for '{var}'")), "{e}");
    }

    // A flag is named by the flag, whatever its variable holds.
    let flag = [&REQUIRED[..], &["--agent-ttl-ms", "ten"]].concat();
    for env in [&[][..], &bad, &[("TIDAL_AGENT_TTL_MS", "5000")]] {
        let e = usage_error(&flag, env);
        assert!(e.contains("'ten' for '--agent-ttl-ms <MS>'"), "{e}");
    }
    // A good flag overrides a bad variable, which is not read.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let good = [
        &REQUIRED[..],
        &["--data", data.to_str().unwrap(), "--agent-ttl-ms", "5000"],
    ]
    .concat();
    assert_eq!(parse(&print_config(&good, &bad)).agent_ttl_ms, Some(5000));
}
