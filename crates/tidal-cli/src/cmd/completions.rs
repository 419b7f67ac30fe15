//! `tidal completions SHELL`: a completion script for the whole command
//! line (every command, flag and value of a value list; hidden commands
//! left out), generated from the same clap definitions that parse it, printed on
//! stdout.
//!
//! And the hidden `tidal check-args -- ARGS...`: parses `tidal ARGS...` as
//! the binary would and runs nothing; exit 0, or clap's usage error on
//! stderr and exit 2. The tests check the command lines of the compose file
//! and the systemd units with it (cluster/compose, cluster/systemd).

use std::ffi::OsString;

use clap::{Args, ValueEnum};

use crate::exit;
use crate::output::write_stdout;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to print the completion script of.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: ShellArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ShellArg {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
pub struct CheckArgsArgs {
    /// The command line to check, without the leading `tidal`.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<OsString>,
}

/// The completion script of `shell` for the command tree `cmd`, named `tidal`.
pub fn script(shell: ShellArg, cmd: clap::Command) -> Vec<u8> {
    use clap_complete::Shell;
    let shell = match shell {
        ShellArg::Bash => Shell::Bash,
        ShellArg::Zsh => Shell::Zsh,
        ShellArg::Fish => Shell::Fish,
    };
    let mut cmd = visible(cmd);
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "tidal", &mut out);
    out
}

/// `cmd` without its hidden subcommands, at every level (clap's generators
/// offer hidden ones too): what the scripts complete. Hidden flags stay:
/// the groups and conflicts of the others name them.
fn visible(cmd: clap::Command) -> clap::Command {
    let mut out = clap::Command::new(cmd.get_name().to_string())
        .subcommand_required(cmd.is_subcommand_required_set())
        .args_conflicts_with_subcommands(cmd.is_args_conflicts_with_subcommands_set())
        .args(cmd.get_arguments().cloned())
        .groups(cmd.get_groups().cloned());
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        out = out.version(version.to_string());
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        out = out.subcommand(visible(sub.clone()));
    }
    out
}

/// Prints the script of `tidal`, whose command line is `cli`.
pub fn run(args: CompletionsArgs, cli: clap::Command) -> anyhow::Result<()> {
    let text = String::from_utf8(script(args.shell, cli))?;
    write_stdout(format_args!("{text}"));
    Ok(())
}

/// Parses `tidal ARGS...` against `cli`, tidal's command line; returns the
/// exit code (0: it parses; 2: a usage error, printed on stderr). `--help`
/// or `--version` among ARGS prints what they print and counts as parsing.
pub fn check_args(args: CheckArgsArgs, cli: clap::Command) -> i32 {
    let argv = std::iter::once(OsString::from("tidal")).chain(args.args);
    match cli.try_get_matches_from(argv) {
        Ok(_) => exit::OK,
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            }
        }
    }
}

#[cfg(test)]
#[path = "completions_test.rs"]
mod tests;
