//! The shape of the code: no import cycles between the top-level modules
//! of a crate, and a core that stays sans-IO.
//!
//! A module graph without cycles can be read bottom-up: each module makes
//! sense knowing only those below it. The check reads the sources (every
//! `crate::name` path, including those in `use crate::{a, b}` groups) so it
//! needs no tool beyond the test binary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a source text names through `crate::`.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let code: String = text.lines().map(|line| line.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let mut names = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::X, b, c::{d, e}}`: the first segment of each item
            // at the group's top level.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        rest = &group[i..];
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => {
                        let name: String = group[i..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                        names.insert(name);
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// Top-level module -> the top-level modules it uses.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("under src");
        let top = relative.components().next().expect("a file").as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        let uses = graph.entry(top.clone()).or_default();
        uses.extend(crate_paths(&text).into_iter().filter(|name| *name != top));
    }
    graph
}

/// The cycles in a graph, each as a path `a -> b -> ... -> a`.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    fn reaches(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str, path: &mut Vec<String>) -> bool {
        for next in graph.get(from).into_iter().flatten() {
            if next == to {
                path.push(next.clone());
                return true;
            }
            if path.contains(next) {
                continue;
            }
            path.push(next.clone());
            if reaches(graph, next, to, path) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut found = Vec::new();
    for (module, uses) in graph {
        for used in uses {
            let mut path = vec![module.clone(), used.clone()];
            if used != module && reaches(graph, used, module, &mut path) {
                found.push(path.join(" -> "));
            }
        }
    }
    found
}

#[test]
fn no_import_cycles_between_modules() {
    for krate in ["core", "node"] {
        let graph = module_graph(&workspace().join(krate).join("src"));
        assert!(graph.len() > 3, "{krate}: found only {graph:?}");
        let found = cycles(&graph);
        assert!(found.is_empty(), "import cycles in {krate}/src:\n  {}\nmodule graph: {graph:#?}", found.join("\n  "));
    }
}

#[test]
fn the_cycle_check_sees_a_cycle() {
    let a = "use crate::{b::X, c};\nfn f() { crate::d::g(); } // crate::e is a comment";
    assert_eq!(crate_paths(a), ["b", "c", "d"].map(String::from).into());
    let graph: BTreeMap<String, BTreeSet<String>> = [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec!["a"])]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
        .collect();
    let found = cycles(&graph);
    assert!(found.iter().any(|c| c == "a -> b -> c -> a"), "{found:?}");
    assert!(!found.iter().any(|c| c.starts_with("d ")), "{found:?}");
}

/// The core is the part that can be read and tested without I/O: it may
/// not depend on an async runtime, a network stack, wasmtime or audio, nor
/// on the workspace-hack (which would pull all of those into its build;
/// the core gets the same features through the node and the tests).
#[test]
fn the_core_depends_on_no_io() {
    let manifest = std::fs::read_to_string(workspace().join("core/Cargo.toml")).expect("core/Cargo.toml");
    let manifest: toml::Table = manifest.parse().expect("valid TOML");
    let dependencies: Vec<&String> = ["dependencies", "dev-dependencies"]
        .iter()
        .filter_map(|table| manifest.get(*table).and_then(|t| t.as_table()))
        .flat_map(|t| t.keys())
        .collect();
    assert!(!dependencies.is_empty());
    for forbidden in
        ["tokio", "wasmtime", "wasmtime-wasi", "webrtc", "rtc", "axum", "cpal", "tokio-tungstenite", "medianode", "workspace-hack"]
    {
        assert!(!dependencies.iter().any(|d| *d == forbidden), "the core depends on {forbidden}");
    }
}
