//! What the fuzz targets under `fuzz/` run, one function per target, and
//! the tests that replay their corpora (`fuzz/corpus/<target>/`) as plain
//! tests, so the test command runs every input the fuzzers kept.
//!
//! Each function must never panic, whatever the bytes; where a parse
//! succeeds it also checks what the parser promises (a decoded message
//! encodes and decodes to itself; a frame is as long as `check` said).

use crate::feed::FeedFrame;
use crate::signal::{ClientMsg, ServerMsg};

/// Target `signal_client`: a browser's signaling message, as the gateway
/// decodes it (and, for the clients and tests, a server message).
pub fn signal_client(data: &[u8]) {
    if let Ok(msg) = ClientMsg::decode(data) {
        // Serialising these types cannot fail (plain enums and strings).
        let again = serde_json::to_vec(&msg).unwrap_or_default();
        assert_eq!(
            ClientMsg::decode(&again).as_ref(),
            Ok(&msg),
            "a decoded client message round-trips"
        );
    }
    let _ = ServerMsg::decode(data);
}

/// Target `feed_frame`: a stream of feed frames as a recorder (or the
/// gateway, for acknowledgements) reads them off the socket, then the same
/// bytes as one whole frame.
pub fn feed_frame(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((frame, n))) = FeedFrame::decode_one(rest) {
        assert!(n >= 6 && n <= rest.len(), "a frame takes its own bytes");
        match frame.to_bytes() {
            Ok(bytes) => assert_eq!(
                FeedFrame::parse(&bytes).as_ref(),
                Ok(&frame),
                "a decoded frame round-trips"
            ),
            Err(e) => panic!("a decoded frame cannot be encoded again: {e}"),
        }
        rest = &rest[n..];
    }
    let _ = FeedFrame::parse(data);
}

#[cfg(test)]
pub(crate) mod corpus {
    //! Replays a fuzz target's corpus.

    /// Feeds every file of `fuzz/corpus/<target>/` to `f`; the number fed.
    pub(crate) fn replay(target: &str, f: fn(&[u8])) -> usize {
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
                panic!("{} panics on {}", target, path.display());
            }
            n += 1;
        }
        n
    }

    #[test]
    fn the_signal_client_corpus_decodes_without_panicking() {
        assert!(replay("signal_client", super::signal_client) > 10);
    }

    #[test]
    fn the_feed_frame_corpus_decodes_without_panicking() {
        assert!(replay("feed_frame", super::feed_frame) > 10);
    }
}
