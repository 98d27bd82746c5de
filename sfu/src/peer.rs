//! The per-participant state: one str0m [`Rtc`] per participant, the m-lines
//! they publish on ([`Inbound`]) and the slots the SFU sends them tracks on
//! ([`Outbound`]), keyed lesson first ([`PeerKey`]).
//!
//! It owns the lookups between m-lines and sources and the media kind each
//! source is carried as. It decides nothing: what is forwarded is
//! `forwarding`'s, what is offered is `negotiation`'s. It must never forget
//! or change a source's m-line once mapped: the mapping holds for the
//! session (see "Which track is which" in the crate doc).

use std::collections::HashMap;
use std::time::Instant;

use chaperone_protocol::{LessonId, MediaSource, ParticipantId, TrackId};
use str0m::Rtc;
use str0m::change::SdpPendingOffer;
use str0m::media::{MediaKind, Mid};

use crate::stats::StreamTotals;

/// Which participant of which lesson.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct PeerKey {
    pub(crate) lesson: LessonId,
    pub(crate) participant: ParticipantId,
}

/// Every key of one lesson: peers are ordered lesson first, so a lesson's
/// peers are one contiguous range and forwarding never walks other lessons.
pub(crate) fn lesson_range(lesson: LessonId) -> std::ops::RangeInclusive<PeerKey> {
    PeerKey {
        lesson,
        participant: ParticipantId(u64::MIN),
    }..=PeerKey {
        lesson,
        participant: ParticipantId(u64::MAX),
    }
}

/// An m-line the participant publishes on, and the source it carries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inbound {
    pub(crate) mid: Mid,
    pub(crate) source: MediaSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutState {
    /// Wanted; not yet in an offer.
    Wanted,
    /// In an offer that awaits the participant's answer.
    Negotiating(Mid),
    /// Negotiated: frames can be written on this mid.
    Open(Mid),
}

/// A slot on which the participant receives someone else's track.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) track: TrackId,
    pub(crate) kind: MediaKind,
    pub(crate) state: OutState,
}

/// One participant in the media plane.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) rtc: Rtc,
    /// An offer has been accepted: the peer has a session to renegotiate.
    pub(crate) negotiated: bool,
    pub(crate) inbound: Vec<Inbound>,
    pub(crate) outbound: Vec<Outbound>,
    pub(crate) pending: Option<SdpPendingOffer>,
    pub(crate) next_timeout: Option<Instant>,
    /// Media has been written to this peer at least once.
    pub(crate) delivered: bool,
    /// The last totals str0m reported per (mid, is-egress) stream.
    pub(crate) totals: HashMap<(Mid, bool), StreamTotals>,
}

impl Peer {
    /// The source the participant publishes on `mid`, if it is one we know.
    pub(crate) fn source_of(&self, mid: Mid) -> Option<MediaSource> {
        self.inbound.iter().find(|i| i.mid == mid).map(|i| i.source)
    }

    /// The m-line the participant publishes `source` on, if mapped.
    pub(crate) fn mid_of(&self, source: MediaSource) -> Option<Mid> {
        self.inbound
            .iter()
            .find(|i| i.source == source)
            .map(|i| i.mid)
    }

    /// The negotiated slot `track` is written to, if there is one yet.
    pub(crate) fn open_mid_for(&self, track: TrackId) -> Option<Mid> {
        self.outbound
            .iter()
            .find(|o| o.track == track)
            .and_then(|o| match o.state {
                OutState::Open(mid) => Some(mid),
                _ => None,
            })
    }
}

/// The media kind a source is carried as.
pub(crate) fn kind_of(source: MediaSource) -> MediaKind {
    match source {
        MediaSource::Microphone => MediaKind::Audio,
        MediaSource::Camera | MediaSource::ScreenShare => MediaKind::Video,
    }
}
