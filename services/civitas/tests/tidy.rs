//! Tidy checks over the workspace's Rust sources (house style rule 21, rust-analyzer's
//! `xtask/src/tidy.rs`): every `.rs` file under `services/*/{src,tests,benches}` starts with a `//!`
//! comment, and none keeps a debugging or placeholder macro.
//!
//! A crate root whose documentation is a README (`#![doc = include_str!(...)]`) may put inner
//! attribute lines before its `//!` comment, or let the README stand for it.

use std::fs;
use std::path::{Path, PathBuf};

/// Macros that must not be committed. Spelled in pieces so that this file does not trip itself.
const FORBIDDEN: &[&str] = &[
    concat!("todo", "!("),
    concat!("unimplemented", "!("),
    concat!("dbg", "!("),
];

/// The directories of a crate that hold Rust sources.
const SOURCE_DIRS: &[&str] = &["src", "tests", "benches"];

fn services_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the civitas crate lives in services/")
        .to_path_buf()
}

/// Every `.rs` file under `services/*/{src,tests,benches}`, sorted.
fn rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut crates: Vec<PathBuf> = fs::read_dir(services_dir())
        .expect("services/ is readable")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.is_dir())
        .collect();
    crates.sort();
    for crate_dir in crates {
        for dir in SOURCE_DIRS {
            collect(&crate_dir.join(dir), &mut files);
        }
    }
    files.sort();
    files
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// Whether `path` is the root of a crate target: `src/lib.rs`, `src/main.rs`, `src/bin/*.rs`, and
/// the files directly in `tests/` and `benches/` (or their `*/main.rs`).
fn is_crate_root(path: &Path) -> bool {
    let parent = path
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str());
    let grandparent = path
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|n| n.to_str());
    let name = path.file_name().and_then(|n| n.to_str());
    matches!(
        (grandparent, parent, name),
        (_, Some("src"), Some("lib.rs" | "main.rs"))
            | (Some("src"), Some("bin"), _)
            | (_, Some("tests" | "benches"), _)
            | (Some("tests" | "benches"), _, Some("main.rs"))
    )
}

/// Whether a file's text starts with its `//!` documentation, as the rules above allow.
fn starts_with_module_doc(text: &str, crate_root: bool) -> bool {
    let mut lines = text.lines().map(str::trim_start);
    let readme_doc = crate_root && text.contains("#![doc = include_str!(");
    let mut saw_readme_doc = false;
    for line in lines.by_ref() {
        if line.starts_with("//!") {
            return true;
        }
        if readme_doc && line.starts_with("#![") {
            saw_readme_doc |= line.starts_with("#![doc = include_str!(");
            continue;
        }
        return saw_readme_doc;
    }
    saw_readme_doc
}

fn relative(path: &Path) -> String {
    let root = services_dir();
    path.strip_prefix(root.parent().unwrap_or(&root))
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_rust_file_starts_with_a_module_doc_comment() {
    let files = rust_files();
    assert!(
        files.iter().any(|f| f.ends_with("civitas/tests/tidy.rs")),
        "the walk must find this file; it found {} files",
        files.len()
    );
    let missing: Vec<String> = files
        .iter()
        .filter(|path| {
            let text = fs::read_to_string(path).unwrap_or_default();
            !starts_with_module_doc(&text, is_crate_root(path))
        })
        .map(|path| relative(path))
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not start with a `//!` comment (house style rule 21):\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn no_placeholder_or_debugging_macros() {
    let offending: Vec<String> = rust_files()
        .iter()
        .flat_map(|path| {
            let text = fs::read_to_string(path).unwrap_or_default();
            text.lines()
                .enumerate()
                .filter(|(_, line)| FORBIDDEN.iter().any(|needle| line.contains(needle)))
                .map(|(index, line)| format!("{}:{}: {}", relative(path), index + 1, line.trim()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        offending.is_empty(),
        "remove these placeholder or debugging macros (house style rule 22):\n  {}",
        offending.join("\n  ")
    );
}

#[test]
fn the_rules_themselves() {
    for (text, crate_root, expected) in [
        ("//! Docs.\nfn f() {}\n", false, true),
        ("\n//! Docs after a blank line.\n", false, false),
        ("// A plain comment.\n//! Docs.\n", false, false),
        ("fn f() {}\n", false, false),
        ("", false, false),
        // A README-documented crate root: attributes may come first.
        (
            "#![doc = include_str!(\"../README.md\")]\nmod a;\n",
            true,
            true,
        ),
        (
            "#![forbid(unsafe_code)]\n#![doc = include_str!(\"../README.md\")]\n",
            true,
            true,
        ),
        (
            "#![forbid(unsafe_code)]\n//! Docs.\n#![doc = include_str!(\"../README.md\")]\n",
            true,
            true,
        ),
        (
            "//! Docs.\n#![doc = include_str!(\"../README.md\")]\n",
            true,
            true,
        ),
        // Not a crate root, or no README doc: a leading attribute is not allowed.
        ("#![doc = include_str!(\"../README.md\")]\n", false, false),
        ("#![forbid(unsafe_code)]\n//! Docs.\n", true, false),
    ] {
        assert_eq!(
            starts_with_module_doc(text, crate_root),
            expected,
            "{text:?} (crate root: {crate_root})"
        );
    }
    for (path, expected) in [
        ("services/store/src/lib.rs", true),
        ("services/civitas/src/main.rs", true),
        ("services/civitas/src/bin/tool.rs", true),
        ("services/ngsild/tests/model.rs", true),
        ("services/connector/tests/api/main.rs", true),
        ("services/connector/tests/api/helpers.rs", false),
        ("services/ngsild/benches/expand.rs", true),
        ("services/ngsild/src/context.rs", false),
        ("services/connector/src/routes/mod.rs", false),
    ] {
        assert_eq!(is_crate_root(Path::new(path)), expected, "{path}");
    }
    let sample = format!("fn f() {{ {}) }}", FORBIDDEN[2]);
    assert!(FORBIDDEN.iter().any(|needle| sample.contains(needle)));
}
