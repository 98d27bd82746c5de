//! Applying layer selection to the connections: each subscriber's
//! bandwidth estimate (str0m's send-side estimate, transport-wide congestion
//! control) in, each of its video slots' target layer and its paused state
//! out, and the desired bitrate str0m's estimator probes towards. The rule
//! itself is the pure [`crate::layers`]; this file only gathers its inputs
//! from the peers and writes its outputs back.
//!
//! It must never turn on a slot the forwarding rule does not allow (it only
//! chooses among layers of slots that exist, and `forward` still checks both
//! switches), and never read the clock.

use std::time::Duration;

use chaperone_protocol::{LessonId, MediaSource, ParticipantId, Role, TrackId};
use str0m::bwe::{Bitrate, BweKind};
use str0m::media::MediaKind;
use tracing::{debug, info};

use crate::layers::{Class, DOWN_SLACK, LOSS_HOLD, VideoTrack, desired, sending_cost};
use crate::negotiation::INITIAL_ESTIMATE;
use crate::peer::{OutState, PeerKey};
use crate::stats::{MAX_SAMPLES, MediaSample};
use crate::{MediaOutput, Sfu};

/// How often every subscriber's selection is re-evaluated besides on each
/// new estimate (for the upgrade hold and layers that stop arriving).
pub(crate) const RESELECT_INTERVAL: Duration = Duration::from_millis(500);

/// An audio track's rate before it has been measured, bit/s.
const AUDIO_GUESS: u64 = 40_000;

impl Sfu {
    /// `participant`'s role: staff's (teacher's) screen share and camera
    /// come before pupils' when a subscriber's link cannot carry every
    /// layer, and each estimate towards a subscriber is counted under its
    /// role. Without one a participant counts as a pupil for layers and
    /// under no role for the estimates.
    pub fn set_role(&mut self, lesson: LessonId, participant: ParticipantId, role: Role) {
        self.roles.insert((lesson, participant), role);
    }

    /// A new estimate of what can be sent to `key`.
    pub(crate) fn handle_estimate(&mut self, key: PeerKey, kind: BweKind) {
        let BweKind::Twcc { estimate, .. } = kind else {
            return;
        };
        let bps = estimate.as_u64();
        debug!(lesson = %key.lesson, participant = %key.participant, bps, "media: estimate");
        if let Some(peer) = self.peers.get_mut(&key) {
            peer.estimate = Some(bps);
        }
        if self.samples.len() < MAX_SAMPLES {
            let role = self.roles.get(&(key.lesson, key.participant)).copied();
            self.samples.push_back(MediaSample::Estimate { bps, role });
        }
        self.reselect(key);
    }

    /// Re-evaluates every subscriber, at most every [`RESELECT_INTERVAL`].
    pub(crate) fn reselect_due(&mut self) {
        if self.next_reselect.is_some_and(|t| self.now < t) {
            return;
        }
        self.next_reselect = Some(self.now + RESELECT_INTERVAL);
        let keys: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| p.negotiated && p.rtc.is_alive())
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            self.reselect(key);
        }
    }

    /// Chooses the layer of every video slot of subscriber `key`.
    pub(crate) fn reselect(&mut self, key: PeerKey) {
        let now = self.now;
        let Some(sub) = self.peers.get(&key) else {
            return;
        };
        let slots: Vec<(usize, TrackId, MediaKind)> = sub
            .outbound
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o.state, OutState::Open(_)))
            .filter(|(_, o)| self.forwarding.contains(&(key.lesson, o.track)))
            .map(|(i, o)| (i, o.track, o.kind))
            .collect();
        let mut audio = 0;
        let mut whole = 0;
        let mut tracks = Vec::new();
        for (i, track, kind) in slots {
            let publisher = PeerKey {
                lesson: key.lesson,
                participant: track.participant,
            };
            let (layers, simulcast) = self
                .peers
                .get_mut(&publisher)
                .and_then(|p| p.inbound_of(track.source))
                .map(|inbound| (inbound.arriving(now), inbound.simulcast()))
                .unwrap_or_default();
            if kind == MediaKind::Audio {
                audio += layers.first().map_or(AUDIO_GUESS, |&(_, r)| r);
                continue;
            }
            // A track without simulcast (an older client, the str0m test
            // clients, the load generator) has nothing to choose between:
            // it is forwarded whole, as before, and left out of the choice.
            if layers.is_empty() || !simulcast {
                // (What it costs is counted in what is sent, for loss.)
                whole += layers.first().map_or(0, |&(_, r)| r);
                continue;
            }
            let staff = self
                .roles
                .get(&(key.lesson, track.participant))
                .is_some_and(|r| r.is_staff());
            let class = match (staff, track.source) {
                (true, MediaSource::ScreenShare) => Class::StaffScreen,
                (true, _) => Class::StaffCamera,
                (false, MediaSource::ScreenShare) => Class::PupilScreen,
                (false, _) => Class::PupilCamera,
            };
            tracks.push((
                i,
                VideoTrack {
                    key: track,
                    class,
                    layers,
                },
            ));
        }
        let Some(sub) = self.peers.get_mut(&key) else {
            return;
        };
        // Audio goes through str0m's pacer too (first, at the pacing rate),
        // not straight out as str0m does by default: after the driver was
        // held up (a loaded machine), what waited went out as one burst,
        // and a burst of the teacher's audio overflowed a 150 kbit/s link's
        // 50 ms queue (26 packets in one go) while the link's average was
        // two thirds used.
        for o in &sub.outbound {
            if let (MediaKind::Audio, OutState::Open(mid)) = (o.kind, o.state)
                && let Some(tx) = sub.rtc.direct_api().stream_tx_by_mid(mid, None)
            {
                tx.set_unpaced(false);
            }
        }
        let (slots, tracks): (Vec<usize>, Vec<VideoTrack<TrackId>>) = tracks.into_iter().unzip();
        // A congested loss report caps the estimate for a while (it comes
        // sooner than the estimate's fall; see `delivered`).
        let measured = sub.estimate.unwrap_or(INITIAL_ESTIMATE);
        let (estimate, congested) = match sub.congested {
            Some((at, got)) if now.saturating_duration_since(at) < LOSS_HOLD => {
                // Less what the tracks sent whole take (not chosen here).
                let got = got.saturating_sub(sending_cost(whole, &tracks, &[]));
                (measured.min(got), true)
            }
            _ => (measured, false),
        };
        let chosen = sub
            .selector
            .select(now, estimate, congested, audio, &tracks);
        // Probe only for video: with audio alone there is nothing to
        // choose, and str0m's pacer would pad an audio-only connection
        // (which has no RTX to pad with) at every turn. With video, only
        // towards the next rung up (see `desired`), steadied so that a
        // wobble in a measured rate does not set off another probe.
        let want = if tracks.is_empty() {
            0
        } else {
            sub.desired.update(desired(estimate, audio, &tracks))
        };
        sub.rtc.bwe().set_desired_bitrate(Bitrate::bps(want));
        // What is written now (layers switch at keyframes, so this lags the
        // targets): what a loss report is set against.
        let written: Vec<Option<u8>> = slots
            .iter()
            .map(|&s| sub.outbound.get(s).and_then(|o| o.layer))
            .map(|l| if sub.video_paused { None } else { l })
            .collect();
        sub.sending = sending_cost(audio + whole, &tracks, &written);
        sub.sending_peak = sub.sending_peak.max(sub.sending);
        let mut keyframes = Vec::new();
        for (&slot, layer) in slots.iter().zip(&chosen.layers) {
            if let Some(out) = sub.outbound.get_mut(slot) {
                if out.target != *layer {
                    debug!(lesson = %key.lesson, participant = %key.participant,
                        track = %out.track, from = ?out.target, to = ?layer, estimate,
                        "media: layer target");
                }
                out.target = *layer;
                if let Some(l) = *layer
                    && out.layer != Some(l)
                {
                    keyframes.push((out.track, l));
                }
            }
        }
        if sub.video_paused != chosen.paused {
            sub.video_paused = chosen.paused;
            if chosen.paused {
                // What the paused video's send buffers hold is not sent
                // again: retransmissions answering the subscriber's NACKs
                // for frames from before the pause filled a 150 kbit/s
                // link and took the audio with them. (A fresh cache, with
                // str0m's defaults.)
                for o in &sub.outbound {
                    if let (MediaKind::Video, OutState::Open(mid)) = (o.kind, o.state)
                        && let Some(tx) = sub.rtc.direct_api().stream_tx_by_mid(mid, None)
                    {
                        tx.set_rtx_cache(1024, Duration::from_secs(3), Some(0.15));
                    }
                }
                // Paused on measured loss: str0m's pacer still holds up to
                // 2 s of the video written before, and drains it at its
                // estimate, above what the link carries (a 150 kbit/s link
                // lost a second of audio behind it). Restarting the
                // estimator from what got through paces that out at the
                // link's rate, audio first.
                if congested {
                    let from = (estimate as f64 * DOWN_SLACK) as u64;
                    sub.rtc.bwe().reset(Bitrate::bps(from.max(AUDIO_GUESS)));
                }
            }
            info!(lesson = %key.lesson, participant = %key.participant, estimate,
                paused = chosen.paused, "media: video for this subscriber");
            self.outputs.push_back(MediaOutput::VideoPaused {
                lesson: key.lesson,
                participant: key.participant,
                paused: chosen.paused,
            });
        }
        self.dirty.insert(key);
        for (track, layer) in keyframes {
            self.request_layer_keyframe(key.lesson, track, layer);
        }
    }
}
