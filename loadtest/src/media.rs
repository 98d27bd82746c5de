//! One simulated participant's media: a str0m [`Rtc`] (full ICE, DTLS-SRTP)
//! on its own UDP socket, publishing synthetic Opus-sized audio and
//! VP8-sized video on a fixed schedule, and measuring what it receives.
//!
//! Many of these run as tasks on one current-thread runtime, so the whole
//! generator uses one core. To stay light, received SRTP packets are *not*
//! decrypted: their RTP headers are in the clear, which is all a receiver
//! needs (SSRC, sequence number, and the origin timestamp carried in a
//! header extension). STUN, DTLS and RTCP go to str0m as usual. Arrival
//! times are the kernel's (`SO_TIMESTAMPNS`), so time this generator spends
//! busy elsewhere is not counted as forwarding latency.
//!
//! Published frames carry abs-capture-time (set at the moment of writing,
//! just before str0m packetises, encrypts and hands the packets over);
//! str0m adds abs-send-time itself. Which of the two a receiver reads as
//! the origin time is [`Origin`]: the Chaperone SFU rewrites every packet
//! and carries abs-capture-time through; Janus relays packets with their
//! extensions and does not know abs-capture-time, so there abs-send-time
//! (set by the publisher's str0m when the packet left) is the origin.
//!
//! A peer can also behave as a browser on a real network
//! ([`PeerConfig::full`]: NACK, RTX, every packet decrypted, frames recorded
//! by simulcast layer), publish a simulcast camera ([`Source::Simulcast`]),
//! and reach the server through an impairment relay ([`PeerConfig::via`]).
//! This file is long because publishing, receiving and measuring all work
//! on one peer's state (its `Rtc`, socket and report) in one task;
//! splitting them would pass that state between files.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chaperone_testkit::impair::Relay;
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{AbsCaptureTime, Extension};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::clock;
use crate::rtp::{self, Datagram, ExtIds, MSection};

/// The abs-capture-time id the generator offers (the SFU uses the same).
pub const CAPTURE_EXT_ID: u8 = 7;

/// Opus payload bytes per 20 ms packet (about 32 kbit/s).
const OPUS_BYTES: usize = 80;
/// A keyframe at least this often, and on request (at most twice a second).
const KEYFRAME_EVERY: Duration = Duration::from_secs(2);
const KEYFRAME_REQUEST_MIN: Duration = Duration::from_millis(500);
/// A keyframe is this many times a delta frame.
const KEYFRAME_FACTOR: usize = 4;
/// Datagrams read per wake-up before other tasks get a turn.
const READ_BURST: usize = 64;

/// How long a media session may take to connect before it is given up.
const CONNECT_BOUND: Duration = Duration::from_secs(20);

/// Where a receiver reads the time a frame left its publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The abs-capture-time header extension, in the clear (the Chaperone
    /// SFU carries it through): nothing is decrypted.
    CaptureTime,
    /// The [`ORIGIN_MARK`] stamp at the start of the frame's payload (Janus
    /// relays payloads untouched but negotiates neither abs-capture-time nor
    /// abs-send-time): the first packet of each frame is decrypted (str0m in
    /// RTP mode), the others are only counted.
    Payload,
}

/// Marks the origin stamp in a frame's payload: these 4 bytes, then the
/// Unix time in ns (8 bytes, big-endian), at the start of the frame data.
pub const ORIGIN_MARK: [u8; 4] = [0xc4, 0xa9, 0x5e, 0x0a];

/// A source to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Opus-sized audio, 50 packets per second.
    Audio,
    /// VP8-sized video at `bitrate_bps`, `fps` frames per second.
    Video {
        /// Average bits per second, keyframes included.
        bitrate_bps: u32,
        /// Frames per second.
        fps: u32,
    },
    /// A camera as the lesson page publishes it: the three simulcast layers
    /// of [`SIMULCAST_LAYERS`] on one m-line, each `fps` frames per second.
    Simulcast {
        /// Frames per second of every layer.
        fps: u32,
    },
}

/// The simulcast layers a [`Source::Simulcast`] camera sends, lowest first:
/// rid and average bit/s, as the lesson page's `CAMERA_LAYERS`.
pub const SIMULCAST_LAYERS: [(&str, u32); 3] = [("l", 150_000), ("m", 450_000), ("h", 1_200_000)];

/// The byte after the origin stamp names the layer a frame belongs to
/// (its index in [`SIMULCAST_LAYERS`]); this for a frame without simulcast.
pub const NO_LAYER: u8 = 0xff;

/// One m-line of the peer's own offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    /// What it carries.
    pub source: Source,
    /// Whether frames are sent on it (a muted mic or a camera that is off
    /// still has its m-line, as in a browser).
    pub sending: bool,
}

/// What one peer does.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Its own m-lines, in order; empty for a receive-only peer that waits
    /// for the server's offer.
    pub publish: Vec<Publish>,
    /// Where the origin time is read from.
    pub origin: Origin,
    /// The address the peer's socket binds (a loopback address, or for Janus,
    /// which never gathers on loopback, the machine's own address).
    pub bind: std::net::IpAddr,
    /// Behave as a browser on a real network: NACK and RTX negotiated, every
    /// received packet decrypted (so str0m sends transport-wide congestion
    /// feedback, NACKs and receiver reports, which the SFU's bandwidth
    /// estimate and retransmissions need), and every frame received
    /// recorded in [`MediaReport::frames`]. Off, the peer is the light
    /// load generator (headers only, no retransmission).
    pub full: bool,
    /// Reach the server through this relay: its address replaces the
    /// server's ICE candidate in every SDP from the server.
    pub via: Option<Arc<Relay>>,
}

/// The measurement window and stop signal every peer of a run shares.
#[derive(Debug)]
pub struct RunCtx {
    /// Frames whose origin time is in `[start, end)` Unix ns are counted
    /// (sent and received); `(0, 0)` until the scenario sets it.
    pub window: Cell<(u64, u64)>,
    /// Turns true when every peer should stop.
    pub stop: watch::Receiver<bool>,
    /// Peers that have received their first media packet.
    pub with_media: Cell<usize>,
    /// Packets received at or after this instant (Unix ns; 0: none set)
    /// are counted apart ([`MediaReport::packets_after_fence`]).
    pub fence: Cell<u64>,
}

impl RunCtx {
    fn in_window(&self, t: u64) -> bool {
        let (a, b) = self.window.get();
        t >= a && t < b
    }
}

/// SDP from the server for this peer.
#[derive(Debug)]
pub enum SigIn {
    /// The answer to the peer's own offer.
    Answer(String),
    /// A (re)offer from the server; the answer comes out of [`PeerIo::answers`].
    Offer(String),
}

/// A frame of one received stream, as counted at the receiver.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// The stream.
    pub ssrc: u32,
    /// When it left the publisher (Unix ns).
    pub origin_ns: u64,
    /// When the kernel received it here (Unix ns).
    pub rx_ns: u64,
}

/// One received stream.
#[derive(Debug, Clone, Default)]
pub struct RxStream {
    /// Packets received.
    pub packets: u64,
    /// Packets in the measurement window (by arrival).
    pub packets_in_window: u64,
    /// Sequence-number gaps (packets never seen), in the window.
    pub seq_lost: u64,
    /// The mid it came on, from the mid header extension.
    pub mid: Option<String>,
    /// Payload type of the last packet.
    pub pt: u8,
    /// Packets without payload (padding only).
    pub padding_only: u64,
    last_seq: Option<u16>,
    last_ts: Option<u32>,
}

/// A frame a [`PeerConfig::full`] peer received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxFrame {
    /// When str0m handed it over (Unix ns).
    pub rx_ns: u64,
    /// When it left its publisher (Unix ns, the payload's stamp).
    pub origin_ns: u64,
    /// Audio or video.
    pub audio: bool,
    /// The simulcast layer (index in [`SIMULCAST_LAYERS`]), or [`NO_LAYER`].
    pub layer: u8,
    /// Payload bytes.
    pub len: usize,
    /// The mid it arrived on.
    pub mid: Mid,
}

/// One published m-line's record.
#[derive(Debug, Clone, Default)]
pub struct TxStream {
    /// The mid str0m gave it.
    pub mid: String,
    /// Audio or video.
    pub audio: bool,
    /// Frames written.
    pub frames: u64,
    /// Frames whose origin time is in the window.
    pub frames_in_window: u64,
    /// Every frame written (with [`PeerConfig::full`]): origin time (Unix
    /// ns), layer ([`NO_LAYER`] without simulcast) and bytes.
    pub sent: Vec<(u64, u8, usize)>,
}

/// What a peer saw and did, returned when it stops.
#[derive(Debug, Default)]
pub struct MediaReport {
    /// DTLS up (Unix ns).
    pub connected_ns: Option<u64>,
    /// First media packet received (Unix ns, kernel time).
    pub first_media_ns: Option<u64>,
    /// Per published m-line.
    pub tx: Vec<TxStream>,
    /// Per received SSRC.
    pub rx: HashMap<u32, RxStream>,
    /// Frames received whose origin time is in the window.
    pub samples: Vec<Sample>,
    /// Every m-section of every SDP the server sent (SSRC/mid → track).
    pub sections: Vec<MSection>,
    /// Why it stopped early, if it did.
    pub failure: Option<String>,
    /// [`Origin::Payload`]: first packets handed to str0m, those it
    /// returned decrypted, and those with a stamp.
    pub decrypt: (u64, u64, u64),
    /// Retransmission packets received (not counted as media).
    pub rtx_packets: u64,
    /// RTP packets (media or retransmission) received at or after the
    /// run's fence ([`RunCtx::fence`]).
    pub packets_after_fence: u64,
    /// RTP packets this peer sent whose send time is in the window.
    pub tx_packets_in_window: u64,
    /// With [`PeerConfig::full`]: every frame received, in order.
    pub frames: Vec<RxFrame>,
    /// Own RTP streams: SSRC, mid and rid (what a relay's per-SSRC counts
    /// belong to).
    pub tx_ssrcs: Vec<(u32, String, Option<String>)>,
}

/// The signaling side's handle on a running peer.
#[derive(Debug)]
pub struct PeerIo {
    /// SDP from the server.
    pub sdp_in: mpsc::UnboundedSender<SigIn>,
    /// Answers to the server's offers.
    pub answers: mpsc::UnboundedReceiver<String>,
    /// The report, when the peer stops.
    pub done: tokio::task::JoinHandle<MediaReport>,
}

/// One stream a published m-line writes: its rid and index (simulcast),
/// frame period and delta-frame bytes.
type OutLayer = (Option<(Rid, u8)>, Duration, usize);

struct Outgoing {
    mid: Mid,
    /// The simulcast layer this writes: its rid and index.
    rid: Option<(Rid, u8)>,
    source: Source,
    sending: bool,
    next: Instant,
    period: Duration,
    ticks: u64,
    last_key: Option<Instant>,
    want_key: bool,
    key: Vec<u8>,
    delta: Vec<u8>,
    stats: usize,
}

/// A peer before it runs: its offer is made.
pub struct MediaPeer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    pending: Option<SdpPendingOffer>,
    out: Vec<Outgoing>,
    origin: Origin,
    ids: ExtIds,
    report: MediaReport,
    /// First packets of frames handed to str0m for decryption, with their
    /// arrival times ([`Origin::Payload`]).
    first_packets: HashMap<(u32, u32), u64>,
    /// The server's address (the source of its datagrams).
    remote: Option<SocketAddr>,
    full: bool,
    via: Option<Arc<Relay>>,
    /// The latest time given to str0m (its inputs never go back in time).
    fed: Instant,
}

impl std::fmt::Debug for MediaPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaPeer")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// A frame's bytes: the codec header (a VP8 frame tag, with the keyframe
/// start code for keyframes; nothing for Opus), then room for the origin
/// stamp, then filler: the servers forward frames without decoding them.
fn frame_template(len: usize, source: Source, key: bool, layer: u8) -> Vec<u8> {
    let mut f = match (source, key) {
        (Source::Audio, _) => Vec::new(),
        (Source::Video { .. } | Source::Simulcast { .. }, true) => {
            vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]
        }
        (Source::Video { .. } | Source::Simulcast { .. }, false) => vec![0x11, 0x02, 0x00],
    };
    f.extend_from_slice(&ORIGIN_MARK);
    f.extend_from_slice(&[0; 8]);
    f.push(layer);
    f.resize(len.max(f.len()), 0x55);
    f
}

/// The layer byte after the origin stamp (see [`NO_LAYER`]).
pub fn find_layer(payload: &[u8]) -> Option<u8> {
    let head = payload.get(..payload.len().min(48))?;
    let at = head.windows(4).position(|w| w == ORIGIN_MARK)? + 12;
    payload.get(at).copied()
}

/// `sdp` with every candidate's address replaced by `to` (the relay's):
/// the gateway is ICE-lite with one host candidate, so the client's only
/// path to it is then the relay. Returns the replaced address too.
pub fn via_candidate(sdp: &str, to: SocketAddr) -> (String, Option<SocketAddr>) {
    let mut server = None;
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let ending = &line[body.len()..];
        let mut parts: Vec<&str> = body.split(' ').collect();
        if body.starts_with("a=candidate:") && parts.len() > 5 {
            if let (Ok(ip), Ok(port)) = (
                parts[4].parse::<std::net::IpAddr>(),
                parts[5].parse::<u16>(),
            ) {
                server.get_or_insert(SocketAddr::new(ip, port));
            }
            let ip = to.ip().to_string();
            let port = to.port().to_string();
            parts[4] = &ip;
            parts[5] = &port;
            out.push_str(&parts.join(" "));
            out.push_str(ending);
        } else {
            out.push_str(line);
        }
    }
    (out, server)
}

/// The origin stamp in the first bytes of a packet's payload, if any.
pub fn find_origin(payload: &[u8]) -> Option<u64> {
    let head = payload.get(..payload.len().min(48))?;
    let at = head.windows(4).position(|w| w == ORIGIN_MARK)? + 4;
    Some(u64::from_be_bytes(
        payload.get(at..at + 8)?.try_into().ok()?,
    ))
}

impl MediaPeer {
    /// Binds a socket on loopback and, if the peer publishes, makes its offer.
    pub async fn new(config: &PeerConfig) -> Result<(MediaPeer, Option<String>)> {
        let socket = UdpSocket::bind(SocketAddr::new(config.bind, 0)).await?;
        setsockopt(&socket, sockopt::ReceiveTimestampns, &true)
            .context("SO_TIMESTAMPNS on the peer socket")?;
        // Room for what arrives while the generator's one thread is busy
        // with other peers (as a browser's network thread would have).
        setsockopt(&socket, sockopt::RcvBuf, &(1 << 20)).context("SO_RCVBUF on the peer socket")?;
        let local = socket.local_addr()?;
        let now = clock::now();
        let mut builder = Rtc::builder()
            .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .set_extension(CAPTURE_EXT_ID, Extension::AbsoluteCaptureTime)
            .set_stats_interval(None);
        // No NACKs either way: receivers never show str0m most packets, and
        // with no retransmissions a server forwards exactly what was sent
        // (so packets can be counted 1:1, and a loss is a loss).
        // (str0m NACKs whenever RTX is negotiated, so RTX goes too.)
        // A `full` peer keeps str0m's defaults: NACK and RTX, as a browser.
        if !config.full {
            let params: Vec<_> = builder
                .codec_config()
                .params()
                .iter()
                .map(|p| {
                    let mut q = str0m::format::PayloadParams::new(p.pt(), None, p.spec());
                    q.set_fb_nack(false);
                    q.set_fb_pli(p.fb_pli());
                    q.set_fb_fir(p.fb_fir());
                    q.set_fb_transport_cc(p.fb_transport_cc());
                    q
                })
                .collect();
            *builder.codec_config() = str0m::format::CodecConfig::new_from_payload_params(params);
        }
        if config.origin == Origin::Payload && config.publish.is_empty() {
            // A receiver that decrypts only first packets: RTP mode (no depacketizing).
            builder = builder.set_rtp_mode(true);
        }
        let mut rtc = builder.build(now);
        rtc.add_local_candidate(Candidate::host(local, "udp")?);
        let mut out = Vec::new();
        let mut pending = None;
        let mut offer = None;
        if !config.publish.is_empty() {
            let mut api = rtc.sdp_api();
            let mut mids = Vec::new();
            for p in &config.publish {
                let (kind, simulcast) = match p.source {
                    Source::Audio => (MediaKind::Audio, None),
                    Source::Video { .. } => (MediaKind::Video, None),
                    Source::Simulcast { .. } => {
                        let mut s = Simulcast::new();
                        for (rid, _) in SIMULCAST_LAYERS {
                            s.add_send_layer(SimulcastLayer::new(rid));
                        }
                        (MediaKind::Video, Some(s))
                    }
                };
                mids.push(api.add_media(kind, Direction::SendOnly, None, None, simulcast));
            }
            let (o, p) = api.apply().context("an offer with the peer's m-lines")?;
            offer = Some(o.to_sdp_string());
            pending = Some(p);
            // Start each source at a random phase, as real clients do.
            let jitter = Duration::from_micros(rand::random_range(0..20_000));
            for (i, (p, mid)) in config.publish.iter().zip(mids).enumerate() {
                let video = |bitrate_bps: u32, fps: u32| {
                    let fps = fps.max(1);
                    let frames_per_key =
                        (KEYFRAME_EVERY.as_millis() as usize * fps as usize / 1000).max(1);
                    let per_frame = bitrate_bps as usize / 8 / fps as usize;
                    // Average over a keyframe interval equals the bitrate.
                    let delta =
                        per_frame * frames_per_key / (frames_per_key - 1 + KEYFRAME_FACTOR).max(1);
                    (Duration::from_secs(1) / fps, delta)
                };
                let layers: Vec<OutLayer> = match p.source {
                    Source::Audio => vec![(None, Duration::from_millis(20), OPUS_BYTES)],
                    Source::Video { bitrate_bps, fps } => {
                        let (period, delta) = video(bitrate_bps, fps);
                        vec![(None, period, delta)]
                    }
                    Source::Simulcast { fps } => SIMULCAST_LAYERS
                        .iter()
                        .zip(0u8..)
                        .map(|(&(rid, bps), n)| {
                            let (period, delta) = video(bps, fps);
                            (Some((Rid::from(rid), n)), period, delta)
                        })
                        .collect(),
                };
                for (rid, period, delta_len) in layers {
                    let tag = rid.map_or(NO_LAYER, |(_, n)| n);
                    out.push(Outgoing {
                        mid,
                        rid,
                        source: p.source,
                        sending: p.sending,
                        next: now + jitter,
                        period,
                        ticks: 0,
                        last_key: None,
                        want_key: true,
                        key: frame_template(delta_len * KEYFRAME_FACTOR, p.source, true, tag),
                        delta: frame_template(delta_len, p.source, false, tag),
                        stats: i,
                    });
                }
            }
        }
        let report = MediaReport {
            // One record per m-line (a simulcast camera's layers share one).
            tx: out
                .iter()
                .filter(|o| o.rid.is_none_or(|(_, n)| n == 0))
                .map(|o| TxStream {
                    mid: o.mid.to_string(),
                    audio: o.source == Source::Audio,
                    ..TxStream::default()
                })
                .collect(),
            ..MediaReport::default()
        };
        Ok((
            MediaPeer {
                rtc,
                socket,
                local,
                pending,
                out,
                origin: config.origin,
                ids: ExtIds::default(),
                report,
                first_packets: HashMap::new(),
                remote: None,
                full: config.full,
                via: config.via.clone(),
                fed: now,
            },
            offer,
        ))
    }

    /// The mids of the peer's own m-lines, in the order of its config.
    pub fn own_mids(&self) -> Vec<String> {
        let mut mids: Vec<String> = self.out.iter().map(|o| o.mid.to_string()).collect();
        mids.dedup();
        mids
    }

    /// Starts the peer on the current `LocalSet`.
    pub fn spawn(self, ctx: Rc<RunCtx>) -> PeerIo {
        let (sdp_in, sdp_rx) = mpsc::unbounded_channel();
        let (answers_tx, answers) = mpsc::unbounded_channel();
        let done = tokio::task::spawn_local(self.run(ctx, sdp_rx, answers_tx));
        PeerIo {
            sdp_in,
            answers,
            done,
        }
    }

    fn learn_sdp(&mut self, sdp: &str) {
        let (ids, sections) = rtp::parse_sdp(sdp);
        // Ids are per session: keep any the newer SDP repeats.
        self.ids.capture_time = ids.capture_time.or(self.ids.capture_time);
        self.ids.send_time = ids.send_time.or(self.ids.send_time);
        self.ids.mid = ids.mid.or(self.ids.mid);
        for pt in ids.rtx.into_iter().flatten() {
            if !self.ids.is_rtx(pt)
                && let Some(slot) = self.ids.rtx.iter_mut().find(|s| s.is_none())
            {
                *slot = Some(pt);
            }
        }
        self.report.sections.extend(sections);
    }

    /// The server's SDP as this peer sees it: through its relay, if any.
    fn route(&self, sdp: String) -> String {
        let Some(relay) = &self.via else { return sdp };
        let (sdp, server) = via_candidate(&sdp, relay.addr());
        if let Some(server) = server {
            relay.set_server(server);
        }
        sdp
    }

    fn handle_sdp(&mut self, msg: SigIn, answers: &mpsc::UnboundedSender<String>) -> Result<()> {
        let msg = match msg {
            SigIn::Answer(sdp) => SigIn::Answer(self.route(sdp)),
            SigIn::Offer(sdp) => SigIn::Offer(self.route(sdp)),
        };
        match msg {
            SigIn::Answer(sdp) => {
                self.learn_sdp(&sdp);
                let pending = self.pending.take().context("an answer without an offer")?;
                self.rtc
                    .sdp_api()
                    .accept_answer(pending, SdpAnswer::from_sdp_string(&sdp)?)?;
            }
            SigIn::Offer(sdp) => {
                self.learn_sdp(&sdp);
                let answer = self
                    .rtc
                    .sdp_api()
                    .accept_offer(SdpOffer::from_sdp_string(&sdp)?)?;
                // Nobody listening means signaling is gone; the peer stops soon.
                let _ = answers.send(answer.to_sdp_string());
            }
        }
        Ok(())
    }

    async fn run(
        mut self,
        ctx: Rc<RunCtx>,
        mut sdp_rx: mpsc::UnboundedReceiver<SigIn>,
        answers: mpsc::UnboundedSender<String>,
    ) -> MediaReport {
        let mut stop = ctx.stop.clone();
        // As a page does: a media session that never connects is given up
        // (and the participant rejoins).
        let connect_by = clock::now() + CONNECT_BOUND;
        let mut buf = vec![0u8; 2048];
        let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
        loop {
            let timeout = match self.drain(&ctx).await {
                Ok(t) => t,
                Err(e) => {
                    self.report.failure = Some(e.to_string());
                    break;
                }
            };
            let connected = self.report.connected_ns.is_some();
            if !connected && clock::now() >= connect_by {
                self.report.failure = Some(format!("not connected within {CONNECT_BOUND:?}"));
                break;
            }
            let mut wake = if connected {
                timeout
            } else {
                timeout.min(connect_by)
            };
            if connected {
                for o in self.out.iter().filter(|o| o.sending) {
                    wake = wake.min(o.next);
                }
            }
            tokio::select! {
                r = self.socket.readable() => {
                    if r.is_err() { continue; }
                    for _ in 0..READ_BURST {
                        let fd = self.socket.as_raw_fd();
                        let got = self.socket.try_io(Interest::READABLE, || {
                            let mut iov = [IoSliceMut::new(&mut buf)];
                            let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_DONTWAIT)
                                .map_err(std::io::Error::from)?;
                            let mut ts = None;
                            if let Ok(cmsgs) = msg.cmsgs() {
                                for c in cmsgs {
                                    if let ControlMessageOwned::ScmTimestampns(t) = c {
                                        ts = Some(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64);
                                    }
                                }
                            }
                            let from = msg.address.and_then(|a| a.as_sockaddr_in().map(|s| SocketAddr::from(std::net::SocketAddrV4::from(*s))));
                            Ok((msg.bytes, from, ts))
                        });
                        match got {
                            Ok((n, Some(from), ts)) => {
                                let rx_ns = ts.unwrap_or_else(clock::unix_ns);
                                self.handle_datagram(&ctx, n, &buf, from, rx_ns);
                            }
                            Ok((_, None, _)) => {}
                            Err(_) => break,
                        }
                    }
                }
                msg = sdp_rx.recv() => match msg {
                    Some(msg) => if let Err(e) = self.handle_sdp(msg, &answers) {
                        self.report.failure = Some(format!("sdp: {e}"));
                        break;
                    },
                    None => break,
                },
                _ = stop.changed() => break,
                () = tokio::time::sleep_until(wake.into()) => {
                    let now = clock::now().max(self.fed);
                    self.fed = now;
                    if self.rtc.handle_input(Input::Timeout(now)).is_err() {
                        self.report.failure = Some("rtc timeout input failed".into());
                        break;
                    }
                    if connected {
                        self.send_due(&ctx, now);
                    }
                }
            }
            if *stop.borrow() {
                break;
            }
        }
        self.rtc.disconnect();
        self.report
    }

    fn handle_datagram(
        &mut self,
        ctx: &RunCtx,
        n: usize,
        buf: &[u8],
        from: SocketAddr,
        rx_ns: u64,
    ) {
        let Some(data) = buf.get(..n) else { return };
        self.remote = Some(from);
        match rtp::classify(data) {
            Datagram::Rtp if self.full => {
                self.measure(ctx, data, rx_ns);
                self.feed_rtc(data, rx_ns);
            }
            Datagram::Rtp => self.measure(ctx, data, rx_ns),
            Datagram::Other => {}
            _ => self.feed_rtc(data, rx_ns),
        }
    }

    fn measure(&mut self, ctx: &RunCtx, data: &[u8], rx_ns: u64) {
        let Some(info) = rtp::parse_rtp(data, self.ids) else {
            return;
        };
        let fence = ctx.fence.get();
        if fence != 0 && rx_ns >= fence {
            self.report.packets_after_fence += 1;
        }
        if self.ids.is_rtx(info.pt) {
            // Retransmissions (Janus sends some unasked) are not media.
            self.report.rtx_packets += 1;
            return;
        }
        if self.report.first_media_ns.is_none() {
            self.report.first_media_ns = Some(rx_ns);
            ctx.with_media.set(ctx.with_media.get() + 1);
        }
        let in_window = ctx.in_window(rx_ns);
        let s = self.report.rx.entry(info.ssrc).or_default();
        s.packets += 1;
        s.pt = info.pt;
        if data.first().is_some_and(|b| b & 0x20 != 0) {
            s.padding_only += 1;
        }
        if s.mid.is_none() {
            s.mid = info.mid;
        }
        if in_window {
            s.packets_in_window += 1;
            if let Some(last) = s.last_seq {
                let gap = info.seq.wrapping_sub(last);
                // A gap below half the space is loss; above, reordering.
                if gap > 1 && gap < 0x8000 {
                    s.seq_lost += u64::from(gap - 1);
                }
            }
        }
        if s.last_seq.is_none_or(|l| info.seq.wrapping_sub(l) < 0x8000) {
            s.last_seq = Some(info.seq);
        }
        // A frame is counted once, by the first packet with a new RTP timestamp.
        let new_frame = s.last_ts != Some(info.ts);
        s.last_ts = Some(info.ts);
        if !new_frame {
            return;
        }
        match self.origin {
            Origin::CaptureTime => {
                if let Some(origin_ns) = info.capture_ns
                    && ctx.in_window(origin_ns)
                {
                    self.report.samples.push(Sample {
                        ssrc: info.ssrc,
                        origin_ns,
                        rx_ns,
                    });
                }
            }
            Origin::Payload => {
                // Decrypt this first packet of a frame to read its stamp.
                if self.first_packets.len() > 4096 {
                    // Packets str0m never showed (undecryptable): forget them.
                    self.first_packets.clear();
                }
                self.first_packets.insert((info.ssrc, info.ts), rx_ns);
                self.report.decrypt.0 += 1;
                self.feed_rtc(data, rx_ns);
            }
        }
    }

    /// Hands a datagram to str0m as received at `rx_ns` (the kernel's
    /// receive time, Unix ns): the arrival times in its transport-wide
    /// congestion feedback are the network's, not the time this one thread
    /// got round to the datagram (as a browser's network thread stamps
    /// them), so a busy generator does not read to the server as a
    /// congested link.
    fn feed_rtc(&mut self, data: &[u8], rx_ns: u64) {
        let Ok(contents) = data.try_into() else {
            return;
        };
        let now = clock::now();
        let waited = Duration::from_nanos(clock::unix_ns().saturating_sub(rx_ns));
        let at = now.checked_sub(waited).unwrap_or(now).max(self.fed);
        self.fed = at;
        let source = self.remote.unwrap_or(self.local);
        let input = Input::Receive(
            at,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local,
                contents,
            },
        );
        if let Err(e) = self.rtc.handle_input(input) {
            tracing_like(&format!("rtc refused a datagram: {e}"));
        }
    }

    fn send_due(&mut self, ctx: &RunCtx, now: Instant) {
        let mut wrote = false;
        for i in 0..self.out.len() {
            let o = &mut self.out[i];
            if !o.sending || o.next > now {
                continue;
            }
            o.next += o.period;
            if o.next < now {
                // Behind (the generator was busy): skip rather than burst.
                o.next = now + o.period;
            }
            let (codec, freq, step) = match o.source {
                Source::Audio => (Codec::Opus, Frequency::FORTY_EIGHT_KHZ, 960),
                Source::Video { fps, .. } | Source::Simulcast { fps } => (
                    Codec::Vp8,
                    Frequency::NINETY_KHZ,
                    90_000 / u64::from(fps.max(1)),
                ),
            };
            let key = match o.source {
                Source::Audio => false,
                Source::Video { .. } | Source::Simulcast { .. } => {
                    let due = o.want_key || o.last_key.is_none_or(|t| now - t >= KEYFRAME_EVERY);
                    if due {
                        o.want_key = false;
                        o.last_key = Some(now);
                    }
                    due
                }
            };
            let template = if key { &o.key } else { &o.delta };
            let mut data = template.clone();
            let ticks = o.ticks;
            o.ticks += step;
            let (mid, stats) = (o.mid, o.stats);
            let rid = o.rid;
            let Some(writer) = self.rtc.writer(mid) else {
                continue;
            };
            let Some(pt) = writer
                .payload_params()
                .find(|p| p.spec().codec == codec)
                .map(|p| p.pt())
            else {
                continue;
            };
            let writer = match rid {
                Some((rid, _)) => writer.rid(rid),
                None => writer,
            };
            let capture_ns = clock::unix_ns();
            let len = data.len();
            if let Some(at) = data.windows(4).position(|w| w == ORIGIN_MARK)
                && let Some(slot) = data.get_mut(at + 4..at + 12)
            {
                slot.copy_from_slice(&capture_ns.to_be_bytes());
            }
            let capture = AbsCaptureTime {
                capture_time: clock::system_time_of(capture_ns),
                clock_offset: None,
            };
            if writer
                .abs_capture_time(capture)
                .write(pt, now, MediaTime::new(ticks, freq), data)
                .is_ok()
            {
                wrote = true;
                if let Some(t) = self.report.tx.get_mut(stats) {
                    if self.full {
                        t.sent
                            .push((capture_ns, rid.map_or(NO_LAYER, |(_, n)| n), len));
                    }
                    t.frames += 1;
                    if ctx.in_window(capture_ns) {
                        t.frames_in_window += 1;
                    }
                }
            }
        }
        if wrote {
            // Let str0m release the packets now rather than at its next timeout.
            let now = now.max(self.fed);
            self.fed = now;
            let _ = self.rtc.handle_input(Input::Timeout(now));
        }
    }

    /// Sends what str0m wants sent and handles its events; returns the next
    /// deadline.
    async fn drain(&mut self, ctx: &RunCtx) -> Result<Instant> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(t) => return Ok(t),
                Output::Transmit(t) => {
                    if rtp::classify(&t.contents) == Datagram::Rtp
                        && ctx.in_window(clock::unix_ns())
                    {
                        self.report.tx_packets_in_window += 1;
                    }
                    let _ = self.socket.send_to(&t.contents, t.destination).await;
                }
                Output::Event(Event::Connected) => {
                    self.report.connected_ns = Some(clock::unix_ns());
                    self.note_tx_ssrcs();
                }
                Output::Event(Event::IceConnectionStateChange(
                    IceConnectionState::Disconnected,
                )) => {
                    // The server stopped answering: as a page does, give up
                    // this session (the participant may rejoin).
                    bail!("ICE disconnected");
                }
                Output::Event(Event::KeyframeRequest(req)) => {
                    let now = clock::now();
                    for o in self.out.iter_mut().filter(|o| {
                        o.mid == req.mid && (req.rid.is_none() || o.rid.map(|(r, _)| r) == req.rid)
                    }) {
                        if o.last_key.is_none_or(|t| now - t >= KEYFRAME_REQUEST_MIN) {
                            o.want_key = true;
                        }
                    }
                }
                Output::Event(Event::MediaData(d)) if self.full => {
                    let audio = self
                        .rtc
                        .media(d.mid)
                        .is_some_and(|m| m.kind() == MediaKind::Audio);
                    if let Some(origin_ns) = find_origin(&d.data) {
                        self.report.frames.push(RxFrame {
                            rx_ns: clock::unix_ns(),
                            origin_ns,
                            audio,
                            layer: find_layer(&d.data).unwrap_or(NO_LAYER),
                            len: d.data.len(),
                            mid: d.mid,
                        });
                    }
                }
                Output::Event(Event::RtpPacket(p)) => {
                    self.report.decrypt.1 += 1;
                    let key = (*p.header.ssrc, p.header.timestamp);
                    if find_origin(&p.payload).is_some() {
                        self.report.decrypt.2 += 1;
                    }
                    if let (Some(rx_ns), Some(origin_ns)) =
                        (self.first_packets.remove(&key), find_origin(&p.payload))
                        && ctx.in_window(origin_ns)
                    {
                        self.report.samples.push(Sample {
                            ssrc: key.0,
                            origin_ns,
                            rx_ns,
                        });
                    }
                }
                Output::Event(_) => {}
            }
        }
    }
}

impl MediaPeer {
    /// Records the SSRC of each of this peer's own streams (once connected,
    /// str0m has made them all).
    fn note_tx_ssrcs(&mut self) {
        let streams: Vec<(Mid, Option<(Rid, u8)>)> =
            self.out.iter().map(|o| (o.mid, o.rid)).collect();
        let mut api = self.rtc.direct_api();
        for (mid, rid) in streams {
            if let Some(tx) = api.stream_tx_by_mid(mid, rid.map(|(r, _)| r)) {
                self.report.tx_ssrcs.push((
                    *tx.ssrc(),
                    mid.to_string(),
                    rid.map(|(r, _)| r.to_string()),
                ));
            }
        }
    }
}

/// Debug-level notes go nowhere unless `LOADTEST_DEBUG` is set.
fn tracing_like(msg: &str) {
    if std::env::var_os("LOADTEST_DEBUG").is_some() {
        eprintln!("loadtest: {msg}");
    }
}
