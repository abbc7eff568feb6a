//! `cargo xtask imports`: no module imports a module that imports it.
//!
//! Reads every crate root of the workspace with `syn`, follows its `mod` declarations
//! to find its modules, and records an edge from module A to module B whenever A names
//! B by a path: a private `use`, or a path expression or type (`crate::b::f()`,
//! `super::b::T`, or a child module's name). A re-export (`pub use b::T`) is no edge
//! of its own: a path to `T` through it leads on to `b`, where `T` is defined, so a
//! crate root that re-exports for its users is not every module's neighbour. Modules
//! are counted per file: an inline `mod tests` belongs to its file.
//!
//! Any strongly connected set of two or more modules is a circle, and the check fails
//! naming each edge with the line that makes it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use syn::visit::Visit;

/// A module's path inside its crate; the root is empty.
type ModPath = Vec<String>;

/// One module file of a crate.
struct Module {
    file: PathBuf,
    ast: syn::File,
}

/// One crate: its modules by path, and its inline modules.
#[derive(Default)]
struct Crate {
    name: String,
    modules: BTreeMap<ModPath, Module>,
    /// Inline modules (`mod tests { .. }`), mapped to the file module they live in.
    inline: BTreeMap<ModPath, ModPath>,
}

/// A reference from one module to another, with where it is written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: ModPath,
    to: ModPath,
    file: PathBuf,
    line: usize,
}

/// A circle found in one crate.
#[derive(Debug)]
pub struct Circle {
    krate: String,
    modules: Vec<String>,
    edges: Vec<Edge>,
}

impl fmt::Display for Circle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "crate {}: modules {} import each other:",
            self.krate,
            self.modules.join(", ")
        )?;
        for edge in &self.edges {
            writeln!(
                f,
                "  {} -> {}  ({}:{})",
                display(&edge.from),
                display(&edge.to),
                edge.file.display(),
                edge.line
            )?;
        }
        Ok(())
    }
}

fn display(path: &ModPath) -> String {
    if path.is_empty() {
        "crate".into()
    } else {
        path.join("::")
    }
}

/// The crate roots of the workspace, by name. Each file that cargo builds as a crate
/// of its own (a library, a binary, an integration test or test directory).
fn crate_roots(root: &Path) -> Vec<(String, PathBuf)> {
    let mut roots = Vec::new();
    for dir in [
        "proto",
        "spec",
        "client-core",
        "client-wasm",
        "relay",
        "tests",
        "xtask",
    ] {
        let src = root.join(dir).join("src");
        for file in ["lib.rs", "main.rs"] {
            if src.join(file).is_file() {
                roots.push((format!("{dir}/src/{file}"), src.join(file)));
            }
        }
        // src/bin/NAME.rs or src/bin/NAME/main.rs, and integration tests:
        // tests/NAME.rs or tests/NAME/main.rs (the e2e crate keeps them at its top).
        let mut others = Vec::new();
        others.extend(files_in(&src.join("bin")));
        let test_dir = if dir == "tests" {
            root.join(dir)
        } else {
            root.join(dir).join("tests")
        };
        others.extend(files_in(&test_dir));
        for file in others {
            let name = file
                .strip_prefix(root)
                .unwrap_or(&file)
                .display()
                .to_string();
            roots.push((name, file));
        }
    }
    roots
}

/// `X.rs` and `X/main.rs` directly in `dir`.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|path| {
            if path.extension().is_some_and(|e| e == "rs") {
                Some(path)
            } else if path.join("main.rs").is_file() && path.file_name() != Some("src".as_ref()) {
                Some(path.join("main.rs"))
            } else {
                None
            }
        })
        .collect();
    files.sort();
    files
}

fn parse(file: &Path) -> Result<syn::File> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))
}

/// Loads a crate: its root and every module its `mod` declarations name.
fn load(name: String, root_file: &Path) -> Result<Crate> {
    let mut krate = Crate {
        name,
        ..Crate::default()
    };
    let mut todo = vec![(ModPath::new(), root_file.to_path_buf())];
    while let Some((path, file)) = todo.pop() {
        let ast = parse(&file)?;
        // Where this file's child modules live: beside a root or mod.rs, else in a
        // folder named after the file.
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let dir = file.parent().unwrap_or(Path::new("."));
        let child_dir = if path.is_empty() || stem == "mod" {
            dir.to_path_buf()
        } else {
            dir.join(stem)
        };
        collect_mods(
            &ast.items,
            &path,
            &path,
            &child_dir,
            &mut todo,
            &mut krate.inline,
        )?;
        krate.modules.insert(path, Module { file, ast });
    }
    Ok(krate)
}

fn collect_mods(
    items: &[syn::Item],
    path: &ModPath,
    file_module: &ModPath,
    child_dir: &Path,
    todo: &mut Vec<(ModPath, PathBuf)>,
    inline: &mut BTreeMap<ModPath, ModPath>,
) -> Result<()> {
    for item in items {
        let syn::Item::Mod(m) = item else { continue };
        let mut child = path.clone();
        child.push(m.ident.to_string());
        match &m.content {
            Some((_, items)) => {
                inline.insert(child.clone(), file_module.clone());
                collect_mods(
                    items,
                    &child,
                    file_module,
                    &child_dir.join(m.ident.to_string()),
                    todo,
                    inline,
                )?;
            }
            None => {
                let explicit = m.attrs.iter().find_map(|a| {
                    if !a.path().is_ident("path") {
                        return None;
                    }
                    let syn::Meta::NameValue(nv) = &a.meta else {
                        return None;
                    };
                    match &nv.value {
                        syn::Expr::Lit(syn::ExprLit {
                            lit: syn::Lit::Str(s),
                            ..
                        }) => Some(child_dir.join(s.value())),
                        _ => None,
                    }
                });
                let name = m.ident.to_string();
                let candidates = match explicit {
                    Some(file) => vec![file],
                    None => vec![
                        child_dir.join(format!("{name}.rs")),
                        child_dir.join(&name).join("mod.rs"),
                    ],
                };
                let file = candidates
                    .iter()
                    .find(|f| f.is_file())
                    .with_context(|| {
                        format!(
                            "module {} declared but none of {:?} exists",
                            child.join("::"),
                            candidates
                        )
                    })?
                    .clone();
                todo.push((child, file));
            }
        }
    }
    Ok(())
}

/// Every path a module writes, as (path segments, line), with `self`/`super`/`crate`
/// resolved against the module the path is written in.
struct Paths<'a> {
    /// The module the visitor is in (inline modules included).
    here: ModPath,
    krate: &'a Crate,
    found: Vec<(ModPath, Vec<String>, usize)>,
}

impl<'a> Paths<'a> {
    fn record(&mut self, segments: Vec<String>, line: usize) {
        self.found.push((self.here.clone(), segments, line));
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut full = prefix.clone();
                if n.ident != "self" {
                    full.push(n.ident.to_string());
                }
                self.record(full, n.ident.span().start().line);
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix.clone();
                if r.ident != "self" {
                    full.push(r.ident.to_string());
                }
                self.record(full, r.ident.span().start().line);
            }
            syn::UseTree::Glob(g) => {
                self.record(prefix.clone(), g.star_token.spans[0].start().line);
            }
            syn::UseTree::Group(g) => {
                for tree in &g.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Paths<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if m.content.is_some() {
            self.here.push(m.ident.to_string());
            syn::visit::visit_item_mod(self, m);
            self.here.pop();
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        // A re-export (`pub use a::T`) is a signpost for users, not a use: a path to
        // `T` through it is counted as a path to `a` (see `Crate::resolve`).
        if matches!(u.vis, syn::Visibility::Inherited) {
            self.use_tree(&mut Vec::new(), &u.tree);
        }
    }

    // `pub(crate)` and `pub(in crate::a)` say who may see an item, not what it uses.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(first) = path.segments.first() {
            self.record(segments, first.ident.span().start().line);
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        // Paths inside macro calls (format!, tokio::select!, ...) are tokens, not
        // syntax: read `crate::a::b` and `super::a` sequences out of them.
        let tokens: Vec<proc_macro2::TokenTree> = flatten(mac.tokens.clone());
        let mut i = 0;
        while i < tokens.len() {
            if let proc_macro2::TokenTree::Ident(id) = &tokens[i]
                && (id == "crate" || id == "super")
            {
                let line = id.span().start().line;
                let mut segments = vec![id.to_string()];
                let mut j = i + 1;
                // `::` is two `:` puncts, then the next name.
                while let (
                    Some(proc_macro2::TokenTree::Punct(a)),
                    Some(proc_macro2::TokenTree::Punct(b)),
                    Some(proc_macro2::TokenTree::Ident(next)),
                ) = (tokens.get(j), tokens.get(j + 1), tokens.get(j + 2))
                {
                    if a.as_char() != ':' || b.as_char() != ':' {
                        break;
                    }
                    segments.push(next.to_string());
                    j += 3;
                }
                self.record(segments, line);
                i = j;
            } else {
                i += 1;
            }
        }
        syn::visit::visit_macro(self, mac);
    }
}

fn flatten(stream: proc_macro2::TokenStream) -> Vec<proc_macro2::TokenTree> {
    let mut out = Vec::new();
    for tree in stream {
        match tree {
            proc_macro2::TokenTree::Group(g) => out.extend(flatten(g.stream())),
            other => out.push(other),
        }
    }
    out
}

impl Crate {
    /// The file module an (inline or file) module belongs to.
    fn file_of(&self, path: &ModPath) -> Option<ModPath> {
        if self.modules.contains_key(path) {
            return Some(path.clone());
        }
        self.inline.get(path).cloned()
    }

    fn is_module(&self, path: &ModPath) -> bool {
        self.modules.contains_key(path) || self.inline.contains_key(path)
    }

    /// The module a path written in `here` leads to, following re-exports; `None` for
    /// paths outside the crate (std, other crates, local names).
    fn resolve(&self, here: &ModPath, segments: &[String], exports: &Exports) -> Option<ModPath> {
        let mut at: ModPath;
        let mut rest = segments;
        match segments.first().map(String::as_str) {
            Some("crate") => {
                at = ModPath::new();
                rest = &segments[1..];
            }
            Some("self") => {
                at = here.clone();
                rest = &segments[1..];
            }
            Some("super") => {
                at = here.clone();
                while rest.first().map(String::as_str) == Some("super") {
                    at.pop()?;
                    rest = &rest[1..];
                }
            }
            Some(first) => {
                // A bare path: a child module of `here` (`session::run`), or nothing of
                // ours. A lone name is a local variable as often as a module.
                if segments.len() < 2 {
                    return None;
                }
                let mut child = here.clone();
                child.push(first.to_owned());
                if !self.is_module(&child) {
                    return None;
                }
                at = here.clone();
            }
            None => return None,
        }
        // Walk down as long as the next segment is a module, then follow a re-export
        // of the next name, a few times at most.
        for _ in 0..8 {
            while let Some(next) = rest.first() {
                let mut child = at.clone();
                child.push(next.clone());
                if !self.is_module(&child) {
                    break;
                }
                at = child;
                rest = &rest[1..];
            }
            let Some(name) = rest.first() else { break };
            let Some(target) = exports.get(&(self.file_of(&at)?, name.clone())) else {
                break;
            };
            at = target.clone();
            rest = &rest[1..];
        }
        self.file_of(&at)
    }
}

/// (file module, name) -> the module a `use` in that file takes the name from.
type Exports = HashMap<(ModPath, String), ModPath>;

fn exports_of(krate: &Crate) -> Exports {
    let mut exports = Exports::new();
    for (path, module) in &krate.modules {
        for item in &module.ast.items {
            let syn::Item::Use(u) = item else { continue };
            let mut names = Vec::new();
            use_names(&mut Vec::new(), &u.tree, &mut names);
            for (source, name) in names {
                // Where the name comes from, as a module of this crate.
                let mut segments = source.clone();
                segments.pop();
                let from = match segments.first().map(String::as_str) {
                    Some("crate") => {
                        let mut at = ModPath::new();
                        for s in &segments[1..] {
                            at.push(s.clone());
                        }
                        at
                    }
                    Some("self") => {
                        let mut at = path.clone();
                        at.extend(segments[1..].iter().cloned());
                        at
                    }
                    Some("super") => {
                        let mut at = path.clone();
                        let mut rest = &segments[..];
                        while rest.first().map(String::as_str) == Some("super") {
                            at.pop();
                            rest = &rest[1..];
                        }
                        at.extend(rest.iter().cloned());
                        at
                    }
                    Some(_) => {
                        let mut at = path.clone();
                        at.extend(segments.iter().cloned());
                        at
                    }
                    None => continue,
                };
                if let Some(file) = krate.file_of(&from) {
                    exports.insert((path.clone(), name), file);
                }
            }
        }
    }
    exports
}

/// (full source path, name it is known by here) for each name a `use` brings in.
fn use_names(prefix: &mut Vec<String>, tree: &syn::UseTree, out: &mut Vec<(Vec<String>, String)>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_names(prefix, &p.tree, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let mut full = prefix.clone();
            full.push(n.ident.to_string());
            out.push((full, n.ident.to_string()));
        }
        syn::UseTree::Rename(r) => {
            let mut full = prefix.clone();
            full.push(r.ident.to_string());
            out.push((full, r.rename.to_string()));
        }
        syn::UseTree::Glob(_) => {}
        syn::UseTree::Group(g) => {
            for tree in &g.items {
                use_names(prefix, tree, out);
            }
        }
    }
}

/// The edges between distinct file modules of a crate.
fn edges(krate: &Crate) -> BTreeSet<Edge> {
    let exports = exports_of(krate);
    let mut edges = BTreeSet::new();
    for (path, module) in &krate.modules {
        let mut paths = Paths {
            here: path.clone(),
            krate,
            found: Vec::new(),
        };
        paths.visit_file(&module.ast);
        for (here, segments, line) in paths.found {
            let Some(to) = paths.krate.resolve(&here, &segments, &exports) else {
                continue;
            };
            if &to == path {
                continue;
            }
            // A module may name its own descendants: they are its parts, not its
            // neighbours, unless they name it back (which the child's edge shows).
            edges.insert(Edge {
                from: path.clone(),
                to,
                file: module.file.clone(),
                line,
            });
        }
    }
    edges
}

/// Strongly connected sets of two or more modules (Tarjan's algorithm).
fn circles(krate: &Crate, edges: &BTreeSet<Edge>) -> Vec<Circle> {
    let nodes: Vec<&ModPath> = krate.modules.keys().collect();
    let index_of: HashMap<&ModPath, usize> =
        nodes.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let mut next: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); nodes.len()];
    for edge in edges {
        if let (Some(&a), Some(&b)) = (index_of.get(&edge.from), index_of.get(&edge.to)) {
            next[a].insert(b);
        }
    }
    let sets = tarjan(&next);
    sets.into_iter()
        .filter(|set| set.len() > 1)
        .map(|set| {
            let members: BTreeSet<&ModPath> = set.iter().map(|&i| nodes[i]).collect();
            Circle {
                krate: krate.name.clone(),
                modules: members.iter().map(|p| display(p)).collect(),
                edges: edges
                    .iter()
                    .filter(|e| members.contains(&e.from) && members.contains(&e.to))
                    .cloned()
                    .collect(),
            }
        })
        .collect()
}

fn tarjan(next: &[BTreeSet<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        next: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        counter: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.counter);
        s.low[v] = s.counter;
        s.counter += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in s.next[v].iter() {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(i) if s.on_stack[w] => s.low[v] = s.low[v].min(i),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut set = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                set.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(set);
        }
    }
    let n = next.len();
    let mut s = State {
        next,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        counter: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}

/// Every circle in the workspace's crates.
pub fn find(root: &Path) -> Result<Vec<Circle>> {
    let mut found = Vec::new();
    for (name, file) in crate_roots(root) {
        let krate = load(name, &file)?;
        let edges = edges(&krate);
        found.extend(circles(&krate, &edges));
    }
    Ok(found)
}

/// Fails, naming each circle and the lines that make it, if any module imports a
/// module that imports it.
pub fn check(root: &Path) -> Result<()> {
    let found = find(root)?;
    if found.is_empty() {
        println!("no import circles");
        return Ok(());
    }
    for circle in &found {
        eprint!("{circle}");
    }
    bail!(
        "{} import circle(s): a module must not import a module that imports it; move what both need into a leaf module, or report to the owner through a type of the child's own",
        found.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    fn circles_in(files: &[(&str, &str)]) -> Vec<Vec<String>> {
        let dir = tempdir();
        write(&dir, files);
        let krate = load("test".into(), &dir.join("lib.rs")).unwrap();
        let edges = edges(&krate);
        let found = circles(&krate, &edges)
            .into_iter()
            .map(|c| c.modules)
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        found
    }

    fn tempdir() -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xtask-imports-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn two_modules_using_each_other_are_a_circle() {
        let found = circles_in(&[
            ("lib.rs", "mod a; mod b;"),
            ("a.rs", "use crate::b::B; pub struct A;"),
            (
                "b.rs",
                "pub struct B; fn f() -> crate::a::A { crate::a::A }",
            ),
        ]);
        assert_eq!(found, vec![vec!["a".to_owned(), "b".to_owned()]]);
    }

    #[test]
    fn a_circle_through_three_modules_and_grouped_uses_is_found() {
        let found = circles_in(&[
            ("lib.rs", "mod a; mod b; mod c;"),
            ("a.rs", "use crate::{b::{self, B}};"),
            ("b.rs", "use super::c;"),
            ("c.rs", "fn f() { let _ = format!(\"{:?}\", crate::a::X); }"),
        ]);
        assert_eq!(
            found,
            vec![vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]]
        );
    }

    #[test]
    fn a_leaf_used_by_many_and_re_exports_at_the_root_are_no_circle() {
        let found = circles_in(&[
            (
                "lib.rs",
                "mod a; mod b; mod leaf; pub use leaf::Shared; pub fn run() { a::go(); b::go(); }",
            ),
            ("a.rs", "use crate::Shared; pub fn go() {}"),
            ("b.rs", "pub fn go() { let _ = crate::Shared; }"),
            (
                "leaf.rs",
                "pub struct Shared; #[cfg(test)] mod tests { use super::*; }",
            ),
        ]);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_root_item_used_by_a_module_the_root_uses_is_a_circle() {
        let found = circles_in(&[
            (
                "lib.rs",
                "mod a; pub struct State; pub fn run() { a::go(); }",
            ),
            ("a.rs", "pub fn go() { let _ = crate::State; }"),
        ]);
        assert_eq!(found, vec![vec!["crate".to_owned(), "a".to_owned()]]);
    }

    #[test]
    fn a_child_file_naming_its_parent_is_a_circle_when_the_parent_names_it() {
        let found = circles_in(&[
            ("lib.rs", "mod config;"),
            (
                "config/mod.rs",
                "mod values; use values::Port; pub struct C;",
            ),
            ("config/values.rs", "pub struct Port; fn f(_: super::C) {}"),
        ]);
        assert_eq!(
            found,
            vec![vec!["config".to_owned(), "config::values".to_owned()]]
        );
    }

    #[test]
    fn visibility_paths_are_no_edge() {
        let found = circles_in(&[
            ("lib.rs", "mod a; pub(crate) use a::A; fn f() { a::go() }"),
            ("a.rs", "pub(crate) struct A; pub(in crate) fn go() {}"),
        ]);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_path_inside_a_macro_call_is_an_edge() {
        let found = circles_in(&[
            ("lib.rs", "mod a; mod b;"),
            (
                "a.rs",
                "fn f() { tokio::select! { _ = crate::b::go() => {} } }",
            ),
            ("b.rs", "use crate::a; pub async fn go() {}"),
        ]);
        assert_eq!(found, vec![vec!["a".to_owned(), "b".to_owned()]]);
    }
}
