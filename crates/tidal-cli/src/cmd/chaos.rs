//! `tidal chaos`: the fault-injection harness (tidal-chaos) against real
//! `tidal` processes on 127.0.0.1: list the scenarios, run some, or check a
//! kept history again.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use tidal_chaos::check::{self, Facts};
use tidal_chaos::runner::NetMode;
use tidal_chaos::{history, RunOptions, Scenario, SCENARIOS};

use crate::exit;

#[derive(Subcommand, Debug)]
pub enum ChaosCmd {
    /// List the scenarios.
    List,
    /// Run scenarios: start a cluster behind the fault proxy, play the
    /// faults under a workload, heal, check the history.
    Run(RunArgs),
    /// Check a kept history (history.jsonl) again.
    Check(CheckArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Scenario names or ids, comma-separated, or `all`.
    #[arg(long, value_delimiter = ',', required = true, value_name = "NAME,...")]
    pub scenario: Vec<String>,
    /// Seed of the faults and the workload (default: from the clock; printed).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// How long faults are played, e.g. 30s or 2m.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,
    /// Where runs keep history, logs and data (a directory per run).
    #[arg(long, default_value = ".tidal-chaos", value_name = "DIR")]
    pub dir: PathBuf,
    /// Keep a passing run's directory too (a failing run's is always kept).
    #[arg(long)]
    pub keep: bool,
    /// Concurrent clients.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub clients: usize,
    /// Agents.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub agents: usize,
    /// The `tidal` binary to test (default: this one).
    #[arg(long, value_name = "PATH")]
    pub tidal: Option<PathBuf>,
    /// A flag for every server the run starts, e.g.
    /// `--server-arg=--election-timeout-min-ms=80` (repeatable)
    #[arg(long = "server-arg", value_name = "FLAG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// The fault layer: `proxy` (userspace TCP proxies on 127.0.0.0/8, no
    /// privileges) or `netns` (each node and agent in its own network
    /// namespace, faults as nftables rules that drop packets; needs root,
    /// `ip` and `nft`, and is skipped without them). S22-S24 always run in
    /// netns.
    #[arg(long, default_value = "proxy", value_name = "proxy|netns")]
    pub net: NetMode,
    /// Plaintext instead of mutual TLS (by default every run has a CA of
    /// its own in its directory's `tls/` and a certificate for every node,
    /// agent and client; the proxies pass the TLS bytes on unchanged).
    /// S29 always runs over TLS.
    #[arg(long, conflicts_with = "tls")]
    pub insecure: bool,
    /// Mutual TLS (the default; kept for older command lines).
    #[arg(long, hide = true)]
    pub tls: bool,
    /// How the servers check callers: `tokens` (the default: an admin token
    /// for the run's clients, an agent token for each agent) or `none`.
    /// S30 always runs with tokens.
    #[arg(long, default_value = "tokens", value_name = "tokens|none", value_parser = ["tokens", "none"])]
    pub auth: String,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// A history.jsonl from a run.
    #[arg(value_name = "HISTORY")]
    pub history: PathBuf,
    /// Agents were paused in that run (skips the overlap check).
    #[arg(long)]
    pub agents_paused: bool,
}

/// `30s`, `2m`, `500ms` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(s.trim().len()),
    );
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 2m or 500ms"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?}: use s, m or ms")),
    }
}

pub async fn run(cmd: ChaosCmd) -> anyhow::Result<i32> {
    match cmd {
        ChaosCmd::List => {
            for s in SCENARIOS {
                println!("{:<4} {:<22} {} nodes  {}", s.id, s.name, s.nodes, s.about);
            }
            Ok(exit::OK)
        }
        ChaosCmd::Check(a) => {
            let events = history::load(&a.history)?;
            let verdicts = check::run_all(
                &events,
                &Facts {
                    agents_paused: a.agents_paused,
                },
            );
            let mut ok = true;
            for v in &verdicts {
                println!("{:<16} {}", v.checker, if v.ok() { "ok" } else { "FAILED" });
                for p in &v.problems {
                    println!("    {p}");
                }
                ok &= v.ok();
            }
            Ok(if ok { exit::OK } else { exit::ERROR })
        }
        ChaosCmd::Run(a) => run_scenarios(a).await,
    }
}

fn selected(names: &[String]) -> anyhow::Result<Vec<Scenario>> {
    if names.iter().any(|n| n == "all") {
        return Ok(SCENARIOS.to_vec());
    }
    names
        .iter()
        .map(|n| {
            tidal_chaos::find(n)
                .ok_or_else(|| anyhow!("no scenario {n:?}; `tidal chaos list` shows them"))
        })
        .collect()
}

async fn run_scenarios(a: RunArgs) -> anyhow::Result<i32> {
    let scenarios = selected(&a.scenario)?;
    if a.clients == 0 || a.clients > 200 || a.agents == 0 || a.agents > 200 {
        bail!("--clients and --agents must be 1..=200");
    }
    let tidal = match a.tidal {
        Some(t) => t,
        None => std::env::current_exe().context("finding this binary")?,
    };
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let mut failed = Vec::new();
    let mut skipped = Vec::new();
    for s in scenarios {
        let options = RunOptions {
            scenario: s,
            seed,
            duration: a.duration,
            dir: a.dir.join(format!("{}-{seed}", s.name)),
            keep: a.keep,
            tidal: tidal.clone(),
            clients: a.clients,
            agents: a.agents,
            server_args: a.server_args.clone(),
            net: a.net,
            tls: !a.insecure,
            tokens: a.auth == "tokens",
        };
        let netns = s.netns || a.net == NetMode::Netns;
        eprintln!(
            "running {} ({}) with seed {seed} for {:?}{}{}...",
            s.name,
            s.id,
            a.duration,
            if netns { " in network namespaces" } else { "" },
            options.security()
        );
        match tidal_chaos::run(options.clone()).await {
            Ok(report) => {
                print!("{}", report.render());
                if !report.ok() {
                    failed.push(s.name);
                }
            }
            Err(e) if tidal_chaos::netns::skipped(&e).is_some() => {
                println!("scenario {} ({}) {e}", s.name, s.id);
                skipped.push(s.name);
            }
            Err(e) => {
                println!(
                    "scenario {} could not run: {e:#}\nreproduce with `{}`; logs are in {}",
                    s.name,
                    options.reproduce(),
                    options.dir.display()
                );
                failed.push(s.name);
            }
        }
    }
    if !skipped.is_empty() {
        eprintln!("skipped (not run, not passed): {}", skipped.join(", "));
    }
    if failed.is_empty() {
        Ok(exit::OK)
    } else {
        eprintln!("error: failed: {}", failed.join(", "));
        Ok(exit::ERROR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3h").is_err());
    }
}
