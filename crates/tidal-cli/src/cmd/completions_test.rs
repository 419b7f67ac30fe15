//! The completion scripts come from the real command tree: every visible
//! command and subcommand is in them, the hidden ones are not; shells
//! other than bash, zsh and fish are usage errors.

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

use super::{check_args, script, CheckArgsArgs, ShellArg};
use crate::cli::{Cli, Command};
use crate::exit;

const SHELLS: [ShellArg; 3] = [ShellArg::Bash, ShellArg::Zsh, ShellArg::Fish];

fn text(shell: ShellArg) -> String {
    String::from_utf8(script(shell, Cli::command())).expect("utf-8 script")
}

/// The names of `cmd`'s visible subcommands.
fn visible_names(cmd: &clap::Command) -> Vec<String> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_string())
        .collect()
}

#[test]
fn every_shell_gets_a_script_naming_the_commands_and_subcommands() {
    let tree = Cli::command();
    let top = visible_names(&tree);
    for name in ["server", "agent", "task", "cluster", "completions"] {
        assert!(top.contains(&name.to_string()), "{name} in {top:?}");
    }
    let task = visible_names(tree.find_subcommand("task").expect("task"));
    assert!(task.contains(&"submit".to_string()), "{task:?}");
    for shell in SHELLS {
        let s = text(shell);
        for name in top.iter().chain(&task) {
            assert!(s.contains(name.as_str()), "{shell:?}: no {name}");
        }
        // Flags by name (fish writes `-l endpoints`, the others `--endpoints`).
        for flag in ["endpoints", "tls-dir", "task-types", "bootstrap-token-file"] {
            assert!(s.contains(flag), "{shell:?}: no {flag}");
        }
    }
}

#[test]
fn each_shell_has_its_own_form() {
    assert!(text(ShellArg::Bash).contains("complete -F _tidal"));
    assert!(text(ShellArg::Zsh).starts_with("#compdef tidal"));
    assert!(text(ShellArg::Fish).contains("complete -c tidal"));
}

#[test]
fn hidden_commands_are_not_offered() {
    for shell in SHELLS {
        let s = text(shell);
        assert!(!s.contains("example-worker"), "{shell:?}");
        assert!(!s.contains("check-args"), "{shell:?}");
    }
}

/// Every visible subcommand's path, arguments and about, below `cmd`.
fn shape(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
    let mut args: Vec<String> = cmd
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    args.sort();
    let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
    out.push(format!("{path}: {args:?} {about}"));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        shape(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

#[test]
fn the_completed_tree_is_the_visible_part_of_the_real_one() {
    let (mut real, mut completed) = (Vec::new(), Vec::new());
    shape(&Cli::command(), "tidal", &mut real);
    shape(&super::visible(Cli::command()), "tidal", &mut completed);
    assert_eq!(completed, real);
    assert!(real.len() > 40, "{real:?}");
}

#[test]
fn the_shell_is_one_of_three() {
    for (arg, shell) in [
        ("bash", ShellArg::Bash),
        ("zsh", ShellArg::Zsh),
        ("fish", ShellArg::Fish),
    ] {
        let cli = Cli::try_parse_from(["tidal", "completions", arg]).expect(arg);
        let Command::Completions(a) = cli.command else {
            panic!("not completions")
        };
        assert_eq!(a.shell, shell);
    }
    let e = Cli::try_parse_from(["tidal", "completions", "tcsh"]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidValue);
    let msg = e.to_string();
    assert!(msg.contains("[possible values: bash, zsh, fish]"), "{msg}");
    let e = Cli::try_parse_from(["tidal", "completions"]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
}

fn check(args: &[&str]) -> i32 {
    check_args(
        CheckArgsArgs {
            args: args.iter().map(Into::into).collect(),
        },
        Cli::command(),
    )
}

#[test]
fn check_args_parses_without_running() {
    assert_eq!(check(&["completions", "zsh"]), exit::OK);
    assert_eq!(
        check(&[
            "server",
            "--id",
            "1",
            "--dc",
            "dc1",
            "--listen",
            "0.0.0.0:7001",
            "--init"
        ]),
        exit::OK
    );
    assert_eq!(check(&["server", "--no-such-flag"]), exit::USAGE);
    assert_eq!(check(&["server", "--id", "one"]), exit::USAGE);
    // An agent needs its command after `--`.
    assert_eq!(
        check(&["agent", "--id", "a", "--dc", "dc1", "--task-types", "t2i"]),
        exit::USAGE
    );
}
