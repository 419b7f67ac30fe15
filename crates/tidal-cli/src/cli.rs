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
                  7 `server`: an entry or snapshot needs a newer cluster format version, \
                  8 credentials refused: the server refused the token (--token) or its role."
)]
pub struct Cli {
    /// How log lines on stderr are written.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line and the `TIDAL_*` variables, where an empty
    /// variable counts as unset (for every command: the server, the agent
    /// and the clients).
    pub fn parse_args() -> Cli {
        use clap::FromArgMatches;
        let mut cmd = command();
        let mut matches = cmd
            .try_get_matches_from_mut(std::env::args_os())
            .unwrap_or_else(|e| name_the_variable(command, e).exit());
        Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut cmd).exit())
    }
}

/// The command line as [`Cli::parse_args`] reads it.
fn command() -> clap::Command {
    use clap::CommandFactory;
    unset_empty_variables(Cli::command())
}

/// `cmd` and its subcommands, where an argument whose variable is set but
/// empty reads no variable (so an empty `TIDAL_TLS_DIR` is no `--tls-dir`
/// and an empty `TIDAL_INSECURE` no `--insecure`).
fn unset_empty_variables(mut cmd: clap::Command) -> clap::Command {
    let empty: Vec<clap::Id> = cmd
        .get_arguments()
        .filter(|a| {
            a.get_env()
                .and_then(std::env::var_os)
                .is_some_and(|v| v.is_empty())
        })
        .map(|a| a.get_id().clone())
        .collect();
    for id in empty {
        cmd = cmd.mut_arg(id, |a| a.env(None));
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, unset_empty_variables);
    }
    cmd
}

/// clap names the flag of a value it cannot parse; when the value came from
/// the flag's `TIDAL_*` variable, the error names the variable instead (same
/// kind, so the same exit code, 2). The source is found by parsing again
/// without a variable that holds the value: if the parse no longer fails
/// the same way, the value was the variable's.
fn name_the_variable(command: fn() -> clap::Command, mut e: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return e;
    }
    let failed = |e: &clap::Error| match (
        e.get(ContextKind::InvalidArg),
        e.get(ContextKind::InvalidValue),
    ) {
        (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) => {
            Some((e.kind(), arg.clone(), value.clone()))
        }
        _ => None,
    };
    let Some(first) = failed(&e) else {
        return e;
    };
    let value = &first.2;
    for (path, id, var) in env_args(&command(), &[]) {
        if std::env::var_os(&var).is_none_or(|v| v.to_string_lossy() != **value) {
            continue;
        }
        let again = without_env(command(), &path, &id).try_get_matches_from(std::env::args_os());
        if again.err().and_then(|e| failed(&e)).as_ref() != Some(&first) {
            e.insert(ContextKind::InvalidArg, ContextValue::String(var));
            return e;
        }
    }
    e
}

/// Every argument with a variable, under `cmd`: the path of subcommand
/// names to it, its id and its variable.
fn env_args(cmd: &clap::Command, path: &[String]) -> Vec<(Vec<String>, clap::Id, String)> {
    let mut out: Vec<_> = cmd
        .get_arguments()
        .filter_map(|a| {
            let var = a.get_env()?.to_string_lossy().into_owned();
            Some((path.to_vec(), a.get_id().clone(), var))
        })
        .collect();
    for sub in cmd.get_subcommands() {
        let mut below = path.to_vec();
        below.push(sub.get_name().to_string());
        out.extend(env_args(sub, &below));
    }
    out
}

/// `cmd` with argument `id` of the subcommand at `path` reading no variable.
fn without_env(cmd: clap::Command, path: &[String], id: &clap::Id) -> clap::Command {
    match path.split_first() {
        None => cmd.mut_arg(id, |a| a.env(None)),
        Some((name, rest)) => {
            let name = name.clone();
            cmd.mut_subcommand(name, |sub| without_env(sub, rest, id))
        }
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
    /// Set and list tenants' limits (max pending, running slots, GPUs, submit rate, weight) and usage.
    #[command(subcommand)]
    Tenant(cmd::tenant::TenantCmd),
    /// The cluster's status: every endpoint's role and indices, the leader's counts.
    Status(cmd::status::StatusArgs),
    /// Cross-DC forwarding: the links to peer DCs.
    #[command(subcommand)]
    Dc(cmd::dc::DcCmd),
    /// Tokens with roles: create one (printed once), list, revoke; generate one locally.
    #[command(subcommand)]
    Token(cmd::token::TokenCmd),
    /// Certificates for mutual TLS: create a CA, issue server, agent and client certificates, show one.
    #[command(subcommand)]
    Cert(cmd::cert::CertCmd),
    /// Start a local 3-node cluster and agents on 127.0.0.1 as child processes, with a demo.
    Dev(cmd::dev::DevArgs),
    /// Fault-injection runs against real processes: partitions, kills, pauses, checked histories.
    #[command(subcommand)]
    Chaos(cmd::chaos::ChaosCmd),
    /// The demo worker that `tidal dev`'s agents run: reads a payload on stdin, prints a result.
    #[command(hide = true)]
    ExampleWorker(cmd::example_worker::WorkerArgs),
    /// Print a completion script for bash, zsh or fish on stdout (README: Shell completions).
    Completions(cmd::completions::CompletionsArgs),
    /// Parse `tidal ARGS...` without running it: exit 0, or the usage error and exit 2.
    #[command(hide = true)]
    CheckArgs(cmd::completions::CheckArgsArgs),
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
