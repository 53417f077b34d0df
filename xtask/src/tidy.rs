//! `cargo xtask tidy`: structural rules a compiler does not check.
//!
//! - Layering: a crate under `crates/` depends (normal or build) only on crates of a lower
//!   layer, read from `cargo metadata`; dev-dependencies may reach up (tests use higher layers
//!   as fixtures). A layered crate never depends on a tool (xtask, benches, a CLI).
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
