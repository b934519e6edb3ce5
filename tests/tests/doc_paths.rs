//! The README and `docs/*.md` point at files that exist: every backticked
//! path or relative link into the repository's own folders names a file or
//! folder of the repository (a moved module left `core/src/apply.rs` and a
//! design note outside the repository named there for a while).

use std::path::{Path, PathBuf};

use distributary_tests::bins::workspace;

/// The repository's top-level folders: a backticked path starting with one
/// of these is a claim about the tree. (Others, like `demo/app.db` or
/// `target/release/`, are made by running something.)
const TREE: [&str; 11] =
    ["bench", "core", "docs", "edge-reader", "edge-wasm", "examples", "infra", "lambda", "primary", "scripts", "tests"];

/// The paths `text` names: backticked spans without spaces or placeholders
/// that start with a folder of [`TREE`], and the targets of relative
/// Markdown links (resolved from `folder`, the document's own).
fn named_paths(text: &str, folder: &Path) -> Vec<(String, PathBuf)> {
    let root = workspace();
    let mut paths = Vec::new();
    for span in text.split('`').skip(1).step_by(2) {
        let placeholder = span.contains(['<', '{', '*', '…', ' ', '$']);
        let top = span.split('/').next().unwrap_or_default();
        if !placeholder && span.contains('/') && TREE.contains(&top) {
            let path = span.split([':', '#']).next().unwrap_or_default();
            paths.push((span.to_string(), root.join(path)));
        }
    }
    for link in text.split("](").skip(1) {
        let target = link.split([')', ' ']).next().unwrap_or_default();
        let path = target.split('#').next().unwrap_or_default();
        if !path.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
            paths.push((target.to_string(), folder.join(path)));
        }
    }
    paths
}

#[test]
fn every_path_the_readme_and_docs_name_exists() {
    let root = workspace();
    let mut documents = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            documents.push(path);
        }
    }
    let mut missing = Vec::new();
    let mut checked = 0;
    for document in &documents {
        let text = std::fs::read_to_string(document).unwrap();
        for (named, path) in named_paths(&text, document.parent().unwrap()) {
            checked += 1;
            if !path.exists() {
                missing.push(format!("{}: {named}", document.strip_prefix(&root).unwrap().display()));
            }
        }
    }
    assert!(checked > 50, "only {checked} paths found: the scan is broken");
    assert!(missing.is_empty(), "paths that do not exist:\n{}", missing.join("\n"));
}

#[test]
fn the_scan_finds_backticked_paths_and_links_and_skips_placeholders() {
    let text = "See `core/src/apply.rs`, `core/src/<module>.rs`, `demo/app.db`, `docs/A.md#x`, \
                [the format](FORMAT.md#3) and [a site](https://example.com).";
    let found: Vec<String> = named_paths(text, Path::new("/d")).into_iter().map(|(named, _)| named).collect();
    assert_eq!(found, ["core/src/apply.rs", "docs/A.md#x", "FORMAT.md#3"]);
    let paths: Vec<PathBuf> = named_paths(text, Path::new("/d")).into_iter().map(|(_, path)| path).collect();
    assert_eq!(paths[1], workspace().join("docs/A.md"));
    assert_eq!(paths[2], Path::new("/d/FORMAT.md"));
}
