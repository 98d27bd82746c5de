//! HTTP `Range` requests on a remuxed file: the one byte range a `<video>`
//! element asks for (`bytes=a-b`, `bytes=a-`, `bytes=-n`).
//!
//! Browsers' media players send one range at a time; a multi-range request
//! is answered as unsatisfiable rather than with `multipart/byteranges`.
//! Pure: no I/O, and never a range outside the file.

/// A parsed `Range: bytes=...` (one range): the first and last byte,
/// inclusive, both inside a file of `len` bytes; `None` when it cannot be
/// served (answered 416 with `Content-Range: bytes */len`).
pub(super) fn parse_range(h: &str, len: u64) -> Option<(u64, u64)> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = if a.is_empty() {
        let n = digits(b)?;
        (len.saturating_sub(n), len - 1)
    } else {
        let start = digits(a)?;
        let end = if b.is_empty() {
            len - 1
        } else {
            digits(b)?.min(len - 1)
        };
        (start, end)
    };
    (start <= end && start < len).then_some((start, end))
}

/// A position as the header's grammar writes it: ASCII digits only
/// (`u64::from_str` also takes a leading `+`, which no range has).
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn a_closed_range_is_served_and_clamped_to_the_file() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(parse_range(" bytes=10-10 ", 1000), Some((10, 10)));
        assert_eq!(parse_range("bytes=900-5000", 1000), Some((900, 999)));
    }

    #[test]
    fn an_open_range_reads_to_the_end() {
        assert_eq!(parse_range("bytes=0-", 1000), Some((0, 999)));
        assert_eq!(parse_range("bytes=999-", 1000), Some((999, 999)));
    }

    #[test]
    fn a_suffix_range_is_the_last_bytes() {
        assert_eq!(parse_range("bytes=-100", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=-5000", 1000), Some((0, 999)));
        assert_eq!(parse_range("bytes=-0", 1000), None);
    }

    #[test]
    fn unsatisfiable_or_malformed_ranges_are_refused() {
        for h in [
            "bytes=1000-",
            "bytes=1000-1001",
            "bytes=5-3",
            "bytes=0-1,5-6",
            "bytes=a-b",
            "bytes=-",
            "bytes=0",
            "items=0-1",
            "0-1",
        ] {
            assert_eq!(parse_range(h, 1000), None, "{h}");
        }
        assert_eq!(parse_range("bytes=0-", 0), None);
    }

    /// Found by the `review_range` fuzz target: a sign before a position
    /// was taken as part of the number, so `bytes=-+08` was served.
    #[test]
    fn a_signed_position_is_refused() {
        for h in [
            "bytes=-+08",
            "bytes=+0-5",
            "bytes=0-+5",
            "bytes=+5-",
            "bytes=-+0",
        ] {
            assert_eq!(parse_range(h, 1000), None, "{h}");
        }
    }
}
