//! A WebRTC test client on str0m for the media tests: a normal (full ICE)
//! peer on loopback that offers one Opus audio and one VP8 video track, both
//! send/receive, and then misbehaves: once connected it sends audio every
//! 20 ms and video every 100 ms, whatever it is told, until dropped.
//!
//! It counts every frame it receives per kind and answers server offers
//! (new receive slots) by itself.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use chaperone_gateway::media::{MediaEvent, MediaHandle};
use chaperone_protocol::{LessonId, ParticipantId};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

/// Upper bound for any one test.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The test shell's clock (the client is a shell, like the driver).
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}

/// What a running client has seen and done.
#[derive(Debug, Default)]
pub struct Counters {
    /// Audio frames received from the SFU.
    pub audio_rx: AtomicU64,
    /// Video frames received from the SFU.
    pub video_rx: AtomicU64,
    /// Audio frames this client wrote.
    pub audio_tx: AtomicU64,
    /// Set once DTLS is up.
    pub connected: AtomicU64,
    /// Video frames received that came from a camera ([`CAMERA_FRAME`] bytes).
    pub camera_rx: AtomicU64,
    /// Video frames received that came from a screen share ([`SCREEN_FRAME`] bytes).
    pub screen_rx: AtomicU64,
    /// Keyframe requests (PLI/FIR) the SFU sent this client.
    pub keyframe_requests: AtomicU64,
}

/// Size of every camera frame a client sends (tells camera from screen).
pub const CAMERA_FRAME: usize = 300;
/// Size of every screen-share frame a client sends.
pub const SCREEN_FRAME: usize = 500;

impl Counters {
    pub fn audio_rx(&self) -> u64 {
        self.audio_rx.load(Ordering::SeqCst)
    }
    pub fn video_rx(&self) -> u64 {
        self.video_rx.load(Ordering::SeqCst)
    }
    pub fn audio_tx(&self) -> u64 {
        self.audio_tx.load(Ordering::SeqCst)
    }
    pub fn camera_rx(&self) -> u64 {
        self.camera_rx.load(Ordering::SeqCst)
    }
    pub fn screen_rx(&self) -> u64 {
        self.screen_rx.load(Ordering::SeqCst)
    }
    pub fn keyframe_requests(&self) -> u64 {
        self.keyframe_requests.load(Ordering::SeqCst)
    }
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst) > 0
    }
}

/// A running client. Dropping it stops it.
#[derive(Debug)]
pub struct Client {
    pub participant: ParticipantId,
    pub counters: Arc<Counters>,
    /// The SDP answer the SFU gave to this client's offer.
    pub answer: String,
    offers: mpsc::UnboundedSender<String>,
    _stop: watch::Sender<()>,
}

impl Client {
    /// Adds `participant` to the SFU, negotiates and starts the client.
    pub async fn connect(
        media: &MediaHandle,
        lesson: LessonId,
        participant: ParticipantId,
    ) -> anyhow::Result<Client> {
        Self::connect_with(media, lesson, participant, false).await
    }

    /// As [`Client::connect`]; with `screen`, a second video m-line carries
    /// a screen share.
    pub async fn connect_with(
        media: &MediaHandle,
        lesson: LessonId,
        participant: ParticipantId,
        screen: bool,
    ) -> anyhow::Result<Client> {
        media.add_participant(lesson, participant).await?;
        let (pending, offer) = Pending::new(screen).await?;
        let answer = media.offer(lesson, participant, offer).await?;
        pending.finish(
            participant,
            answer,
            Answers::Direct {
                media: media.clone(),
                lesson,
            },
        )
    }
}

/// Where the client's answers to server offers go.
pub enum Answers {
    /// Straight to the SFU (no signaling).
    Direct {
        /// The SFU.
        media: MediaHandle,
        /// The lesson.
        lesson: LessonId,
    },
    /// To whoever carries them over signaling.
    Channel(mpsc::UnboundedSender<String>),
}

/// A client whose offer is made but not yet answered (for negotiation
/// through signaling).
pub struct Pending {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    audio: Mid,
    video: Mid,
    screen: Option<Mid>,
    pending: str0m::change::SdpPendingOffer,
}

impl Pending {
    /// Makes the client's offer (audio, camera, and with `screen` a screen share).
    pub async fn new(screen: bool) -> anyhow::Result<(Pending, String)> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let local = socket.local_addr()?;
        let mut rtc = Rtc::builder()
            .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
            .build(now());
        rtc.add_local_candidate(Candidate::host(local, "udp")?);
        let mut api = rtc.sdp_api();
        let audio = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let video = api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
        let screen =
            screen.then(|| api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None));
        let (offer, pending) = api.apply().context("an offer with two m-lines")?;
        Ok((
            Pending {
                rtc,
                socket,
                local,
                audio,
                video,
                screen,
                pending,
            },
            offer.to_sdp_string(),
        ))
    }

    /// Applies the SFU's answer and starts sending (whatever it is told).
    pub fn finish(
        mut self,
        participant: ParticipantId,
        answer: String,
        answers: Answers,
    ) -> anyhow::Result<Client> {
        self.rtc
            .sdp_api()
            .accept_answer(self.pending, SdpAnswer::from_sdp_string(&answer)?)?;
        let counters = Arc::new(Counters::default());
        let (offers, offers_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(());
        let task = Task {
            rtc: self.rtc,
            socket: self.socket,
            local: self.local,
            audio: self.audio,
            video: self.video,
            screen: self.screen,
            answers,
            participant,
            counters: counters.clone(),
        };
        tokio::spawn(task.run(offers_rx, stop_rx));
        Ok(Client {
            participant,
            counters,
            answer,
            offers,
            _stop: stop,
        })
    }
}

impl Client {
    /// Waits until DTLS is up.
    pub async fn wait_connected(&self) -> anyhow::Result<()> {
        wait_for(Duration::from_secs(10), || self.counters.is_connected())
            .await
            .context("client connected")
    }
}

/// Forwards server offers from the driver's event stream to the clients.
pub fn route_offers(
    mut events: mpsc::UnboundedReceiver<MediaEvent>,
    clients: Vec<(ParticipantId, mpsc::UnboundedSender<String>)>,
) {
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                MediaEvent::Offer {
                    participant, sdp, ..
                } => {
                    if let Some((_, tx)) = clients.iter().find(|(p, _)| *p == participant) {
                        let _ = tx.send(sdp);
                    }
                }
                other => panic!("unexpected media event {other:?}"),
            }
        }
    });
}

impl Client {
    /// The channel `route_offers` feeds this client's server offers into.
    pub fn offer_sink(&self) -> (ParticipantId, mpsc::UnboundedSender<String>) {
        (self.participant, self.offers.clone())
    }
}

/// Polls `cond` every 10 ms until it holds or `limit` passes.
pub async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let end = now() + limit;
    while now() < end {
        if cond() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(anyhow!("condition not met within {limit:?}"))
}

struct Task {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    audio: Mid,
    video: Mid,
    screen: Option<Mid>,
    answers: Answers,
    participant: ParticipantId,
    counters: Arc<Counters>,
}

impl Task {
    async fn run(
        mut self,
        mut offers: mpsc::UnboundedReceiver<String>,
        mut stop: watch::Receiver<()>,
    ) {
        let mut buf = vec![0u8; 2048];
        let start = now();
        let mut next_audio = start;
        let mut next_video = start;
        let mut audio_ticks = 0u64;
        let mut video_ticks = 0u64;
        loop {
            let Some(timeout) = self.drain().await else {
                return;
            };
            let connected = self.counters.is_connected();
            let wake = if connected {
                timeout.min(next_audio).min(next_video)
            } else {
                timeout
            };
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    let Ok((n, from)) = r else { continue };
                    let Ok(contents) = buf[..n].try_into() else { continue };
                    let input = Input::Receive(now(), Receive {
                        proto: Protocol::Udp,
                        source: from,
                        destination: self.local,
                        contents,
                    });
                    if self.rtc.handle_input(input).is_err() {
                        return;
                    }
                }
                Some(offer) = offers.recv() => {
                    let Ok(offer) = SdpOffer::from_sdp_string(&offer) else { return };
                    let Ok(answer) = self.rtc.sdp_api().accept_offer(offer) else { return };
                    match &self.answers {
                        Answers::Direct { media, lesson } => {
                            let sent = media
                                .answer(*lesson, self.participant, answer.to_sdp_string())
                                .await;
                            assert!(sent.is_ok(), "the SFU accepts our answer: {sent:?}");
                        }
                        Answers::Channel(tx) => {
                            let _ = tx.send(answer.to_sdp_string());
                        }
                    }
                }
                _ = stop.changed() => return,
                () = tokio::time::sleep_until(wake.into()) => {
                    let t = now();
                    if connected && t >= next_audio {
                        // Opus, 20 ms at 48 kHz; the payload is opaque to the SFU.
                        if self.write(self.audio, Codec::Opus, t, audio_ticks, 48_000, &[0xfc; 60]) {
                            self.counters.audio_tx.fetch_add(1, Ordering::SeqCst);
                        }
                        audio_ticks += 960;
                        next_audio += Duration::from_millis(20);
                    }
                    if connected && t >= next_video {
                        // A VP8 key frame header followed by filler.
                        let mut frame = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
                        frame.resize(CAMERA_FRAME, 0x55);
                        self.write(self.video, Codec::Vp8, t, video_ticks, 90_000, &frame);
                        if let Some(screen) = self.screen {
                            frame.resize(SCREEN_FRAME, 0x66);
                            self.write(screen, Codec::Vp8, t, video_ticks, 90_000, &frame);
                        }
                        video_ticks += 9000;
                        next_video += Duration::from_millis(100);
                    }
                    if self.rtc.handle_input(Input::Timeout(now())).is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn write(
        &mut self,
        mid: Mid,
        codec: Codec,
        t: Instant,
        ticks: u64,
        hz: u32,
        data: &[u8],
    ) -> bool {
        let Some(writer) = self.rtc.writer(mid) else {
            return false;
        };
        let Some(pt) = writer
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
        else {
            return false;
        };
        let freq = if hz == 48_000 {
            Frequency::FORTY_EIGHT_KHZ
        } else {
            Frequency::NINETY_KHZ
        };
        writer
            .write(pt, t, MediaTime::new(ticks, freq), data.to_vec())
            .is_ok()
    }

    /// Sends what str0m wants sent and handles events; returns the next
    /// deadline, or `None` when the connection is over.
    async fn drain(&mut self) -> Option<Instant> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return Some(t),
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(Event::Connected)) => {
                    self.counters.connected.store(1, Ordering::SeqCst);
                }
                Ok(Output::Event(Event::MediaData(d))) => {
                    let kind = self.rtc.media(d.mid).map(|m| m.kind());
                    match kind {
                        Some(MediaKind::Audio) => {
                            self.counters.audio_rx.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(MediaKind::Video) => {
                            self.counters.video_rx.fetch_add(1, Ordering::SeqCst);
                            let by_size = match d.data.len() {
                                CAMERA_FRAME => Some(&self.counters.camera_rx),
                                SCREEN_FRAME => Some(&self.counters.screen_rx),
                                _ => None,
                            };
                            if let Some(c) = by_size {
                                c.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        None => {}
                    }
                }
                Ok(Output::Event(Event::KeyframeRequest(_))) => {
                    self.counters
                        .keyframe_requests
                        .fetch_add(1, Ordering::SeqCst);
                }
                Ok(Output::Event(_)) => {}
                Err(_) => return None,
            }
        }
    }
}
