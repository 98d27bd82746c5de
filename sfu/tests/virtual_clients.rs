//! The sans-IO [`Sfu`] driven in virtual time, with no socket and no clock:
//! two str0m clients exchange datagrams with it in memory, and a property
//! test flips the core's controls at random while the publisher never stops
//! sending. The invariant: the subscriber receives a frame only while the
//! track is forwarded and the subscriber may receive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaperone_protocol::{LessonId, MediaSource, ParticipantId, TrackId};
use chaperone_sfu::{MediaOutput, Sfu, SfuConfig};
use proptest::prelude::*;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

const LESSON: LessonId = LessonId::from_bytes([5; 16]);
const A: ParticipantId = ParticipantId(1);
const B: ParticipantId = ParticipantId(2);
const FRAME: Duration = Duration::from_millis(20);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

struct Peer {
    id: ParticipantId,
    addr: SocketAddr,
    rtc: Rtc,
    audio: Mid,
    connected: bool,
    audio_rx: u64,
    audio_tx: u64,
    ticks: u64,
}

/// An SFU, a publisher A and a subscriber B, in virtual time.
struct World {
    now: Instant,
    server: SocketAddr,
    sfu: Sfu,
    peers: Vec<Peer>,
    next_frame: Instant,
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
        let mut peers = Vec::new();
        for (id, port) in [(A, 5001), (B, 5002)] {
            sfu.add_participant(LESSON, id).expect("a new participant");
            let mut rtc = Rtc::builder()
                .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
                .build(now);
            rtc.add_local_candidate(Candidate::host(addr(port), "udp").expect("loopback"));
            let mut api = rtc.sdp_api();
            let audio = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
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
            peers.push(Peer {
                id,
                addr: addr(port),
                rtc,
                audio,
                connected: false,
                audio_rx: 0,
                audio_tx: 0,
                ticks: 0,
            });
        }
        World {
            now,
            server,
            sfu,
            peers,
            next_frame: now,
        }
    }

    fn peer(&self, id: ParticipantId) -> &Peer {
        self.peers
            .iter()
            .find(|p| p.id == id)
            .expect("A and B exist")
    }

    /// Moves every datagram and offer until nobody has anything to say;
    /// returns the earliest deadline.
    fn deliver(&mut self) -> Instant {
        loop {
            let mut moved = false;
            let mut deadline = self.next_frame;
            loop {
                match self.sfu.poll_output() {
                    MediaOutput::Transmit { to, bytes, .. } => {
                        moved = true;
                        if let Some(p) = self.peers.iter_mut().find(|p| p.addr == to) {
                            let contents = bytes.as_slice().try_into().expect("SFU output parses");
                            let input = Input::Receive(
                                self.now,
                                Receive {
                                    proto: Protocol::Udp,
                                    source: self.server,
                                    destination: p.addr,
                                    contents,
                                },
                            );
                            p.rtc.handle_input(input).expect("client takes SFU data");
                        }
                    }
                    MediaOutput::Offer {
                        participant, sdp, ..
                    } => {
                        moved = true;
                        let p = self
                            .peers
                            .iter_mut()
                            .find(|p| p.id == participant)
                            .expect("offers go to A or B");
                        let offer = SdpOffer::from_sdp_string(&sdp).expect("SFU offer parses");
                        let answer = p.rtc.sdp_api().accept_offer(offer).expect("accepted");
                        self.sfu
                            .accept_answer(LESSON, participant, &answer.to_sdp_string())
                            .expect("the SFU takes the answer");
                    }
                    MediaOutput::Timeout(t) => {
                        if let Some(t) = t {
                            deadline = deadline.min(t);
                        }
                        break;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            let mut datagrams = Vec::new();
            for p in &mut self.peers {
                loop {
                    match p.rtc.poll_output().expect("client alive") {
                        Output::Timeout(t) => {
                            deadline = deadline.min(t);
                            break;
                        }
                        Output::Transmit(t) => datagrams.push((p.addr, t.contents.to_vec())),
                        Output::Event(Event::Connected) => p.connected = true,
                        Output::Event(Event::MediaData(d)) => {
                            if p.rtc.media(d.mid).map(|m| m.kind()) == Some(MediaKind::Audio) {
                                p.audio_rx += 1;
                            }
                        }
                        Output::Event(_) => {}
                    }
                }
            }
            for (from, bytes) in datagrams {
                moved = true;
                self.sfu
                    .handle_datagram(self.now, from, self.server, &bytes);
            }
            if !moved {
                return deadline;
            }
        }
    }

    /// Runs for `d` of virtual time; every connected client sends one audio
    /// frame every 20 ms regardless of anything.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = self.deliver();
            if next > end {
                self.now = end;
                break;
            }
            self.now = next.max(self.now);
            if self.now >= self.next_frame {
                for p in &mut self.peers {
                    if !p.connected {
                        continue;
                    }
                    let Some(w) = p.rtc.writer(p.audio) else {
                        continue;
                    };
                    let pt = w
                        .payload_params()
                        .find(|x| x.spec().codec == Codec::Opus)
                        .map(|x| x.pt())
                        .expect("Opus negotiated");
                    let time = MediaTime::new(p.ticks, Frequency::FORTY_EIGHT_KHZ);
                    w.write(pt, self.now, time, vec![0xfcu8; 40])
                        .expect("write own audio");
                    p.ticks += 960;
                    p.audio_tx += 1;
                }
                self.next_frame = self.now + FRAME;
            }
            self.sfu.handle_timeout(self.now);
            for p in &mut self.peers {
                p.rtc
                    .handle_input(Input::Timeout(self.now))
                    .expect("client alive");
            }
        }
    }

    fn connect(&mut self) {
        for _ in 0..200 {
            if self.peers.iter().all(|p| p.connected) {
                return;
            }
            self.run_for(Duration::from_millis(10));
        }
        panic!("clients connected within 2 s of virtual time");
    }
}

#[test]
fn virtual_time_mute_stops_forwarding_at_once() {
    let mut w = World::new();
    w.connect();
    let mic = TrackId::new(A, MediaSource::Microphone);
    w.sfu.set_forward(LESSON, mic, true);
    w.sfu.set_receive(LESSON, B, true);
    w.run_for(Duration::from_millis(500));
    let heard = w.peer(B).audio_rx;
    assert!(heard > 10, "B heard A: {heard}");

    w.sfu.set_forward(LESSON, mic, false);
    let sent = w.peer(A).audio_tx;
    w.run_for(Duration::from_secs(2));
    assert!(w.peer(A).audio_tx >= sent + 90, "A kept sending");
    assert_eq!(w.peer(B).audio_rx, heard, "not one frame after the mute");

    // Unmuted, B hears A again; then B may no longer receive: silence.
    w.sfu.set_forward(LESSON, mic, true);
    w.run_for(Duration::from_millis(500));
    let heard = w.peer(B).audio_rx;
    w.sfu.set_receive(LESSON, B, false);
    w.run_for(Duration::from_secs(2));
    assert_eq!(w.peer(B).audio_rx, heard, "not one frame after receive off");
    assert_eq!(w.peer(A).audio_rx, 0, "A never hears itself");
}

#[derive(Debug, Clone)]
enum Op {
    Forward(bool),
    Receive(bool),
    Run(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<bool>().prop_map(Op::Forward),
        any::<bool>().prop_map(Op::Receive),
        (20u64..300).prop_map(Op::Run),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the order of controls: while forwarding or receiving is off,
    /// the subscriber gets nothing; with both on for long enough, it does.
    #[test]
    fn subscriber_hears_publisher_only_while_both_switches_are_on(
        ops in proptest::collection::vec(op(), 1..24)
    ) {
        let mut w = World::new();
        w.connect();
        let mic = TrackId::new(A, MediaSource::Microphone);
        let (mut fwd, mut rcv) = (false, false);
        for op in ops {
            match op {
                Op::Forward(on) => {
                    fwd = on;
                    w.sfu.set_forward(LESSON, mic, on);
                }
                Op::Receive(on) => {
                    rcv = on;
                    w.sfu.set_receive(LESSON, B, on);
                }
                Op::Run(ms) => {
                    let before = w.peer(B).audio_rx;
                    w.run_for(Duration::from_millis(ms));
                    let after = w.peer(B).audio_rx;
                    if !(fwd && rcv) {
                        prop_assert_eq!(after, before, "B got audio with fwd={} rcv={}", fwd, rcv);
                    } else if ms >= 200 {
                        prop_assert!(after > before, "B got nothing with both on for {} ms", ms);
                    }
                }
            }
        }
        prop_assert_eq!(w.peer(A).audio_rx, 0);
    }
}
