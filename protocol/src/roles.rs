//! Roles in a lesson, media sources and the permissions a teacher controls.

use serde::{Deserialize, Serialize};

/// What a person is *in this lesson*. Account roles from the identity
/// provider (teacher, pupil, SLT, DSL, admin, visitor) map onto these when a
/// person joins.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// One of the lesson's teachers: holds every control.
    Teacher,
    /// Other staff in the room: supervises, may admit and control.
    Assistant,
    /// A rostered pupil of the lesson's class.
    Pupil,
    /// SLT or DSL dropping in, or a visitor with a time-boxed grant. Sees and
    /// hears the lesson; never publishes; never chats privately with pupils.
    Observer,
}

impl Role {
    /// Staff supervise: a lesson with a staff member present is supervised.
    pub const fn is_staff(self) -> bool {
        matches!(self, Role::Teacher | Role::Assistant)
    }
}

/// A source of media a participant may publish.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaSource {
    /// Audio from the microphone.
    Microphone,
    /// Video from the camera.
    Camera,
    /// Video of a screen or window, its own track.
    ScreenShare,
}

impl MediaSource {
    /// Every source, in a fixed order.
    pub const ALL: [MediaSource; 3] = [
        MediaSource::Microphone,
        MediaSource::Camera,
        MediaSource::ScreenShare,
    ];

    /// Stable lower-case name (logs, metrics labels, track names).
    pub const fn as_str(self) -> &'static str {
        match self {
            MediaSource::Microphone => "microphone",
            MediaSource::Camera => "camera",
            MediaSource::ScreenShare => "screen_share",
        }
    }

    /// The permission that governs this source.
    pub const fn permission(self) -> Permission {
        match self {
            MediaSource::Microphone => Permission::Microphone,
            MediaSource::Camera => Permission::Camera,
            MediaSource::ScreenShare => Permission::ScreenShare,
        }
    }
}

/// What a teacher grants or revokes per pupil.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// May publish the microphone.
    Microphone,
    /// May publish the camera.
    Camera,
    /// May publish a screen share.
    ScreenShare,
    /// May draw on the shared board.
    Annotate,
}

impl Permission {
    /// Every permission, in a fixed order.
    pub const ALL: [Permission; 4] = [
        Permission::Microphone,
        Permission::Camera,
        Permission::ScreenShare,
        Permission::Annotate,
    ];

    /// The source this permission governs, if it is one.
    pub const fn source(self) -> Option<MediaSource> {
        match self {
            Permission::Microphone => Some(MediaSource::Microphone),
            Permission::Camera => Some(MediaSource::Camera),
            Permission::ScreenShare => Some(MediaSource::ScreenShare),
            Permission::Annotate => None,
        }
    }
}

/// A set of permissions, small enough to copy.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    /// May publish the microphone.
    pub microphone: bool,
    /// May publish the camera.
    pub camera: bool,
    /// May publish a screen share.
    pub screen_share: bool,
    /// May annotate.
    pub annotate: bool,
}

impl Permissions {
    /// The lesson default for pupils: mic and camera, no screen or annotation.
    pub const PUPIL_DEFAULT: Permissions = Permissions {
        microphone: true,
        camera: true,
        screen_share: false,
        annotate: false,
    };
    /// Everything (staff).
    pub const ALL: Permissions = Permissions {
        microphone: true,
        camera: true,
        screen_share: true,
        annotate: true,
    };
    /// Nothing (observers).
    pub const NONE: Permissions = Permissions {
        microphone: false,
        camera: false,
        screen_share: false,
        annotate: false,
    };

    /// Whether `p` is granted.
    pub const fn allows(&self, p: Permission) -> bool {
        match p {
            Permission::Microphone => self.microphone,
            Permission::Camera => self.camera,
            Permission::ScreenShare => self.screen_share,
            Permission::Annotate => self.annotate,
        }
    }

    /// Grants or revokes `p`.
    pub fn set(&mut self, p: Permission, granted: bool) {
        match p {
            Permission::Microphone => self.microphone = granted,
            Permission::Camera => self.camera = granted,
            Permission::ScreenShare => self.screen_share = granted,
            Permission::Annotate => self.annotate = granted,
        }
    }
}

/// How a pupil chooses to take part, within what is permitted.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engagement {
    /// Chat only: no microphone, no camera.
    ChatOnly,
    /// Microphone and chat.
    VoiceChat,
    /// Camera and chat.
    ChatCamera,
    /// Microphone, camera and chat.
    VoiceChatCamera,
}

impl Engagement {
    /// Whether this choice turns `source` on. Screen share is never part of
    /// an engagement choice; it is started on its own.
    pub const fn wants(self, source: MediaSource) -> bool {
        match source {
            MediaSource::Microphone => {
                matches!(self, Engagement::VoiceChat | Engagement::VoiceChatCamera)
            }
            MediaSource::Camera => {
                matches!(self, Engagement::ChatCamera | Engagement::VoiceChatCamera)
            }
            MediaSource::ScreenShare => false,
        }
    }
}
