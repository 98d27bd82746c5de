//! Signaling messages between a browser and the gateway, as JSON text over
//! the lesson WebSocket.
//!
//! Every message is externally tagged (`{"admit": {"participant": 3}}`),
//! unknown message types and unknown fields are refused, and the length is
//! checked before anything is parsed ([`ClientMsg::decode`]). The first
//! message on a connection is [`ClientMsg::Hello`] carrying
//! [`PROTOCOL_VERSION`]; the gateway answers [`ServerMsg::Welcome`].

use serde::{Deserialize, Serialize};

use crate::annotation::{AuthorHandle, Mark, MarkId, Point, Stroke};
use crate::event::HoldReason;
use crate::{Engagement, MediaSource, ParticipantId, Permission, Permissions, ProtocolError, Role};

/// The signaling protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest client message accepted (an SDP offer with many tracks fits).
pub const MAX_CLIENT_MSG: usize = 64 * 1024;

/// Largest chat message, in characters. The lesson may configure less.
pub const MAX_CHAT_CHARS: usize = 2000;

/// Whom a teacher's control applies to.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// One participant.
    One(ParticipantId),
    /// Every pupil in the lesson, now; for permissions, also pupils admitted later.
    AllPupils,
}

/// A message from a browser to the gateway.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum ClientMsg {
    /// First message: the protocol version the client speaks.
    Hello {
        /// Must equal [`PROTOCOL_VERSION`].
        version: u32,
    },

    // --- staff controls ---
    /// Let one waiting pupil in.
    Admit {
        /// The waiting pupil.
        participant: ParticipantId,
    },
    /// Let every waiting pupil in.
    AdmitAll,
    /// Turn one waiting pupil away.
    Deny {
        /// The waiting pupil.
        participant: ParticipantId,
    },
    /// Eject a pupil; they cannot return unless re-allowed.
    Remove {
        /// The pupil.
        participant: ParticipantId,
    },
    /// Allow a removed pupil to return.
    Reallow {
        /// The pupil's participant id when they were removed.
        participant: ParticipantId,
    },
    /// Close (or reopen) the waiting room to new arrivals.
    Lock {
        /// Locked (true) or unlocked.
        locked: bool,
    },
    /// Grant or revoke a permission.
    SetPermission {
        /// One pupil, or all pupils (and the default for later ones).
        target: Target,
        /// Which permission.
        permission: Permission,
        /// Grant (true) or revoke.
        granted: bool,
    },
    /// Turn a source off (mic off, camera off) without revoking it; the
    /// pupil may turn it on again.
    TurnOff {
        /// One pupil, or all pupils.
        target: Target,
        /// Which source.
        source: MediaSource,
    },
    /// Change whether pupils may use public chat and private chat to staff.
    SetChatPolicy {
        /// Public chat for pupils.
        public_chat: bool,
        /// Pupils' private messages to staff.
        private_chat: bool,
    },
    /// Flag an incident at this moment, with a note.
    FlagIncident {
        /// What happened.
        note: String,
    },
    /// End the lesson for everyone.
    EndLesson,

    // --- everyone ---
    /// Choose how to take part (pupils).
    SetEngagement {
        /// The choice.
        engagement: Engagement,
    },
    /// Switch one of one's own sources on or off.
    SetSource {
        /// Which source.
        source: MediaSource,
        /// On (true) or off.
        on: bool,
    },
    /// Send a chat message: public when `to` is absent, otherwise private.
    Chat {
        /// Private recipient, or public if `None`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<ParticipantId>,
        /// The text.
        text: String,
    },
    /// Report a concern privately to the Designated Safeguarding Lead.
    ReportConcern {
        /// What worries them.
        text: String,
    },
    /// Raise (or lower) one's own hand (pupils).
    RaiseHand {
        /// Raised (true) or lowered.
        raised: bool,
    },

    // --- staff: hands ---
    /// Lower one pupil's raised hand, or every pupil's.
    LowerHand {
        /// One pupil, or all pupils.
        target: Target,
    },
    /// Whether pupils see whose hands are up (staff and observers always do).
    ShowHands {
        /// Shown to pupils (true) or hidden.
        visible: bool,
    },

    // --- annotation (see `annotation.rs`) ---
    /// Draw a mark on a live screen share (needs `annotate`; staff always).
    Draw {
        /// Whose shared screen.
        layer: ParticipantId,
        /// The mark.
        stroke: Stroke,
    },
    /// Add points to one's own latest freehand mark, while drawing it.
    ExtendMark {
        /// The new points.
        points: Vec<Point>,
    },
    /// Take back one's own latest mark.
    UndoMark,
    /// Put back one's own latest undone mark.
    RedoMark,
    /// Remove one of one's own marks.
    EraseMark {
        /// The mark.
        mark: MarkId,
    },
    /// Staff: remove every mark, or one person's.
    ClearMarks {
        /// Whose marks (all if absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        author: Option<AuthorHandle>,
    },
    /// Staff: pupils see only staff marks and their own (true), or every mark.
    IsolateMarks {
        /// Isolated (true) or shared.
        isolated: bool,
    },

    // --- media negotiation ---
    /// An SDP offer for the client's peer connection.
    Offer {
        /// SDP text.
        sdp: String,
    },
    /// An SDP answer to the gateway's offer.
    Answer {
        /// SDP text.
        sdp: String,
    },
}

impl ClientMsg {
    /// Parses one client message, checking the size before parsing.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        if bytes.len() > MAX_CLIENT_MSG {
            return Err(ProtocolError::TooLarge {
                len: bytes.len(),
                max: MAX_CLIENT_MSG,
            });
        }
        let msg: ClientMsg =
            serde_json::from_slice(bytes).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        if let ClientMsg::Hello { version } = msg
            && version != PROTOCOL_VERSION
        {
            return Err(ProtocolError::UnsupportedVersion(version));
        }
        Ok(msg)
    }

    /// The wire name of this message type (for logs and refusal events).
    pub fn name(&self) -> &'static str {
        match self {
            ClientMsg::Hello { .. } => "hello",
            ClientMsg::Admit { .. } => "admit",
            ClientMsg::AdmitAll => "admit_all",
            ClientMsg::Deny { .. } => "deny",
            ClientMsg::Remove { .. } => "remove",
            ClientMsg::Reallow { .. } => "reallow",
            ClientMsg::Lock { .. } => "lock",
            ClientMsg::SetPermission { .. } => "set_permission",
            ClientMsg::TurnOff { .. } => "turn_off",
            ClientMsg::SetChatPolicy { .. } => "set_chat_policy",
            ClientMsg::FlagIncident { .. } => "flag_incident",
            ClientMsg::EndLesson => "end_lesson",
            ClientMsg::SetEngagement { .. } => "set_engagement",
            ClientMsg::SetSource { .. } => "set_source",
            ClientMsg::Chat { .. } => "chat",
            ClientMsg::ReportConcern { .. } => "report_concern",
            ClientMsg::RaiseHand { .. } => "raise_hand",
            ClientMsg::LowerHand { .. } => "lower_hand",
            ClientMsg::ShowHands { .. } => "show_hands",
            ClientMsg::Draw { .. } => "draw",
            ClientMsg::ExtendMark { .. } => "extend_mark",
            ClientMsg::UndoMark => "undo_mark",
            ClientMsg::RedoMark => "redo_mark",
            ClientMsg::EraseMark { .. } => "erase_mark",
            ClientMsg::ClearMarks { .. } => "clear_marks",
            ClientMsg::IsolateMarks { .. } => "isolate_marks",
            ClientMsg::Offer { .. } => "offer",
            ClientMsg::Answer { .. } => "answer",
        }
    }
}

/// Typed refusal codes. Stable strings on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// No such lesson, or not yours: the two are deliberately the same answer.
    NotFound,
    /// Your role may not do this.
    Forbidden,
    /// You are in the waiting room; only your waiting status is available.
    NotAdmitted,
    /// The teacher has not permitted (or has revoked) this.
    NotPermitted,
    /// Private messages between pupils are not allowed.
    PupilToPupil,
    /// The teacher has turned public chat off for pupils.
    PublicChatOff,
    /// The teacher has turned pupils' private chat off.
    PrivateChatOff,
    /// Pupils are held (no staff present, or recording lost).
    Held,
    /// Too many messages; slow down.
    RateLimited,
    /// The text is empty or longer than allowed.
    BadText,
    /// The waiting room is locked.
    Locked,
    /// You were removed from this lesson.
    Removed,
    /// Your access has been blocked.
    Blocked,
    /// No such participant in this lesson.
    UnknownParticipant,
    /// The participant is not in the state this needs (e.g. admitting someone not waiting).
    InvalidState,
    /// The lesson has ended.
    Ended,
    /// The message could not be parsed.
    Malformed,
    /// The message was too large.
    TooLarge,
    /// The protocol version is not supported.
    UnsupportedVersion,
    /// Pupils cannot be admitted while no recorder is attached.
    NotRecording,
    /// Something failed on the server; nothing was changed.
    Internal,
    /// That screen is not being shared (annotation needs a live share).
    NoShare,
    /// The mark is malformed: points, coordinates, width or label out of bounds.
    BadMark,
    /// The shared screen holds as many marks as it may.
    LayerFull,
}

impl ErrorCode {
    /// The code for a decoding failure.
    pub fn for_protocol_error(e: &ProtocolError) -> Self {
        match e {
            ProtocolError::TooLarge { .. } => ErrorCode::TooLarge,
            ProtocolError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            _ => ErrorCode::Malformed,
        }
    }
}

/// How a participant appears to others in the lesson.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantInfo {
    /// Their id in this lesson.
    pub id: ParticipantId,
    /// Display name.
    pub name: String,
    /// Lesson role.
    pub role: Role,
    /// What they are permitted.
    pub permissions: Permissions,
    /// Sources they have switched on.
    pub sources_on: Vec<MediaSource>,
    /// Sources actually being forwarded now.
    pub forwarded: Vec<MediaSource>,
}

/// A pupil in the waiting room, as staff see them.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitingEntry {
    /// Their id in this lesson.
    pub id: ParticipantId,
    /// Display name.
    pub name: String,
}

/// The state of the lesson as everyone admitted sees it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LessonStatus {
    /// Whether the recording is actually running (an acknowledged feed).
    pub recording: bool,
    /// Why pupils are held, if they are.
    pub held: Vec<HoldReason>,
    /// Whether the waiting room is locked.
    pub locked: bool,
    /// Whether an observer (SLT, DSL, visitor) is present.
    pub observer_present: bool,
    /// Pupils may use public chat.
    pub public_chat: bool,
    /// Pupils may message staff privately.
    pub private_chat: bool,
    /// Pupils see whose hands are up (staff and observers always do).
    #[serde(default)]
    pub hands_visible: bool,
    /// Pupils see only staff marks and their own on a shared screen.
    #[serde(default)]
    pub marks_isolated: bool,
}

/// Why a participant's connection is being closed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Farewell {
    /// A teacher turned them away from the waiting room.
    Denied,
    /// A teacher removed them.
    Removed,
    /// Their access was blocked.
    Blocked,
    /// The lesson ended.
    Ended,
    /// They joined again from another connection.
    Replaced,
    /// Their time-boxed visitor access ended.
    AccessEnded,
}

/// A message from the gateway to a browser.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum ServerMsg {
    /// Answer to hello: who you are in this lesson.
    Welcome {
        /// The protocol version the gateway speaks.
        version: u32,
        /// Your id in this lesson.
        you: ParticipantId,
        /// Your role.
        role: Role,
    },
    /// You are in the waiting room. This is all a waiting pupil ever receives.
    Waiting {
        /// Whether the waiting room is locked to new arrivals (you are already in).
        locked: bool,
    },
    /// You have been admitted.
    Admitted,
    /// Everyone admitted, sent on admission and on every change.
    Roster {
        /// Admitted participants, staff and observers.
        participants: Vec<ParticipantInfo>,
    },
    /// Staff only: who is waiting.
    WaitingList {
        /// The waiting pupils.
        waiting: Vec<WaitingEntry>,
    },
    /// Your own permissions and sources, after any change.
    You {
        /// What you are permitted.
        permissions: Permissions,
        /// Your sources that are on.
        sources_on: Vec<MediaSource>,
        /// Your sources actually forwarded.
        forwarded: Vec<MediaSource>,
    },
    /// The lesson's status: recording, held, locked, observers, chat policy.
    Status(LessonStatus),
    /// A staff member changed one of your controls.
    ControlChanged {
        /// Which permission or source.
        permission: Permission,
        /// Now granted/on (true) or revoked/off.
        granted: bool,
        /// Whether it was revoked (cannot be re-enabled) rather than turned off.
        revoked: bool,
    },
    /// A chat message you may see.
    Chat {
        /// Sender.
        from: ParticipantId,
        /// Sender's display name.
        from_name: String,
        /// Private recipient, if private.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<ParticipantId>,
        /// Text.
        text: String,
    },
    /// Staff only: a warning to show (e.g. your camera is off).
    Banner {
        /// The observation.
        kind: crate::event::Compliance,
    },
    /// Your concern was passed to the DSL.
    ConcernReceived,
    /// Raised hands, oldest first, as you may see them: every one for staff
    /// and observers, and for pupils when the teacher shows hands; otherwise
    /// only your own.
    Hands {
        /// Participants whose hands are up, in the order they were raised.
        raised: Vec<ParticipantId>,
    },
    /// A mark you may see, new or put back (a laser mark fades by itself).
    Mark(Mark),
    /// Points added to a freehand mark you were sent.
    MarkExtended {
        /// The mark.
        id: MarkId,
        /// The new points.
        points: Vec<Point>,
    },
    /// Marks you were sent are gone (undone, erased, cleared, the share ended,
    /// or no longer yours to see).
    Unmark {
        /// The marks.
        ids: Vec<MarkId>,
    },
    /// A request was refused.
    Error {
        /// Typed code.
        code: ErrorCode,
        /// The wire name of the refused message, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action: Option<String>,
    },
    /// An SDP offer from the gateway (renegotiation).
    Offer {
        /// SDP text.
        sdp: String,
    },
    /// An SDP answer from the gateway.
    Answer {
        /// SDP text.
        sdp: String,
    },
    /// The quality of your media connection changed: while
    /// `video_paused`, your link cannot carry even the lowest video layer,
    /// so you receive audio only ("your connection is weak: video paused").
    MediaQuality {
        /// Video to you is paused (true) or flowing again (false).
        video_paused: bool,
    },
    /// Staff only: the lesson's window closes in `in_secs` seconds, and
    /// the gateway will end the lesson then for everyone unless its staff
    /// keep it open longer. Sent once as the close comes near, again if an
    /// extension moves it but not out of the warning period.
    Closing {
        /// Seconds until the lesson is ended.
        in_secs: u64,
    },
    /// The connection is about to close, and why.
    Goodbye {
        /// Why.
        reason: Farewell,
    },
}

impl ServerMsg {
    /// Encodes as JSON text. Serialising these types cannot fail (no maps
    /// with non-string keys, no fallible `Serialize` impls).
    pub fn encode(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| String::from(r#"{"error":{"code":"internal"}}"#))
    }

    /// Parses a server message (clients and tests).
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        const MAX_SERVER_MSG: usize = 1024 * 1024;
        if bytes.len() > MAX_SERVER_MSG {
            return Err(ProtocolError::TooLarge {
                len: bytes.len(),
                max: MAX_SERVER_MSG,
            });
        }
        serde_json::from_slice(bytes).map_err(|e| ProtocolError::Malformed(e.to_string()))
    }
}
