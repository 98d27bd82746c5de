//! The lesson manifest: one entry per sealed segment, hash-chained, plus the
//! gaps the recorder knows it has, signed at every checkpoint.
//!
//! This module owns the manifest's shape and its canonical bytes. It never
//! does I/O and never reads a clock (the checkpoint time is passed in).
//!
//! # Canonical encoding
//!
//! A manifest and each entry are encoded as compact JSON with object keys in
//! lexicographic order, no whitespace, integers as plain decimals and strings
//! restricted to printable ASCII without `"` or `\` (checked when built and
//! when parsed). Under those restrictions this is exactly RFC 8785 (JCS), so
//! any JCS implementation reproduces the bytes. Integers (unix microseconds,
//! seqs, sizes) are below 2^53.
//!
//! - an entry's `sha256` is the SHA-256 of the sealed segment object exactly
//!   as stored (the age file), lowercase hex;
//! - an entry's `prev` is the SHA-256 (lowercase hex) of the previous entry's
//!   canonical encoding; for the first entry it is [`GENESIS_PREV`];
//! - the signature (`.sig` object, raw 64 bytes) is Ed25519 over the exact
//!   bytes of the manifest object, which are its canonical encoding.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `format` value of every manifest this crate writes.
pub const MANIFEST_FORMAT: &str = "chaperone-manifest/1";
/// `prev` of the first entry: 64 zeros.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Largest manifest object accepted (a lesson of a few hours has a few
/// thousand entries of ~300 bytes each).
pub const MAX_MANIFEST_LEN: usize = 16 * 1024 * 1024;
/// Most tracks one entry may name.
pub const MAX_TRACKS: usize = 256;
/// Longest track name.
pub const MAX_TRACK_LEN: usize = 64;
/// Longest gap reason.
pub const MAX_REASON_LEN: usize = 256;

/// One sealed segment. Field order is the canonical (sorted) key order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Interval end, unix microseconds.
    pub end: u64,
    /// Seq of the segment's first record.
    pub first_seq: u64,
    /// Segment index, from 0, equal to the entry's position.
    pub index: u64,
    /// Seq of the segment's last record.
    pub last_seq: u64,
    /// SHA-256 (hex) of the previous entry's canonical encoding.
    pub prev: String,
    /// SHA-256 (hex) of the sealed object as stored.
    pub sha256: String,
    /// Length in bytes of the sealed object as stored.
    pub size: u64,
    /// Interval start, unix microseconds.
    pub start: u64,
    /// Tracks with data in the segment (track ids, `chat`, `events`, ...).
    pub tracks: Vec<String>,
}

/// A span the archive knowingly lacks: frames lost beyond the gateway's
/// replay buffer. Written down, never hidden (docs/architecture.md: nothing recorded is lost).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gap {
    /// First seq that is missing.
    pub first_missing_seq: u64,
    /// Start of the loss, unix microseconds.
    pub from: u64,
    /// Last seq that is missing.
    pub last_missing_seq: u64,
    /// Why, in a few words (printable ASCII).
    pub reason: String,
    /// End of the loss, unix microseconds.
    pub to: u64,
}

/// A signed checkpoint of a lesson's archive. Field order is the canonical
/// (sorted) key order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Checkpoint number, from 0; also the object's name.
    pub checkpoint: u64,
    /// When the checkpoint was written, unix microseconds.
    pub created: u64,
    /// The segments, in index order.
    pub entries: Vec<Entry>,
    /// Whether the lesson has ended and this is the last checkpoint.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// Known losses.
    pub gaps: Vec<Gap>,
    /// The lesson id (32 hex digits).
    pub lesson: String,
    /// age recipients (`age1...`) every segment is sealed to.
    pub recipients: Vec<String>,
}

/// Why a manifest or one of its parts was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The manifest object is larger than [`MAX_MANIFEST_LEN`].
    #[error("manifest of {len} bytes exceeds {MAX_MANIFEST_LEN}")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// Not JSON of the manifest's shape (or has unknown fields).
    #[error("malformed manifest: {0}")]
    Malformed(String),
    /// Parsed, but the bytes are not the canonical encoding.
    #[error("manifest is not in canonical form")]
    NotCanonical,
    /// `format` is not [`MANIFEST_FORMAT`].
    #[error("unknown manifest format {0:?}")]
    UnknownFormat(String),
    /// A string holds characters outside printable ASCII, or `"` or `\`, or is too long or empty.
    #[error("invalid {field}: {value:?}")]
    InvalidString {
        /// Which field.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// Too many tracks in one entry.
    #[error("{count} tracks exceed {MAX_TRACKS}")]
    TooManyTracks {
        /// How many.
        count: usize,
    },
}

/// Whether `s` is safe for the canonical encoding: 1..=max printable ASCII,
/// no `"` or `\`.
fn canonical_string(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// Checks a track name for the manifest.
pub fn check_track(name: &str) -> Result<(), ManifestError> {
    if canonical_string(name, MAX_TRACK_LEN) {
        Ok(())
    } else {
        Err(ManifestError::InvalidString {
            field: "track",
            value: name.to_owned(),
        })
    }
}

/// Checks a gap reason for the manifest.
pub fn check_reason(reason: &str) -> Result<(), ManifestError> {
    if canonical_string(reason, MAX_REASON_LEN) {
        Ok(())
    } else {
        Err(ManifestError::InvalidString {
            field: "reason",
            value: reason.to_owned(),
        })
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn to_canonical<T: Serialize>(value: &T) -> Vec<u8> {
    // serde_json cannot fail on these types: plain structs, strings and integers.
    serde_json::to_vec(value).unwrap_or_default()
}

impl Entry {
    /// The canonical JSON bytes of this entry.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        to_canonical(self)
    }

    /// SHA-256 (hex) of the canonical bytes: the next entry's `prev`.
    pub fn chain_hash(&self) -> String {
        sha256_hex(&self.canonical_bytes())
    }
}

impl Manifest {
    /// The canonical JSON bytes: what is stored and what is signed.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        to_canonical(self)
    }

    /// Parses a stored manifest, refusing oversized, malformed, unknown-format
    /// or non-canonical input. (The signature is checked separately, over the
    /// same bytes.)
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(ManifestError::TooLarge { len: bytes.len() });
        }
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        if m.format != MANIFEST_FORMAT {
            return Err(ManifestError::UnknownFormat(m.format));
        }
        for e in &m.entries {
            if e.tracks.len() > MAX_TRACKS {
                return Err(ManifestError::TooManyTracks {
                    count: e.tracks.len(),
                });
            }
            for t in &e.tracks {
                check_track(t)?;
            }
        }
        for g in &m.gaps {
            check_reason(&g.reason)?;
        }
        if m.canonical_bytes() != bytes {
            return Err(ManifestError::NotCanonical);
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let e0 = Entry {
            end: 20,
            first_seq: 0,
            index: 0,
            last_seq: 9,
            prev: GENESIS_PREV.into(),
            sha256: sha256_hex(b"a"),
            size: 1,
            start: 10,
            tracks: vec!["events".into(), "t1".into()],
        };
        Manifest {
            checkpoint: 0,
            created: 30,
            entries: vec![e0],
            is_final: true,
            format: MANIFEST_FORMAT.into(),
            gaps: vec![Gap {
                first_missing_seq: 10,
                from: 20,
                last_missing_seq: 11,
                reason: "recorder lost".into(),
                to: 21,
            }],
            lesson: "07".repeat(16),
            recipients: vec![],
        }
    }

    #[test]
    fn canonical_is_sorted_compact_and_round_trips() {
        let m = manifest();
        let bytes = m.canonical_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with(
            r#"{"checkpoint":0,"created":30,"entries":[{"end":20,"first_seq":0,"index":0,"#
        ));
        assert!(text.contains(r#""final":true,"format":"chaperone-manifest/1","gaps":[{"first_missing_seq":10,"from":20,"#));
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
        // Whitespace is not canonical.
        let pretty = serde_json::to_vec_pretty(&m).unwrap();
        assert_eq!(
            Manifest::parse(&pretty).unwrap_err(),
            ManifestError::NotCanonical
        );
        // Unknown fields are refused.
        let extra = text.replacen('{', r#"{"extra":1,"#, 1);
        assert!(matches!(
            Manifest::parse(extra.as_bytes()).unwrap_err(),
            ManifestError::Malformed(_)
        ));
    }

    #[test]
    fn strings_are_restricted() {
        assert!(check_track("t1").is_ok());
        assert!(check_track("").is_err());
        assert!(check_track("a\"b").is_err());
        assert!(check_track("é").is_err());
        assert!(check_reason("x\n").is_err());
    }
}
