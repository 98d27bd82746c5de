//! Lesson events: everything that happens in a lesson, as the recorder keeps
//! it. The lesson core emits one for every change (join, admit, deny,
//! control, concern, compliance, end); chat travels separately as a chat
//! frame of the feed. Events carry no time: the feed frame that wraps an
//! event stamps it.

use serde::{Deserialize, Serialize};

use crate::{Engagement, MediaSource, ParticipantId, Permission, Role, TrackId, UserRef};

/// Why pupils' media and chat are held.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// No teacher or assistant has been present for longer than the grace.
    Unsupervised,
    /// The recorder has been lost for longer than the grace.
    RecordingLost,
}

/// A staff-facing compliance observation, recorded.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compliance {
    /// A teacher's camera has been off for longer than the grace.
    TeacherCameraOff,
    /// The teacher's camera is on again.
    TeacherCameraOn,
}

/// One thing that happened in a lesson.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum LessonEvent {
    /// Someone reached the lesson (and, if a pupil, its waiting room).
    Joined {
        /// Their id in this lesson.
        participant: ParticipantId,
        /// Who they are.
        user: UserRef,
        /// Their display name.
        name: String,
        /// Their role in this lesson.
        role: Role,
    },
    /// A pupil was placed in the waiting room.
    Waiting {
        /// The pupil.
        participant: ParticipantId,
    },
    /// A waiting pupil was let in.
    Admitted {
        /// The pupil.
        participant: ParticipantId,
        /// The staff member who admitted them.
        by: ParticipantId,
    },
    /// A waiting pupil was turned away.
    Denied {
        /// The pupil.
        participant: ParticipantId,
        /// The staff member who denied them.
        by: ParticipantId,
    },
    /// A pupil was ejected; they may not return unless re-allowed.
    Removed {
        /// The pupil.
        participant: ParticipantId,
        /// The staff member who removed them.
        by: ParticipantId,
    },
    /// A removed pupil was allowed to return.
    Reallowed {
        /// Who may return.
        user: UserRef,
        /// The staff member who allowed it.
        by: ParticipantId,
    },
    /// Someone's connection ended (they may reconnect).
    Left {
        /// Who left.
        participant: ParticipantId,
    },
    /// A blocked user was removed or refused.
    Blocked {
        /// Who.
        user: UserRef,
    },
    /// The waiting room was locked or unlocked.
    Locked {
        /// Locked (true) or unlocked.
        locked: bool,
        /// Who did it.
        by: ParticipantId,
    },
    /// A permission was granted or revoked.
    PermissionChanged {
        /// The pupil.
        participant: ParticipantId,
        /// Which permission.
        permission: Permission,
        /// Granted (true) or revoked.
        granted: bool,
        /// Who did it.
        by: ParticipantId,
    },
    /// A teacher changed the default permissions for pupils admitted later.
    DefaultsChanged {
        /// Which permission.
        permission: Permission,
        /// Granted (true) or revoked.
        granted: bool,
        /// Who did it.
        by: ParticipantId,
    },
    /// A source was switched on or off (by its owner, or off by staff).
    SourceChanged {
        /// Whose source.
        participant: ParticipantId,
        /// Which source.
        source: MediaSource,
        /// On (true) or off.
        on: bool,
        /// Staff member who turned it off, if it was not the owner.
        by: Option<ParticipantId>,
    },
    /// A pupil chose how to take part.
    EngagementChosen {
        /// The pupil.
        participant: ParticipantId,
        /// Their choice.
        engagement: Engagement,
    },
    /// The SFU started or stopped forwarding a track.
    Forwarding {
        /// The track.
        track: TrackId,
        /// Forwarded (true) or dropped.
        on: bool,
    },
    /// Public or private chat policy changed.
    ChatPolicy {
        /// Pupils may post in public chat.
        public_chat: bool,
        /// Pupils may message staff privately.
        private_chat: bool,
        /// Who changed it.
        by: ParticipantId,
    },
    /// Pupils are held, or released (empty reasons).
    Hold {
        /// Why they are held; empty when released.
        reasons: Vec<HoldReason>,
    },
    /// The recorder attached (an acknowledged feed) or was lost.
    Recorder {
        /// Attached (true) or lost.
        attached: bool,
    },
    /// A pupil reported a concern to the DSL.
    Concern {
        /// The pupil.
        participant: ParticipantId,
        /// What they wrote.
        text: String,
    },
    /// A pupil raised their hand.
    HandRaised {
        /// The pupil.
        participant: ParticipantId,
    },
    /// A raised hand was lowered (by its pupil, or by staff).
    HandLowered {
        /// The pupil.
        participant: ParticipantId,
        /// The staff member who lowered it, if it was not the pupil.
        by: Option<ParticipantId>,
    },
    /// Staff showed or hid from pupils whose hands are up.
    HandsShown {
        /// Shown (true) or hidden.
        visible: bool,
        /// Who changed it.
        by: ParticipantId,
    },
    /// A mark was drawn on a shared screen (a laser mark too: it faded by
    /// itself and is never undone or cleared).
    Annotated {
        /// The mark's id.
        mark: crate::annotation::MarkId,
        /// Whose shared screen.
        layer: ParticipantId,
        /// Who drew it.
        participant: ParticipantId,
        /// What was drawn.
        stroke: crate::annotation::Stroke,
    },
    /// Points were added to a freehand mark while it was drawn.
    MarkExtended {
        /// The mark.
        mark: crate::annotation::MarkId,
        /// The new points.
        points: Vec<crate::annotation::Point>,
    },
    /// Its author took a mark back (it may be put back).
    MarkUndone {
        /// The mark.
        mark: crate::annotation::MarkId,
        /// Who.
        participant: ParticipantId,
    },
    /// Its author put an undone mark back.
    MarkRedone {
        /// The mark.
        mark: crate::annotation::MarkId,
        /// Who.
        participant: ParticipantId,
    },
    /// Its author erased a mark.
    MarkErased {
        /// The mark.
        mark: crate::annotation::MarkId,
        /// Who.
        participant: ParticipantId,
    },
    /// Marks were cleared: by staff (all, or one person's), or because the
    /// screen they were drawn on stopped being shared (`by` absent).
    MarksCleared {
        /// The marks removed.
        marks: Vec<crate::annotation::MarkId>,
        /// The staff member who cleared them, if it was not the share ending.
        by: Option<ParticipantId>,
    },
    /// Staff set whether pupils see only staff marks and their own.
    MarksIsolated {
        /// Isolated (true) or shared.
        isolated: bool,
        /// Who changed it.
        by: ParticipantId,
    },
    /// A teacher flagged an incident.
    Incident {
        /// The staff member.
        by: ParticipantId,
        /// Their note.
        note: String,
    },
    /// A compliance observation about a staff member.
    Compliance {
        /// Whom it concerns.
        participant: ParticipantId,
        /// What was observed.
        kind: Compliance,
    },
    /// A participant attempted something the server refused (a misbehaving
    /// client, or a race with a control change). Kept as evidence.
    Refused {
        /// Who tried.
        participant: ParticipantId,
        /// What they tried, as the wire name of the message.
        action: String,
        /// The error code they received.
        code: crate::signal::ErrorCode,
    },
    /// Someone was refused entry (not on the roster, blocked, removed,
    /// locked out, or the lesson had ended).
    JoinRefused {
        /// Who tried.
        user: UserRef,
        /// The refusal they received.
        code: crate::signal::ErrorCode,
    },
    /// The lesson's time ran out while it was running: its window closed
    /// (its end plus the grace, or the end of its staff's extension). The
    /// gateway ends it: [`LessonEvent::Ended`] by
    /// [`ParticipantId::SERVER`] follows.
    TimeRanOut {},
    /// The lesson ended.
    Ended {
        /// Who ended it: a staff member, or [`ParticipantId::SERVER`] when
        /// its time ran out ([`LessonEvent::TimeRanOut`] comes first).
        by: ParticipantId,
    },
}
