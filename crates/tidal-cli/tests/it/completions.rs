//! `tidal completions bash|zsh|fish`: the binary prints each shell's script,
//! naming the real commands; bash parses its script and completes with it.

use std::process::{Command, Output};

fn tidal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidal"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run the tidal binary")
}

fn script(shell: &str) -> String {
    let o = tidal(&["completions", shell]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{shell}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8 script")
}

fn has_bash() -> bool {
    Command::new("bash")
        .arg("-c")
        .arg("true")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn each_shell_gets_a_script_of_the_real_commands() {
    for (shell, marker) in [
        ("bash", "complete -F _tidal"),
        ("zsh", "#compdef tidal"),
        ("fish", "complete -c tidal"),
    ] {
        let s = script(shell);
        assert!(s.contains(marker), "{shell}: no {marker}");
        for name in [
            "task",
            "submit",
            "agent",
            "server",
            "cluster",
            "add-learner",
            "completions",
        ] {
            assert!(s.contains(name), "{shell}: no {name}");
        }
        assert!(!s.contains("example-worker"), "{shell}: a hidden command");
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error_naming_the_shells() {
    let o = tidal(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("[possible values: bash, zsh, fish]"), "{err}");
    assert!(o.stdout.is_empty());
}

/// Sources the bash script and asks its function for the words after
/// `tidal WORDS...` (the last word being completed).
fn bash_complete(file: &std::path::Path, words: &[&str]) -> Vec<String> {
    let cword = words.len();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let line = format!(
        "source '{}' && COMP_WORDS=(tidal {}) && COMP_CWORD={cword} && \
         _tidal tidal \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\" && \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display(),
        quoted.join(" ")
    );
    let o = Command::new("bash")
        .arg("-c")
        .arg(line)
        .output()
        .expect("bash");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_parses_its_script_and_completes_commands_with_it() {
    if !has_bash() {
        eprintln!("no bash on this machine: the script's syntax is not checked");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tidal.bash");
    std::fs::write(&file, script("bash")).expect("write");
    let o = Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .expect("bash -n");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    assert_eq!(bash_complete(&file, &["ta"]), ["task"]);
    assert_eq!(bash_complete(&file, &["task", "su"]), ["submit"]);
    let flags = bash_complete(&file, &["agent", "--task-t"]);
    assert_eq!(flags, ["--task-types"]);
    let shells = bash_complete(&file, &["completions", ""]);
    for s in ["bash", "zsh", "fish"] {
        assert!(shells.contains(&s.to_string()), "{shells:?}");
    }
}
