//! The sans-IO SFU: one [`Rtc`] per participant, one UDP port for all of them,
//! and the forwarding decision the lesson core asks for.
//!
//! Call order (the same shape as str0m's `Rtc` and the lesson core):
//!
//! 1. [`Sfu::add_participant`] when the core admits someone, then
//!    [`Sfu::accept_offer`] with their SDP offer; the returned answer goes back
//!    over signaling.
//! 2. Feed it [`Sfu::handle_datagram`] for every UDP datagram and
//!    [`Sfu::handle_timeout`] at the deadline; apply the core's effects with
//!    [`Sfu::set_forward`] and [`Sfu::set_receive`].
//! 3. After every call, drain [`Sfu::poll_output`] until it returns
//!    [`MediaOutput::Timeout`]: send each [`MediaOutput::Transmit`] from the
//!    one socket and relay each [`MediaOutput::Offer`] to that participant,
//!    whose answer comes back through [`Sfu::accept_answer`].
//!
//! # What is forwarded
//!
//! A frame from track `T` (published by `P`) is written to subscriber `S` iff
//! the core said `set_forward(T, true)`, and `set_receive(S, true)`, and
//! `S != P`, and `S` is in the same lesson. Both default to off, so nothing
//! flows until the core says so; turning either off stops the next frame.
//! Everything else is dropped here, on the server, whatever the client sends,
//! and counted in [`SfuStats`].
//!
//! # Which track is which
//!
//! A participant publishes on the m-lines of their own offer that they send
//! on, mapped in m-line order: the first audio m-line is their
//! [`MediaSource::Microphone`], the first video m-line their
//! [`MediaSource::Camera`], the second video m-line their
//! [`MediaSource::ScreenShare`]. Any further m-line is not a source we know,
//! and what arrives on it is dropped. (Browsers keep m-line order stable
//! across renegotiation, so the mapping never changes for a session.)
//!
//! A subscriber receives each forwarded track on a send-only m-line the SFU
//! adds with a server-initiated offer ([`MediaOutput::Offer`]), once the track
//! is forwarded and the subscriber may receive. Its `msid` is the track's
//! [`TrackId`] (for example `p3 p3/camera`), never an address or a name.
//!
//! # What it must never do
//!
//! Read the clock, touch a socket, panic on a datagram or an SDP, or put any
//! candidate but the configured advertised address in an answer: participants
//! never learn each other's addresses (SECURITY.md 19), everything goes
//! through the SFU.

#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

mod forwarding;
mod peer;
mod stats;

pub use stats::{MediaPath, MediaSample, SfuStats};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use chaperone_protocol::{LessonId, MediaSource, ParticipantId, TrackId};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::Extension;
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tracing::{debug, info, warn};

use crate::peer::{Inbound, OutState, Peer, PeerKey, lesson_range};
use crate::stats::STATS_INTERVAL;

/// Longest SDP accepted from a client, in bytes. A browser offer with three
/// tracks is a few kilobytes.
pub const MAX_SDP_LEN: usize = 64 * 1024;

/// RTP header extension id of abs-capture-time in the SFU's offers (free in
/// str0m's standard map, which Chrome's matches).
const ABS_CAPTURE_TIME_EXT_ID: u8 = 7;

/// Where the SFU tells participants to send media.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SfuConfig {
    /// The address and port put in every answer as the only host candidate:
    /// the server's public address and its single UDP port.
    pub advertised: SocketAddr,
    /// Emit every forwarded frame as [`MediaOutput::Record`] for the recorder.
    pub record: bool,
}

/// A frame of a forwarded track, for the recording: what the lesson core
/// allowed is what is recorded, whoever receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedFrame {
    /// The lesson.
    pub lesson: LessonId,
    /// Whose source.
    pub track: TrackId,
    /// When the SFU received it.
    pub at: Instant,
    /// Its RTP timestamp, extended, in `clock_rate` units.
    pub media_time: u64,
    /// The media clock, Hz.
    pub clock_rate: u32,
    /// The codec.
    pub codec: chaperone_protocol::feed::MediaCodec,
    /// Frames before it were lost upstream.
    pub discontinuity: bool,
    /// The depacketized frame.
    pub data: Arc<[u8]>,
}

/// Why the SFU refused a request.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaError {
    /// The participant was never added to the SFU, or has been removed.
    #[error("participant {participant} of lesson {lesson} is not in the media plane")]
    UnknownParticipant {
        /// The lesson.
        lesson: LessonId,
        /// The participant.
        participant: ParticipantId,
    },
    /// The participant is already in the media plane.
    #[error("participant {participant} of lesson {lesson} was already added")]
    AlreadyAdded {
        /// The lesson.
        lesson: LessonId,
        /// The participant.
        participant: ParticipantId,
    },
    /// The SDP is longer than [`MAX_SDP_LEN`].
    #[error("SDP of {0} bytes is too long")]
    SdpTooLong(usize),
    /// The SDP text does not parse.
    #[error("malformed SDP: {0}")]
    MalformedSdp(String),
    /// The SDP parses but the WebRTC stack refused it.
    #[error("SDP refused: {0}")]
    SdpRefused(String),
    /// An answer arrived but the SFU had no offer outstanding.
    #[error("no offer is outstanding for this answer")]
    NoPendingOffer,
    /// The configured advertised address cannot be a host candidate.
    #[error("advertised address {0} cannot be a host candidate")]
    BadAdvertisedAddress(SocketAddr),
    /// The media socket could not be bound or read.
    #[error("media socket: {0}")]
    Io(String),
    /// The media driver has stopped.
    #[error("the media driver has stopped")]
    Stopped,
}

/// What the SFU asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
// Not `non_exhaustive`: the driver must apply every kind of output, so a
// new one has to break its match.
pub enum MediaOutput {
    /// Send this datagram from the SFU's socket.
    Transmit {
        /// Destination (a participant's address).
        to: SocketAddr,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// Send this SDP offer to the participant (as a signaling `Offer`); their
    /// answer goes to [`Sfu::accept_answer`].
    Offer {
        /// The lesson.
        lesson: LessonId,
        /// The participant.
        participant: ParticipantId,
        /// SDP text.
        sdp: String,
    },
    /// A forwarded frame for the recording (only with [`SfuConfig::record`]).
    Record(RecordedFrame),
    /// Nothing more until this instant, or until the next input if `None`.
    Timeout(Option<Instant>),
}

/// The SFU. See the module documentation for the call order.
#[derive(Debug)]
pub struct Sfu {
    config: SfuConfig,
    /// The latest time seen in an input; new `Rtc`s start here.
    now: Instant,
    peers: BTreeMap<PeerKey, Peer>,
    /// Tracks the core allows to be forwarded, per lesson.
    forwarding: HashSet<(LessonId, TrackId)>,
    /// Participants the core allows to receive media.
    receiving: HashSet<PeerKey>,
    /// The peer each remote address last belonged to (a demux shortcut).
    by_addr: HashMap<SocketAddr, PeerKey>,
    /// Peers that had input since they were last polled.
    dirty: BTreeSet<PeerKey>,
    outputs: VecDeque<MediaOutput>,
    stats: SfuStats,
    /// When each video track last had a loss-driven keyframe request.
    last_loss_pli: HashMap<(LessonId, TrackId), Instant>,
    /// Measurements for the driver to collect.
    samples: VecDeque<MediaSample>,
    /// No peer's deadline is earlier than this. It may be earlier than the
    /// real minimum (a spurious wake-up, after which it is recomputed), never
    /// later: kept so that [`Sfu::poll_output`] does not scan every peer once
    /// per datagram.
    earliest: Option<Instant>,
}

impl Sfu {
    /// A new SFU that advertises `config.advertised`, starting at `now`.
    pub fn new(config: SfuConfig, now: Instant) -> Result<Self, MediaError> {
        // Refuse an address str0m would refuse later, once, at start-up.
        Candidate::host(config.advertised, "udp")
            .map_err(|_| MediaError::BadAdvertisedAddress(config.advertised))?;
        Ok(Self {
            config,
            now,
            peers: BTreeMap::new(),
            forwarding: HashSet::new(),
            receiving: HashSet::new(),
            by_addr: HashMap::new(),
            dirty: BTreeSet::new(),
            outputs: VecDeque::new(),
            stats: SfuStats::default(),
            last_loss_pli: HashMap::new(),
            earliest: None,
            samples: VecDeque::new(),
        })
    }

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

    /// One UDP datagram arrived at `to` (the advertised address) from `from`.
    /// Anything no participant accepts is dropped and counted.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        bytes: &[u8],
    ) {
        self.advance(now);
        let Ok(contents) = bytes.try_into() else {
            self.stats.dropped_datagrams += 1;
            debug!(%from, len = bytes.len(), "media: unparseable datagram dropped");
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: to,
                contents,
            },
        );
        // The last owner of this address first, then everyone (STUN from a
        // new address names its peer by ICE username).
        let cached = self
            .by_addr
            .get(&from)
            .copied()
            .filter(|k| self.peers.get(k).is_some_and(|p| p.rtc.accepts(&input)));
        let key = cached.or_else(|| {
            self.peers
                .iter()
                .find(|(_, p)| p.rtc.is_alive() && p.rtc.accepts(&input))
                .map(|(k, _)| *k)
        });
        let Some(key) = key else {
            self.stats.dropped_datagrams += 1;
            debug!(%from, len = bytes.len(), "media: datagram from no participant dropped");
            return;
        };
        self.by_addr.insert(from, key);
        if let Some(peer) = self.peers.get_mut(&key)
            && let Err(e) = peer.rtc.handle_input(input)
        {
            warn!(lesson = %key.lesson, participant = %key.participant, error = %e,
                "media: connection failed");
            peer.rtc.disconnect();
        }
        self.dirty.insert(key);
        self.pump();
    }

    /// Time passed: drive every connection whose deadline is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        for (key, peer) in self.peers.iter_mut() {
            if peer.next_timeout.is_none_or(|t| t <= now) {
                if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                    warn!(lesson = %key.lesson, participant = %key.participant, error = %e,
                        "media: connection failed");
                    peer.rtc.disconnect();
                }
                self.dirty.insert(*key);
            }
        }
        self.pump();
        self.earliest = self.peers.values().filter_map(|p| p.next_timeout).min();
    }

    /// The next thing to do. Drain until [`MediaOutput::Timeout`].
    pub fn poll_output(&mut self) -> MediaOutput {
        if let Some(o) = self.outputs.pop_front() {
            return o;
        }
        MediaOutput::Timeout(self.earliest)
    }

    fn advance(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    /// Offers the participant the slots it still lacks, if no offer is out.
    fn negotiate(key: PeerKey, peer: &mut Peer, outputs: &mut VecDeque<MediaOutput>) {
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

    /// Polls every peer with input until it has nothing more, forwarding
    /// the media that comes out, until nothing is left to do.
    fn pump(&mut self) {
        // Each round polls one peer; a frame makes at most one round per
        // subscriber, so this bound only guards against a bug looping.
        let bound = 16 + 8 * self.peers.len();
        for _ in 0..bound {
            let Some(key) = self.dirty.pop_first() else {
                return;
            };
            let mut events = Vec::new();
            if let Some(peer) = self.peers.get_mut(&key) {
                Self::negotiate(key, peer, &mut self.outputs);
                loop {
                    if !peer.rtc.is_alive() {
                        peer.next_timeout = None;
                        break;
                    }
                    match peer.rtc.poll_output() {
                        Ok(Output::Timeout(t)) => {
                            peer.next_timeout = Some(t);
                            self.earliest = Some(self.earliest.map_or(t, |e| e.min(t)));
                            break;
                        }
                        Ok(Output::Transmit(t)) => self.outputs.push_back(MediaOutput::Transmit {
                            to: t.destination,
                            // str0m hands over the buffer: no copy per datagram.
                            bytes: t.contents.into(),
                        }),
                        Ok(Output::Event(e)) => events.push(e),
                        Err(e) => {
                            warn!(lesson = %key.lesson, participant = %key.participant,
                                error = %e, "media: connection failed");
                            peer.rtc.disconnect();
                        }
                    }
                }
            }
            for event in events {
                self.handle_event(key, event);
            }
        }
        // The rest stay dirty and are polled at the next input or timeout.
        if !self.dirty.is_empty() {
            debug!(left = self.dirty.len(), "media: pump bounded");
        }
    }

    fn handle_event(&mut self, key: PeerKey, event: Event) {
        match event {
            Event::MediaAdded(added) => {
                self.handle_media_added(key, added.mid, added.kind, added.direction)
            }
            Event::MediaData(data) => self.forward(key, data),
            Event::KeyframeRequest(req) => self.handle_keyframe_request(key, req),
            Event::IceConnectionStateChange(state) => {
                debug!(lesson = %key.lesson, participant = %key.participant, ?state, "media: ice");
                if state == IceConnectionState::Disconnected {
                    self.by_addr.retain(|_, k| *k != key);
                }
            }
            Event::Connected => {
                info!(lesson = %key.lesson, participant = %key.participant, "media: connected");
            }
            Event::MediaIngressStats(s) => self.handle_ingress_stats(key, s),
            Event::MediaEgressStats(s) => self.handle_egress_stats(key, s),
            _ => {}
        }
    }

    fn handle_media_added(&mut self, key: PeerKey, mid: Mid, kind: MediaKind, dir: Direction) {
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
        peer.inbound.push(Inbound { mid, source });
        debug!(lesson = %key.lesson, participant = %key.participant, %mid,
            source = source.as_str(), "media: source mapped");
        self.refresh_routes(key.lesson);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        // The unit tests are a shell too: they need one real instant to start from.
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    const LESSON: LessonId = LessonId::from_bytes([1; 16]);

    fn sfu() -> Sfu {
        Sfu::new(
            SfuConfig {
                advertised: "127.0.0.1:4000".parse().expect("a literal address"),
                record: false,
            },
            t0(),
        )
        .expect("loopback is a valid host candidate")
    }

    #[test]
    fn unspecified_advertised_address_is_refused() {
        let config = SfuConfig {
            advertised: "0.0.0.0:4000".parse().expect("a literal address"),
            record: false,
        };
        assert!(matches!(
            Sfu::new(config, t0()),
            Err(MediaError::BadAdvertisedAddress(_))
        ));
    }

    #[test]
    fn idle_sfu_has_no_deadline_and_drops_junk() {
        let mut sfu = sfu();
        assert_eq!(sfu.poll_output(), MediaOutput::Timeout(None));
        let from: SocketAddr = "127.0.0.1:5000".parse().expect("a literal address");
        let to = sfu.config.advertised;
        for junk in [&[][..], &[0u8; 3], &[0x80; 200], &[22, 254, 253, 0, 0]] {
            sfu.handle_datagram(t0(), from, to, junk);
        }
        assert_eq!(sfu.stats().dropped_datagrams, 4);
        assert_eq!(sfu.poll_output(), MediaOutput::Timeout(None));
    }

    #[test]
    fn sdp_errors_are_typed() {
        let mut sfu = sfu();
        let p = ParticipantId(1);
        assert!(matches!(
            sfu.accept_offer(LESSON, p, "v=0"),
            Err(MediaError::UnknownParticipant { .. })
        ));
        sfu.add_participant(LESSON, p).expect("first add");
        assert!(matches!(
            sfu.add_participant(LESSON, p),
            Err(MediaError::AlreadyAdded { .. })
        ));
        assert!(matches!(
            sfu.accept_offer(LESSON, p, "garbage"),
            Err(MediaError::MalformedSdp(_))
        ));
        assert!(matches!(
            sfu.accept_offer(LESSON, p, &"x".repeat(MAX_SDP_LEN + 1)),
            Err(MediaError::SdpTooLong(_))
        ));
        assert!(matches!(
            sfu.accept_answer(LESSON, p, "garbage"),
            Err(MediaError::MalformedSdp(_))
        ));
        sfu.remove_participant(LESSON, p);
        assert!(matches!(
            sfu.accept_answer(LESSON, p, "v=0"),
            Err(MediaError::UnknownParticipant { .. })
        ));
    }
}
