//! `tidal`: the one binary. It parses flags, installs tracing and hands the
//! work to a command module; everything else lives in the libraries.
//!
//! Module map:
//! - [`cli`]: the clap definitions of every command and shared options.
//! - `cmd::*`: one module per command group (server, agent, task, cluster,
//!   queue, tenant, status, cert, dev, completions, the hidden example worker).
//! - [`output`]: tables and JSON documents; [`lists`]: `--gpus`/`--labels` parsing.
//! - [`exit`]: how an error becomes an exit code; [`shutdown`]: SIGINT/SIGTERM.
//!
//! Exit codes (scripts rely on them):
//! - 0: success; `tidal server` stopped by SIGINT or SIGTERM (a graceful stop).
//! - 1: an error: the server refused the request (bad input, not found, state
//!   does not allow it, over a limit or a tenant's quota), a bad config, a
//!   local I/O failure; a second SIGINT or SIGTERM during a graceful stop.
//! - 2: usage error (unknown flag, missing argument), printed by clap;
//!   `tidal server` refusing to serve plaintext on an address that is not
//!   loopback (no `--tls-dir`, no `--insecure`), before it binds anything.
//! - 3: unavailable: no server answered, or no leader within `--timeout-ms`.
//! - 4: `tidal task watch` only: the task ended failed or cancelled.
//! - 5: `tidal server` only: its store could not write (disk full, I/O
//!   error); it stopped at once, naming the directory and the operation.
//! - 6: `tidal agent` only: another agent process registered under its
//!   `--id` and took the id over; this one stopped its tasks and exited.
//! - 7: `tidal server` only: it met an entry or a snapshot of a cluster
//!   format version it does not support; it applied nothing of it (README:
//!   Rolling upgrade).
//! - 8: credentials refused: a server refused the token of a client
//!   command or `tidal agent` (`--token`: none, malformed, unknown, expired
//!   or revoked; UNAUTHENTICATED) or what its role may call
//!   (PERMISSION_DENIED). Not retried.
//!
//! A one-shot command whose stdout was closed by its reader (`tidal task
//! list | head`) ends by SIGPIPE, as other command-line tools do; SIGPIPE
//! from a connection to a server that went away never ends a command.
//!
//! Errors print one line, `error: <message>`, on stderr.

mod cli;
mod cmd;
mod exit;
mod lists;
mod opts;
mod output;
mod shutdown;

use cli::{Cli, Command, LogFormat};

fn main() {
    let cli = Cli::parse_args();
    // SIGPIPE stays ignored (Rust's default): a connection the server
    // closed is an error the command reports. A closed stdout ends a
    // one-shot command as SIGPIPE would (`output::write_stdout`).
    init_tracing(
        cli.log_format,
        cli.command.default_log_level(),
        cli.command.log_defaults(),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(exit::ERROR);
        }
    };
    let code = match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::code_of(&e)
        }
    };
    // Do not wait for detached tasks (a watch stream, a lazy channel) to end.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
}

/// Logs go to stderr, so stdout stays clean for results. `RUST_LOG` wins over
/// the command's default level; the command's `defaults` (per-target
/// directives) apply on top unless `RUST_LOG` names their target or a
/// parent of it (`RUST_LOG=openraft=debug` keeps all of openraft's lines).
fn init_tracing(format: LogFormat, default_level: &str, defaults: &[&str]) {
    let rust_log = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    for directive in defaults {
        let target = directive.split('=').next().unwrap_or(directive);
        if !names_target(&rust_log, target) {
            if let Ok(d) = directive.parse() {
                filter = filter.add_directive(d);
            }
        }
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// True if a directive of `rust_log` is about `target` or a module above it.
fn names_target(rust_log: &str, target: &str) -> bool {
    rust_log.split(',').any(|d| {
        let Some((named, _level)) = d.trim().split_once('=') else {
            return false;
        };
        let named = named.split('[').next().unwrap_or(named);
        target == named || target.starts_with(&format!("{named}::"))
    })
}

/// Runs the parsed command; returns the process exit code.
async fn dispatch(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Server(a) => cmd::server::run(a).await.map(|()| exit::OK),
        Command::Agent(a) => cmd::agent::run(a).await.map(|()| exit::OK),
        Command::Task(c) => cmd::task::run(c).await,
        Command::Cluster(c) => cmd::cluster::run(c).await.map(|()| exit::OK),
        Command::Queue(c) => cmd::queue::run(c).await.map(|()| exit::OK),
        Command::Tenant(c) => cmd::tenant::run(c).await.map(|()| exit::OK),
        Command::Status(a) => cmd::status::run(a).await.map(|()| exit::OK),
        Command::Dc(c) => cmd::dc::run(c).await.map(|()| exit::OK),
        Command::Token(c) => cmd::token::run(c).await.map(|()| exit::OK),
        Command::Cert(c) => cmd::cert::run(c).map(|()| exit::OK),
        Command::Dev(a) => cmd::dev::run(a).await.map(|()| exit::OK),
        Command::Chaos(c) => cmd::chaos::run(c).await,
        Command::ExampleWorker(a) => cmd::example_worker::run(a).await,
        Command::Completions(a) => {
            cmd::completions::run(a, <Cli as clap::CommandFactory>::command()).map(|()| exit::OK)
        }
        Command::CheckArgs(a) => Ok(cmd::completions::check_args(
            a,
            <Cli as clap::CommandFactory>::command(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::names_target;

    #[test]
    fn a_rust_log_directive_names_its_target_and_the_modules_below() {
        let t = "openraft::replication";
        assert!(names_target("info,openraft::replication=debug", t));
        assert!(names_target("openraft=trace", t));
        assert!(!names_target("info", t));
        assert!(!names_target("debug,tidal_server=trace", t));
        assert!(!names_target("openraft::engine=debug", t));
        assert!(!names_target("open=debug", t));
    }
}
