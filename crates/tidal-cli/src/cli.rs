//! The command line: every command, its flags and the options shared by the
//! commands that talk to a cluster.

use clap::{Parser, Subcommand, ValueEnum};

use crate::cmd;

#[derive(Parser, Debug)]
#[command(
    name = "tidal",
    version,
    about = "tidal: a control plane that schedules AI/GPU tasks onto agents through a Raft group per data center",
    after_help = "Start a local 3-node cluster with 2 agents: `tidal dev`. \
                  Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) to change what is logged.\n\
                  Exit codes: 0 ok, 1 error, 2 usage, 3 unavailable (no server/leader answered), \
                  4 `task watch`: the task failed or was cancelled, \
                  5 `server`: its data directory could not be written, \
                  6 `agent`: another agent process took its --id over, \
                  7 `server`: an entry or snapshot needs a newer cluster format version."
)]
pub struct Cli {
    /// How log lines on stderr are written.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line and the variables of `tidal server`'s
    /// settings, where an empty `TIDAL_*` variable counts as unset.
    pub fn parse_args() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let mut cmd = Cli::command().mut_subcommand("server", |mut server| {
            let empty: Vec<clap::Id> = server
                .get_arguments()
                .filter(|a| {
                    a.get_env()
                        .and_then(std::env::var_os)
                        .is_some_and(|v| v.is_empty())
                })
                .map(|a| a.get_id().clone())
                .collect();
            for id in empty {
                server = server.mut_arg(id, |a| a.env(None));
            }
            server
        });
        let mut matches = cmd.get_matches_mut();
        Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut cmd).exit())
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one server (a member of a data center's Raft group) until SIGINT/SIGTERM.
    Server(cmd::server::ServerArgs),
    /// Run an agent that executes tasks as child processes (`tidal agent ... -- COMMAND`), or list agents.
    Agent(cmd::agent::AgentArgs),
    /// Submit, read, list, cancel and watch tasks.
    #[command(subcommand)]
    Task(cmd::task::TaskCmd),
    /// Membership of the Raft group: add a learner, promote it, list members.
    #[command(subcommand)]
    Cluster(cmd::cluster::ClusterCmd),
    /// Set and list queues (weights and placement strategy).
    #[command(subcommand)]
    Queue(cmd::queue::QueueCmd),
    /// The cluster's status: every endpoint's role and indices, the leader's counts.
    Status(cmd::status::StatusArgs),
    /// Cross-DC forwarding: the links to peer DCs.
    #[command(subcommand)]
    Dc(cmd::dc::DcCmd),
    /// Start a local 3-node cluster and agents on 127.0.0.1 as child processes, with a demo.
    Dev(cmd::dev::DevArgs),
    /// Fault-injection runs against real processes: partitions, kills, pauses, checked histories.
    #[command(subcommand)]
    Chaos(cmd::chaos::ChaosCmd),
    /// The demo worker that `tidal dev`'s agents run: reads a payload on stdin, prints a result.
    #[command(hide = true)]
    ExampleWorker(cmd::example_worker::WorkerArgs),
}

impl Command {
    /// The log level when `RUST_LOG` is not set: long-running processes log
    /// their lifecycle; `dev` prints its own progress, and one-shot client
    /// commands log only problems.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Command::Server(_) => "info",
            Command::Agent(a) if a.action.is_none() => "info",
            Command::Chaos(_) => "warn,tidal_chaos=info",
            _ => "warn",
        }
    }

    /// Per-target log directives added to the level (see `init_tracing`).
    pub fn log_defaults(&self) -> &'static [&'static str] {
        match self {
            Command::Server(_) => tidal_server::LOG_DEFAULTS,
            _ => &[],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
#[path = "cli_test.rs"]
mod tests;
