//! The part of a lesson that must survive its node: who was admitted, every
//! permission, removal and block, the chat policy, the lock and whether
//! marks are isolated; taking it
//! from a [`Lesson`] and rebuilding a lesson from it. Media and connections
//! are not in it: they are rebuilt when clients reconnect. A restored lesson
//! must never be more permissive than the one that was saved: every mute,
//! revocation, removal and block comes back with it.

use std::time::Instant;

use chaperone_protocol::{LessonId, ParticipantId, Permissions, Role, UserRef};
use serde::{Deserialize, Serialize};

use crate::roster::Departed;
use crate::{Lesson, LessonConfig, LessonSetup, Presence};

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
    /// Pupils see whose hands are up (raised hands themselves are not
    /// kept: after a failover every hand is down).
    #[serde(default)]
    pub hands_visible: bool,
    /// Pupils see only staff marks and their own (the marks themselves are
    /// not kept: they belong to a screen share, which a failover ends).
    /// Absent from snapshots taken before annotation existed.
    #[serde(default)]
    pub marks_isolated: bool,
    /// The lesson has ended.
    pub ended: bool,
    /// Permissions for pupils admitted later.
    pub defaults: Permissions,
    /// Each pupil's permissions.
    pub permissions: Vec<(UserRef, Permissions)>,
    /// Pupils admitted (present or within the reconnect grace).
    pub admitted: Vec<UserRef>,
    /// Pupils waiting to be admitted (present or within the reconnect
    /// grace): they return to the waiting room, even when it is locked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<UserRef>,
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

impl Lesson {
    /// The control state that must survive this node.
    pub fn snapshot(&self) -> Snapshot {
        let mut permissions: Vec<(UserRef, Permissions)> = self
            .permissions
            .iter()
            .map(|(u, p)| (u.clone(), *p))
            .collect();
        permissions.sort_by(|a, b| a.0.cmp(&b.0));
        let mut admitted: Vec<UserRef> = self
            .participants
            .values()
            .filter(|x| x.presence == Presence::Admitted && x.role == Role::Pupil)
            .map(|x| x.user.clone())
            .chain(
                self.departed
                    .iter()
                    .filter(|(_, d)| d.admitted)
                    .map(|(u, _)| u.clone()),
            )
            .collect();
        admitted.sort();
        admitted.dedup();
        let mut waiting: Vec<UserRef> = self
            .participants
            .values()
            .filter(|x| x.presence == Presence::Waiting && x.role == Role::Pupil)
            .map(|x| x.user.clone())
            .chain(
                self.departed
                    .iter()
                    .filter(|(_, d)| !d.admitted)
                    .map(|(u, _)| u.clone()),
            )
            .collect();
        waiting.sort();
        waiting.dedup();
        let mut blocked: Vec<UserRef> = self.blocked.iter().cloned().collect();
        blocked.sort();
        Snapshot {
            version: SNAPSHOT_VERSION,
            lesson: self.setup.id,
            next_participant: self.next_id,
            locked: self.locked,
            public_chat: self.public_chat,
            private_chat: self.private_chat,
            hands_visible: self.hands_visible,
            marks_isolated: self.annotation.isolated,
            ended: self.ended,
            defaults: self.defaults,
            permissions,
            admitted,
            waiting,
            removed: self.removed.iter().map(|(p, u)| (*p, u.clone())).collect(),
            blocked,
        }
    }

    /// Rebuilds a lesson on another node from its last snapshot. Pupils who
    /// were admitted may reconnect within the reconnect grace without
    /// waiting again; every mute, revocation, removal and block holds. The
    /// recorder counts as lost until the feed is acknowledged again.
    pub fn restore(
        now: Instant,
        setup: LessonSetup,
        config: LessonConfig,
        snapshot: Snapshot,
    ) -> Result<Self, SnapshotError> {
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version(snapshot.version));
        }
        if snapshot.lesson != setup.id {
            return Err(SnapshotError::WrongLesson);
        }
        let mut lesson = Self::new(now, setup, config);
        // `new` emitted its own initial snapshot; the restored one replaces it.
        lesson.outputs.clear();
        lesson.next_id = snapshot.next_participant.max(1);
        lesson.locked = snapshot.locked;
        lesson.public_chat = snapshot.public_chat;
        lesson.private_chat = snapshot.private_chat;
        lesson.hands_visible = snapshot.hands_visible;
        lesson.annotation.isolated = snapshot.marks_isolated;
        // Mark ids are never reused in a lesson's recording, yet the count
        // is not persisted (it would change with every stroke): each
        // restored incarnation numbers its marks from a base above the last
        // one's (participant ids only grow, and nobody draws without joining).
        lesson.annotation.set_mark_base(snapshot.next_participant);
        lesson.ended = snapshot.ended;
        lesson.defaults = snapshot.defaults;
        lesson.permissions = snapshot.permissions.into_iter().collect();
        let departed = |admitted: bool| {
            move |u: UserRef| {
                (
                    u,
                    Departed {
                        left_at: now,
                        admitted,
                    },
                )
            }
        };
        lesson.departed = snapshot
            .waiting
            .into_iter()
            .map(departed(false))
            .chain(snapshot.admitted.into_iter().map(departed(true)))
            .collect();
        lesson.removed = snapshot.removed.into_iter().collect();
        lesson.blocked = snapshot.blocked.into_iter().collect();
        lesson.persisted = None;
        lesson.settle(now);
        Ok(lesson)
    }
}
