//! `tidal-bench`: drives a tidal cluster it starts itself (3 real `tidal
//! server` processes on 127.0.0.1, data on disk, every append durable) or
//! one given by `--endpoints`, and prints throughput and latency.
//!
//! Workloads:
//! - `submit`: N concurrent clients submitting one task per request.
//! - `e2e`: clients submit while simulated agents (real sessions in this
//!   process) complete every assignment at once; tasks/s submitted,
//!   assigned and completed, latency submit->assigned and submit->completed.
//! - `failover`: the leader SIGKILLed under load; time to the new leader's
//!   first assignment, acknowledged tasks lost.
//! - `rolling-restart`: each server SIGTERMed in turn under load and
//!   restarted; per server, the longest time without an acknowledged submit.
//! - `agents`: ten thousand agents heartbeating at 1 Hz; the leader's CPU
//!   and the heartbeat round trip.
//! - `memory`: a million pending tasks; every server's memory, a snapshot,
//!   a restart of every server to service.
//! - `soak`: a million tasks through at a steady rate with a short
//!   retention; the leader's resident memory and state size over time.
//! - `preempt`: real agents full of offline work; the time from an online
//!   task's submit to its worker's start, victims stopped with notice or
//!   suspended.
//!
//! Results: a table, or one JSON document with `--output json`, with the
//! machine, the git revision and the settings.

mod cluster;
mod etcd;
mod preempt;
mod snapshot_apply;
mod stats;
mod workloads;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tidal_client::tidal_tls::Expect;

#[derive(Parser, Debug)]
#[command(
    name = "tidal-bench",
    about = "Load generator and benchmarks for tidal"
)]
struct Cli {
    #[command(subcommand)]
    workload: Workload,
    /// Benchmark this cluster instead of starting one (HOST:PORT,...).
    #[arg(long, global = true, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// The `tidal` binary for the cluster it starts (default: next to this one).
    #[arg(long, global = true)]
    tidal: Option<PathBuf>,
    /// Delay every durable flush on the servers it starts by this many microseconds (a slower disk).
    #[arg(long, global = true, default_value_t = 0)]
    flush_delay_us: u64,
    /// Extra flags for every server it starts, e.g. --server-arg=--election-timeout-max-ms=300.
    #[arg(long = "server-arg", global = true, allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// How long each measurement runs, in seconds.
    #[arg(long, global = true, default_value_t = 10)]
    seconds: u64,
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Also run the same work against a 3-member etcd cluster on 127.0.0.1
    /// (`submit`: puts; `e2e`: puts, then claims by 16 workers) and print
    /// the ratios tidal/etcd.
    #[arg(long, global = true, value_enum)]
    compare: Option<Baseline>,
    /// Mutual TLS: the cluster it starts gets a CA of its own and a
    /// certificate per server, and every client and agent of the load
    /// connects with a client certificate.
    #[arg(long, global = true, conflicts_with = "tls_dir")]
    tls: bool,
    /// With `--endpoints`: connect over mutual TLS with the certificate in
    /// DIR (ca.pem, cert.pem, key.pem), for clients and simulated agents
    /// alike: an agent certificate of the cluster's DC (servers take it for
    /// public calls too; a client certificate opens no agent session).
    #[arg(long, global = true, value_name = "DIR", requires = "endpoints")]
    tls_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Baseline {
    Etcd,
}

#[derive(Subcommand, Debug)]
enum Workload {
    /// Submit throughput and latency with N concurrent clients (one run per value).
    Submit {
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        clients: Vec<usize>,
    },
    /// End to end: submit, assign, complete, with simulated agents.
    E2e {
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 8)]
        agents: usize,
        #[arg(long, default_value_t = 256)]
        slots: u32,
        /// Tasks per submit request.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Offered load in tasks per second over all clients, on a fixed
        /// schedule (latency counts from the scheduled send); 0: as fast as
        /// answers come back.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
    },
    /// SIGKILL the leader under load (only on the cluster it starts): time to
    /// the first assignment from the new leader, and acknowledged tasks lost.
    Failover {
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[arg(long, default_value_t = 4)]
        agents: usize,
        #[arg(long, default_value_t = 5)]
        kills: usize,
        /// Tasks per submit request.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Tasks per second over all clients (each client paced on its own);
        /// 0: as fast as answers come back.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
    },
    /// SIGTERM each server in turn under load and restart it (only on the
    /// cluster it starts): per server, its exit and the longest time without
    /// an acknowledged submit; acknowledged tasks lost.
    RollingRestart {
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[arg(long, default_value_t = 4)]
        agents: usize,
        /// Rounds of three restarts (each server once per round).
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Tasks per submit request.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Tasks per second over all clients; 0: as fast as answers come back.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
    },
    /// Many agents heartbeating, no tasks: the leader's CPU and each
    /// heartbeat's round trip.
    Agents {
        #[arg(long, default_value_t = 10_000)]
        agents: usize,
        /// Heartbeat interval in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Fill the cluster it starts with pending tasks (no agents): memory of
    /// every server, a snapshot, and a restart of every server to service.
    Memory {
        #[arg(long, default_value_t = 1_000_000)]
        tasks: usize,
        /// Payload bytes per task.
        #[arg(long, default_value_t = 200)]
        payload: usize,
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Give every task an idempotency key (kept in the state).
        #[arg(long)]
        keys: bool,
    },
    /// Tasks through at a steady rate, completed at once, on the cluster it
    /// starts with `--retain-finished-ms`: the leader's memory over time.
    Soak {
        #[arg(long, default_value_t = 1_000_000)]
        tasks: usize,
        /// Tasks per second over all clients.
        #[arg(long, default_value_t = 4_000.0)]
        rate: f64,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[arg(long, default_value_t = 8)]
        agents: usize,
        #[arg(long, default_value_t = 256)]
        slots: u32,
        /// The servers' --retain-finished-ms.
        #[arg(long, default_value_t = 10_000)]
        retain_ms: u64,
        /// Seconds between samples.
        #[arg(long, default_value_t = 10)]
        sample_s: u64,
    },
    /// Online tasks on a cluster full of offline work (only on the cluster
    /// it starts, with mutual TLS and tokens, and real agents): the time
    /// from each online submit to its worker's start, per kind of victim.
    Preempt {
        #[arg(long, default_value_t = 2)]
        agents: usize,
        #[arg(long, default_value_t = 4)]
        slots: u32,
        /// Offline tasks waiting behind those that fill the slots.
        #[arg(long, default_value_t = 4)]
        pending: usize,
        /// Online tasks, one at a time, per kind of victim.
        #[arg(long, default_value_t = 60)]
        samples: usize,
        /// The victims' preempt_grace_ms.
        #[arg(long, default_value_t = 200)]
        grace_ms: u64,
        /// Kinds of victim, one run each.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "prompt,full-grace,suspend"
        )]
        victims: Vec<preempt::Victims>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut cluster = if cli.endpoints.is_empty() {
        let tidal = match &cli.tidal {
            Some(t) => t.clone(),
            None => std::env::current_exe()?.with_file_name("tidal"),
        };
        anyhow::ensure!(
            tidal.exists(),
            "no tidal binary at {} (build it: cargo build --release --bin tidal, or pass --tidal)",
            tidal.display()
        );
        let mut server_args = cli.server_args.clone();
        if let Workload::Soak { retain_ms, .. } = &cli.workload {
            server_args.push(format!("--retain-finished-ms={retain_ms}"));
        }
        let started = match &cli.workload {
            // Real agents, as users run them: mutual TLS and tokens.
            Workload::Preempt { .. } => {
                cluster::Cluster::start_as_users(&tidal, cli.flush_delay_us, &server_args).await
            }
            _ => cluster::Cluster::start(&tidal, cli.flush_delay_us, &server_args, cli.tls).await,
        };
        Some(started.context("starting the cluster")?)
    } else {
        None
    };
    let endpoints = match &cluster {
        Some(c) => c.endpoints(),
        None => cli.endpoints.clone(),
    };
    let tls = match (&cluster, &cli.tls_dir) {
        (_, Some(dir)) => {
            let config = tidal_client::tidal_tls::TlsDir::load(dir)
                .and_then(|d| tidal_client::tidal_tls::client_config(&d, Expect::AnyServer))
                .with_context(|| format!("loading {}", dir.display()))?;
            Some((config.clone(), config))
        }
        (Some(c), None) => c.tls()?,
        (None, None) => None,
    };
    if let Some((client, agent)) = tls {
        workloads::use_tls(client, agent);
    }
    let duration = Duration::from_secs(cli.seconds.max(1));
    let mut results = Vec::new();
    match &cli.workload {
        Workload::Submit { clients } => {
            for &n in clients {
                eprintln!("submit: {n} clients for {duration:?}...");
                results.push(workloads::submit(&endpoints, n, duration).await?);
            }
        }
        Workload::E2e {
            clients,
            agents,
            slots,
            batch,
            rate,
        } => {
            eprintln!(
                "e2e: {clients} clients, {agents} agents x {slots} slots for {duration:?}..."
            );
            results.push(
                workloads::e2e(
                    &endpoints, *clients, *agents, *slots, *batch, *rate, duration,
                )
                .await?,
            );
        }
        Workload::Failover {
            clients,
            agents,
            kills,
            batch,
            rate,
        } => {
            let c = cluster
                .as_mut()
                .context("failover needs the cluster tidal-bench starts (no --endpoints)")?;
            eprintln!(
                "failover: {clients} clients x {batch}, {agents} agents, {kills} leader kills..."
            );
            let load = workloads::Load {
                clients: *clients,
                batch: (*batch).max(1),
                rate: *rate,
            };
            results.push(workloads::failover(c, load, *agents, *kills).await?);
        }
        Workload::RollingRestart {
            clients,
            agents,
            rounds,
            batch,
            rate,
        } => {
            let c = cluster
                .as_mut()
                .context("rolling-restart needs the cluster tidal-bench starts (no --endpoints)")?;
            eprintln!(
                "rolling-restart: {clients} clients x {batch}, {agents} agents, {rounds} round(s) of 3 SIGTERMs..."
            );
            let load = workloads::Load {
                clients: *clients,
                batch: (*batch).max(1),
                rate: *rate,
            };
            results.push(workloads::rolling_restart(c, load, *agents, (*rounds).max(1)).await?);
        }
        Workload::Agents {
            agents,
            interval_ms,
        } => {
            eprintln!("agents: {agents} agents heartbeating every {interval_ms} ms...");
            results.push(
                workloads::agents(
                    cluster.as_ref(),
                    &endpoints,
                    *agents,
                    Duration::from_millis(*interval_ms),
                    duration,
                )
                .await?,
            );
        }
        Workload::Memory {
            tasks,
            payload,
            clients,
            keys,
        } => {
            let c = cluster
                .as_mut()
                .context("memory needs the cluster tidal-bench starts (no --endpoints)")?;
            eprintln!("memory: {tasks} pending tasks of {payload} bytes...");
            results.push(workloads::memory(c, *tasks, *payload, *clients, *keys).await?);
        }
        Workload::Soak {
            tasks,
            rate,
            clients,
            agents,
            slots,
            retain_ms,
            sample_s,
        } => {
            let c = cluster
                .as_ref()
                .context("soak needs the cluster tidal-bench starts (no --endpoints)")?;
            eprintln!("soak: {tasks} tasks at {rate}/s, retention {retain_ms} ms...");
            results.push(
                workloads::soak(
                    c,
                    *tasks,
                    *rate,
                    *clients,
                    *agents,
                    *slots,
                    Duration::from_millis(*retain_ms),
                    Duration::from_secs((*sample_s).max(1)),
                )
                .await?,
            );
        }
        Workload::Preempt {
            agents,
            slots,
            pending,
            samples,
            grace_ms,
            victims,
        } => {
            let c = cluster
                .as_mut()
                .context("preempt needs the cluster tidal-bench starts (no --endpoints)")?;
            eprintln!("preempt: {agents} agents x {slots} slots, {pending} offline tasks pending, grace {grace_ms} ms...");
            let opts = preempt::Opts {
                agents: (*agents).max(1),
                slots: (*slots).max(1),
                pending: *pending,
                samples: *samples,
                grace_ms: *grace_ms,
                victims: victims.clone(),
            };
            results.extend(preempt::run(c, &opts).await?);
        }
    }
    let own_cluster = cluster.is_some();
    if cli.compare == Some(Baseline::Etcd) {
        drop(cluster.take());
        eprintln!("etcd: starting 3 members...");
        let etcd = etcd::Etcd::start().await.context("starting etcd")?;
        let mut baseline = Vec::new();
        match &cli.workload {
            Workload::Submit { clients } => {
                for &n in clients {
                    eprintln!("etcd put: {n} clients for {duration:?}...");
                    baseline.push(etcd::puts(&etcd, n, duration).await?);
                }
            }
            Workload::E2e { .. } => {
                eprintln!("etcd put: 64 clients for {duration:?} (fills the queue)...");
                baseline.push(etcd::puts(&etcd, 64, duration).await?);
                eprintln!("etcd claim: 16 workers for {duration:?}...");
                baseline.push(etcd::claims(&etcd, 16, duration).await?);
            }
            other => anyhow::bail!("--compare etcd applies to submit and e2e, not {other:?}"),
        }
        let ratios = stats::ratios(&results, &baseline);
        results.extend(baseline);
        results.push(ratios);
    }
    let report = serde_json::json!({
        "machine": stats::machine(),
        "git_revision": stats::git_revision(),
        "settings": {
            "cluster": if own_cluster { "3 local servers, durable appends" } else { "given endpoints" },
            "compare": cli.compare.map(|c| format!("{c:?}")),
            "flush_delay_us": cli.flush_delay_us,
            "server_args": cli.server_args,
            "seconds": cli.seconds,
            "workload": format!("{:?}", cli.workload),
        },
        "results": results,
    });
    match cli.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => print!("{}", stats::table(&report)),
    }
    drop(cluster);
    Ok(())
}
