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
use str0m::media::{MediaKind, Mid, Rid};

use crate::layers::{KeyframeLimiter, RateMeter, Selector};
use crate::stats::StreamTotals;

/// Simulcast layers a track can have (`l`, `m`, `h`).
pub(crate) const LAYERS: usize = 3;

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
#[derive(Debug, Clone)]
pub(crate) struct Inbound {
    pub(crate) mid: Mid,
    pub(crate) source: MediaSource,
    /// Per layer index: how fast it arrives (a track without simulcast has
    /// layer 0 only).
    pub(crate) meters: [RateMeter; LAYERS],
    /// Per layer index: the rid it arrives with (`None` without simulcast).
    pub(crate) rids: [Option<Rid>; LAYERS],
    /// Per layer index: keyframe requests towards the publisher.
    pub(crate) limiters: [KeyframeLimiter; LAYERS],
    /// The layer recorded now (the highest arriving, switched at its
    /// keyframes).
    pub(crate) recorded: Option<u8>,
}

impl Inbound {
    pub(crate) fn new(mid: Mid, source: MediaSource) -> Self {
        Self {
            mid,
            source,
            meters: Default::default(),
            rids: [None; LAYERS],
            limiters: Default::default(),
            recorded: None,
        }
    }

    /// The layers arriving at `now`, lowest first, with their rates.
    pub(crate) fn arriving(&mut self, now: Instant) -> Vec<(u8, u64)> {
        let mut out = Vec::new();
        for (i, m) in self.meters.iter_mut().enumerate() {
            if let Some(r) = m.rate(now) {
                out.push((i as u8, r));
            }
        }
        out
    }

    /// Whether this track arrives as simulcast layers (with rids).
    pub(crate) fn simulcast(&self) -> bool {
        self.rids.iter().any(Option::is_some)
    }
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
    /// The layer written now (video), switched only at a keyframe of the
    /// target.
    pub(crate) layer: Option<u8>,
    /// The layer the selection wants (`None`: none fits, or video paused).
    pub(crate) target: Option<u8>,
}

impl Outbound {
    pub(crate) fn new(track: TrackId, kind: MediaKind) -> Self {
        Self {
            track,
            kind,
            state: OutState::Wanted,
            layer: None,
            // Before the first estimate: the lowest layer, which any link
            // that carries video carries.
            target: Some(0),
        }
    }
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
    /// The latest send-side bandwidth estimate towards this peer, bit/s.
    pub(crate) estimate: Option<u64>,
    /// Layer selection hysteresis for what this peer receives.
    pub(crate) selector: Selector,
    /// Video to this peer is paused: its estimate carries no video layer.
    pub(crate) video_paused: bool,
}

impl Peer {
    /// The source the participant publishes on `mid`, if it is one we know.
    pub(crate) fn source_of(&self, mid: Mid) -> Option<MediaSource> {
        self.inbound.iter().find(|i| i.mid == mid).map(|i| i.source)
    }

    /// What the participant publishes `source` on, if mapped.
    pub(crate) fn inbound_of(&mut self, source: MediaSource) -> Option<&mut Inbound> {
        self.inbound.iter_mut().find(|i| i.source == source)
    }

    /// The m-line the participant publishes `source` on, if mapped.
    pub(crate) fn mid_of(&self, source: MediaSource) -> Option<Mid> {
        self.inbound
            .iter()
            .find(|i| i.source == source)
            .map(|i| i.mid)
    }
}

/// The media kind a source is carried as.
pub(crate) fn kind_of(source: MediaSource) -> MediaKind {
    match source {
        MediaSource::Microphone => MediaKind::Audio,
        MediaSource::Camera | MediaSource::ScreenShare => MediaKind::Video,
    }
}
