//! The boundaries `docs/architecture.md` promises, checked on every test
//! run: what each crate may depend on (`cargo tree`), where an age identity
//! may be named, that no source file grows past about 800 lines without
//! saying why, and that nothing refers to documents outside the repository.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// The packages `cargo tree` lists for `args` (normal dependencies only).
fn tree(args: &[&str]) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["tree", "--locked", "-e", "normal", "--prefix", "none"])
        .args(["--format", "{p}"])
        .args(args)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn assert_none_of(what: &str, packages: &BTreeSet<String>, banned: &[&str]) {
    assert!(packages.len() > 1, "{what}: cargo tree listed nothing");
    for b in banned {
        assert!(
            !packages.contains(*b),
            "{what} depends on {b}: {packages:?}"
        );
    }
}

#[test]
fn the_pure_cores_depend_on_no_runtime_and_no_io() {
    let io = ["tokio", "axum", "redis", "reqwest", "hyper"];
    let lesson = tree(&["-p", "chaperone-lesson"]);
    assert_none_of("chaperone-lesson", &lesson, &io);
    assert_none_of("chaperone-lesson", &lesson, &["str0m", "chaperone-sfu"]);
    assert_none_of("chaperone-sfu", &tree(&["-p", "chaperone-sfu"]), &io);
}

#[test]
fn only_the_read_side_links_the_review_service() {
    // The gateway as the Dockerfile builds it (no features) and the
    // recorder's library without its binary's feature.
    let gateway = tree(&["-p", "chaperone-gateway"]);
    assert_none_of("the production gateway", &gateway, &["chaperone-review"]);
    assert!(gateway.contains("chaperone-recorder"), "{gateway:?}");
    let recorder = tree(&["-p", "chaperone-recorder", "--no-default-features"]);
    assert_none_of("the recorder's library", &recorder, &["chaperone-review"]);
    assert_none_of(
        "chaperone-archive",
        &tree(&["-p", "chaperone-archive"]),
        &["chaperone-review", "chaperone-recorder"],
    );
    // The development build does carry it (the review service in-process).
    assert!(tree(&["-p", "chaperone-gateway", "--features", "dev"]).contains("chaperone-review"));
}

#[test]
fn the_load_generator_depends_on_protocol_tokens_and_testkit_only() {
    let loadtest = tree(&["-p", "chaperone-loadtest"]);
    let ours: BTreeSet<&str> = loadtest
        .iter()
        .map(String::as_str)
        .filter(|p| p.starts_with("chaperone-"))
        .collect();
    assert_eq!(
        ours,
        BTreeSet::from([
            "chaperone-loadtest",
            "chaperone-protocol",
            "chaperone-testkit",
            "chaperone-tokens"
        ])
    );
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `text` without comments and without what follows the first
/// `#[cfg(test)]` (unit tests may make identities to check what they seal).
fn code_of(text: &str) -> String {
    text.split("#[cfg(test)]")
        .next()
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_age_identity_outside_the_review_side() {
    let r = root();
    let mut files = Vec::new();
    for dir in ["archive/src", "recorder/src", "gateway/src", "tokens/src"] {
        files.extend(rust_files(&r.join(dir)));
    }
    let dev = r.join("gateway/src/dev");
    let checked: Vec<_> = files.iter().filter(|f| !f.starts_with(&dev)).collect();
    assert!(checked.len() > 40, "{checked:?}");
    for file in checked {
        let code = code_of(&std::fs::read_to_string(file).expect("readable source"));
        for banned in [
            "x25519::Identity",
            "Decryptor",
            "identity_of",
            "open_segment",
        ] {
            assert!(
                !code.contains(banned),
                "{} names `{banned}`: only chaperone-review (and the gateway's dev mode) may hold an age identity",
                file.display()
            );
        }
    }
}

#[test]
fn the_cores_read_no_clock() {
    let r = root();
    for dir in ["lesson/src", "sfu/src"] {
        for file in rust_files(&r.join(dir)) {
            // A module's unit tests in a file of their own (`#[cfg(test)]
            // mod tests;`) are test code throughout.
            if file.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let code = code_of(&std::fs::read_to_string(&file).expect("readable source"));
            for banned in [
                "Instant::now",
                "SystemTime::now",
                "tokio::",
                "disallowed_methods",
            ] {
                assert!(
                    !code.contains(banned),
                    "{} uses `{banned}`: time is an input to the cores",
                    file.display()
                );
            }
        }
    }
}

/// Every workspace member's sources, tests and benches.
fn workspace_sources() -> Vec<PathBuf> {
    let r = root();
    let mut files = Vec::new();
    for member in [
        "protocol", "tokens", "lesson", "sfu", "archive", "recorder", "review", "gateway", "serve",
        "testkit", "loadtest", "tests",
    ] {
        files.extend(rust_files(&r.join(member)));
    }
    files.retain(|f| !f.components().any(|c| c.as_os_str() == "node_modules"));
    files
}

#[test]
fn no_source_file_is_long_without_saying_why() {
    let sources = workspace_sources();
    assert!(sources.len() > 100, "{}", sources.len());
    for file in sources {
        let text = std::fs::read_to_string(&file).expect("readable source");
        let lines = text.lines().count();
        if lines > 800 {
            let head: String = text.lines().take(40).collect::<Vec<_>>().join("\n");
            assert!(
                head.contains("is long because"),
                "{} has {lines} lines: split it by concern, or say in its module doc why it is long",
                file.display()
            );
        }
    }
}

#[test]
fn nothing_refers_to_documents_outside_the_repository() {
    let r = root();
    let mut files = workspace_sources();
    for extra in [
        "README.md",
        "BENCHMARKS.md",
        "recorder/ARCHIVE.md",
        "deploy/README.md",
    ] {
        files.push(r.join(extra));
    }
    for dir in ["docs", "deploy", "scripts", "gateway/static", "tests/idp"] {
        let mut dirs = vec![r.join(dir)];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.file_name().is_some_and(|n| n == "node_modules") {
                    continue;
                }
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| {
                    ["md", "js", "mjs", "sh", "toml", "yaml", "yml"]
                        .iter()
                        .any(|e| x == *e)
                }) {
                    files.push(p);
                }
            }
        }
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        // Spelled in pieces so that this file does not match itself.
        let outside_docs = [
            concat!("SECURITY", ".md"),
            concat!("DESIGN", ".md"),
            concat!("STYLE", ".md"),
            concat!("../", "shared"),
        ];
        for outside in outside_docs {
            assert!(
                !text.contains(outside),
                "{} refers to {outside}, which is not in this repository (cite docs/ instead)",
                file.display()
            );
        }
    }
}
