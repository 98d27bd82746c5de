//! Simulcast and layer selection on slow links, in virtual time: a teacher
//! (str0m) publishes a microphone and a camera as three simulcast layers
//! (`l`, `m`, `h`), two pupils (str0m) subscribe, and every datagram from
//! the SFU to a pupil goes through that pupil's own link: a rate cap (a
//! FIFO drained at the cap, the token bucket of a shaped link) with a 50 ms
//! queue that drops what does not fit, plus 10 ms of propagation delay. No
//! socket and no clock: the harness moves datagrams and time, so a minute of
//! lesson runs in seconds and the same way every time.
//!
//! Which layer a pupil receives is read from the frame sizes (each layer
//! has its own), and the teacher counts the keyframe requests it gets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaperone_protocol::{LessonId, MediaSource, ParticipantId, TrackId};
use chaperone_sfu::{MediaOutput, Sfu, SfuConfig};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

const LESSON: LessonId = LessonId::from_bytes([9; 16]);
const TEACHER: ParticipantId = ParticipantId(1);
const UNCAPPED: ParticipantId = ParticipantId(2);
const CAPPED: ParticipantId = ParticipantId(3);

/// Audio: one 100-byte Opus frame every 20 ms (40 kbit/s of payload).
const AUDIO_EVERY: Duration = Duration::from_millis(20);
const AUDIO_BYTES: usize = 100;
/// Video: 15 frames a second per layer; the layers' frame sizes give about
/// 150, 450 and 1200 kbit/s, and tell a receiver which layer it got.
const VIDEO_EVERY: Duration = Duration::from_micros(66_667);
const LAYERS: [(&str, usize); 3] = [("l", 1_250), ("m", 3_750), ("h", 10_000)];

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One direction of a pupil's access link.
#[derive(Debug, Default)]
struct Link {
    /// Bits per second, or unlimited.
    cap: Option<u64>,
    /// When the queue is empty again.
    busy_until: Option<Instant>,
    dropped: u64,
}

/// Longest a datagram waits in a capped link's queue before it is dropped.
const QUEUE: Duration = Duration::from_millis(50);
const DELAY: Duration = Duration::from_millis(10);

impl Link {
    /// When a datagram of `len` bytes sent at `now` arrives, or `None` if
    /// the queue is full.
    fn send(&mut self, now: Instant, len: usize) -> Option<Instant> {
        let Some(cap) = self.cap else {
            return Some(now + DELAY);
        };
        let start = self.busy_until.filter(|&t| t > now).unwrap_or(now);
        if start.saturating_duration_since(now) > QUEUE {
            self.dropped += 1;
            return None;
        }
        let tx = Duration::from_secs_f64((len as f64 + 28.0) * 8.0 / cap as f64);
        self.busy_until = Some(start + tx);
        Some(start + tx + DELAY)
    }
}

struct Client {
    id: ParticipantId,
    addr: SocketAddr,
    rtc: Rtc,
    /// The teacher's send m-lines.
    audio: Option<Mid>,
    video: Option<Mid>,
    connected: bool,
    down: Link,
    /// Received: audio frames, and video frames by layer index.
    audio_rx: u64,
    video_rx: [u64; 3],
    /// The layer of the last video frame received, and when.
    last_layer: Option<(usize, Instant)>,
    /// Teacher: keyframe requests received, by time; keyframes owed per rid.
    keyframe_requests: Vec<Instant>,
    owe_keyframe: [bool; 3],
    paused_notices: Vec<bool>,
}

struct World {
    now: Instant,
    start: Instant,
    server: SocketAddr,
    sfu: Sfu,
    clients: Vec<Client>,
    /// Datagrams in flight: (arrival, sequence) → (to, from, bytes).
    flight: BTreeMap<(Instant, u64), (SocketAddr, SocketAddr, Vec<u8>)>,
    seq: u64,
    next_audio: Instant,
    next_video: Instant,
    /// Drop one datagram in this many from the teacher to the SFU (0: none),
    /// chosen by a fixed pseudo-random sequence.
    uplink_loss_one_in: u64,
    uplink_rng: u64,
    uplink_dropped: u64,
    audio_ticks: u64,
    video_ticks: u64,
    audio_tx: u64,
}

fn client_rtc(now: Instant, port: u16) -> Rtc {
    let mut rtc = Rtc::builder()
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
        .build(now);
    rtc.add_local_candidate(Candidate::host(addr(port), "udp").expect("loopback"));
    rtc
}

impl World {
    fn new() -> World {
        // The one real instant: virtual time starts here and only moves by
        // the harness.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let server = addr(4000);
        let mut sfu = Sfu::new(
            SfuConfig {
                advertised: server,
                record: false,
            },
            now,
        )
        .expect("valid address");
        sfu.set_role(LESSON, TEACHER, chaperone_protocol::Role::Teacher);
        let mut clients = Vec::new();
        for (id, port) in [(TEACHER, 5001), (UNCAPPED, 5002), (CAPPED, 5003)] {
            sfu.add_participant(LESSON, id).expect("a new participant");
            let mut rtc = client_rtc(now, port);
            let mut api = rtc.sdp_api();
            let (mut audio, mut video) = (None, None);
            if id == TEACHER {
                audio =
                    Some(api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
                let mut simulcast = Simulcast::new();
                for (rid, _) in LAYERS {
                    simulcast.add_send_layer(SimulcastLayer::new(rid));
                }
                video = Some(api.add_media(
                    MediaKind::Video,
                    Direction::SendOnly,
                    None,
                    None,
                    Some(simulcast),
                ));
            } else {
                // A pupil with a microphone it never turns on: the SFU
                // needs an m-line to answer.
                api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
            }
            let (offer, pending) = api.apply().expect("an offer");
            let answer = sfu
                .accept_offer(LESSON, id, &offer.to_sdp_string())
                .expect("the SFU accepts a str0m offer");
            rtc.sdp_api()
                .accept_answer(
                    pending,
                    SdpAnswer::from_sdp_string(&answer).expect("parses"),
                )
                .expect("the client accepts the answer");
            clients.push(Client {
                id,
                addr: addr(port),
                rtc,
                audio,
                video,
                connected: false,
                down: Link::default(),
                audio_rx: 0,
                video_rx: [0; 3],
                last_layer: None,
                keyframe_requests: Vec::new(),
                owe_keyframe: [true; 3],
                paused_notices: Vec::new(),
            });
        }
        World {
            now,
            start: now,
            server,
            sfu,
            clients,
            flight: BTreeMap::new(),
            seq: 0,
            next_audio: now,
            next_video: now,
            uplink_loss_one_in: 0,
            uplink_rng: 0x9e37_79b9_7f4a_7c15,
            uplink_dropped: 0,
            audio_ticks: 0,
            video_ticks: 0,
            audio_tx: 0,
        }
    }

    fn client(&mut self, id: ParticipantId) -> &mut Client {
        self.clients
            .iter_mut()
            .find(|c| c.id == id)
            .expect("the three clients exist")
    }

    fn in_flight(&mut self, at: Instant, to: SocketAddr, from: SocketAddr, bytes: Vec<u8>) {
        self.seq += 1;
        self.flight.insert((at, self.seq), (to, from, bytes));
    }

    /// Moves outputs into links and due datagrams to their receivers until
    /// nothing moves; returns the earliest deadline.
    fn settle(&mut self) -> Instant {
        loop {
            let mut moved = false;
            let mut deadline = self.next_audio.min(self.next_video);
            loop {
                match self.sfu.poll_output() {
                    MediaOutput::Transmit { to, bytes, .. } => {
                        moved = true;
                        let now = self.now;
                        let server = self.server;
                        let Some(c) = self.clients.iter_mut().find(|c| c.addr == to) else {
                            continue;
                        };
                        if let Some(at) = c.down.send(now, bytes.len()) {
                            self.in_flight(at, to, server, bytes);
                        }
                    }
                    MediaOutput::Offer {
                        participant, sdp, ..
                    } => {
                        moved = true;
                        let c = self.client(participant);
                        let offer = SdpOffer::from_sdp_string(&sdp).expect("SFU offer parses");
                        let answer = c.rtc.sdp_api().accept_offer(offer).expect("accepted");
                        self.sfu
                            .accept_answer(LESSON, participant, &answer.to_sdp_string())
                            .expect("the SFU takes the answer");
                    }
                    MediaOutput::VideoPaused {
                        participant,
                        paused,
                        ..
                    } => self.client(participant).paused_notices.push(paused),
                    MediaOutput::Record(_) => panic!("recording is off"),
                    MediaOutput::Timeout(t) => {
                        if let Some(t) = t {
                            deadline = deadline.min(t);
                        }
                        break;
                    }
                }
            }
            let now = self.now;
            let mut sent = Vec::new();
            for c in &mut self.clients {
                loop {
                    match c.rtc.poll_output().expect("client alive") {
                        Output::Timeout(t) => {
                            deadline = deadline.min(t);
                            break;
                        }
                        Output::Transmit(t) => sent.push((c.addr, t.contents.to_vec())),
                        Output::Event(Event::Connected) => c.connected = true,
                        Output::Event(Event::MediaData(d)) => {
                            match c.rtc.media(d.mid).map(|m| m.kind()) {
                                Some(MediaKind::Audio) => c.audio_rx += 1,
                                Some(MediaKind::Video) => {
                                    let layer = LAYERS
                                        .iter()
                                        .position(|&(_, size)| size == d.data.len())
                                        .expect("a frame of one of the layers");
                                    c.video_rx[layer] += 1;
                                    c.last_layer = Some((layer, now));
                                }
                                None => {}
                            }
                        }
                        Output::Event(Event::KeyframeRequest(req)) => {
                            c.keyframe_requests.push(now);
                            let i = req
                                .rid
                                .and_then(|r| LAYERS.iter().position(|&(n, _)| *r == *n))
                                .unwrap_or(0);
                            if let Some(owe) = c.owe_keyframe.get_mut(i) {
                                *owe = true;
                            }
                        }
                        Output::Event(_) => {}
                    }
                }
            }
            for (from, bytes) in sent {
                moved = true;
                if from == addr(5001) && self.uplink_loss_one_in > 0 && self.connected_all() {
                    // xorshift: the same losses every run.
                    self.uplink_rng ^= self.uplink_rng << 13;
                    self.uplink_rng ^= self.uplink_rng >> 7;
                    self.uplink_rng ^= self.uplink_rng << 17;
                    if self.uplink_rng.is_multiple_of(self.uplink_loss_one_in) {
                        self.uplink_dropped += 1;
                        continue;
                    }
                }
                // Uplinks are not capped.
                let at = self.now + DELAY;
                self.in_flight(at, self.server, from, bytes);
            }
            while let Some(entry) = self.flight.first_entry() {
                if entry.key().0 > self.now {
                    deadline = deadline.min(entry.key().0);
                    break;
                }
                let (to, from, bytes) = entry.remove();
                moved = true;
                if to == self.server {
                    self.sfu.handle_datagram(self.now, from, to, &bytes);
                } else if let Some(c) = self.clients.iter_mut().find(|c| c.addr == to) {
                    let input = Input::Receive(
                        self.now,
                        Receive {
                            proto: Protocol::Udp,
                            source: from,
                            destination: to,
                            contents: bytes.as_slice().try_into().expect("SFU output parses"),
                        },
                    );
                    c.rtc.handle_input(input).expect("client takes SFU data");
                }
            }
            if !moved {
                return deadline;
            }
        }
    }

    /// The teacher's encoder: audio every 20 ms, each video layer every
    /// 66 ms, a keyframe on a layer when one was asked for.
    fn produce(&mut self) {
        let now = self.now;
        let Some(t) = self.clients.iter_mut().find(|c| c.id == TEACHER) else {
            return;
        };
        if !t.connected {
            self.next_audio = now + AUDIO_EVERY;
            self.next_video = now + VIDEO_EVERY;
            return;
        }
        if now >= self.next_audio {
            let mid = t.audio.expect("teacher sends audio");
            let w = t.rtc.writer(mid).expect("audio writer");
            let pt = w
                .payload_params()
                .find(|x| x.spec().codec == Codec::Opus)
                .map(|x| x.pt())
                .expect("Opus negotiated");
            let time = MediaTime::new(self.audio_ticks * 960, Frequency::FORTY_EIGHT_KHZ);
            w.write(pt, now, time, vec![0xfc; AUDIO_BYTES])
                .expect("write audio");
            self.audio_ticks += 1;
            self.audio_tx += 1;
            self.next_audio += AUDIO_EVERY;
        }
        if now >= self.next_video {
            let mid = t.video.expect("teacher sends video");
            let time = MediaTime::new(self.video_ticks * 6000, Frequency::NINETY_KHZ);
            for (i, &(rid, size)) in LAYERS.iter().enumerate() {
                let w = t.rtc.writer(mid).expect("video writer");
                let pt = w
                    .payload_params()
                    .find(|x| x.spec().codec == Codec::Vp8)
                    .map(|x| x.pt())
                    .expect("VP8 negotiated");
                let keyframe = std::mem::take(&mut t.owe_keyframe[i]);
                // The VP8 payload header's P bit: 0 on a keyframe.
                let mut frame = vec![0x42u8; size];
                frame[0] = if keyframe { 0x10 } else { 0x11 };
                w.rid(Rid::from(rid))
                    .write(pt, now, time, frame)
                    .expect("write video");
            }
            self.video_ticks += 1;
            self.next_video += VIDEO_EVERY;
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = self.settle();
            if next > end {
                self.now = end;
                return;
            }
            self.now = next.max(self.now);
            self.produce();
            self.sfu.handle_timeout(self.now);
            for c in &mut self.clients {
                c.rtc
                    .handle_input(Input::Timeout(self.now))
                    .expect("client alive");
            }
        }
    }

    /// Runs until `id` has received layer `layer` for a whole second, at
    /// most `limit`; returns how long it took.
    fn until_layer(
        &mut self,
        id: ParticipantId,
        layer: usize,
        limit: Duration,
    ) -> Option<Duration> {
        let start = self.now;
        let mut since: Option<Instant> = None;
        while self.now - start < limit {
            let before = self.client(id).video_rx;
            self.run_for(Duration::from_millis(100));
            let after = self.client(id).video_rx;
            let only = (0..3).all(|l| (after[l] > before[l]) == (l == layer));
            if only {
                let s = *since.get_or_insert(self.now - Duration::from_millis(100));
                if self.now - s >= Duration::from_secs(1) {
                    return Some(s - start);
                }
            } else {
                since = None;
            }
        }
        None
    }

    fn connect(&mut self) {
        for _ in 0..300 {
            if self.clients.iter().all(|c| c.connected) {
                return;
            }
            self.run_for(Duration::from_millis(10));
        }
        panic!("clients connected within 3 s of virtual time");
    }

    fn lesson(&mut self) {
        self.connect();
        for source in [MediaSource::Microphone, MediaSource::Camera] {
            self.sfu
                .set_forward(LESSON, TrackId::new(TEACHER, source), true);
        }
        self.sfu.set_receive(LESSON, UNCAPPED, true);
        self.sfu.set_receive(LESSON, CAPPED, true);
    }

    fn connected_all(&self) -> bool {
        self.clients.iter().all(|c| c.connected)
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }
}

/// The layer selection end to end: the capped pupil drops to the lowest
/// layer within 5 s and keeps its audio, the uncapped one keeps the top;
/// the cap lifted, the top comes back within 15 s; a cap below the lowest
/// layer pauses video (audio kept) and says so; the teacher's keyframe
/// requests stay bounded throughout.
#[test]
fn capped_subscriber_gets_the_layer_its_link_carries() {
    let mut w = World::new();
    w.lesson();

    // Nobody capped: both reach the top layer.
    let up = w.until_layer(UNCAPPED, 2, Duration::from_secs(30));
    assert!(up.is_some(), "uncapped pupil reached the top layer");
    let up = w.until_layer(CAPPED, 2, Duration::from_secs(30));
    assert!(
        up.is_some(),
        "the other pupil reached the top layer, uncapped"
    );
    eprintln!("both on the top layer at {:?}", w.elapsed());

    // Cap one pupil's downlink at 500 kbit/s.
    w.client(CAPPED).down.cap = Some(500_000);
    let audio_sent = w.audio_tx;
    let audio_got = w.client(CAPPED).audio_rx;
    let down = w.until_layer(CAPPED, 0, Duration::from_secs(20));
    eprintln!("capped at 500 kbit/s: lowest layer after {down:?}");
    let down = down.expect("the capped pupil reaches the lowest layer");
    assert!(
        down <= Duration::from_secs(5),
        "adapted down in {down:?} (limit 5 s)"
    );
    // Then 20 s on the capped link: audio all but intact, the lowest layer
    // only; the uncapped pupil on the top layer all along.
    let unc_before = w.client(UNCAPPED).video_rx;
    let cap_before = w.client(CAPPED).video_rx;
    let audio_sent_2 = w.audio_tx;
    let audio_got_2 = w.client(CAPPED).audio_rx;
    w.run_for(Duration::from_secs(20));
    let sent = w.audio_tx - audio_sent_2;
    let got = w.client(CAPPED).audio_rx - audio_got_2;
    let loss = 1.0 - got as f64 / sent as f64;
    eprintln!(
        "capped 500 kbit/s, steady 20 s: audio {got}/{sent} (loss {:.2} %); whole capped period {}/{}; queue drops {}",
        loss * 100.0,
        w.client(CAPPED).audio_rx - audio_got,
        w.audio_tx - audio_sent,
        w.client(CAPPED).down.dropped
    );
    assert!(
        loss < 0.01,
        "audio loss {:.2} % on a 500 kbit/s link",
        loss * 100.0
    );
    let cap_after = w.client(CAPPED).video_rx;
    let unc_after = w.client(UNCAPPED).video_rx;
    assert!(
        cap_after[0] - cap_before[0] >= 250,
        "lowest layer flows: {cap_before:?} -> {cap_after:?}, pauses {:?}",
        w.client(CAPPED).paused_notices
    );
    assert_eq!(
        cap_after[1..],
        cap_before[1..],
        "no higher layer on the capped link"
    );
    assert!(
        unc_after[2] - unc_before[2] >= 280,
        "uncapped keeps the top: {unc_after:?}"
    );
    assert_eq!(
        unc_after[..2],
        unc_before[..2],
        "uncapped never leaves the top"
    );

    // Cap lifted: back to the top within 15 s.
    w.client(CAPPED).down.cap = None;
    let back = w.until_layer(CAPPED, 2, Duration::from_secs(30));
    eprintln!("cap lifted: top layer after {back:?}");
    let back = back.expect("the pupil is back on the top layer");
    assert!(
        back <= Duration::from_secs(15),
        "back up in {back:?} (limit 15 s)"
    );

    // Capped at 150 kbit/s: video paused, audio kept, the page told.
    w.client(CAPPED).down.cap = Some(150_000);
    w.run_for(Duration::from_secs(8));
    assert_eq!(
        w.client(CAPPED).paused_notices.last(),
        Some(&true),
        "the capped pupil is told video is paused"
    );
    let video_before = w.client(CAPPED).video_rx;
    let audio_sent = w.audio_tx;
    let audio_got = w.client(CAPPED).audio_rx;
    w.run_for(Duration::from_secs(10));
    let sent = w.audio_tx - audio_sent;
    let got = w.client(CAPPED).audio_rx - audio_got;
    eprintln!(
        "capped 150 kbit/s: audio {got}/{sent}, video frames {:?} -> {:?}",
        video_before,
        w.client(CAPPED).video_rx
    );
    assert_eq!(
        w.client(CAPPED).video_rx,
        video_before,
        "no video while paused"
    );
    assert!(got as f64 >= sent as f64 * 0.99, "audio kept: {got}/{sent}");
    let unc = w.client(UNCAPPED).last_layer.map(|(l, _)| l);
    assert_eq!(unc, Some(2), "the uncapped pupil is unaffected");

    // The teacher never got more than the bounded keyframe-request rate: at
    // most one per layer per half second, whatever the pupils' links did.
    let secs = w.elapsed().as_secs_f64();
    let t = w.client(TEACHER);
    let total = t.keyframe_requests.len();
    eprintln!("teacher: {total} keyframe requests in {secs:.0} s");
    assert!(
        (total as f64) <= secs * 6.0 + 6.0,
        "{total} keyframe requests in {secs:.0} s"
    );
    let mut worst = 0;
    for (i, &at) in t.keyframe_requests.iter().enumerate() {
        let n = t.keyframe_requests[i..]
            .iter()
            .take_while(|&&x| x - at < Duration::from_secs(1))
            .count();
        worst = worst.max(n);
    }
    assert!(worst <= 6, "{worst} keyframe requests within one second");
}

/// The safeguarding rule holds per layer: a muted camera is forwarded in
/// no layer, and a pupil who may not receive gets nothing.
#[test]
fn muted_simulcast_camera_is_forwarded_in_no_layer() {
    let mut w = World::new();
    w.connect();
    w.sfu
        .set_forward(LESSON, TrackId::new(TEACHER, MediaSource::Camera), true);
    w.sfu.set_receive(LESSON, UNCAPPED, true);
    // CAPPED never may receive (a waiting pupil).
    w.run_for(Duration::from_secs(3));
    assert!(
        w.client(UNCAPPED).video_rx.iter().sum::<u64>() > 10,
        "video flows"
    );
    w.sfu
        .set_forward(LESSON, TrackId::new(TEACHER, MediaSource::Camera), false);
    let before = w.client(UNCAPPED).video_rx;
    w.run_for(Duration::from_secs(3));
    assert_eq!(
        w.client(UNCAPPED).video_rx,
        before,
        "no layer after the mute"
    );
    assert_eq!(
        w.client(CAPPED).video_rx,
        [0; 3],
        "the waiting pupil got nothing"
    );
    assert_eq!(
        w.client(CAPPED).audio_rx,
        0,
        "the waiting pupil got nothing"
    );
}

/// 5 % of the teacher's datagrams lost on the way to the SFU: the SFU asks
/// for them again (NACK) and the teacher's retransmissions (RTX) fill the
/// gaps, so a pupil still gets at least 90 % of the video frames sent.
#[test]
fn uplink_loss_is_recovered_by_retransmission() {
    let mut w = World::new();
    w.lesson();
    assert!(
        w.until_layer(UNCAPPED, 2, Duration::from_secs(30))
            .is_some(),
        "top layer before the loss"
    );
    w.uplink_loss_one_in = 20;
    let before = w.client(UNCAPPED).video_rx[2];
    let sent_before = w.video_ticks;
    w.run_for(Duration::from_secs(20));
    let got = w.client(UNCAPPED).video_rx[2] - before;
    let sent = w.video_ticks - sent_before;
    eprintln!(
        "5 % uplink loss: {} datagrams dropped; top-layer frames {got}/{sent}",
        w.uplink_dropped
    );
    assert!(
        w.uplink_dropped > 100,
        "loss happened: {}",
        w.uplink_dropped
    );
    assert!(
        got as f64 >= sent as f64 * 0.9,
        "frames recovered: {got}/{sent}"
    );
}
