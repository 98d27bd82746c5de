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
//! # Where the code is
//!
//! This file holds what the driver sees: the configuration, the outputs and
//! errors, and the run loop (datagrams, timeouts, [`Sfu::poll_output`], and
//! handing each connection's events to the concern that owns it).
//! `negotiation` owns who is in the media plane and every SDP, `forwarding`
//! the forwarding decision and keyframe requests, `stats` the counters and
//! samples for the metrics, and `peer` the per-participant state the others
//! share. Only `negotiation` reads or writes SDP; only `forwarding` writes
//! media.
//!
//! # What it must never do
//!
//! Read the clock, touch a socket, panic on a datagram or an SDP, or put any
//! candidate but the configured advertised address in an answer: participants
//! never learn each other's addresses (docs/security.md §19), everything goes
//! through the SFU.
//!
//! [`Rtc`]: str0m::Rtc
//! [`MediaSource::Microphone`]: chaperone_protocol::MediaSource::Microphone
//! [`MediaSource::Camera`]: chaperone_protocol::MediaSource::Camera
//! [`MediaSource::ScreenShare`]: chaperone_protocol::MediaSource::ScreenShare

#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

mod forwarding;
mod layers;
mod negotiation;
mod peer;
mod selection;
mod stats;

pub use stats::{MediaPath, MediaSample, SfuStats};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use chaperone_protocol::{LessonId, ParticipantId, Role, TrackId};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output};
use tracing::{debug, info, warn};

use crate::peer::{Peer, PeerKey};

/// Longest SDP accepted from a client, in bytes. A browser offer with three
/// tracks is a few kilobytes.
pub const MAX_SDP_LEN: usize = 64 * 1024;

/// The least time between the instant the SFU was driven at and the next
/// deadline it reports.
const MIN_WAKE: std::time::Duration = std::time::Duration::from_millis(1);

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
        /// The lesson whose participant it goes to (the shell may hold a
        /// lesson's transmissions back: a gateway node that can no longer
        /// prove it owns the lesson sends nothing for it).
        lesson: LessonId,
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
    /// Video to this participant is paused (`true`) because their link's
    /// estimate cannot carry even the lowest layer, or resumed (`false`).
    /// Audio goes on. Their page should say so.
    VideoPaused {
        /// The lesson.
        lesson: LessonId,
        /// The participant.
        participant: ParticipantId,
        /// Paused now, or resumed.
        paused: bool,
    },
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
    /// Participants' roles: staff's tracks come first in layer selection,
    /// and estimates are counted by the subscriber's role.
    roles: HashMap<(LessonId, ParticipantId), Role>,
    /// When every subscriber's layers are next re-evaluated.
    next_reselect: Option<Instant>,
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
            roles: HashMap::new(),
            next_reselect: None,
        })
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
        self.reselect_due();
        self.pump();
        // A deadline not after the time just handled (str0m's pacer, with
        // the bandwidth estimate on, asks for a turn "now" until time moves)
        // is taken a millisecond on: a driver that obeyed it would spin
        // until its clock ticked, and a virtual-time harness forever.
        for peer in self.peers.values_mut() {
            if let Some(t) = peer.next_timeout.as_mut()
                && *t <= now
            {
                *t = now + MIN_WAKE;
            }
        }
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
                            lesson: key.lesson,
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

    /// Hands one event of `key`'s connection to the concern that owns it.
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
            Event::EgressBitrateEstimate(kind) => self.handle_estimate(key, kind),
            _ => {}
        }
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
