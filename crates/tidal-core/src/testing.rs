//! Scenario files for tests (built for tests and with the `testing` feature only).
//!
//! The driver behind tidal-core's golden tests and tidal-server's engine
//! scenarios, in the spirit of raft-rs's datadriven tests. A file is read top
//! to bottom; each line is a directive, `#` starts a comment. A directive
//! that prints something is followed by `----` and the expected output,
//! ending at a blank line. With [`REWRITE_VAR`] set, the files' expected
//! output is rewritten from the actual one (then review the diff).

use std::path::Path;

/// Set (to anything) to rewrite the expected output of scenario files.
pub const REWRITE_VAR: &str = "TIDAL_REWRITE_GOLDEN";

/// What one directive printed (`None`: nothing), or why it failed.
pub type Printed = Result<Option<String>, String>;

/// Runs every `*.txt` file of `dir`, in name order, each through a fresh
/// runner from `runner`; fails with every mismatch (with [`REWRITE_VAR`]
/// set, rewrites the files instead).
pub fn run_dir<R: FnMut(&str) -> Printed>(dir: &Path, mut runner: impl FnMut() -> R) {
    let rewrite = std::env::var_os(REWRITE_VAR).is_some();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenario files in {}", dir.display());
    let mut failures = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable scenario file");
        let (rewritten, errs) = run_file(&text, runner());
        if rewrite {
            std::fs::write(&path, rewritten).expect("writable scenario file");
        } else {
            failures.extend(errs.into_iter().map(|e| format!("{}: {e}", path.display())));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Runs one file's directives through `run`; returns the file with the
/// actual output in place of the expected one, and the mismatches.
pub fn run_file(text: &str, mut run: impl FnMut(&str) -> Printed) -> (String, Vec<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut rewritten = String::new();
    let mut failures = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        rewritten.push_str(line);
        rewritten.push('\n');
        i += 1;
        let directive = line.trim();
        if directive.is_empty() || directive.starts_with('#') {
            continue;
        }
        let at = i;
        let mut expected = None;
        if lines.get(i).map(|l| l.trim()) == Some("----") {
            let start = i + 1;
            let mut end = start;
            while end < lines.len() && !lines[end].trim().is_empty() {
                end += 1;
            }
            expected = Some(
                lines[start..end]
                    .iter()
                    .map(|l| format!("{l}\n"))
                    .collect::<String>(),
            );
            i = end;
        }
        let actual = match run(directive) {
            Ok(out) => out,
            Err(e) => {
                failures.push(format!("line {at}: {directive}: {e}"));
                Some(format!("error: {e}\n"))
            }
        };
        if let Some(actual) = &actual {
            rewritten.push_str("----\n");
            rewritten.push_str(actual);
        }
        if actual != expected {
            failures.push(format!(
                "line {at}: {directive}\n--- expected\n{}--- actual\n{}",
                expected.unwrap_or_default(),
                actual.unwrap_or_default()
            ));
        }
    }
    (rewritten, failures)
}
