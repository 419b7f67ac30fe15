//! The bounded chaos subset CI runs on every change: each scenario of
//! RELIABILITY.md that fits, for a few seconds of faults, against real
//! `tidal` processes, with every checker. A failure prints the report with
//! the seed and the command that reproduces it, and keeps the run's
//! history, logs and data under target/tmp/chaos/.
//!
//! Every run has mutual TLS and tokens, as `tidal chaos run` does by
//! default. A few run again in plaintext (`--insecure`), so that path
//! stays covered: a leader kill with `--auth none` (the way everything
//! ran before TLS and tokens), the membership changes with tokens, and a
//! netns scenario with `--auth none`, whose nodes on non-loopback
//! addresses serve the peer plane on `--peer-listen`. S29 (forged peer
//! traffic) always runs over TLS, S30 (a revoked agent token) with tokens.
//!
//! The seed is fixed per scenario so CI replays the same fault schedule;
//! `TIDAL_CHAOS_SEED=N` overrides it. The full matrix, longer:
//! `tidal chaos run --scenario all --duration 60s`.
//!
//! S22-S24 run in network namespaces with nftables (root, as CI runs);
//! where that is not possible (not root, no `ip` or `nft`) they print that
//! they were skipped, and pass.

use std::time::Duration;

use tidal_chaos::runner::NetMode;
use tidal_chaos::RunOptions;

/// `cargo test` runs the tests of a binary in parallel threads; chaos runs
/// go one at a time (nextest gets the same from .config/nextest.toml).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run(name: &str, seed: u64, seconds: u64) {
    run_with(name, seed, seconds, true, true).await
}

async fn run_with(name: &str, seed: u64, seconds: u64, tls: bool, tokens: bool) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let scenario = tidal_chaos::find(name).expect("a known scenario");
    let seed = std::env::var("TIDAL_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(seed);
    let options = RunOptions {
        scenario,
        seed,
        duration: Duration::from_secs(seconds),
        dir: std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("chaos")
            .join(format!(
                "{name}-{seed}{}{}",
                if tls { "" } else { "-insecure" },
                if tokens { "" } else { "-noauth" }
            )),
        keep: false,
        tidal: env!("CARGO_BIN_EXE_tidal").into(),
        clients: 3,
        agents: 2,
        server_args: Vec::new(),
        net: NetMode::Proxy,
        tls,
        tokens,
    };
    let _ = std::fs::remove_dir_all(&options.dir);
    let report = match tidal_chaos::run(options.clone()).await {
        Ok(report) => report,
        Err(e) if tidal_chaos::netns::skipped(&e).is_some() => {
            println!("{name} ({}) {e}", scenario.id);
            eprintln!("{name} ({}) {e}", scenario.id);
            return;
        }
        Err(e) => panic!(
            "{name} could not run: {e:#}\nreproduce: {}",
            options.reproduce()
        ),
    };
    assert!(report.ok(), "\n{}", report.render());
    assert!(
        report.acknowledged_submits > 0,
        "the workload made progress\n{}",
        report.render()
    );
}

macro_rules! scenarios {
    ($($test:ident: $name:literal, $seed:literal, $seconds:literal;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            run($name, $seed, $seconds).await;
        }
    )*};
}

scenarios! {
    s01_none: "none", 101, 5;
    s02_kill_leader: "kill-leader", 102, 10;
    s03_kill_minority: "kill-minority", 103, 8;
    s04_kill_all: "kill-all", 104, 8;
    s05_isolate_leader: "isolate-leader", 105, 8;
    s06_split_2_3: "split-2-3", 106, 8;
    s07_majorities_ring: "majorities-ring", 107, 8;
    s08_bridge: "bridge", 108, 8;
    s09_one_way_leader: "one-way-leader", 109, 8;
    s10_pause_leader: "pause-leader", 110, 8;
    s11_pause_agent: "pause-agent", 111, 8;
    s12_failover_agents: "failover-agents", 112, 8;
    s13_loss: "loss", 113, 8;
    s14_jitter_follower: "jitter-follower", 114, 8;
    s15_crash_points: "crash-points", 115, 10;
    s16_lost_writes: "lost-writes", 116, 10;
    s18_membership: "membership", 118, 8;
    s19_cut_dc_link: "cut-dc-link", 119, 10;
    s20_kill_remote_leader: "kill-remote-leader", 120, 10;
    s21_random_mix: "random-mix", 121, 12;
    s25_rolling_restart: "rolling-restart", 125, 8;
    // Network namespaces and nftables (skipped unless root).
    s22_cut_leader_but_agent: "cut-leader-but-agent", 122, 10;
    s23_pause_leader_agent_ttl: "pause-leader-agent-ttl", 123, 8;
    s24_silent_isolate_leader: "silent-isolate-leader", 124, 10;
    s26_agent_kill: "agent-kill", 126, 8;
    s27_duplicate_agent_id: "duplicate-agent-id", 127, 8;
    s28_drain_under_faults: "drain-under-faults", 128, 8;
    s29_forged_peers: "forged-peers", 129, 10;
    s30_token_revoked: "token-revoked", 130, 10;
    s31_preempt_under_faults: "preempt-under-faults", 131, 10;
}

macro_rules! insecure_scenarios {
    ($($test:ident: $name:literal, $seed:literal, $seconds:literal, $tokens:literal;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            run_with($name, $seed, $seconds, false, $tokens).await;
        }
    )*};
}

// In plaintext (`--insecure`), with tokens or `--auth none`.
insecure_scenarios! {
    s02_kill_leader_insecure: "kill-leader", 202, 10, false;
    s18_membership_insecure: "membership", 218, 8, true;
    s23_pause_leader_agent_ttl_insecure: "pause-leader-agent-ttl", 223, 8, false;
}
