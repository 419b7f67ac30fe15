use std::path::Path;

use super::rules::{Check, Known, Rule, Tolerated};
use super::*;

/// Writes a package `fx` with the given files under `src/` into a new tree.
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("crates/fx");
    std::fs::create_dir_all(pkg.join("src")).unwrap();
    std::fs::write(
        pkg.join("Cargo.toml"),
        "[package]\nname = \"fx\"\n\n[dependencies]\ntracing = \"0.1\"\ntokio = \"1\"\n",
    )
    .unwrap();
    for (name, text) in files {
        let path = pkg.join("src").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn failures(dir: &Path, rules: &[Rule]) -> Vec<String> {
    check(dir, &["crates/*"], rules, &[]).unwrap().failures
}

#[test]
fn a_circle_is_reported_with_the_lines_that_make_it() {
    let dir = tree(&[
        ("lib.rs", "//! x\nmod a;\nmod b;\n"),
        ("a.rs", "//! a\nuse crate::b::B;\npub struct A(B);\n"),
        (
            "b.rs",
            "//! b\npub struct B;\npub fn f() {\n    let _ = std::mem::size_of::<crate::a::A>();\n}\n",
        ),
    ]);
    let f = failures(dir.path(), &[]);
    assert_eq!(f.len(), 1, "{}", report(&f));
    let text = &f[0];
    assert!(text.contains("import circle of 2 files"), "{text}");
    assert!(
        text.contains("crates/fx/src/a.rs:2 `use crate::b::B;` -> crates/fx/src/b.rs"),
        "{text}"
    );
    assert!(text.contains("crates/fx/src/b.rs:4"), "{text}");
}

#[test]
fn a_tree_without_a_circle_passes_tests_and_facades_left_out() {
    let dir = tree(&[
        (
            "lib.rs",
            "//! x\npub mod a;\npub mod b;\npub use a::A;\npub struct Root;\n\
             #[cfg(test)]\n#[path = \"lib_test.rs\"]\nmod tests;\n",
        ),
        ("lib_test.rs", "use crate::b::*;\n"),
        ("a.rs", "//! a\nuse crate::Root;\npub struct A(pub Root);\n"),
        (
            "b.rs",
            "//! b\nuse crate::A;\npub fn f(_: A) {}\n\
             #[cfg(test)]\nmod tests {\n    use crate::*;\n}\n\
             #[cfg(test)]\nfn helper() { crate::a::A(crate::Root); }\n",
        ),
    ]);
    assert!(failures(dir.path(), &[]).is_empty());
    // `crate::A` is a re-export: the import is of a.rs, not lib.rs.
    let graphs = read_package(dir.path(), Path::new("crates/fx")).unwrap();
    let to: Vec<_> = graphs[0]
        .edges
        .iter()
        .filter(|e| e.from.ends_with("b.rs"))
        .map(|e| e.to.clone())
        .collect();
    assert_eq!(to, vec![Path::new("crates/fx/src/a.rs").to_path_buf()]);
}

#[test]
fn a_name_defined_in_the_root_and_a_path_in_a_macro_are_imports() {
    let dir = tree(&[
        (
            "lib.rs",
            "//! x\nmod clock;\nmod node;\npub fn now_ms() -> u64 { 0 }\n\
             pub fn run() { node::start(); }\n",
        ),
        ("clock.rs", "//! c\n"),
        (
            "node.rs",
            "//! n\npub fn start() {\n    tracing::info!(at = crate::now_ms(), \"started\");\n}\n",
        ),
    ]);
    let f = failures(dir.path(), &[]);
    assert_eq!(f.len(), 1, "{}", report(&f));
    assert!(f[0].contains("crates/fx/src/node.rs:3"), "{}", f[0]);
    assert!(f[0].contains("crates/fx/src/lib.rs:5"), "{}", f[0]);
}

#[test]
fn super_paths_and_folders_resolve() {
    let dir = tree(&[
        ("lib.rs", "//! x\nmod leader;\n"),
        (
            "leader/mod.rs",
            "//! l\nmod push;\nmod slot;\nfn go() { push::push(); }\n",
        ),
        (
            "leader/slot.rs",
            "//! s\npub struct Leadership;\npub type Slot = Option<Leadership>;\n",
        ),
        (
            "leader/push.rs",
            "//! p\nuse super::slot::Slot;\npub fn push() -> Slot { None }\n",
        ),
    ]);
    assert!(failures(dir.path(), &[]).is_empty());
    let dir = tree(&[
        ("lib.rs", "//! x\nmod leader;\n"),
        (
            "leader/mod.rs",
            "//! l\nmod push;\npub struct Leadership;\nfn go() { push::push(); }\n",
        ),
        (
            "leader/push.rs",
            "//! p\npub fn push() -> Option<super::Leadership> { None }\n",
        ),
    ]);
    let f = failures(dir.path(), &[]);
    assert_eq!(f.len(), 1, "{}", report(&f));
}

#[test]
fn layer_rules_name_the_import_that_breaks_them() {
    let dir = tree(&[
        ("lib.rs", "//! x\nmod grpc;\nmod leader;\nmod raft;\n"),
        ("grpc.rs", "//! g\npub fn convert() {}\n"),
        ("leader/mod.rs", "//! l\npub mod engine;\n"),
        (
            "leader/engine/mod.rs",
            "//! e\nmod step;\nuse tokio::sync::Notify;\nuse step::Step;\npub struct E(Notify, Step);\n",
        ),
        ("leader/engine/step.rs", "//! s\npub struct Step;\nfn f() { crate::grpc::convert(); }\n"),
        ("raft.rs", "//! r\nuse crate::leader::engine::E;\n"),
    ]);
    let rules = [
        Rule {
            package: "crates/fx",
            files: "src/",
            check: Check::OnlyImportedFrom {
                module: &["grpc"],
                from: &["src/grpc", "src/lib.rs"],
            },
            why: "edge",
        },
        Rule {
            package: "crates/fx",
            files: "src/leader/engine/",
            check: Check::Confined {
                crates: &["std", "tracing"],
            },
            why: "pure",
        },
        Rule {
            package: "crates/fx",
            files: "src/raft/",
            check: Check::DoesNotImport {
                modules: &[&["leader"]],
            },
            why: "below",
        },
        // A folder that does not exist yet: holds.
        Rule {
            package: "crates/fx",
            files: "src/later/",
            check: Check::Confined { crates: &[] },
            why: "later",
        },
    ];
    let f = failures(dir.path(), &rules);
    let text = report(&f);
    assert!(text.contains("crates/fx/src/leader/engine/step.rs:3 `fn f() { crate::grpc::convert(); }`: imports grpc (layer rule: edge)"), "{text}");
    assert!(text.contains("step.rs:3 `fn f() { crate::grpc::convert(); }`: imports crates/fx/src/grpc.rs outside src/leader/engine/ (layer rule: pure)"), "{text}");
    assert!(
        text.contains(
            "crates/fx/src/leader/engine/mod.rs:3 `use tokio::sync::Notify;`: uses crate tokio"
        ),
        "{text}"
    );
    // raft.rs is not under src/raft/: the third rule is about a folder.
    assert_eq!(f.len(), 3, "{text}");
    let missing = [Rule {
        package: "crates/nope",
        files: "src/",
        check: Check::Confined { crates: &[] },
        why: "typo",
    }];
    assert!(check(dir.path(), &["crates/*"], &missing, &[]).is_err());
}

#[test]
fn a_crate_used_outside_its_folders_is_named() {
    let dir = tree(&[
        (
            "lib.rs",
            "//! x\nmod grpc;\nmod leader;\nuse tokio::sync::Notify;\n",
        ),
        (
            "grpc.rs",
            "//! g\nuse tokio::sync::Notify;\npub fn serve() {}\n",
        ),
        (
            "leader.rs",
            "//! l\nuse tracing::info;\nfn f() { let _ = tokio::sync::Notify::new(); }\n",
        ),
    ]);
    let rules = [Rule {
        package: "crates/fx",
        files: "src/",
        check: Check::CrateOnlyUsedFrom {
            krate: "tokio",
            from: &["src/grpc", "src/lib.rs"],
        },
        why: "the wire",
    }];
    let f = failures(dir.path(), &rules);
    let text = report(&f);
    assert!(
        text.contains(
            "crates/fx/src/leader.rs:3 `fn f() { let _ = tokio::sync::Notify::new(); }`: uses crate tokio (layer rule: the wire)"
        ),
        "{text}"
    );
    // grpc.rs and lib.rs may; tracing is another crate.
    assert_eq!(f.len(), 1, "{text}");
}

#[test]
fn a_known_circle_is_a_note_and_a_stale_entry_is_named() {
    let dir = tree(&[
        ("lib.rs", "//! x\nmod engine;\nmod other;\n"),
        (
            "engine/mod.rs",
            "//! e\nmod step;\npub struct Ctx;\nfn f() { step::go(); }\n",
        ),
        ("engine/step.rs", "//! s\nuse super::Ctx;\npub fn go() {}\n"),
        ("other.rs", "//! o\n"),
    ]);
    let known = [
        Known {
            package: "crates/fx",
            tolerated: Tolerated::Folder("src/engine/"),
            why: "moving",
        },
        Known {
            package: "crates/fx",
            tolerated: Tolerated::Folder("src/other/"),
            why: "gone",
        },
    ];
    let out = check(dir.path(), &["crates/*"], &[], &known).unwrap();
    assert!(out.failures.is_empty(), "{}", report(&out.failures));
    assert_eq!(out.notes.len(), 2, "{:?}", out.notes);
    assert!(
        out.notes[0].starts_with("tolerated for now (moving)"),
        "{}",
        out.notes[0]
    );
    assert!(
        out.notes[1].contains("src/other/ matches nothing any more"),
        "{}",
        out.notes[1]
    );
    // Not covered: the same circle fails.
    let out = check(dir.path(), &["crates/*"], &[], &known[1..]).unwrap();
    assert_eq!(out.failures.len(), 1);
    // An import entry leaves that one import out.
    let import = [Known {
        package: "crates/fx",
        tolerated: Tolerated::Import {
            from: "src/engine/step.rs",
            to: "src/engine/mod.rs",
        },
        why: "leaf",
    }];
    let out = check(dir.path(), &["crates/*"], &[], &import).unwrap();
    assert!(out.failures.is_empty(), "{}", report(&out.failures));
    assert!(
        out.notes[0].starts_with("import left out for now (leaf): crates/fx/src/engine/step.rs:2"),
        "{}",
        out.notes[0]
    );
}
