//! The archive's object layout: where a lesson's sealed segments, signed
//! manifests and public key live in an object store, and what each object
//! under a lesson's prefix is, by its name.
//!
//! (Also in `recorder/ARCHIVE.md`, for readers without our code.)
//!
//! ```text
//! lessons/<lesson-id>/segments/<index:010>.age      sealed segment (age, binary)
//! lessons/<lesson-id>/manifests/<checkpoint:010>.json  manifest checkpoint, canonical JSON
//! lessons/<lesson-id>/manifests/<checkpoint:010>.sig   Ed25519 signature (raw 64 bytes) over the .json
//! lessons/<lesson-id>/recorder.pub                  recorder's Ed25519 public key, PEM (convenience copy)
//! lessons/<lesson-id>/orphans/<name>.<unix-micros>  set aside when a recorder resumes (see [`crate::writer`])
//! ```
//!
//! `<lesson-id>` is 32 lowercase hex digits; indices are zero-padded to ten
//! digits so names sort in order. Checkpoints are separate immutable objects
//! rather than one overwritten `manifest.json`: an earlier signed checkpoint
//! can never be replaced, and each later one must extend it. The highest
//! checkpoint is the current one; the lesson is complete when it says
//! `"final":true`.

use chaperone_protocol::LessonId;
use object_store::path::Path;

/// Digits in a zero-padded segment index or checkpoint number.
pub const INDEX_DIGITS: usize = 10;

/// `lessons/<lesson-id>`.
pub fn lesson_prefix(lesson: &LessonId) -> Path {
    Path::from(format!("lessons/{lesson}"))
}

/// `lessons/<lesson-id>/segments/<index:010>.age`.
pub fn segment_path(lesson: &LessonId, index: u64) -> Path {
    Path::from(format!("lessons/{lesson}/segments/{index:010}.age"))
}

/// `lessons/<lesson-id>/manifests/<checkpoint:010>.json`.
pub fn manifest_path(lesson: &LessonId, checkpoint: u64) -> Path {
    Path::from(format!("lessons/{lesson}/manifests/{checkpoint:010}.json"))
}

/// `lessons/<lesson-id>/manifests/<checkpoint:010>.sig`.
pub fn signature_path(lesson: &LessonId, checkpoint: u64) -> Path {
    Path::from(format!("lessons/{lesson}/manifests/{checkpoint:010}.sig"))
}

/// `lessons/<lesson-id>/recorder.pub`.
pub fn public_key_path(lesson: &LessonId) -> Path {
    Path::from(format!("lessons/{lesson}/recorder.pub"))
}

/// What an object under a lesson's prefix is, by its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    /// A sealed segment with this index.
    Segment(u64),
    /// A manifest checkpoint.
    Manifest(u64),
    /// A checkpoint's signature.
    Signature(u64),
    /// The published public key.
    PublicKey,
    /// An object set aside when a recorder resumed the lesson.
    Orphan,
    /// Anything else (which verify reports).
    Unknown,
}

/// Classifies `location` relative to the lesson's prefix.
pub fn classify(lesson: &LessonId, location: &Path) -> ObjectKind {
    let full = location.as_ref();
    let prefix = format!("lessons/{lesson}/");
    let Some(rest) = full.strip_prefix(&prefix) else {
        return ObjectKind::Unknown;
    };
    if rest == "recorder.pub" {
        return ObjectKind::PublicKey;
    }
    if rest
        .strip_prefix("orphans/")
        .is_some_and(|n| !n.is_empty() && !n.contains('/'))
    {
        return ObjectKind::Orphan;
    }
    let number = |s: &str| -> Option<u64> {
        (s.len() == INDEX_DIGITS && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    if let Some(n) = rest
        .strip_prefix("segments/")
        .and_then(|s| s.strip_suffix(".age"))
        .and_then(number)
    {
        return ObjectKind::Segment(n);
    }
    if let Some(m) = rest.strip_prefix("manifests/") {
        if let Some(n) = m.strip_suffix(".json").and_then(number) {
            return ObjectKind::Manifest(n);
        }
        if let Some(n) = m.strip_suffix(".sig").and_then(number) {
            return ObjectKind::Signature(n);
        }
    }
    ObjectKind::Unknown
}
