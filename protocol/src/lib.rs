//! Wire types shared by every part of Chaperone: identifiers, roles and
//! permissions, the signaling messages between browser and gateway, lesson
//! events, and the binary frames of the feed from gateway to recorder.
//!
//! This crate owns the *shape* of every message and the limits checked before
//! any of them is parsed. It must never do I/O, read a clock or depend on an
//! async runtime: every other crate, and the fuzzers, build on it.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod annotation;
pub mod event;
pub mod feed;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod ids;
pub mod roles;
pub mod signal;
pub mod text;

pub use ids::{LessonId, ParticipantId, TrackId, UserRef};
pub use roles::{Engagement, MediaSource, Permission, Permissions, Role};

/// Why bytes could not become a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The input is longer than the limit for its kind; nothing was parsed.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The limit it broke.
        max: usize,
    },
    /// The input names a protocol version this build does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u32),
    /// The input is not a well-formed message (unknown type or field, bad JSON, truncated frame).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// An identifier is not of its required form.
    #[error("invalid identifier")]
    InvalidId,
}
