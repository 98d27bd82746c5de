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

use crate::layers::{DesiredRate, KeyframeLimiter, RateMeter, Selector};
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
    /// The recording's time line for this track: the layers of a simulcast
    /// track have unrelated RTP clocks, so a switch would make the
    /// recorded media time jump. Each switch re-bases the new layer to
    /// continue from the last recorded frame by the time that has passed.
    pub(crate) timeline: Timeline,
}

/// See [`Inbound::timeline`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Timeline {
    /// The layer the offset was computed for.
    layer: Option<u8>,
    /// Added to that layer's media time.
    offset: i128,
    /// The last recorded media time (after the offset) and its arrival.
    last: Option<(u64, std::time::Instant)>,
}

impl Timeline {
    /// The recorded media time of a frame of `layer` with media time `raw`
    /// (`clock_rate` ticks a second) that arrived at `at`.
    pub(crate) fn map(
        &mut self,
        layer: u8,
        raw: u64,
        clock_rate: u64,
        at: std::time::Instant,
    ) -> u64 {
        if self.layer != Some(layer) {
            self.offset = match self.last {
                Some((last, then)) => {
                    let elapsed = at.saturating_duration_since(then).as_nanos();
                    let ticks = elapsed.saturating_mul(u128::from(clock_rate)) / 1_000_000_000;
                    let expected = i128::from(last) + i128::try_from(ticks.max(1)).unwrap_or(1);
                    expected - i128::from(raw)
                }
                None => 0,
            };
            self.layer = Some(layer);
        }
        let mapped = (i128::from(raw) + self.offset).max(0);
        let mapped = u64::try_from(mapped).unwrap_or(u64::MAX);
        self.last = Some((mapped, at));
        mapped
    }
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
            timeline: Timeline::default(),
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
    pub(crate) selector: Selector<TrackId>,
    /// The desired bitrate given to str0m's estimator for this peer.
    pub(crate) desired: DesiredRate,
    /// What the layers written to this peer cost, bit/s (at the last
    /// selection).
    pub(crate) sending: u64,
    /// The most [`Peer::sending`] was since this peer's last loss report:
    /// what a report's loss is of (a report after a switch down covers the
    /// higher rate sent before it).
    pub(crate) sending_peak: u64,
    /// When the loss reports of the last stats interval came (the peak is
    /// set against all of them, then restarted).
    pub(crate) reported_at: Option<Instant>,
    /// The peak those reports are measured against.
    pub(crate) report_peak: u64,
    /// When this peer last reported congested loss, and the rate that got
    /// through then ([`crate::layers::delivered`]): a cap on its estimate
    /// for [`crate::layers::LOSS_HOLD`].
    pub(crate) congested: Option<(Instant, u64)>,
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

#[cfg(test)]
mod timeline_tests {
    use super::Timeline;
    use std::time::{Duration, Instant};

    #[test]
    fn a_layer_switch_continues_the_recorded_time_line() {
        // One real instant to count from.
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut tl = Timeline::default();
        // Layer 0 from 1_000_000, 3000 ticks (33 ms at 90 kHz) a frame.
        assert_eq!(tl.map(0, 1_000_000, 90_000, t0), 1_000_000);
        let at = t0 + Duration::from_millis(33);
        assert_eq!(tl.map(0, 1_003_000, 90_000, at), 1_003_000);
        // Layer 2's clock starts elsewhere (lower): it continues 33 ms on.
        let at2 = at + Duration::from_millis(33);
        let switched = tl.map(2, 5_000, 90_000, at2);
        assert_eq!(switched, 1_003_000 + 2970);
        assert_eq!(
            tl.map(2, 8_000, 90_000, at2 + Duration::from_millis(33)),
            switched + 3000
        );
    }
}
