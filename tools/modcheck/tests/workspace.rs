//! The check itself: no module of any crate in this workspace imports another that imports it back, and the layer rules hold.
//!
//! Reproduce with `cargo test -p tidal-modcheck`; what fails is printed as
//! `file:line `the import` -> file`, once per circle.

use std::path::Path;

/// Where the crates are, relative to the workspace root.
const PACKAGES: &[&str] = &["crates/*", "chaos", "benches", "tools/*"];

#[test]
fn no_import_circles_and_the_layer_rules_hold() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let packages = tidal_modcheck::packages(&root, PACKAGES);
    // A check that read nothing would pass: make sure it read the workspace.
    assert!(
        packages.len() >= 8 && packages.iter().any(|p| p.ends_with("tidal-server")),
        "found only {packages:?}"
    );
    let outcome = tidal_modcheck::check(
        &root,
        PACKAGES,
        tidal_modcheck::rules::RULES,
        tidal_modcheck::rules::KNOWN,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for note in &outcome.notes {
        eprintln!("note: {note}");
    }
    let failures = outcome.failures;
    assert!(
        failures.is_empty(),
        "no module may import another that imports it back (directly or through \
         others), and the layer rules of tools/modcheck/src/rules.rs must hold:\n\n{}",
        tidal_modcheck::report(&failures)
    );
}
