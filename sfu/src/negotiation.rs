//! Who is in the media plane and what their SDP says: adding and removing
//! participants (one str0m [`Rtc`] each, ICE-lite, the advertised address
//! its only candidate), the participant's offers and answers, the SFU's own
//! offers for the slots a subscriber still lacks (`negotiate`), and which
//! source each m-line a participant publishes on carries
//! (`handle_media_added`, see "Which track is which" in the crate doc).
//!
//! It must never put any candidate but the configured advertised address in
//! an answer (see "What it must never do" in the crate doc), never parse an
//! SDP longer than [`MAX_SDP_LEN`], and never offer a slot on its own: the
//! slots it offers are the ones `refresh_routes` asked for.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use chaperone_protocol::{LessonId, MediaSource, ParticipantId};
use str0m::bwe::Bitrate;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::rtp::Extension;
use str0m::{Candidate, Rtc};
use tracing::{debug, info};

use crate::layers::{DesiredRate, Selector};
use crate::peer::{Inbound, OutState, Peer, PeerKey, lesson_range};
use crate::stats::STATS_INTERVAL;
use crate::{MAX_SDP_LEN, MediaError, MediaOutput, Sfu};

/// RTP header extension id of abs-capture-time in the SFU's offers (free in
/// str0m's standard map, which Chrome's matches).
const ABS_CAPTURE_TIME_EXT_ID: u8 = 7;

/// The bandwidth estimate a new connection starts from, bit/s: enough for
/// audio and the middle camera layer; probing finds more.
pub(crate) const INITIAL_ESTIMATE: u64 = 800_000;

impl Sfu {
    /// Adds an admitted participant. They send and receive nothing until an
    /// offer is accepted and the core turns forwarding on.
    pub fn add_participant(
        &mut self,
        lesson: LessonId,
        participant: ParticipantId,
    ) -> Result<(), MediaError> {
        let key = PeerKey {
            lesson,
            participant,
        };
        if self.peers.contains_key(&key) {
            return Err(MediaError::AlreadyAdded {
                lesson,
                participant,
            });
        }
        // `build` only fails (panics, inside str0m) without a crypto provider
        // or when DTLS certificate generation fails; the provider is set
        // here, and key generation from the OS RNG does not fail.
        let mut rtc = Rtc::builder()
            .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_h264(true)
            .enable_vp9(true)
            .set_stats_interval(Some(STATS_INTERVAL))
            // Send-side bandwidth estimation (transport-wide congestion
            // control) towards every subscriber: what layer selection
            // (`layers`) chooses from.
            .enable_bwe(Some(Bitrate::bps(INITIAL_ESTIMATE)))
            // abs-capture-time (the sender's capture clock on each frame's
            // first packet): carried through `forward` so receivers can
            // sync and measure one-way latency through the SFU.
            .set_extension(ABS_CAPTURE_TIME_EXT_ID, Extension::AbsoluteCaptureTime)
            .build(self.now);
        let candidate = Candidate::host(self.config.advertised, "udp")
            .map_err(|_| MediaError::BadAdvertisedAddress(self.config.advertised))?;
        rtc.add_local_candidate(candidate);
        self.peers.insert(
            key,
            Peer {
                rtc,
                negotiated: false,
                inbound: Vec::new(),
                outbound: Vec::new(),
                pending: None,
                next_timeout: None,
                delivered: false,
                totals: HashMap::new(),
                estimate: None,
                selector: Selector::default(),
                desired: DesiredRate::default(),
                sending: 0,
                sending_peak: 0,
                reported_at: None,
                report_peak: 0,
                congested: None,
                video_paused: false,
            },
        );
        self.dirty.insert(key);
        info!(%lesson, %participant, "media: participant added");
        Ok(())
    }

    /// Removes a participant: their connection closes, nothing of theirs is
    /// forwarded and nothing is sent to them again.
    pub fn remove_participant(&mut self, lesson: LessonId, participant: ParticipantId) {
        let key = PeerKey {
            lesson,
            participant,
        };
        if let Some(mut peer) = self.peers.remove(&key) {
            peer.rtc.disconnect();
            info!(%lesson, %participant, "media: participant removed");
        }
        self.by_addr.retain(|_, k| *k != key);
        self.dirty.remove(&key);
        self.receiving.remove(&key);
        self.roles.remove(&(lesson, participant));
        self.forwarding
            .retain(|(l, t)| !(*l == lesson && t.participant == participant));
        self.last_loss_pli
            .retain(|(l, t), _| !(*l == lesson && t.participant == participant));
        // Nobody else keeps a slot for a publisher that is gone; the m-lines
        // stay (silent) until the subscriber renegotiates.
        for (k, p) in self.peers.range_mut(lesson_range(lesson)) {
            if k.lesson == lesson {
                p.outbound
                    .retain(|o| o.track.participant != participant || o.state != OutState::Wanted);
            }
        }
    }

    /// Accepts a participant's SDP offer and returns the answer. The answer's
    /// only candidate is the advertised address.
    pub fn accept_offer(
        &mut self,
        lesson: LessonId,
        participant: ParticipantId,
        sdp: &str,
    ) -> Result<String, MediaError> {
        if sdp.len() > MAX_SDP_LEN {
            return Err(MediaError::SdpTooLong(sdp.len()));
        }
        let key = PeerKey {
            lesson,
            participant,
        };
        let peer = self
            .peers
            .get_mut(&key)
            .ok_or(MediaError::UnknownParticipant {
                lesson,
                participant,
            })?;
        let offer =
            SdpOffer::from_sdp_string(sdp).map_err(|e| MediaError::MalformedSdp(e.to_string()))?;
        let answer = peer
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| MediaError::SdpRefused(e.to_string()))?;
        peer.negotiated = true;
        // A client offer invalidates ours (str0m forgets it): offer again later.
        peer.pending = None;
        for o in &mut peer.outbound {
            if let OutState::Negotiating(_) = o.state {
                o.state = OutState::Wanted;
            }
        }
        self.dirty.insert(key);
        self.refresh_routes(lesson);
        self.pump();
        Ok(answer.to_sdp_string())
    }

    /// Accepts a participant's answer to an offer from [`MediaOutput::Offer`].
    pub fn accept_answer(
        &mut self,
        lesson: LessonId,
        participant: ParticipantId,
        sdp: &str,
    ) -> Result<(), MediaError> {
        if sdp.len() > MAX_SDP_LEN {
            return Err(MediaError::SdpTooLong(sdp.len()));
        }
        let key = PeerKey {
            lesson,
            participant,
        };
        let peer = self
            .peers
            .get_mut(&key)
            .ok_or(MediaError::UnknownParticipant {
                lesson,
                participant,
            })?;
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| MediaError::MalformedSdp(e.to_string()))?;
        let pending = peer.pending.take().ok_or(MediaError::NoPendingOffer)?;
        let accepted = peer.rtc.sdp_api().accept_answer(pending, answer);
        let mut opened = Vec::new();
        for o in &mut peer.outbound {
            if let OutState::Negotiating(mid) = o.state {
                o.state = if accepted.is_ok() {
                    opened.push(o.track);
                    OutState::Open(mid)
                } else {
                    OutState::Wanted
                };
            }
        }
        self.dirty.insert(key);
        accepted.map_err(|e| MediaError::SdpRefused(e.to_string()))?;
        for track in opened {
            if self.forwarding.contains(&(lesson, track)) && self.receiving.contains(&key) {
                self.request_keyframe(lesson, track);
            }
        }
        self.pump();
        Ok(())
    }

    /// Offers the participant the slots it still lacks, if no offer is out.
    pub(crate) fn negotiate(key: PeerKey, peer: &mut Peer, outputs: &mut VecDeque<MediaOutput>) {
        if !peer.negotiated
            || peer.pending.is_some()
            || !peer.rtc.is_alive()
            || !peer.outbound.iter().any(|o| o.state == OutState::Wanted)
        {
            return;
        }
        let mut api = peer.rtc.sdp_api();
        let mut added = Vec::new();
        for (i, o) in peer.outbound.iter().enumerate() {
            if o.state == OutState::Wanted {
                let stream = o.track.participant.to_string();
                let mid = api.add_media(
                    o.kind,
                    Direction::SendOnly,
                    Some(stream),
                    Some(o.track.to_string()),
                    None,
                );
                added.push((i, mid));
            }
        }
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        for (i, mid) in added {
            if let Some(o) = peer.outbound.get_mut(i) {
                o.state = OutState::Negotiating(mid);
            }
        }
        peer.pending = Some(pending);
        outputs.push_back(MediaOutput::Offer {
            lesson: key.lesson,
            participant: key.participant,
            sdp: offer.to_sdp_string(),
        });
    }

    /// A new m-line in `key`'s session: if they send on it, it carries the
    /// next source of its kind they have not mapped yet.
    pub(crate) fn handle_media_added(
        &mut self,
        key: PeerKey,
        mid: Mid,
        kind: MediaKind,
        dir: Direction,
    ) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if !dir.is_receiving() || peer.source_of(mid).is_some() {
            return;
        }
        let has = |s: MediaSource| peer.inbound.iter().any(|i| i.source == s);
        let source = match kind {
            MediaKind::Audio if !has(MediaSource::Microphone) => MediaSource::Microphone,
            MediaKind::Video if !has(MediaSource::Camera) => MediaSource::Camera,
            MediaKind::Video if !has(MediaSource::ScreenShare) => MediaSource::ScreenShare,
            _ => {
                debug!(lesson = %key.lesson, participant = %key.participant, %mid,
                    "media: m-line is no known source; its media is dropped");
                return;
            }
        };
        peer.inbound.push(Inbound::new(mid, source));
        debug!(lesson = %key.lesson, participant = %key.participant, %mid,
            source = source.as_str(), "media: source mapped");
        self.refresh_routes(key.lesson);
    }
}
