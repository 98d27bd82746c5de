//! The part of a lesson that must survive its node: who was admitted, every
//! permission, removal and block, the chat policy and the lock. Media and
//! connections are not in it: they are rebuilt when clients reconnect.

use chaperone_protocol::{LessonId, ParticipantId, Permissions, UserRef};
use serde::{Deserialize, Serialize};

/// Format version of [`Snapshot`].
pub const SNAPSHOT_VERSION: u32 = 1;

/// Largest snapshot accepted when decoding (a lesson of a few hundred people
/// fits in a few tens of kilobytes).
pub(crate) const MAX_SNAPSHOT_BYTES: usize = 1024 * 1024;

/// A lesson's persisted control state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Format version.
    pub version: u32,
    /// The lesson.
    pub lesson: LessonId,
    /// Next participant id to hand out (ids are never reused in a lesson).
    pub next_participant: u64,
    /// Waiting room locked.
    pub locked: bool,
    /// Pupils may use public chat.
    pub public_chat: bool,
    /// Pupils may message staff privately.
    pub private_chat: bool,
    /// The lesson has ended.
    pub ended: bool,
    /// Permissions for pupils admitted later.
    pub defaults: Permissions,
    /// Each pupil's permissions.
    pub permissions: Vec<(UserRef, Permissions)>,
    /// Pupils admitted (present or within the reconnect grace).
    pub admitted: Vec<UserRef>,
    /// Removed pupils, by the participant id they had.
    pub removed: Vec<(ParticipantId, UserRef)>,
    /// Users blocked while the lesson ran.
    pub blocked: Vec<UserRef>,
}

/// Why a snapshot could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The bytes are larger than the largest snapshot accepted (1 MiB).
    #[error("snapshot of {0} bytes is too large")]
    TooLarge(usize),
    /// The bytes are not a snapshot.
    #[error("malformed snapshot: {0}")]
    Malformed(String),
    /// The snapshot is of a format version this build does not read.
    #[error("unsupported snapshot version {0}")]
    Version(u32),
    /// The snapshot belongs to another lesson.
    #[error("snapshot belongs to another lesson")]
    WrongLesson,
}

impl Snapshot {
    /// Encodes as JSON bytes for the state store.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain structs of strings, numbers and bools cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes bytes from the state store, checking size first.
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        if bytes.len() > MAX_SNAPSHOT_BYTES {
            return Err(SnapshotError::TooLarge(bytes.len()));
        }
        let s: Snapshot =
            serde_json::from_slice(bytes).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        if s.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version(s.version));
        }
        Ok(s)
    }
}
