//! What the fuzz targets under `fuzz/` run, and the tests that replay their
//! corpora (`fuzz/corpus/<target>/`) as plain tests, so the test command
//! runs every input the fuzzers kept. Each function must never panic,
//! whatever the bytes.

use crate::manifest::Manifest;

/// Target `manifest`: a stored manifest as the verifier and the review
/// service read it from the object store. What parses is canonical: it is
/// exactly the bytes it encodes to.
pub fn manifest(data: &[u8]) {
    if let Ok(m) = Manifest::parse(data) {
        assert_eq!(m.canonical_bytes(), data, "a parsed manifest is canonical");
    }
}

#[cfg(test)]
mod corpus {
    /// Feeds every file of `fuzz/corpus/<target>/` to `f`; the number fed.
    fn replay(target: &str, f: fn(&[u8])) -> usize {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        let mut n = 0;
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let bytes =
                std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            if std::panic::catch_unwind(|| f(&bytes)).is_err() {
                panic!("{target} panics on {}", path.display());
            }
            n += 1;
        }
        n
    }

    #[test]
    fn the_manifest_corpus_parses_without_panicking() {
        assert!(replay("manifest", super::manifest) > 10);
    }
}
