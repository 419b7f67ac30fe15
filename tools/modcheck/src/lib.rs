//! The module check: import circles between the files of each crate, and the layer rules of [`rules`].
//!
//! A crate is read from its root (`src/lib.rs`, `src/main.rs`) by following
//! `mod` declarations, as rustc does (`#[path]` included). Left out: items
//! under `#[cfg(test)]`, files named `*_test.rs`, and comments (doc links
//! too). An import is:
//!
//! - a `use` tree (groups expanded) that names a module of the crate
//!   (`crate::`, `super::`, `self::`, or a child module);
//! - a path in code (types, expressions, patterns, macro arguments) that
//!   starts the same way, such as `crate::clock::now_ms()`.
//!
//! Each is resolved to the longest prefix that is a module, through
//! re-exports (`pub use`) to the module that defines the name, so a name
//! defined in `lib.rs` is an import of `lib.rs`. A module's `pub use` of its
//! own descendants (a facade) counts only if the module also names what it
//! re-exports in its code. Files are the nodes; a strongly connected
//! component of more than one file is a circle.

mod graph;
pub mod rules;

pub use graph::{CrateGraph, Edge, ExternUse};

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// A circle: the files of one strongly connected component and the
/// imports between them.
#[derive(Debug)]
pub struct Cycle {
    pub files: Vec<PathBuf>,
    /// One shortest way round, starting at the first file.
    pub round: Vec<Edge>,
    pub edges: Vec<Edge>,
}

impl std::fmt::Display for Cycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "import circle of {} files:", self.files.len())?;
        for e in &self.round {
            writeln!(
                f,
                "  {}:{} `{}` -> {}",
                e.from.display(),
                e.line,
                e.text,
                e.to.display()
            )?;
        }
        writeln!(f, "  every import inside it:")?;
        for e in &self.edges {
            writeln!(
                f,
                "    {}:{} `{}` -> {}",
                e.from.display(),
                e.line,
                e.text,
                e.to.display()
            )?;
        }
        Ok(())
    }
}

/// The packages of a checked tree: every folder with a `Cargo.toml` and a
/// `src/` under the given folders, relative to `tree` (`crates/*`, or a
/// package folder itself such as `chaos`).
pub fn packages(tree: &Path, globs: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for g in globs {
        let (dir, all) = match g.strip_suffix("/*") {
            Some(d) => (d, true),
            None => (*g, false),
        };
        let candidates: Vec<PathBuf> = if all {
            let Ok(read) = std::fs::read_dir(tree.join(dir)) else {
                continue;
            };
            let mut v: Vec<PathBuf> = read
                .filter_map(|e| e.ok())
                .map(|e| Path::new(dir).join(e.file_name()))
                .collect();
            v.sort();
            v
        } else {
            vec![PathBuf::from(dir)]
        };
        for c in candidates {
            if tree.join(&c).join("Cargo.toml").is_file() && tree.join(&c).join("src").is_dir() {
                out.push(c);
            }
        }
    }
    out
}

/// Reads every crate of a package: `src/lib.rs` and `src/main.rs`.
pub fn read_package(tree: &Path, package: &Path) -> Result<Vec<CrateGraph>, String> {
    let externs = extern_names(tree, package)?;
    let mut out = Vec::new();
    for root in ["src/lib.rs", "src/main.rs"] {
        let rel = package.join(root);
        if tree.join(&rel).is_file() {
            out.push(read_crate(tree, package, &rel, &externs)?);
        }
    }
    Ok(out)
}

/// The names other crates go by in this package's code: its dependencies
/// (normal, dev, build), its own library, and std's crates.
fn extern_names(tree: &Path, package: &Path) -> Result<BTreeSet<String>, String> {
    let path = tree.join(package).join("Cargo.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut names: BTreeSet<String> = ["std", "core", "alloc"].map(String::from).into();
    let mut tables = vec![&doc];
    if let Some(toml::Value::Table(targets)) = doc.get("target") {
        for t in targets.values() {
            if let toml::Value::Table(t) = t {
                tables.push(t);
            }
        }
    }
    for t in tables {
        for key in ["dependencies", "dev-dependencies", "build-dependencies"] {
            if let Some(toml::Value::Table(deps)) = t.get(key) {
                names.extend(deps.keys().map(|k| k.replace('-', "_")));
            }
        }
    }
    if let Some(toml::Value::Table(p)) = doc.get("package") {
        if let Some(toml::Value::String(n)) = p.get("name") {
            names.insert(n.replace('-', "_"));
        }
    }
    if let Some(toml::Value::Table(l)) = doc.get("lib") {
        if let Some(toml::Value::String(n)) = l.get("name") {
            names.insert(n.replace('-', "_"));
        }
    }
    Ok(names)
}

/// Where a `use` or a path points.
#[derive(Clone, Debug)]
enum Target {
    /// An absolute path inside the crate (module segments, then maybe a name).
    Local(Vec<String>),
    Extern(String),
}

/// One name bound by a `use` (or a glob).
#[derive(Clone, Debug)]
struct Binding {
    target: Target,
    line: usize,
    public: bool,
}

#[derive(Default)]
struct Module {
    path: Vec<String>,
    file: PathBuf,
    parent: Option<usize>,
    children: BTreeMap<String, usize>,
    /// Names this module defines (fns, types, consts, ...).
    defines: BTreeSet<String>,
    uses: BTreeMap<String, Binding>,
    globs: Vec<Binding>,
    items: Vec<syn::Item>,
}

struct Reader<'a> {
    tree: &'a Path,
    externs: &'a BTreeSet<String>,
    modules: Vec<Module>,
    sources: BTreeMap<PathBuf, Vec<String>>,
}

fn read_crate(
    tree: &Path,
    package: &Path,
    root: &Path,
    externs: &BTreeSet<String>,
) -> Result<CrateGraph, String> {
    let mut r = Reader {
        tree,
        externs,
        modules: Vec::new(),
        sources: BTreeMap::new(),
    };
    let file = r.parse(root)?;
    let dir = root.parent().unwrap_or(Path::new("")).to_path_buf();
    r.add_module(Vec::new(), root.to_path_buf(), None, file.items, &dir)?;
    for m in 0..r.modules.len() {
        r.collect_names(m);
    }
    let mut graph = CrateGraph {
        package: package.to_path_buf(),
        root: root.to_path_buf(),
        files: r.modules.iter().map(|m| m.file.clone()).collect(),
        ..CrateGraph::default()
    };
    for m in 0..r.modules.len() {
        r.imports_of(m, &mut graph);
    }
    Ok(graph)
}

/// Whether attributes hold `#[cfg(test)]` (or a cfg that needs `test`).
fn cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        if !a.path().is_ident("cfg") {
            return false;
        }
        let Ok(list) = a.meta.require_list() else {
            return false;
        };
        let text: String = list
            .tokens
            .to_string()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        text == "test" || text.starts_with("all(test,")
    })
}

fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| {
        if !a.path().is_ident("path") {
            return None;
        }
        match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        }
    })
}

fn is_test_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with("_test.rs"))
}

impl Reader<'_> {
    fn parse(&mut self, rel: &Path) -> Result<syn::File, String> {
        let full = self.tree.join(rel);
        let text =
            std::fs::read_to_string(&full).map_err(|e| format!("{}: {e}", full.display()))?;
        let file = syn::parse_file(&text).map_err(|e| {
            let at = e.span().start();
            format!("{}:{}: {e}", rel.display(), at.line)
        })?;
        self.sources.insert(
            rel.to_path_buf(),
            text.lines().map(str::to_string).collect(),
        );
        Ok(file)
    }

    /// Adds a module whose items are `items`; `dir` is where its child
    /// modules' files are.
    fn add_module(
        &mut self,
        path: Vec<String>,
        file: PathBuf,
        parent: Option<usize>,
        items: Vec<syn::Item>,
        dir: &Path,
    ) -> Result<usize, String> {
        let id = self.modules.len();
        self.modules.push(Module {
            path: path.clone(),
            file: file.clone(),
            parent,
            ..Module::default()
        });
        let mut kept = Vec::new();
        for item in items {
            let syn::Item::Mod(m) = &item else {
                kept.push(item);
                continue;
            };
            if cfg_test(&m.attrs) {
                continue;
            }
            let name = m.ident.to_string();
            let mut child_path = path.clone();
            child_path.push(name.clone());
            let child = match &m.content {
                Some((_, inner)) => {
                    let inner = inner.clone();
                    Some(self.add_module(
                        child_path,
                        file.clone(),
                        Some(id),
                        inner,
                        &dir.join(&name),
                    )?)
                }
                None => {
                    let candidates = match path_attr(&m.attrs) {
                        Some(p) => vec![file.parent().unwrap_or(Path::new("")).join(p)],
                        None => vec![
                            dir.join(format!("{name}.rs")),
                            dir.join(&name).join("mod.rs"),
                        ],
                    };
                    match candidates.into_iter().find(|c| self.tree.join(c).is_file()) {
                        Some(f) if !is_test_file(&f) => {
                            let parsed = self.parse(&f)?;
                            let child_dir = if f.file_name().is_some_and(|n| n == "mod.rs") {
                                f.parent().unwrap_or(Path::new("")).to_path_buf()
                            } else {
                                f.with_extension("")
                            };
                            Some(self.add_module(
                                child_path,
                                f,
                                Some(id),
                                parsed.items,
                                &child_dir,
                            )?)
                        }
                        _ => None,
                    }
                }
            };
            if let Some(child) = child {
                self.modules[id].children.insert(name, child);
            }
        }
        self.modules[id].items = kept;
        Ok(id)
    }

    /// Makes a `use` path (or a path in code) absolute, as seen from module `m`.
    fn absolute(&self, m: usize, segs: &[String]) -> Option<Target> {
        let first = segs.first()?;
        let module = &self.modules[m];
        match first.as_str() {
            "crate" => Some(Target::Local(segs[1..].to_vec())),
            "self" => {
                let mut p = module.path.clone();
                p.extend_from_slice(&segs[1..]);
                Some(Target::Local(p))
            }
            "super" => {
                let mut at = m;
                let mut i = 0;
                while segs.get(i).is_some_and(|s| s == "super") {
                    at = self.modules[at].parent?;
                    i += 1;
                }
                let mut p = self.modules[at].path.clone();
                p.extend_from_slice(&segs[i..]);
                Some(Target::Local(p))
            }
            name if module.children.contains_key(name) => {
                let mut p = module.path.clone();
                p.extend_from_slice(segs);
                Some(Target::Local(p))
            }
            name if self.externs.contains(name) => Some(Target::Extern(name.to_string())),
            _ => None,
        }
    }

    fn collect_names(&mut self, m: usize) {
        let items = std::mem::take(&mut self.modules[m].items);
        for item in &items {
            if cfg_test(item_attrs(item)) {
                continue;
            }
            if let syn::Item::Use(u) = item {
                let public = !matches!(u.vis, syn::Visibility::Inherited);
                let mut leaves = Vec::new();
                use_leaves(&u.tree, &mut Vec::new(), &mut leaves);
                for leaf in leaves {
                    let Some(target) = self.absolute(m, &leaf.segs) else {
                        continue;
                    };
                    let binding = Binding {
                        target,
                        line: leaf.line,
                        public,
                    };
                    match leaf.name {
                        Some(name) => {
                            self.modules[m].uses.insert(name, binding);
                        }
                        None => self.modules[m].globs.push(binding),
                    }
                }
            } else if let Some(name) = item_name(item) {
                self.modules[m].defines.insert(name);
            }
        }
        self.modules[m].items = items;
    }

    /// The module a path inside the crate lands in: its longest prefix that
    /// is a module, followed through re-exports.
    fn resolve(&self, path: &[String], depth: usize) -> Option<usize> {
        let mut m = 0;
        let mut i = 0;
        while let Some(&c) = path.get(i).and_then(|s| self.modules[m].children.get(s)) {
            m = c;
            i += 1;
        }
        let Some(name) = path.get(i) else {
            return Some(m);
        };
        if depth > 8 || self.modules[m].defines.contains(name) {
            return Some(m);
        }
        if let Some(b) = self.modules[m].uses.get(name) {
            return match &b.target {
                Target::Local(p) => {
                    let mut p = p.clone();
                    p.extend_from_slice(&path[i + 1..]);
                    self.resolve(&p, depth + 1).or(Some(m))
                }
                Target::Extern(_) => None,
            };
        }
        for g in &self.modules[m].globs {
            if let Target::Local(p) = &g.target {
                if let Some(gm) = self.resolve(p, depth + 1) {
                    let gmod = &self.modules[gm];
                    if gmod.defines.contains(name) || gmod.uses.contains_key(name) {
                        let mut p = p.clone();
                        p.extend_from_slice(&path[i..]);
                        return self.resolve(&p, depth + 1);
                    }
                }
            }
        }
        Some(m)
    }

    fn line_text(&self, file: &Path, line: usize) -> String {
        self.sources
            .get(file)
            .and_then(|l| l.get(line.wrapping_sub(1)))
            .map(|l| l.trim().to_string())
            .unwrap_or_default()
    }

    fn is_descendant(&self, of: usize, m: usize) -> bool {
        let mut at = Some(m);
        while let Some(x) = at {
            if x == of {
                return true;
            }
            at = self.modules[x].parent;
        }
        false
    }

    fn imports_of(&self, m: usize, graph: &mut CrateGraph) {
        let module = &self.modules[m];
        let mut code = Paths::default();
        for item in &module.items {
            code.visit_item(item);
        }
        let add = |graph: &mut CrateGraph, target: &Target, line: usize| match target {
            Target::Local(p) => {
                if let Some(to) = self.resolve(p, 0) {
                    if self.modules[to].file != module.file {
                        graph.edges.push(Edge {
                            from: module.file.clone(),
                            line,
                            text: self.line_text(&module.file, line),
                            to: self.modules[to].file.clone(),
                            to_module: self.modules[to].path.clone(),
                        });
                    }
                }
            }
            Target::Extern(krate) => graph.externs.push(ExternUse {
                file: module.file.clone(),
                line,
                text: self.line_text(&module.file, line),
                krate: krate.clone(),
            }),
        };
        let facade = |b: &Binding| {
            b.public
                && match &b.target {
                    Target::Local(p) => self
                        .resolve(p, 0)
                        .is_some_and(|to| to != m && self.is_descendant(m, to)),
                    Target::Extern(_) => false,
                }
        };
        for (name, b) in &module.uses {
            if facade(b) && !code.names.contains(name) {
                continue;
            }
            add(graph, &b.target, b.line);
        }
        for b in &module.globs {
            if facade(b) {
                continue;
            }
            add(graph, &b.target, b.line);
        }
        for (segs, line) in &code.paths {
            if segs.len() < 2 {
                continue;
            }
            if let Some(target) = self.absolute(m, segs) {
                add(graph, &target, *line);
            }
        }
    }
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    use syn::Item::*;
    match item {
        Const(i) => &i.attrs,
        Enum(i) => &i.attrs,
        ExternCrate(i) => &i.attrs,
        Fn(i) => &i.attrs,
        ForeignMod(i) => &i.attrs,
        Impl(i) => &i.attrs,
        Macro(i) => &i.attrs,
        Mod(i) => &i.attrs,
        Static(i) => &i.attrs,
        Struct(i) => &i.attrs,
        Trait(i) => &i.attrs,
        TraitAlias(i) => &i.attrs,
        Type(i) => &i.attrs,
        Union(i) => &i.attrs,
        Use(i) => &i.attrs,
        _ => &[],
    }
}

fn item_name(item: &syn::Item) -> Option<String> {
    use syn::Item::*;
    let ident = match item {
        Const(i) => &i.ident,
        Enum(i) => &i.ident,
        Fn(i) => &i.sig.ident,
        Static(i) => &i.ident,
        Struct(i) => &i.ident,
        Trait(i) => &i.ident,
        TraitAlias(i) => &i.ident,
        Type(i) => &i.ident,
        Union(i) => &i.ident,
        Macro(i) => i.ident.as_ref()?,
        _ => return None,
    };
    Some(ident.to_string())
}

struct Leaf {
    segs: Vec<String>,
    /// The name it binds; `None` for a glob.
    name: Option<String>,
    line: usize,
}

fn use_leaves(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Leaf>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_leaves(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let mut segs = prefix.clone();
            let name = n.ident.to_string();
            // `use foo::{self}` binds `foo`.
            let bound = if name == "self" {
                prefix.last().cloned().unwrap_or_default()
            } else {
                segs.push(name.clone());
                name
            };
            out.push(Leaf {
                segs,
                name: Some(bound),
                line: n.ident.span().start().line,
            });
        }
        syn::UseTree::Rename(r) => {
            let mut segs = prefix.clone();
            if r.ident != "self" {
                segs.push(r.ident.to_string());
            }
            out.push(Leaf {
                segs,
                name: Some(r.rename.to_string()),
                line: r.ident.span().start().line,
            });
        }
        syn::UseTree::Glob(g) => out.push(Leaf {
            segs: prefix.clone(),
            name: None,
            line: g.star_token.span.start().line,
        }),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                use_leaves(t, prefix, out);
            }
        }
    }
}

/// The paths of a module's code (not its `use` items, not its inline
/// modules, nothing under `#[cfg(test)]`), with macro arguments read as tokens.
#[derive(Default)]
struct Paths {
    paths: Vec<(Vec<String>, usize)>,
    /// Every first segment and every identifier in a macro: the names the code uses.
    names: BTreeSet<String>,
}

impl Paths {
    fn tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < trees.len() {
            match &trees[i] {
                TokenTree::Group(g) => {
                    self.tokens(g.stream());
                    i += 1;
                }
                TokenTree::Ident(id) => {
                    self.names.insert(id.to_string());
                    let line = id.span().start().line;
                    let mut segs = vec![id.to_string()];
                    let mut j = i + 1;
                    // ident (`::` ident)*
                    while let (
                        Some(TokenTree::Punct(a)),
                        Some(TokenTree::Punct(b)),
                        Some(TokenTree::Ident(next)),
                    ) = (trees.get(j), trees.get(j + 1), trees.get(j + 2))
                    {
                        if a.as_char() != ':' || b.as_char() != ':' {
                            break;
                        }
                        segs.push(next.to_string());
                        self.names.insert(next.to_string());
                        j += 3;
                    }
                    if segs.len() > 1 {
                        self.paths.push((segs, line));
                    }
                    i = j;
                }
                _ => i += 1,
            }
        }
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if cfg_test(item_attrs(item)) {
            return;
        }
        match item {
            syn::Item::Use(_) | syn::Item::Mod(_) => {}
            _ => syn::visit::visit_item(self, item),
        }
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        let attrs = match item {
            syn::ImplItem::Const(i) => &i.attrs,
            syn::ImplItem::Fn(i) => &i.attrs,
            syn::ImplItem::Type(i) => &i.attrs,
            syn::ImplItem::Macro(i) => &i.attrs,
            _ => return syn::visit::visit_impl_item(self, item),
        };
        if !cfg_test(attrs) {
            syn::visit::visit_impl_item(self, item);
        }
    }

    fn visit_attribute(&mut self, attr: &'ast syn::Attribute) {
        // Doc comments are text, not imports.
        if !attr.path().is_ident("doc") {
            syn::visit::visit_attribute(self, attr);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segs: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(first) = path.segments.first() {
            self.names.insert(segs[0].clone());
            let line = first.ident.span().start().line;
            if path.leading_colon.is_none() {
                self.paths.push((segs, line));
            }
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        self.tokens(mac.tokens.clone());
    }
}

/// The circles of a crate: each strongly connected component of more than
/// one file (Tarjan's algorithm), with a shortest way round it.
pub fn cycles(graph: &CrateGraph) -> Vec<Cycle> {
    let files: Vec<&PathBuf> = graph.files.iter().collect();
    let index: BTreeMap<&PathBuf, usize> = files.iter().enumerate().map(|(i, f)| (*f, i)).collect();
    let mut adj: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); files.len()];
    for e in &graph.edges {
        if let (Some(&a), Some(&b)) = (index.get(&e.from), index.get(&e.to)) {
            adj[a].insert(b);
        }
    }
    let components = tarjan(&adj);
    let mut out = Vec::new();
    for comp in components.into_iter().filter(|c| c.len() > 1) {
        let set: BTreeSet<usize> = comp.iter().copied().collect();
        let mut members: Vec<usize> = comp;
        members.sort();
        let inside = |e: &Edge| {
            index.get(&e.from).is_some_and(|a| set.contains(a))
                && index.get(&e.to).is_some_and(|b| set.contains(b))
        };
        let mut seen = BTreeSet::new();
        let edges: Vec<Edge> = graph
            .edges
            .iter()
            .filter(|e| inside(e) && seen.insert((e.from.clone(), e.line, e.to.clone())))
            .cloned()
            .collect();
        // Shortest round from the first member: BFS back to it.
        let start = members[0];
        let mut prev: BTreeMap<usize, usize> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        let mut closing = None;
        'bfs: while let Some(x) = queue.pop_front() {
            for &y in &adj[x] {
                if !set.contains(&y) {
                    continue;
                }
                if y == start {
                    closing = Some(x);
                    break 'bfs;
                }
                if let std::collections::btree_map::Entry::Vacant(v) = prev.entry(y) {
                    v.insert(x);
                    queue.push_back(y);
                }
            }
        }
        let mut hops = Vec::new();
        if let Some(mut x) = closing {
            hops.push((x, start));
            while x != start {
                let p = prev[&x];
                hops.push((p, x));
                x = p;
            }
            hops.reverse();
        }
        let round = hops
            .into_iter()
            .filter_map(|(a, b)| {
                edges
                    .iter()
                    .find(|e| e.from == *files[a] && e.to == *files[b])
                    .cloned()
            })
            .collect();
        out.push(Cycle {
            files: members.iter().map(|&i| files[i].clone()).collect(),
            round,
            edges,
        });
    }
    out
}

fn tarjan(adj: &[BTreeSet<usize>]) -> Vec<Vec<usize>> {
    struct T<'a> {
        adj: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(t: &mut T<'_>, v: usize) {
        t.index[v] = Some(t.next);
        t.low[v] = t.next;
        t.next += 1;
        t.stack.push(v);
        t.on_stack[v] = true;
        for &w in t.adj[v].iter() {
            match t.index[w] {
                None => {
                    visit(t, w);
                    t.low[v] = t.low[v].min(t.low[w]);
                }
                Some(i) if t.on_stack[w] => t.low[v] = t.low[v].min(i),
                _ => {}
            }
        }
        if Some(t.low[v]) == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on_stack[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            t.out.push(comp);
        }
    }
    let n = adj.len();
    let mut t = T {
        adj,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            visit(&mut t, v);
        }
    }
    t.out
}

/// What the check found: failures, and notes on tolerated circles.
#[derive(Debug, Default)]
pub struct Outcome {
    pub failures: Vec<String>,
    pub notes: Vec<String>,
}

/// Reads every package under `globs` and returns each circle and each broken
/// layer rule as text; a circle that an entry of `known` covers is a note.
pub fn check(
    tree: &Path,
    globs: &[&str],
    rules: &[rules::Rule],
    known: &[rules::Known],
) -> Result<Outcome, String> {
    let mut graphs = Vec::new();
    for p in packages(tree, globs) {
        graphs.extend(read_package(tree, &p)?);
    }
    let mut out = Outcome::default();
    let mut used = vec![false; known.len()];
    for g in &graphs {
        let mut kept = Vec::new();
        for e in &g.edges {
            match known.iter().position(|k| k.ignores(g, e)) {
                Some(i) => {
                    if !used[i] {
                        out.notes.push(format!(
                            "import left out for now ({}): {}:{} `{}` -> {}",
                            known[i].why,
                            e.from.display(),
                            e.line,
                            e.text,
                            e.to.display()
                        ));
                    }
                    used[i] = true;
                }
                None => kept.push(e.clone()),
            }
        }
        let g = &CrateGraph {
            package: g.package.clone(),
            root: g.root.clone(),
            files: g.files.clone(),
            edges: kept,
            externs: Vec::new(),
        };
        for c in cycles(g) {
            let text = format!("{}: {c}", g.root.display());
            match known.iter().position(|k| k.covers(g, &c.files)) {
                Some(i) => {
                    used[i] = true;
                    out.notes
                        .push(format!("tolerated for now ({}): {text}", known[i].why));
                }
                None => out.failures.push(text),
            }
        }
    }
    for (k, used) in known.iter().zip(used) {
        if !used {
            out.notes.push(format!(
                "{} matches nothing any more: remove its entry from KNOWN in tools/modcheck/src/rules.rs",
                k.name()
            ));
        }
    }
    out.failures.extend(rules::check(&graphs, rules)?);
    Ok(out)
}

/// Formats failures for a test's panic message.
pub fn report(failures: &[String]) -> String {
    let mut s = String::new();
    for f in failures {
        let _ = writeln!(s, "{f}");
    }
    s
}

#[cfg(test)]
#[path = "lib_test.rs"]
mod tests;
