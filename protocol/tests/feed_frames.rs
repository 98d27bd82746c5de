//! The recorder feed's binary frames: one round trip per kind, streaming
//! decode, and refusals before parsing.
#![allow(clippy::unwrap_used)]

use chaperone_protocol::event::{HoldReason, LessonEvent};
use chaperone_protocol::feed::{
    FEED_VERSION, FeedFrame, MAX_FEED_FRAME, MAX_GAP_REASON, MAX_MEDIA_FRAME, MAX_RTP_PACKET,
    MediaCodec,
};
use chaperone_protocol::signal::{ErrorCode, MAX_CHAT_CHARS};
use chaperone_protocol::{
    LessonId, MediaSource, ParticipantId, ProtocolError, Role, TrackId, UserRef,
};
use proptest::prelude::*;

fn track(p: u64, s: MediaSource) -> TrackId {
    TrackId::new(ParticipantId(p), s)
}

fn round_trip(frame: FeedFrame) {
    let bytes = frame.to_bytes().unwrap();
    assert_eq!(FeedFrame::check(&bytes).unwrap(), Some(bytes.len()));
    assert_eq!(FeedFrame::parse(&bytes).unwrap(), frame);
    assert_eq!(
        FeedFrame::decode_one(&bytes).unwrap(),
        Some((frame, bytes.len()))
    );
}

#[test]
fn hello_round_trips() {
    round_trip(FeedFrame::Hello {
        lesson: LessonId::from_bytes([3; 16]),
        resume_from: 42,
        owner_epoch: 0,
    });
    round_trip(FeedFrame::Hello {
        lesson: LessonId::from_bytes([3; 16]),
        resume_from: 42,
        owner_epoch: 7,
    });
}

#[test]
fn a_hello_without_an_epoch_keeps_the_original_layout() {
    let lesson = LessonId::from_bytes([3; 16]);
    let plain = FeedFrame::Hello {
        lesson,
        resume_from: 42,
        owner_epoch: 0,
    }
    .to_bytes()
    .unwrap();
    // length, version, kind 1, lesson, resume_from: what recorders before
    // epochs read.
    assert_eq!(plain.len(), 4 + 2 + 16 + 8);
    assert_eq!(plain[5], 1);
    let owned = FeedFrame::Hello {
        lesson,
        resume_from: 42,
        owner_epoch: 9,
    }
    .to_bytes()
    .unwrap();
    assert_eq!((owned.len(), owned[5]), (4 + 2 + 16 + 8 + 8, 11));
    assert_eq!(&owned[owned.len() - 8..], &9u64.to_be_bytes());
}

#[test]
fn an_owned_hello_with_epoch_zero_is_refused() {
    let mut bytes = FeedFrame::Hello {
        lesson: LessonId::from_bytes([3; 16]),
        resume_from: 1,
        owner_epoch: 5,
    }
    .to_bytes()
    .unwrap();
    let n = bytes.len();
    bytes[n - 8..].copy_from_slice(&0u64.to_be_bytes());
    assert!(FeedFrame::parse(&bytes).is_err());
}

#[test]
fn rtp_round_trips() {
    round_trip(FeedFrame::Rtp {
        seq: 1,
        track: track(7, MediaSource::Camera),
        arrival_micros: 1_800_000_000_000_000,
        packet: vec![0x80, 0x60, 0, 1, 2, 3],
    });
    round_trip(FeedFrame::Rtp {
        seq: u64::MAX,
        track: track(u64::MAX, MediaSource::ScreenShare),
        arrival_micros: 0,
        packet: vec![0xff; MAX_RTP_PACKET],
    });
}

#[test]
fn media_frames_round_trip_and_are_bounded() {
    for (codec, clock_rate) in [
        (MediaCodec::Opus, 48_000),
        (MediaCodec::Vp8, 90_000),
        (MediaCodec::Vp9, 90_000),
        (MediaCodec::H264, 90_000),
        (MediaCodec::Other, 8_000),
    ] {
        round_trip(FeedFrame::Media {
            seq: 9,
            track: track(3, MediaSource::Camera),
            arrival_micros: 1_800_000_000_000_000,
            media_time: u64::from(u32::MAX) + 5,
            clock_rate,
            codec,
            discontinuity: codec == MediaCodec::Vp8,
            data: vec![0x9d; 1200],
        });
    }
    // A whole keyframe of the largest size fits; one byte more is refused
    // before anything is written.
    round_trip(FeedFrame::Media {
        seq: 1,
        track: track(1, MediaSource::ScreenShare),
        arrival_micros: 0,
        media_time: 0,
        clock_rate: 90_000,
        codec: MediaCodec::Vp8,
        discontinuity: false,
        data: vec![0; MAX_MEDIA_FRAME],
    });
    let mut out = Vec::new();
    let too_big = FeedFrame::Media {
        seq: 1,
        track: track(1, MediaSource::ScreenShare),
        arrival_micros: 0,
        media_time: 0,
        clock_rate: 90_000,
        codec: MediaCodec::Vp8,
        discontinuity: false,
        data: vec![0; MAX_MEDIA_FRAME + 1],
    };
    assert!(matches!(
        too_big.encode(&mut out),
        Err(ProtocolError::TooLarge { .. })
    ));
    assert!(out.is_empty());
    // Unknown codec bytes and flags are refused.
    let mut bytes = FeedFrame::Media {
        seq: 1,
        track: track(1, MediaSource::Microphone),
        arrival_micros: 0,
        media_time: 0,
        clock_rate: 48_000,
        codec: MediaCodec::Opus,
        discontinuity: false,
        data: vec![1, 2, 3],
    }
    .to_bytes()
    .unwrap();
    let codec_at = 4 + 2 + 8 + 9 + 8 + 8 + 4;
    bytes[codec_at] = 7;
    assert!(FeedFrame::parse(&bytes).is_err());
    bytes[codec_at] = 0;
    bytes[codec_at + 1] = 2;
    assert!(FeedFrame::parse(&bytes).is_err());
}

#[test]
fn sender_report_round_trips() {
    round_trip(FeedFrame::SenderReport {
        seq: 9,
        track: track(2, MediaSource::Microphone),
        arrival_micros: 5,
        ntp_time: 0xdead_beef_0000_0001,
        rtp_time: 48_000,
    });
}

#[test]
fn events_round_trip() {
    let events = vec![
        LessonEvent::Joined {
            participant: ParticipantId(1),
            user: UserRef::new("https://idp", "t").unwrap(),
            name: "Ms Jones".into(),
            role: Role::Teacher,
        },
        LessonEvent::Hold {
            reasons: vec![HoldReason::Unsupervised, HoldReason::RecordingLost],
        },
        LessonEvent::Refused {
            participant: ParticipantId(4),
            action: "chat".into(),
            code: ErrorCode::PupilToPupil,
        },
        LessonEvent::Concern {
            participant: ParticipantId(4),
            text: "ünïcödé ✓".into(),
        },
    ];
    for (i, event) in events.into_iter().enumerate() {
        round_trip(FeedFrame::Event {
            seq: i as u64 + 1,
            at_micros: 77,
            event,
        });
    }
}

#[test]
fn public_and_private_chat_round_trip() {
    round_trip(FeedFrame::Chat {
        seq: 3,
        at_micros: 8,
        from: ParticipantId(2),
        to: None,
        text: "hello class".into(),
    });
    round_trip(FeedFrame::Chat {
        seq: 4,
        at_micros: 9,
        from: ParticipantId(3),
        to: Some(ParticipantId(1)),
        text: "private to the teacher".into(),
    });
}

#[test]
fn ack_flush_and_end_round_trip() {
    round_trip(FeedFrame::Ack { up_to: 1234 });
    round_trip(FeedFrame::Flush);
    assert_eq!(FeedFrame::Flush.to_bytes().unwrap(), vec![0, 0, 0, 2, 1, 9]);
    round_trip(FeedFrame::End {
        seq: 99,
        at_micros: 100,
    });
}

#[test]
fn gaps_round_trip_and_long_reasons_are_refused() {
    let gap = FeedFrame::Gap {
        seq: 7,
        at_micros: 1_000,
        reason: "the lesson's node stopped".into(),
    };
    round_trip(gap.clone());
    assert_eq!(gap.seq(), Some(7));
    let long = FeedFrame::Gap {
        seq: 7,
        at_micros: 1_000,
        reason: "x".repeat(MAX_GAP_REASON + 1),
    };
    assert!(matches!(
        long.to_bytes(),
        Err(ProtocolError::TooLarge { .. })
    ));
    // Not UTF-8: refused, typed.
    let mut bytes = gap.to_bytes().unwrap();
    let last = bytes.len() - 1;
    bytes[last] = 0xff;
    assert!(matches!(
        FeedFrame::parse(&bytes),
        Err(ProtocolError::Malformed(_))
    ));
}

#[test]
fn sequence_numbers_are_exposed() {
    assert_eq!(FeedFrame::Ack { up_to: 3 }.seq(), None);
    assert_eq!(
        FeedFrame::End {
            seq: 5,
            at_micros: 0
        }
        .seq(),
        Some(5)
    );
}

#[test]
fn a_stream_decodes_byte_by_byte() {
    let frames = vec![
        FeedFrame::Hello {
            lesson: LessonId::from_bytes([1; 16]),
            resume_from: 1,
            owner_epoch: 3,
        },
        FeedFrame::Rtp {
            seq: 1,
            track: track(1, MediaSource::Microphone),
            arrival_micros: 10,
            packet: vec![1; 160],
        },
        FeedFrame::End {
            seq: 2,
            at_micros: 20,
        },
    ];
    let mut stream = Vec::new();
    for f in &frames {
        f.encode(&mut stream).unwrap();
    }
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for b in stream {
        buf.push(b);
        if let Some((frame, n)) = FeedFrame::decode_one(&buf).unwrap() {
            buf.drain(..n);
            got.push(frame);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(got, frames);
}

#[test]
fn oversized_length_is_refused_before_the_body_arrives() {
    let len = (MAX_FEED_FRAME as u32 + 1).to_be_bytes();
    assert_eq!(
        FeedFrame::check(&len),
        Err(ProtocolError::TooLarge {
            len: MAX_FEED_FRAME + 1,
            max: MAX_FEED_FRAME
        })
    );
}

#[test]
fn unknown_version_and_kind_are_refused() {
    let mut bytes = FeedFrame::Ack { up_to: 1 }.to_bytes().unwrap();
    bytes[4] = FEED_VERSION + 1;
    assert_eq!(
        FeedFrame::parse(&bytes),
        Err(ProtocolError::UnsupportedVersion(
            u32::from(FEED_VERSION) + 1
        ))
    );
    let mut bytes = FeedFrame::Ack { up_to: 1 }.to_bytes().unwrap();
    bytes[5] = 200;
    assert!(matches!(
        FeedFrame::parse(&bytes),
        Err(ProtocolError::Malformed(_))
    ));
}

#[test]
fn truncated_and_trailing_bytes_are_refused() {
    let bytes = FeedFrame::Ack { up_to: 1 }.to_bytes().unwrap();
    assert!(matches!(
        FeedFrame::parse(&bytes[..bytes.len() - 1]),
        Err(ProtocolError::Malformed(_))
    ));
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        FeedFrame::parse(&longer),
        Err(ProtocolError::Malformed(_))
    ));
    // A length that claims more body than the kind has.
    let mut padded = bytes.clone();
    padded.push(0);
    let len = (padded.len() - 4) as u32;
    padded[..4].copy_from_slice(&len.to_be_bytes());
    assert!(matches!(
        FeedFrame::parse(&padded),
        Err(ProtocolError::Malformed(_))
    ));
}

#[test]
fn over_limit_fields_are_refused_when_encoding() {
    let rtp = FeedFrame::Rtp {
        seq: 1,
        track: track(1, MediaSource::Camera),
        arrival_micros: 0,
        packet: vec![0; MAX_RTP_PACKET + 1],
    };
    assert!(matches!(
        rtp.to_bytes(),
        Err(ProtocolError::TooLarge { .. })
    ));
    let chat = FeedFrame::Chat {
        seq: 1,
        at_micros: 0,
        from: ParticipantId(1),
        to: None,
        text: "x".repeat(MAX_CHAT_CHARS + 1),
    };
    assert!(matches!(
        chat.to_bytes(),
        Err(ProtocolError::TooLarge { .. })
    ));
    // Nothing half-written is left behind.
    let mut out = vec![9];
    assert!(chat.encode(&mut out).is_err());
    assert_eq!(out, vec![9]);
}

fn arb_track() -> impl Strategy<Value = TrackId> {
    (
        any::<u64>(),
        prop::sample::select(MediaSource::ALL.to_vec()),
    )
        .prop_map(|(p, s)| track(p, s))
}

fn arb_frame() -> impl Strategy<Value = FeedFrame> {
    prop_oneof![
        (any::<[u8; 16]>(), any::<u64>(), any::<u64>()).prop_map(|(b, r, e)| {
            FeedFrame::Hello {
                lesson: LessonId::from_bytes(b),
                resume_from: r,
                owner_epoch: e,
            }
        }),
        (
            any::<u64>(),
            arb_track(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..MAX_RTP_PACKET)
        )
            .prop_map(|(seq, track, arrival_micros, packet)| FeedFrame::Rtp {
                seq,
                track,
                arrival_micros,
                packet
            }),
        (
            any::<u64>(),
            arb_track(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>()
        )
            .prop_map(|(seq, track, a, n, r)| {
                FeedFrame::SenderReport {
                    seq,
                    track,
                    arrival_micros: a,
                    ntp_time: n,
                    rtp_time: r,
                }
            }),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            prop::option::of(1..u64::MAX),
            "\\PC{0,200}"
        )
            .prop_map(|(seq, at_micros, from, to, text)| FeedFrame::Chat {
                seq,
                at_micros,
                from: ParticipantId(from),
                to: to.map(ParticipantId),
                text
            }),
        (
            any::<u64>(),
            arb_track(),
            any::<(u64, u64, u32, bool)>(),
            prop::collection::vec(any::<u8>(), 0..4096)
        )
            .prop_map(|(seq, track, (a, m, c, d), data)| FeedFrame::Media {
                seq,
                track,
                arrival_micros: a,
                media_time: m,
                clock_rate: c,
                codec: MediaCodec::Vp8,
                discontinuity: d,
                data
            }),
        any::<u64>().prop_map(|up_to| FeedFrame::Ack { up_to }),
        Just(FeedFrame::Flush),
        (any::<u64>(), any::<u64>()).prop_map(|(seq, at_micros)| FeedFrame::End { seq, at_micros }),
        (any::<u64>(), any::<u64>(), "[a-z ]{0,40}").prop_map(|(seq, at_micros, reason)| {
            FeedFrame::Gap {
                seq,
                at_micros,
                reason,
            }
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_is_identity(frame in arb_frame()) {
        let bytes = frame.to_bytes().unwrap();
        prop_assert_eq!(FeedFrame::parse(&bytes).unwrap(), frame);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = FeedFrame::check(&bytes);
        let _ = FeedFrame::parse(&bytes);
        let _ = FeedFrame::decode_one(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(frame in arb_frame(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = frame.to_bytes().unwrap();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let _ = FeedFrame::parse(&bytes);
    }
}
