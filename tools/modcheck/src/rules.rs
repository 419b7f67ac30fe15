//! Layer rules: which files of a crate may import which modules and crates.
//!
//! A rule names a package and a folder (or file) of its `src/`. A rule whose
//! folder does not exist yet holds trivially, so a rule can be written before
//! its folder lands; a rule naming a package that does not exist is an error.

use std::path::Path;

use crate::graph::CrateGraph;

/// What a rule requires.
#[derive(Clone, Copy, Debug)]
pub enum Check {
    /// Only files whose path (under the package) starts with one of `from`
    /// import the module `module` or any module below it.
    OnlyImportedFrom {
        module: &'static [&'static str],
        from: &'static [&'static str],
    },
    /// Files under the rule's folder import only these other crates and no
    /// module of their crate outside the folder.
    Confined { crates: &'static [&'static str] },
    /// Files under the rule's folder import none of these modules (nor any
    /// module below them).
    DoesNotImport {
        modules: &'static [&'static [&'static str]],
    },
    /// Only files whose path (under the package) starts with one of `from`
    /// use the crate `krate`.
    CrateOnlyUsedFrom {
        krate: &'static str,
        from: &'static [&'static str],
    },
}

/// One layer rule.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    /// The package folder, as given to [`crate::check`] (`crates/tidal-server`).
    pub package: &'static str,
    /// The files it is about: a path prefix under the package (`src/raft/`);
    /// `src/` for every file.
    pub files: &'static str,
    pub check: Check,
    /// Why, printed with a failure.
    pub why: &'static str,
}

/// tidal's layer rules (STYLE.md, DESIGN.md). To add one, add a row here;
/// the workspace test then checks it.
pub const RULES: &[Rule] = &[
    Rule {
        package: "crates/tidal-server",
        files: "src/",
        check: Check::OnlyImportedFrom {
            module: &["grpc"],
            from: &["src/grpc/", "src/lib.rs"],
        },
        why: "grpc/ is the edge: the rest of the server does not reach into it",
    },
    Rule {
        package: "crates/tidal-server",
        files: "src/",
        check: Check::CrateOnlyUsedFrom {
            krate: "tidal_proto",
            // raft/'s files are the clients of the Raft transport's own
            // service (tidal_proto::raft), beside the openraft hooks they
            // serve; they are not the public API's wire messages.
            from: &[
                "src/grpc/",
                "src/lib.rs",
                "src/raft/network.rs",
                "src/raft/elections.rs",
                "src/raft/transfer.rs",
                "src/raft/alive.rs",
            ],
        },
        why: "wire messages are built only at the gRPC edge",
    },
    Rule {
        package: "crates/tidal-server",
        files: "src/leader/engine/",
        check: Check::Confined {
            crates: &["std", "core", "alloc", "tidal_core", "tracing"],
        },
        why: "the leader engine is pure: events in, actions out, the time passed in",
    },
    Rule {
        package: "crates/tidal-server",
        files: "src/auth/",
        check: Check::Confined {
            // tidal_tls: the identity a client certificate names.
            crates: &[
                "std",
                "core",
                "alloc",
                "tidal_core",
                "tidal_tls",
                "ring",
                "base64",
                "tracing",
            ],
        },
        why: "auth/ is pure rules: the gRPC edge gathers what they need and answers refusals",
    },
    Rule {
        package: "crates/tidal-server",
        files: "src/raft/",
        check: Check::DoesNotImport {
            modules: &[&["leader"], &["grpc"]],
        },
        why: "raft/ sits below the leader and the gRPC services",
    },
];

/// What a [`Known`] entry tolerates.
#[derive(Clone, Copy, Debug)]
pub enum Tolerated {
    /// Any circle whose files all lie under this folder of the package.
    Folder(&'static str),
    /// This one import (file to file, paths under the package): it is left
    /// out of the graph, so a circle it closes is not one.
    Import {
        from: &'static str,
        to: &'static str,
    },
}

/// A circle tolerated for now, in code under active change. It is printed
/// as a note, not a failure; an entry that matches nothing is printed too,
/// to be removed.
#[derive(Clone, Copy, Debug)]
pub struct Known {
    pub package: &'static str,
    pub tolerated: Tolerated,
    pub why: &'static str,
}

/// The circles tolerated for now; the list is meant to end empty.
pub const KNOWN: &[Known] = &[];

impl Known {
    /// Whether this entry is a folder entry covering a circle of `files`.
    pub fn covers(&self, graph: &CrateGraph, files: &[std::path::PathBuf]) -> bool {
        match self.tolerated {
            Tolerated::Folder(folder) => {
                graph.package == Path::new(self.package)
                    && files
                        .iter()
                        .all(|f| under(f, &graph.package).starts_with(folder))
            }
            Tolerated::Import { .. } => false,
        }
    }

    /// Whether this entry is an import entry naming `edge`.
    pub fn ignores(&self, graph: &CrateGraph, edge: &crate::Edge) -> bool {
        match self.tolerated {
            Tolerated::Import { from, to } => {
                graph.package == Path::new(self.package)
                    && under(&edge.from, &graph.package) == from
                    && under(&edge.to, &graph.package) == to
            }
            Tolerated::Folder(_) => false,
        }
    }

    /// The entry's name in a note.
    pub fn name(&self) -> String {
        match self.tolerated {
            Tolerated::Folder(f) => format!("{} {f}", self.package),
            Tolerated::Import { from, to } => format!("{} {from} -> {to}", self.package),
        }
    }
}

fn under(file: &Path, package: &Path) -> String {
    file.strip_prefix(package)
        .unwrap_or(file)
        .to_string_lossy()
        .replace('\\', "/")
}

fn starts_with(module: &[String], prefix: &[&str]) -> bool {
    module.len() >= prefix.len() && module.iter().zip(prefix).all(|(a, b)| a == b)
}

/// Checks every rule against the crates read; one line per broken import.
pub fn check(graphs: &[CrateGraph], rules: &[Rule]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for rule in rules {
        let of_package: Vec<&CrateGraph> = graphs
            .iter()
            .filter(|g| g.package == Path::new(rule.package))
            .collect();
        if of_package.is_empty() {
            return Err(format!(
                "layer rule for {} {}: no such package was read",
                rule.package, rule.files
            ));
        }
        for g in of_package {
            let in_scope = |f: &Path| under(f, &g.package).starts_with(rule.files);
            let mut broke = |file: &Path, line: usize, text: &str, what: String| {
                out.push(format!(
                    "{}:{line} `{text}`: {what} (layer rule: {})",
                    file.display(),
                    rule.why
                ));
            };
            match rule.check {
                Check::OnlyImportedFrom { module, from } => {
                    for e in &g.edges {
                        let f = under(&e.from, &g.package);
                        if starts_with(&e.to_module, module)
                            && !from.iter().any(|p| f.starts_with(p))
                        {
                            broke(
                                &e.from,
                                e.line,
                                &e.text,
                                format!("imports {}", module.join("::")),
                            );
                        }
                    }
                }
                Check::Confined { crates } => {
                    for e in g.edges.iter().filter(|e| in_scope(&e.from)) {
                        if !in_scope(&e.to) {
                            broke(
                                &e.from,
                                e.line,
                                &e.text,
                                format!("imports {} outside {}", e.to.display(), rule.files),
                            );
                        }
                    }
                    for x in g.externs.iter().filter(|x| in_scope(&x.file)) {
                        if !crates.contains(&x.krate.as_str()) {
                            broke(&x.file, x.line, &x.text, format!("uses crate {}", x.krate));
                        }
                    }
                }
                Check::CrateOnlyUsedFrom { krate, from } => {
                    for x in g.externs.iter().filter(|x| in_scope(&x.file)) {
                        let f = under(&x.file, &g.package);
                        if x.krate == krate && !from.iter().any(|p| f.starts_with(p)) {
                            broke(&x.file, x.line, &x.text, format!("uses crate {krate}"));
                        }
                    }
                }
                Check::DoesNotImport { modules } => {
                    for e in g.edges.iter().filter(|e| in_scope(&e.from)) {
                        if let Some(m) = modules.iter().find(|m| starts_with(&e.to_module, m)) {
                            broke(
                                &e.from,
                                e.line,
                                &e.text,
                                format!("imports {}", m.join("::")),
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}
