//! What the fuzz targets under `fuzz/` run, and the tests that replay their
//! corpora (`fuzz/corpus/<target>/`) as plain tests, so the test command
//! runs every input the fuzzers kept. Each function must never panic,
//! whatever the bytes.

use crate::audit::AuditEntry;

/// Target `audit_record`: one stored audit record, parsed as the log's
/// reader and `verify_log` parse it. What parses encodes and parses back
/// to itself.
pub fn audit_record(data: &[u8]) {
    if let Ok(entry) = serde_json::from_slice::<AuditEntry>(data) {
        let again = serde_json::to_vec(&entry).unwrap_or_default();
        let back = serde_json::from_slice::<AuditEntry>(&again).ok();
        assert_eq!(back.as_ref(), Some(&entry), "an audit record round-trips");
    }
}

/// Target `review_range`: an HTTP `Range` header against a file length.
/// The first 8 bytes are the length (little-endian), the rest the header.
/// A range served is inside the file, and only a header of the form
/// `bytes=<digits>-<digits>` (either side may be empty) is served.
pub fn review_range(data: &[u8]) {
    let Some((len, header)) = data.split_first_chunk::<8>() else {
        return;
    };
    let len = u64::from_le_bytes(*len);
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    if let Some((start, end)) = crate::http::parse_range(header, len) {
        assert!(
            start <= end && end < len,
            "{header:?} of {len}: {start}-{end}"
        );
        let spec = header.trim().strip_prefix("bytes=").unwrap_or_default();
        assert!(
            spec.bytes().all(|b| b.is_ascii_digit() || b == b'-'),
            "{header:?} served as {start}-{end}: not a byte range's grammar"
        );
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
    fn the_audit_record_corpus_parses_without_panicking() {
        assert!(replay("audit_record", super::audit_record) > 10);
    }

    #[test]
    fn the_review_range_corpus_parses_without_panicking() {
        assert!(replay("review_range", super::review_range) > 10);
    }
}
