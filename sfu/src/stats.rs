//! What the SFU counts and measures for the metrics: the [`SfuStats`]
//! counters, the [`MediaSample`]s the driver collects with
//! [`Sfu::poll_sample`], and the turning of str0m's per-stream RTCP running
//! totals into increments.
//!
//! It only observes: it must never change what is forwarded or negotiated,
//! and a sample must never carry an address. Past [`MAX_SAMPLES`] samples are
//! dropped, so a driver that never collects cannot grow the SFU.

use std::time::Duration;

use chaperone_protocol::{LessonId, ParticipantId};
use str0m::media::{MediaKind, Mid};
use str0m::stats::{MediaEgressStats, MediaIngressStats};
use tracing::debug;

use crate::Sfu;
use crate::layers::delivered;
use crate::peer::{OutState, PeerKey, kind_of};

/// How often each connection reports its RTCP figures (loss, jitter, RTT,
/// packet counts) for the metrics.
pub(crate) const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Measurements kept for the driver to collect; past it they are dropped
/// (a driver that never collects must not grow the SFU).
pub(crate) const MAX_SAMPLES: usize = 4096;

/// Counters for the metrics registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SfuStats {
    /// Frames written to a subscriber.
    pub forwarded: u64,
    /// Frames dropped because their track is not forwarded (muted, camera
    /// off, no permission): a client sending what it was told not to.
    pub dropped_not_forwarded: u64,
    /// Frames dropped because they came on an m-line that is no known source.
    pub dropped_unmapped: u64,
    /// Datagrams no participant accepted (unknown address, garbage).
    pub dropped_datagrams: u64,
    /// Forwarded frames handed to the recorder.
    pub recorded: u64,
    /// Forwarded frames the recorder could not take in time (a recording gap).
    pub record_dropped: u64,
    /// RTP packets sent to subscribers (from the per-track statistics).
    pub packets_forwarded: u64,
    /// RTP payload bytes sent to subscribers (from the per-track statistics).
    pub bytes_forwarded: u64,
    /// NACKs the SFU sent to publishers.
    pub nacks_uplink: u64,
    /// NACKs subscribers sent to the SFU.
    pub nacks_downlink: u64,
    /// Picture loss indications the SFU sent to publishers.
    pub plis_uplink: u64,
    /// Picture loss indications subscribers sent to the SFU.
    pub plis_downlink: u64,
    /// Published tracks being forwarded now (a gauge, not a total).
    pub tracks_active: u64,
    /// Video frames not written to a subscriber because of its layer
    /// selection (another layer chosen, waiting for a keyframe, or paused).
    pub dropped_layer: u64,
    /// Times a subscriber's slot switched from one simulcast layer to another.
    pub layer_switches: u64,
    /// Keyframe requests not passed to a publisher because one for the same
    /// layer went out less than the rate limit ago.
    pub keyframe_requests_damped: u64,
    /// Subscribers whose video is paused now (a gauge).
    pub video_paused: u64,
}

/// Which leg of the SFU a measurement is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaPath {
    /// From a publisher to the SFU.
    Uplink,
    /// From the SFU to a subscriber.
    Downlink,
}

impl MediaPath {
    /// The metrics label value.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaPath::Uplink => "uplink",
            MediaPath::Downlink => "downlink",
        }
    }
}

/// A measurement for the metrics registry, collected by the driver with
/// [`Sfu::poll_sample`]. Never carries an address.
#[derive(Debug, Clone, PartialEq)]
// Not `non_exhaustive`: the driver counts every kind of sample.
pub enum MediaSample {
    /// One track's RTCP figures at a statistics interval.
    Rtcp {
        /// Which leg.
        path: MediaPath,
        /// Fraction of packets lost in the last report, 0 to 1.
        loss: Option<f32>,
        /// Interarrival jitter.
        jitter: Option<Duration>,
        /// Round-trip time.
        rtt: Option<Duration>,
    },
    /// A subscriber's new send-side bandwidth estimate.
    Estimate {
        /// Bits per second.
        bps: u64,
        /// The subscriber's role, if the SFU was told it.
        role: Option<chaperone_protocol::Role>,
    },
    /// The first media frame was written to this participant since they
    /// joined the media plane (the end of their join).
    FirstDelivery {
        /// The lesson.
        lesson: LessonId,
        /// The participant.
        participant: ParticipantId,
    },
}

/// The running totals str0m reports per stream, to turn into increments.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StreamTotals {
    packets: u64,
    bytes: u64,
    nacks: u64,
    plis: u64,
}

impl Sfu {
    /// The counters so far, and the tracks being forwarded now.
    pub fn stats(&self) -> SfuStats {
        let active = self
            .forwarding
            .iter()
            .filter(|(lesson, track)| {
                self.peers
                    .get(&PeerKey {
                        lesson: *lesson,
                        participant: track.participant,
                    })
                    .is_some_and(|p| p.mid_of(track.source).is_some())
            })
            .count();
        SfuStats {
            tracks_active: u64::try_from(active).unwrap_or(u64::MAX),
            video_paused: self.peers.values().filter(|p| p.video_paused).count() as u64,
            ..self.stats
        }
    }

    /// Frames written to subscribers so far (cheap: for every datagram).
    pub fn frames_forwarded(&self) -> u64 {
        self.stats.forwarded
    }

    /// The next measurement for the metrics, if any. Drain after every call.
    pub fn poll_sample(&mut self) -> Option<MediaSample> {
        self.samples.pop_front()
    }

    /// Keeps a measurement for the driver, unless [`MAX_SAMPLES`] wait already.
    fn sample(&mut self, s: MediaSample) {
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push_back(s);
        }
    }

    /// Counts a frame the recorder could not take (the driver's channel was full).
    pub fn count_record_dropped(&mut self) {
        self.stats.record_dropped += 1;
    }

    /// A publisher's stream to the SFU reported its RTCP figures.
    pub(crate) fn handle_ingress_stats(&mut self, key: PeerKey, s: MediaIngressStats) {
        let jitter = self.jitter(key, s.mid, false, s.jitter);
        self.count_stream(
            key,
            s.mid,
            false,
            StreamTotals {
                packets: s.packets,
                bytes: s.bytes,
                nacks: s.nacks,
                plis: s.plis,
            },
        );
        self.sample(MediaSample::Rtcp {
            path: MediaPath::Uplink,
            loss: s.loss,
            jitter,
            rtt: s.rtt,
        });
    }

    /// A stream from the SFU to a subscriber reported its RTCP figures.
    pub(crate) fn handle_egress_stats(&mut self, key: PeerKey, s: MediaEgressStats) {
        let jitter = s
            .remote
            .as_ref()
            .and_then(|r| self.jitter(key, s.mid, true, r.jitter));
        self.count_stream(
            key,
            s.mid,
            true,
            StreamTotals {
                packets: s.packets,
                bytes: s.bytes,
                nacks: s.nacks,
                plis: s.plis,
            },
        );
        self.sample(MediaSample::Rtcp {
            path: MediaPath::Downlink,
            loss: s.loss,
            jitter,
            rtt: s.rtt,
        });
        // Heavy loss towards a subscriber: its link carries less than was
        // sent, now (faster than the estimate says so; see `delivered`).
        let now = self.now;
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        // Measured against the most that was sent since the last reports
        // (one per stream, all in the same interval).
        if s.loss.is_some()
            && peer
                .reported_at
                .is_none_or(|at| now.saturating_duration_since(at) >= STATS_INTERVAL / 2)
        {
            peer.reported_at = Some(now);
            peer.sending_peak = peer.sending_peak.max(peer.sending);
            peer.report_peak = peer.sending_peak;
            peer.sending_peak = peer.sending;
        }
        let sent = peer.report_peak.max(peer.sending);
        if let Some(got) = s.loss.and_then(|l| delivered(sent, l)) {
            // The lowest of this interval's reports (one per stream).
            let same = peer
                .congested
                .filter(|&(at, _)| now.saturating_duration_since(at) < STATS_INTERVAL / 2);
            let got = same.map_or(got, |(_, g)| g.min(got));
            peer.congested = Some((now, got));
            debug!(lesson = %key.lesson, participant = %key.participant, loss = ?s.loss,
                sending = sent, delivered = got, "media: congested downlink");
            self.reselect(key);
        }
    }

    /// Jitter in RTP timestamp units as a duration, from the clock of the
    /// media on `mid` (48 kHz audio, 90 kHz video).
    fn jitter(&self, key: PeerKey, mid: Mid, egress: bool, units: u32) -> Option<Duration> {
        let peer = self.peers.get(&key)?;
        let kind = if egress {
            peer.outbound
                .iter()
                .find(|o| o.state == OutState::Open(mid))
                .map(|o| o.kind)
        } else {
            peer.source_of(mid).map(kind_of)
        }?;
        let hz = if kind == MediaKind::Audio {
            48_000.0
        } else {
            90_000.0
        };
        Some(Duration::from_secs_f64(f64::from(units) / hz))
    }

    /// Adds what a stream counted since its last report to the totals.
    fn count_stream(&mut self, key: PeerKey, mid: Mid, egress: bool, now: StreamTotals) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let last = peer.totals.insert((mid, egress), now).unwrap_or_default();
        let d = |n: u64, l: u64| n.saturating_sub(l);
        if egress {
            self.stats.packets_forwarded += d(now.packets, last.packets);
            self.stats.bytes_forwarded += d(now.bytes, last.bytes);
            self.stats.nacks_downlink += d(now.nacks, last.nacks);
            self.stats.plis_downlink += d(now.plis, last.plis);
        } else {
            self.stats.nacks_uplink += d(now.nacks, last.nacks);
            self.stats.plis_uplink += d(now.plis, last.plis);
        }
    }
}
