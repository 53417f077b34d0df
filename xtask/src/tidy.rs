//! `cargo xtask tidy`: structural rules a compiler does not check.
//!
//! - Layering: a crate under `crates/` depends (normal or build) only on crates of a lower
//!   layer, read from `cargo metadata`; dev-dependencies may reach up (tests use higher layers
//!   as fixtures). A layered crate never depends on a tool (xtask, benches, a CLI).
//! - Every declared internal (workspace) dependency is used: a `[dependencies]` edge by the
//!   code under `src/`, a `[dev-dependencies]` edge by anything under `src/`, `tests/`,
//!   `benches/` or `examples/`, doc comments included (doctests use dev-dependencies). Both
//!   are read from `cargo metadata`, so `workspace = true`, renames and `[target.*]` sections
//!   need no parsing of our own.
//! - Every crate under `crates/` has a `README.md` and a `src/lib.rs` opening with a `//!` doc.
//! - The README names the two commands a new user runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Lowest first; the same order as `../shared/tools/check-layers`.
const LAYERS: [&str; 8] = [
    "io-helpers",
    "alloc",
    "store-core",
    "store-multi",
    "store-concurrent",
    "treap",
    "btree",
    "batch-io",
];

pub(crate) fn run(root: &Path) -> Result<(), String> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .map_err(|e| format!("could not run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    let metadata: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("cargo metadata printed invalid JSON: {e}"))?;
    let mut problems = layer_violations(&metadata);
    problems.extend(unused_internal_deps(&metadata)?);
    problems.extend(doc_problems(root));
    if problems.is_empty() {
        eprintln!("tidy: ok ({} layered crates)", LAYERS.len());
        Ok(())
    } else {
        for problem in &problems {
            eprintln!("tidy: {problem}");
        }
        Err(format!("tidy found {} problem(s)", problems.len()))
    }
}

/// The layer of a package, from its manifest path (`.../crates/<name>/Cargo.toml`).
fn layer_of(manifest_path: &str) -> Option<usize> {
    let dir = Path::new(manifest_path).parent()?;
    let name = dir.file_name()?.to_str()?;
    let parent = dir.parent()?.file_name()?.to_str()?;
    (parent == "crates").then(|| LAYERS.iter().position(|l| *l == name)).flatten()
}

fn layer_violations(metadata: &Value) -> Vec<String> {
    let empty = Vec::new();
    let packages = metadata["packages"].as_array().unwrap_or(&empty);
    // name -> layer (None for tools above every layer)
    let layer_by_name: Vec<(&str, Option<usize>)> = packages
        .iter()
        .filter_map(|p| Some((p["name"].as_str()?, layer_of(p["manifest_path"].as_str()?))))
        .collect();
    let find = |name: &str| layer_by_name.iter().find(|(n, _)| *n == name).map(|(_, l)| *l);

    let mut problems = Vec::new();
    for (layer, dir) in LAYERS.iter().enumerate() {
        if !layer_by_name.iter().any(|(_, l)| *l == Some(layer)) {
            problems.push(format!("crate crates/{dir} is missing"));
        }
    }
    for package in packages {
        let name = package["name"].as_str().unwrap_or("?");
        let Some(Some(layer)) = find(name) else { continue };
        if name != format!("bob-{}", LAYERS[layer]) {
            problems.push(format!(
                "crates/{} is named {name}, not bob-{}",
                LAYERS[layer], LAYERS[layer]
            ));
        }
        for dep in package["dependencies"].as_array().unwrap_or(&empty) {
            let dep_name = dep["name"].as_str().unwrap_or("?");
            let Some(dep_layer) = find(dep_name) else { continue }; // external crate
            if dep["kind"].as_str() == Some("dev") {
                continue;
            }
            match dep_layer {
                None => {
                    problems.push(format!("{name} depends on {dep_name}, a tool above every layer"))
                }
                Some(d) if d >= layer => problems.push(format!(
                    "{name} ({}) depends on {dep_name} ({}), which is not a lower layer",
                    LAYERS[layer], LAYERS[d]
                )),
                Some(_) => {}
            }
        }
    }
    problems
}

/// The directories of a package whose sources may use a dependency of a kind, and whether a
/// mention in a `//` comment counts (it does for dev-dependencies: doctests compile against them).
fn dependency_kind(kind: Option<&str>) -> Option<(&'static [&'static str], bool)> {
    match kind {
        None => Some((&["src"], false)),
        Some("dev") => Some((&["src", "tests", "benches", "examples"], true)),
        _ => None, // build-dependencies: no package has a build script
    }
}

/// `[dependencies]`, `[dev-dependencies]`, `[target.'cfg(loom)'.dev-dependencies]`, ...
fn section_name(dep: &Value) -> String {
    let table = match dep["kind"].as_str() {
        Some(kind) => format!("{kind}-dependencies"),
        None => "dependencies".to_owned(),
    };
    match dep["target"].as_str() {
        Some(target) => format!("[target.'{target}'.{table}]"),
        None => format!("[{table}]"),
    }
}

fn unused_internal_deps(metadata: &Value) -> Result<Vec<String>, String> {
    let empty = Vec::new();
    let packages = metadata["packages"].as_array().unwrap_or(&empty);
    let mut problems = Vec::new();
    for package in packages {
        let manifest = Path::new(package["manifest_path"].as_str().unwrap_or_default());
        let Some(dir) = manifest.parent() else { continue };
        let mut sources = Vec::new();
        for top in ["src", "tests", "benches", "examples"] {
            for file in rust_sources(&dir.join(top))? {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| format!("reading {}: {e}", file.display()))?;
                let relative = file.strip_prefix(dir).unwrap_or(&file);
                sources.push((relative.to_string_lossy().replace('\\', "/"), text));
            }
        }
        problems.extend(unused_in_package(packages, package, &sources));
    }
    Ok(problems)
}

/// The internal dependencies `package` declares that none of `sources` (path relative to the
/// package, text) uses, one message per declaration.
fn unused_in_package(
    packages: &[Value],
    package: &Value,
    sources: &[(String, String)],
) -> Vec<String> {
    let empty = Vec::new();
    let name = package["name"].as_str().unwrap_or("?");
    let is_internal = |dep: &str| packages.iter().any(|p| p["name"].as_str() == Some(dep));
    let mut problems = Vec::new();
    for dep in package["dependencies"].as_array().unwrap_or(&empty) {
        let dep_name = dep["name"].as_str().unwrap_or("?");
        if !is_internal(dep_name) {
            continue;
        }
        let Some((dirs, comments_count)) = dependency_kind(dep["kind"].as_str()) else { continue };
        let crate_name = dep["rename"].as_str().unwrap_or(dep_name).replace('-', "_");
        let used = sources
            .iter()
            .filter(|(path, _)| dirs.iter().any(|d| path.starts_with(&format!("{d}/"))))
            .any(|(_, text)| mentions_crate(text, &crate_name, comments_count));
        if !used {
            let dirs: Vec<String> = dirs.iter().map(|d| format!("{d}/")).collect();
            problems.push(format!(
                "{name} declares {dep_name} in {}, but nothing under {} uses `{crate_name}`",
                section_name(dep),
                dirs.join(", ")
            ));
        }
    }
    problems
}

/// Whether `text` names `crate_name` as a whole identifier. Without `comments_count`, lines
/// that are `//` comments (doc or not) are skipped; a comment after code on a line still counts.
fn mentions_crate(text: &str, crate_name: &str, comments_count: bool) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    text.lines().filter(|line| comments_count || !line.trim_start().starts_with("//")).any(|line| {
        line.match_indices(crate_name).any(|(at, _)| {
            let before = line[..at].chars().next_back();
            let after = line[at + crate_name.len()..].chars().next();
            !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
        })
    })
}

fn doc_problems(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for name in LAYERS {
        let dir = root.join("crates").join(name);
        if !dir.join("README.md").is_file() {
            problems.push(format!("crates/{name} has no README.md"));
        }
        let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap_or_default();
        if !lib.trim_start().starts_with("//!") {
            problems.push(format!("crates/{name}/src/lib.rs does not open with a //! crate doc"));
        }
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap_or_default();
    for command in ["cargo xtask bench", "cargo xtask ci"] {
        if !readme.contains(command) {
            problems.push(format!("README.md does not name `{command}`"));
        }
    }
    problems
}

/// Every `.rs` file under `dir`, recursively.
pub(crate) fn rust_sources(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else { continue };
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn package(name: &str, dir: &str, deps: &[(&str, &str)]) -> Value {
        let deps: Vec<Value> =
            deps.iter().map(|(n, kind)| json!({"name": n, "kind": if kind.is_empty() { Value::Null } else { json!(kind) }})).collect();
        json!({"name": name, "manifest_path": format!("/w/{dir}/Cargo.toml"), "dependencies": deps})
    }

    fn all_layers(extra: Vec<Value>) -> Value {
        let mut packages: Vec<Value> = LAYERS
            .iter()
            .map(|l| package(&format!("bob-{l}"), &format!("crates/{l}"), &[]))
            .collect();
        packages.extend(extra);
        json!({ "packages": packages })
    }

    #[test]
    fn a_clean_workspace_has_no_violations() {
        let mut metadata = all_layers(vec![package("xtask", "xtask", &[("bob-alloc", "")])]);
        metadata["packages"][2] = package(
            "bob-store-core",
            "crates/store-core",
            &[("bob-alloc", ""), ("bob-io-helpers", ""), ("bob-treap", "dev"), ("serde", "")],
        );
        assert_eq!(layer_violations(&metadata), Vec::<String>::new());
    }

    #[test]
    fn upward_sideways_and_tool_edges_are_violations() {
        let mut metadata = all_layers(vec![package("xtask", "xtask", &[])]);
        metadata["packages"][1] = package(
            "bob-alloc",
            "crates/alloc",
            &[("bob-store-core", ""), ("bob-alloc", "build"), ("xtask", "")],
        );
        let problems = layer_violations(&metadata);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("bob-store-core (store-core), which is not a lower layer"));
        assert!(problems[2].contains("a tool above every layer"));
    }

    /// bob-top uses bob-low in code, bob-mid only in a doc comment (which is enough for a
    /// dev-dependency, not for a normal one), bob-test-only only in tests/, and bob-unused
    /// nowhere (bob-unused-x, a longer name, does not count).
    #[test]
    fn a_declared_internal_dependency_that_no_source_uses_is_reported() {
        let internal = ["bob-low", "bob-mid", "bob-test-only", "bob-unused", "bob-unused-x"];
        let mut packages: Vec<Value> = internal.iter().map(|n| package(n, n, &[])).collect();
        let top = json!({"name": "bob-top", "manifest_path": "/w/top/Cargo.toml", "dependencies": [
            {"name": "bob-low", "kind": null},
            {"name": "bob-mid", "kind": null},
            {"name": "bob-mid", "kind": "dev"},
            {"name": "bob-test-only", "kind": "dev"},
            {"name": "bob-test-only", "kind": null},
            {"name": "bob-unused", "kind": "dev", "target": "cfg(loom)"},
            {"name": "bob-unused-x", "kind": null, "rename": "unused_x"},
            {"name": "serde", "kind": null},
        ]});
        packages.push(top.clone());
        let sources = [
            ("src/lib.rs", "//! ```\n//! use bob_mid::Thing;\n//! ```\nuse bob_low::Extent;\n"),
            ("src/unused.rs", "use bob_unused_x::X;\nuse unused_x::Y;\n"),
            ("tests/it/main.rs", "#[test]\nfn t() { bob_test_only::run(); }\n"),
            ("xtask/src/main.rs", "use bob_unused as _;\n"),
        ];
        let sources: Vec<(String, String)> =
            sources.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect();
        let problems = unused_in_package(&packages, &top, &sources);
        assert_eq!(
            problems,
            [
                "bob-top declares bob-mid in [dependencies], but nothing under src/ uses `bob_mid`",
                "bob-top declares bob-test-only in [dependencies], but nothing under src/ uses \
                 `bob_test_only`",
                "bob-top declares bob-unused in [target.'cfg(loom)'.dev-dependencies], but \
                 nothing under src/, tests/, benches/, examples/ uses `bob_unused`",
            ]
        );
    }

    #[test]
    fn a_missing_or_misnamed_crate_is_reported() {
        let mut metadata = all_layers(vec![]);
        metadata["packages"].as_array_mut().unwrap().remove(7);
        metadata["packages"][0] = package("io", "crates/io-helpers", &[]);
        let problems = layer_violations(&metadata);
        assert!(problems.iter().any(|p| p.contains("crates/batch-io is missing")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("named io")), "{problems:?}");
    }
}
