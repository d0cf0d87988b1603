//! The shape of the crate, checked: no module imports a module that imports it back, and a
//! transport (`gateway`) never depends on the REST module (`api`).
//!
//! Modules are read from the source files: every `crate::name` (and `super::name` where it
//! leaves the module) in code, outside comments, is an edge from the file's module to
//! `name`. Checked at two levels: between the crate's top-level modules, and between the
//! files of each folder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, with its module path (`["gateway", "ws"]`; `mod.rs` is its
/// folder's module).
fn files(dir: &Path, prefix: &[String], out: &mut Vec<(Vec<String>, PathBuf)>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        if path.is_dir() {
            let mut p = prefix.to_vec();
            p.push(name);
            files(&path, &p, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let mut p = prefix.to_vec();
            if name != "mod" {
                p.push(name);
            }
            out.push((p, path));
        }
    }
}

/// The code of a file without `//` comments (doc comments included) and string literals'
/// contents are kept: a path written inside a string is rare and would only add an edge.
fn code(text: &str) -> String {
    text.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// The identifiers that follow `prefix` in `code` (`crate::` → `["db", "state", …]`).
fn after<'a>(code: &'a str, prefix: &str) -> Vec<&'a str> {
    code.match_indices(prefix)
        .filter(|(i, _)| !code[..*i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':'))
        .map(|(i, _)| {
            let rest = &code[i + prefix.len()..];
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|s| !s.is_empty())
        .collect()
}

type Graph = BTreeMap<String, BTreeSet<String>>;

/// A cycle in `graph`, if there is one (as the list of its nodes).
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut c = path[start..].to_vec();
            c.push(node.to_owned());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// The module graphs: top-level modules, and the files of each folder (by folder).
fn graphs() -> (Graph, BTreeMap<String, Graph>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &[], &mut all);
    let top: BTreeSet<String> = all.iter().filter_map(|(p, _)| p.first().cloned()).collect();
    let mut crate_graph = Graph::new();
    let mut folders: BTreeMap<String, Graph> = BTreeMap::new();
    for (module, path) in &all {
        // lib.rs and main.rs are the crate itself; this file reads the others.
        let Some(first) = module.first() else { continue };
        if first == "main" || first == "layout_tests" {
            continue;
        }
        let text = code(&std::fs::read_to_string(path).expect("a source file is readable"));
        let mut uses: Vec<Vec<String>> =
            after(&text, "crate::").into_iter().map(|name| vec![name.to_owned()]).collect();
        // `super::x` from `a/b.rs` (module [a, b]) is `a::x`; from `a/mod.rs` or `a.rs`
        // (module [a]) it is the crate's `x`.
        for name in after(&text, "super::") {
            let mut target = module[..module.len() - 1].to_vec();
            target.push(name.to_owned());
            uses.push(target);
        }
        for target in uses {
            let to = &target[0];
            if top.contains(to) && to != first {
                crate_graph.entry(first.clone()).or_default().insert(to.clone());
            }
            // Siblings: two files of one folder, neither of them its mod.rs.
            if module.len() >= 2
                && target.len() >= 2
                && target[..target.len() - 1] == module[..module.len() - 1]
            {
                let folder = module[..module.len() - 1].join("/");
                let (from, to) = (module[module.len() - 1].clone(), target[target.len() - 1].clone());
                let siblings: BTreeSet<String> = all
                    .iter()
                    .filter(|(p, _)| {
                        p.len() == module.len() && p[..p.len() - 1] == module[..module.len() - 1]
                    })
                    .map(|(p, _)| p[p.len() - 1].clone())
                    .collect();
                if siblings.contains(&to) && from != to {
                    folders.entry(folder).or_default().entry(from).or_default().insert(to);
                }
            }
        }
    }
    (crate_graph, folders)
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let (crate_graph, folders) = graphs();
    assert!(crate_graph.len() > 10, "the reader found the modules: {crate_graph:?}");
    assert_eq!(cycle(&crate_graph), None, "a cycle between top-level modules; edges: {crate_graph:#?}");
    for (folder, graph) in &folders {
        assert_eq!(cycle(graph), None, "a cycle between the files of {folder}/; edges: {graph:#?}");
    }
}

#[test]
fn transports_do_not_depend_on_the_rest_api_and_only_the_assembly_reads_the_config() {
    let (crate_graph, _) = graphs();
    assert!(crate_graph["gateway"].contains("http"), "the reader sees gateway's imports");
    assert!(!crate_graph["gateway"].contains("api"), "gateway imports api: {:?}", crate_graph["gateway"]);
    let readers: Vec<&String> =
        crate_graph.iter().filter(|(_, to)| to.contains("config")).map(|(from, _)| from).collect();
    assert_eq!(readers, ["app"], "modules other than the assembly read the Config");
}

#[test]
fn the_checker_finds_a_cycle_when_there_is_one() {
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycle(&g), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    assert_eq!(after("use crate::db::Db; x::crate::no; crate::state", "crate::"), ["db", "state"]);
}
