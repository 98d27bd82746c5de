//! The forwarding decision and what serves it: the core's switches
//! ([`Sfu::set_forward`], [`Sfu::set_receive`]), the slots subscribers need
//! for the tracks they may receive (`refresh_routes`), writing each frame to
//! those subscribers (`forward`), keyframe requests to publishers, and our
//! name for each codec for the recording.
//!
//! It must never write a frame the rule in "What is forwarded" (crate doc)
//! does not allow: not to its publisher, not into another lesson, not while
//! either switch is off. It must never make a slot for a track the core has
//! not allowed, since a subscriber would learn of it from the offer.

use std::sync::Arc;
use std::time::Duration;

use chaperone_protocol::{LessonId, MediaSource, ParticipantId, TrackId};
use str0m::media::{KeyframeRequest, KeyframeRequestKind, MediaData, MediaKind};
use tracing::debug;

use crate::layers::layer_index;
use crate::peer::{LAYERS, OutState, Outbound, PeerKey, kind_of, lesson_range};
use crate::stats::{MAX_SAMPLES, MediaSample};
use crate::{MediaOutput, RecordedFrame, Sfu};

/// Least time between two keyframe requests caused by upstream loss.
const LOSS_PLI_INTERVAL: Duration = Duration::from_secs(1);

impl Sfu {
    /// The core's `Forward` effect: may `track` be forwarded to anyone.
    pub fn set_forward(&mut self, lesson: LessonId, track: TrackId, on: bool) {
        let changed = if on {
            self.forwarding.insert((lesson, track))
        } else {
            self.forwarding.remove(&(lesson, track))
        };
        debug!(%lesson, %track, on, "media: forward");
        if changed && on {
            self.refresh_routes(lesson);
            self.request_keyframe(lesson, track);
        }
        self.pump();
    }

    /// The core's `Receive` effect: may `participant` receive media at all.
    pub fn set_receive(&mut self, lesson: LessonId, participant: ParticipantId, on: bool) {
        let key = PeerKey {
            lesson,
            participant,
        };
        let changed = if on {
            self.receiving.insert(key)
        } else {
            self.receiving.remove(&key)
        };
        debug!(%lesson, %participant, on, "media: receive");
        if changed && on {
            self.refresh_routes(lesson);
            let open: Vec<TrackId> = self
                .peers
                .get(&key)
                .map(|p| {
                    p.outbound
                        .iter()
                        .filter(|o| matches!(o.state, OutState::Open(_)))
                        .map(|o| o.track)
                        .collect()
                })
                .unwrap_or_default();
            for track in open {
                if self.forwarding.contains(&(lesson, track)) {
                    self.request_keyframe(lesson, track);
                }
            }
        }
        self.pump();
    }

    /// Makes sure every subscriber in `lesson` that may receive has a slot
    /// for every forwarded track of someone else. Slots are only ever made
    /// for what the core allowed, so a subscriber learns nothing about
    /// tracks it may not receive.
    pub(crate) fn refresh_routes(&mut self, lesson: LessonId) {
        let published: Vec<(TrackId, MediaKind)> = self
            .peers
            .range(lesson_range(lesson))
            .flat_map(|(k, p)| {
                p.inbound
                    .iter()
                    .map(move |i| (TrackId::new(k.participant, i.source), kind_of(i.source)))
            })
            .filter(|(t, _)| self.forwarding.contains(&(lesson, *t)))
            .collect();
        for (key, peer) in self.peers.range_mut(lesson_range(lesson)) {
            if key.lesson != lesson || !peer.negotiated || !self.receiving.contains(key) {
                continue;
            }
            for &(track, kind) in &published {
                if track.participant == key.participant
                    || peer.outbound.iter().any(|o| o.track == track)
                {
                    continue;
                }
                peer.outbound.push(Outbound::new(track, kind));
                self.dirty.insert(*key);
            }
        }
    }

    /// Asks the publisher of `track` for a keyframe (video only), so a
    /// subscriber that just started receiving sees a picture at once: of
    /// every layer it sends (each rate-limited, see [`KEYFRAME_INTERVAL`]).
    ///
    /// [`KEYFRAME_INTERVAL`]: crate::layers::KEYFRAME_INTERVAL
    pub(crate) fn request_keyframe(&mut self, lesson: LessonId, track: TrackId) {
        for layer in 0..LAYERS as u8 {
            self.request_layer_keyframe(lesson, track, layer);
        }
    }

    /// Asks the publisher of `track` for a keyframe of one layer, at most
    /// once per [`KEYFRAME_INTERVAL`] per layer whoever asks: a lossy
    /// subscriber cannot make the publisher encode keyframes faster.
    ///
    /// [`KEYFRAME_INTERVAL`]: crate::layers::KEYFRAME_INTERVAL
    pub(crate) fn request_layer_keyframe(&mut self, lesson: LessonId, track: TrackId, layer: u8) {
        if kind_of(track.source) != MediaKind::Video {
            return;
        }
        let key = PeerKey {
            lesson,
            participant: track.participant,
        };
        let now = self.now;
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let Some(inbound) = peer.inbound_of(track.source) else {
            return;
        };
        let mid = inbound.mid;
        let simulcast = inbound.simulcast();
        let rid = inbound.rids.get(usize::from(layer)).copied().flatten();
        // Without simulcast there is one layer, asked for without a rid; with
        // it, only layers seen so far can be named.
        if (simulcast && rid.is_none()) || (!simulcast && layer != 0) {
            return;
        }
        let Some(limiter) = inbound.limiters.get_mut(usize::from(layer)) else {
            return;
        };
        if !limiter.allow(now) {
            self.stats.keyframe_requests_damped += 1;
            return;
        }
        if let Some(mut writer) = peer.rtc.writer(mid)
            && let Err(e) = writer.request_keyframe(rid, KeyframeRequestKind::Pli)
        {
            debug!(%lesson, %track, error = %e, "media: keyframe request failed");
        }
        self.dirty.insert(key);
    }

    /// A subscriber asks for a keyframe on one of its slots: ask the
    /// publisher for one of the layer it receives, if the track is still
    /// forwarded (rate-limited per layer).
    pub(crate) fn handle_keyframe_request(&mut self, key: PeerKey, req: KeyframeRequest) {
        let slot = self.peers.get(&key).and_then(|p| {
            p.outbound
                .iter()
                .find(|o| o.state == OutState::Open(req.mid))
                .map(|o| (o.track, o.layer.or(o.target)))
        });
        if let Some((track, Some(layer))) = slot
            && self.forwarding.contains(&(key.lesson, track))
            && self.receiving.contains(&key)
        {
            self.request_layer_keyframe(key.lesson, track, layer);
        }
    }

    /// The forwarding decision (see "What is forwarded" in the crate documentation).
    pub(crate) fn forward(&mut self, from: PeerKey, data: MediaData) {
        let Some(source) = self.peers.get(&from).and_then(|p| p.source_of(data.mid)) else {
            self.stats.dropped_unmapped += 1;
            return;
        };
        let track = TrackId::new(from.participant, source);
        if !self.forwarding.contains(&(from.lesson, track)) {
            self.stats.dropped_not_forwarded += 1;
            debug!(lesson = %from.lesson, %track, "media: frame of a track not forwarded dropped");
            return;
        }
        if !data.contiguous {
            // Frames were lost upstream: subscribers need a fresh keyframe,
            // but ask at most once a second per track.
            let last = self.last_loss_pli.get(&(from.lesson, track)).copied();
            if last.is_none_or(|t| self.now.saturating_duration_since(t) >= LOSS_PLI_INTERVAL) {
                self.last_loss_pli.insert((from.lesson, track), self.now);
                self.request_layer_keyframe(from.lesson, track, layer_index(data.rid.as_deref()));
            }
        }
        let keyframe = data.is_keyframe();
        let payload: Arc<[u8]> = data.data;
        let video = kind_of(source) == MediaKind::Video;
        let layer = layer_index(data.rid.as_deref());
        // Measure the layer, and learn its rid for keyframe requests.
        let now = self.now;
        let (simulcast, highest) =
            match self.peers.get_mut(&from).and_then(|p| p.inbound_of(source)) {
                Some(inbound) => {
                    let i = usize::from(layer);
                    if let Some(m) = inbound.meters.get_mut(i) {
                        m.record(now, payload.len());
                    }
                    if let Some(r) = inbound.rids.get_mut(i) {
                        *r = data.rid;
                    }
                    let highest = inbound.arriving(now).last().map(|&(l, _)| l);
                    (inbound.simulcast(), highest)
                }
                None => (false, None),
            };
        if self.config.record
            && self.record_layer(from, source, layer, keyframe, simulcast, highest)
        {
            self.stats.recorded += 1;
            let spec = data.params.spec();
            let raw = data.time.numer();
            let clock_rate = data.time.denom();
            let media_time = match self.peers.get_mut(&from).and_then(|p| p.inbound_of(source)) {
                Some(inbound) if video && simulcast => {
                    inbound
                        .timeline
                        .map(layer, raw, u64::from(clock_rate), data.network_time)
                }
                _ => raw,
            };
            self.outputs.push_back(MediaOutput::Record(RecordedFrame {
                lesson: from.lesson,
                track,
                at: data.network_time,
                media_time,
                clock_rate,
                codec: codec_of(spec.codec),
                discontinuity: !data.contiguous,
                data: payload.clone(),
            }));
        }
        let mut wanted_keyframe = None;
        for (key, peer) in self.peers.range_mut(lesson_range(from.lesson)) {
            if key.lesson != from.lesson
                || key.participant == from.participant
                || !self.receiving.contains(key)
            {
                continue;
            }
            let Some(out) = peer
                .outbound
                .iter_mut()
                .find(|o| o.track == track && matches!(o.state, OutState::Open(_)))
            else {
                tracing::trace!(lesson = %key.lesson, participant = %key.participant, %track, "media: no open slot yet");
                continue;
            };
            let OutState::Open(mid) = out.state else {
                continue;
            };
            if video {
                if peer.video_paused || out.target.is_none() {
                    self.stats.dropped_layer += 1;
                    continue;
                }
                if out.layer != Some(layer) {
                    // Switch to the target only at its keyframe (without
                    // simulcast there is nothing to switch between).
                    let switch = out.target == Some(layer) && (keyframe || !simulcast);
                    if switch {
                        if out.layer.is_some() {
                            self.stats.layer_switches += 1;
                        }
                        out.layer = Some(layer);
                    } else {
                        if out.target == Some(layer) {
                            wanted_keyframe = Some(layer);
                        }
                        continue;
                    }
                }
            }
            let Some(writer) = peer.rtc.writer(mid) else {
                debug!(lesson = %key.lesson, participant = %key.participant, %track, %mid, "media: slot has no writer");
                continue;
            };
            let Some(pt) = writer.match_params(data.params) else {
                debug!(lesson = %key.lesson, participant = %key.participant, %track, %mid, "media: no matching payload type");
                continue;
            };
            // The publisher's capture time, if it sent one, goes on unchanged.
            let writer = match data.ext_vals.abs_capture_time {
                Some(t) => writer.abs_capture_time(t),
                None => writer,
            };
            if let Err(e) = writer.write(pt, data.network_time, data.time, payload.clone()) {
                debug!(lesson = %key.lesson, participant = %key.participant, error = %e,
                    "media: write failed");
                continue;
            }
            self.stats.forwarded += 1;
            self.dirty.insert(*key);
            if !peer.delivered {
                peer.delivered = true;
                if self.samples.len() < MAX_SAMPLES {
                    self.samples.push_back(MediaSample::FirstDelivery {
                        lesson: key.lesson,
                        participant: key.participant,
                    });
                }
            }
        }
        // Some subscriber waits for a keyframe of this layer (one request
        // for all of them, rate-limited).
        if let Some(layer) = wanted_keyframe {
            self.request_layer_keyframe(from.lesson, track, layer);
        }
    }

    /// Whether this frame goes to the recording: every frame of audio and
    /// of a track without simulcast; of a simulcast track, one layer, the
    /// highest arriving, switched to at its keyframe.
    fn record_layer(
        &mut self,
        from: PeerKey,
        source: MediaSource,
        layer: u8,
        keyframe: bool,
        simulcast: bool,
        highest: Option<u8>,
    ) -> bool {
        if kind_of(source) != MediaKind::Video || !simulcast {
            return true;
        }
        let Some(inbound) = self.peers.get_mut(&from).and_then(|p| p.inbound_of(source)) else {
            return false;
        };
        if inbound.recorded == Some(layer) && highest == Some(layer) {
            return true;
        }
        if highest == Some(layer) {
            if keyframe {
                inbound.recorded = Some(layer);
                return true;
            }
            let track = TrackId::new(from.participant, source);
            self.request_layer_keyframe(from.lesson, track, layer);
            return false;
        }
        // A lower layer: recorded while the higher one has no keyframe yet
        // (so the recording has no gap while it switches up).
        inbound.recorded == Some(layer)
    }
}

/// Our name for a codec (the rest of the gateway never names str0m types).
fn codec_of(codec: str0m::format::Codec) -> chaperone_protocol::feed::MediaCodec {
    use chaperone_protocol::feed::MediaCodec;
    use str0m::format::Codec;
    match codec {
        Codec::Opus => MediaCodec::Opus,
        Codec::Vp8 => MediaCodec::Vp8,
        Codec::Vp9 => MediaCodec::Vp9,
        Codec::H264 => MediaCodec::H264,
        _ => MediaCodec::Other,
    }
}
