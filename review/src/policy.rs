//! What each review scope may see of a recording. Every response of the
//! review service is built through here, so a scope is enforced on the
//! server for media, chat and events alike:
//!
//! - [`Access::Full`] (DSL with `dsl_restricted`): everything, DSL-only
//!   ranges included;
//! - [`Access::Blanked`] (SLT or DSL with `safeguarding`): every track,
//!   public and private chat, every event, except inside DSL-only ranges,
//!   where media frames are not served and chat and events are withheld;
//! - [`Access::Pupil`] (`pupil_copy`): only staff cameras, microphones and
//!   screen shares, public chat only, no events, staff annotation marks
//!   only (`crate::annotation`), never DSL-only ranges.
//!
//! Pure: no I/O, no clock. A route must never serve media, chat or events
//! that did not come through here.

use chaperone_protocol::{MediaSource, ParticipantId, Role};
use chaperone_tokens::ReviewScope;
use serde::Serialize;

use crate::library::{Recording, file_name, file_tracks};
use crate::marks::Restriction;
use crate::webm::{Span, VideoCodec};

/// How much of a recording a scope sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Access {
    /// Everything.
    Full,
    /// Everything but DSL-only ranges.
    Blanked,
    /// A pupil's copy.
    Pupil,
}

impl Access {
    /// The access a scope grants.
    pub(crate) fn of(scope: ReviewScope) -> Self {
        match scope {
            ReviewScope::DslRestricted => Access::Full,
            ReviewScope::Safeguarding => Access::Blanked,
            ReviewScope::PupilCopy => Access::Pupil,
        }
    }
}

/// The spans whose media, chat and events `access` must not get.
pub(crate) fn withheld(access: Access, restrictions: &[Restriction]) -> Vec<Span> {
    match access {
        Access::Full => Vec::new(),
        Access::Blanked | Access::Pupil => {
            let mut spans: Vec<Span> = restrictions
                .iter()
                .map(|r| Span {
                    from_micros: r.from_ms.saturating_mul(1000),
                    to_micros: r.to_ms.saturating_mul(1000),
                })
                .collect();
            spans.sort();
            spans.dedup();
            spans
        }
    }
}

fn inside(spans: &[Span], t: u64) -> bool {
    spans.iter().any(|s| s.contains(t))
}

/// One playable file of a recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct FileInfo {
    /// `p3-av.webm` or `p3-screen.webm`.
    pub name: String,
    /// Whose.
    pub participant: ParticipantId,
    /// Their name.
    pub label: String,
    /// Their role (`teacher`, `pupil`, ...).
    pub role: Option<Role>,
    /// A screen share (else camera and microphone).
    pub screen: bool,
    /// Has video (a WebM-playable codec).
    pub video: bool,
    /// Has audio.
    pub audio: bool,
}

/// The files `access` may play.
pub(crate) fn files(rec: &Recording, access: Access) -> Vec<FileInfo> {
    let mut owners: Vec<(ParticipantId, bool)> = rec
        .tracks
        .keys()
        .map(|t| (t.participant, t.source == MediaSource::ScreenShare))
        .collect();
    owners.sort();
    owners.dedup();
    owners
        .into_iter()
        .filter(|(p, _)| match access {
            Access::Full | Access::Blanked => true,
            Access::Pupil => rec.role_of(*p).is_some_and(Role::is_staff),
        })
        .filter_map(|(p, screen)| {
            let (video, audio) = file_tracks(p, screen);
            let has_video = rec
                .tracks
                .get(&video)
                .and_then(|t| t.codec)
                .and_then(VideoCodec::of)
                .is_some();
            let has_audio = audio.is_some_and(|a| rec.tracks.contains_key(&a));
            (has_video || has_audio).then(|| FileInfo {
                name: file_name(p, screen),
                participant: p,
                label: rec
                    .participants
                    .get(&p)
                    .map_or_else(|| format!("participant {}", p.0), |x| x.name.clone()),
                role: rec.role_of(p),
                screen,
                video: has_video,
                audio: has_audio,
            })
        })
        .collect()
}

/// A chat message as served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct ChatOut {
    /// Ms from the lesson's start.
    pub t_ms: u64,
    /// Sender.
    pub from: ParticipantId,
    /// Sender's name.
    pub from_name: String,
    /// Private recipient, if private.
    pub to: Option<ParticipantId>,
    /// Recipient's name.
    pub to_name: Option<String>,
    /// Private.
    pub private: bool,
    /// Text.
    pub text: String,
}

/// The chat `access` may read, outside `withheld`.
pub(crate) fn chat(rec: &Recording, access: Access, withheld: &[Span]) -> Vec<ChatOut> {
    let name = |p: ParticipantId| {
        rec.participants
            .get(&p)
            .map_or_else(|| format!("participant {}", p.0), |x| x.name.clone())
    };
    rec.chat
        .iter()
        .filter(|c| !inside(withheld, c.t_micros))
        .filter(|c| access != Access::Pupil || c.to.is_none())
        .map(|c| ChatOut {
            t_ms: c.t_micros / 1000,
            from: c.from,
            from_name: name(c.from),
            to: c.to,
            to_name: c.to.map(name),
            private: c.to.is_some(),
            text: c.text.clone(),
        })
        .collect()
}

/// An event as served.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct EventOut {
    /// Ms from the lesson's start.
    pub t_ms: u64,
    /// The event's kind (`joined`, `concern`, ...).
    pub kind: String,
    /// The event as recorded.
    pub event: serde_json::Value,
}

/// The events `access` may see, outside `withheld`. Pupils get none.
pub(crate) fn events(rec: &Recording, access: Access, withheld: &[Span]) -> Vec<EventOut> {
    if access == Access::Pupil {
        return Vec::new();
    }
    rec.events
        .iter()
        .filter(|e| !inside(withheld, e.t_micros))
        .filter_map(|e| {
            let v = serde_json::to_value(&e.event).ok()?;
            let kind = v
                .as_object()
                .and_then(|o| o.keys().next().cloned())
                .or_else(|| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            Some(EventOut {
                t_ms: e.t_micros / 1000,
                kind,
                event: v,
            })
        })
        .collect()
}
