//! The lesson feed's rules, driven in virtual time: every `Instant` is one
//! base instant plus an offset, and the harness jumps from one
//! [`LessonFeed::next_timeout`] to the next instead of waiting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chaperone_protocol::feed::MediaCodec;
use chaperone_protocol::{MediaSource, ParticipantId, TrackId};

use super::*;

/// The wall clock at the base instant, µs.
const WALL_AT_BASE: u64 = 1_800_000_000_000_000;
const ACK_TIMEOUT: Duration = Duration::from_secs(3);
/// The owner epoch the harness's feed starts with.
const EPOCH: u64 = 3;

/// A lesson whose own recorder (by its id's first byte) is the second of
/// three.
fn lesson() -> LessonId {
    LessonId::from_bytes([4; 16])
}

struct Harness {
    feed: LessonFeed,
    base: Instant,
    now: Instant,
    /// Every output so far, drained after each input.
    outputs: Vec<Output>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new(recorders: &[&str]) -> Self {
        Self::with_bounds(recorders, 1 << 20, 1 << 30)
    }

    /// `buffer_bytes` in memory, then a spool counting as lost past
    /// `spool_max_bytes`.
    fn with_bounds(recorders: &[&str], buffer_bytes: usize, spool_max_bytes: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let settings = FeedSettings {
            recorders: recorders.iter().map(|r| (*r).to_owned()).collect(),
            buffer_bytes,
            spool_dir: dir.path().to_owned(),
            spool_max_bytes,
            ack_timeout: ACK_TIMEOUT,
        };
        let base = crate::clock::now();
        let log = FeedLog::new(buffer_bytes, dir.path().join("lesson.spool"));
        let mut h = Self {
            feed: LessonFeed::new(base, lesson(), EPOCH, log, &settings),
            base,
            now: base,
            outputs: Vec::new(),
            _dir: dir,
        };
        h.drain();
        h
    }

    fn wall(&self) -> u64 {
        WALL_AT_BASE + u64::try_from((self.now - self.base).as_micros()).unwrap()
    }

    /// The outputs since the last call.
    fn drain(&mut self) -> Vec<Output> {
        let mut new = Vec::new();
        while let Some(o) = self.feed.poll_output() {
            new.push(o);
        }
        self.outputs.extend(new.iter().cloned());
        new
    }

    /// The gate values told since the last drain, in order.
    fn gates(outputs: &[Output]) -> Vec<bool> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Gate(g) => Some(*g),
                _ => None,
            })
            .collect()
    }

    /// Moves time to the machine's next deadline and tells it.
    fn tick(&mut self) -> Vec<Output> {
        let next = self.feed.next_timeout();
        assert!(next >= self.now, "a deadline in the past");
        self.now = next;
        self.feed.handle_timeout(self.now, self.wall());
        self.drain()
    }

    /// Moves time to `at` through every deadline before it.
    fn advance_to(&mut self, at: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let mut ticks = 0;
        while self.feed.next_timeout() <= at {
            ticks += 1;
            assert!(ticks < 10_000, "a deadline that handling does not move");
            out.extend(self.tick());
        }
        self.now = at;
        out
    }

    /// Ticks until the machine asks to connect; returns where, from what.
    fn until_connect(&mut self) -> (String, u64) {
        let (url, resume_from, _) = self.until_connect_owned();
        (url, resume_from)
    }

    /// [`Harness::until_connect`], with the owner epoch `Hello` carries.
    fn until_connect_owned(&mut self) -> (String, u64, u64) {
        for _ in 0..1000 {
            for o in self.tick() {
                if let Output::Connect {
                    url,
                    resume_from,
                    epoch,
                } = o
                {
                    return (url, resume_from, epoch);
                }
            }
        }
        panic!("the feed never tried to connect");
    }

    fn connected(&mut self, first_ack: u64) -> Vec<Output> {
        self.feed.handle_connected(self.now, Ok(first_ack));
        self.drain()
    }

    fn refused(&mut self, why: &str) -> Vec<Output> {
        self.feed.handle_connected(self.now, Err(why.to_owned()));
        self.drain()
    }

    /// Connects (to whichever recorder is next) with the recorder holding
    /// `first_ack`; returns what `Hello` said.
    fn connect(&mut self, first_ack: u64) -> u64 {
        let (_, resume_from) = self.until_connect();
        self.connected(first_ack);
        resume_from
    }

    fn ack(&mut self, up_to: u64) -> Vec<Output> {
        self.feed.handle_ack(self.now, up_to);
        self.drain()
    }

    fn lost(&mut self) -> Vec<Output> {
        self.feed.handle_lost(self.now, "test");
        self.drain()
    }

    fn item(&mut self, item: Item) {
        self.feed.handle_item(self.now, self.wall(), item);
        self.drain();
    }

    fn chat(&mut self, text: &str) {
        self.item(Item::Record {
            at: self.now,
            record: Record::Chat {
                from: ParticipantId(1),
                to: None,
                text: text.to_owned(),
            },
        });
    }

    fn ended(&mut self) {
        self.item(Item::Record {
            at: self.now,
            record: Record::Event(LessonEvent::Ended {
                by: ParticipantId(1),
            }),
        });
    }

    /// Everything the connection would take now, parsed: (wire seq or None
    /// for `Flush`, the frame, whether it was a replay).
    fn transmit(&mut self) -> Vec<(Option<u64>, FeedFrame, bool)> {
        let mut sent = Vec::new();
        while self.feed.wants_send() {
            match self.feed.poll_transmit(self.now) {
                Some(Transmit::Frame { seq, bytes, replay }) => {
                    let frame = FeedFrame::parse(&bytes).unwrap();
                    assert_eq!(frame.seq(), Some(seq), "the bytes carry the wire seq");
                    sent.push((Some(seq), frame, replay));
                }
                Some(Transmit::Flush) => sent.push((None, FeedFrame::Flush, false)),
                None => break,
            }
        }
        self.drain();
        sent
    }

    fn seqs(sent: &[(Option<u64>, FeedFrame, bool)]) -> Vec<u64> {
        sent.iter().filter_map(|(s, _, _)| *s).collect()
    }

    fn done(&self) -> bool {
        self.outputs.contains(&Output::Done)
    }
}

fn chat_text(frame: &FeedFrame) -> &str {
    match frame {
        FeedFrame::Chat { text, .. } => text,
        other => panic!("not a chat: {other:?}"),
    }
}

#[test]
fn frames_are_numbered_after_what_the_recorder_already_holds() {
    let mut h = Harness::new(&["ws://a"]);
    // Frames before any recorder answered wait in the log.
    h.chat("one");
    assert!(
        h.transmit().is_empty(),
        "nothing is sent without a connection"
    );
    assert_eq!(h.connect(41), 0, "a first Hello resumes from 0");
    h.chat("two");
    h.now += Duration::from_millis(20);
    let at = h.now - Duration::from_millis(5);
    h.item(Item::Media(RecordedFrame {
        lesson: lesson(),
        track: TrackId::new(ParticipantId(2), MediaSource::Camera),
        at,
        media_time: 90_000,
        clock_rate: 90_000,
        codec: MediaCodec::Vp8,
        discontinuity: false,
        data: Arc::from(&b"frame"[..]),
    }));
    let sent = h.transmit();
    assert_eq!(Harness::seqs(&sent), [42, 43, 44]);
    assert_eq!(chat_text(&sent[0].1), "one");
    assert_eq!(chat_text(&sent[1].1), "two");
    match &sent[2].1 {
        FeedFrame::Media {
            arrival_micros,
            data,
            ..
        } => {
            assert_eq!(
                *arrival_micros,
                WALL_AT_BASE + 15_000,
                "stamped on the wall clock"
            );
            assert_eq!(data, b"frame");
        }
        other => panic!("not media: {other:?}"),
    }
    assert!(sent.iter().all(|(_, _, replay)| !replay));
    // A later connection resumes after what was acknowledged, on the same numbering.
    h.ack(43);
    h.lost();
    let (_, resume_from) = h.until_connect();
    assert_eq!(resume_from, 44);
    h.connected(43);
    assert_eq!(Harness::seqs(&h.transmit()), [44]);
}

#[test]
fn acks_free_the_log() {
    let mut h = Harness::new(&["ws://a"]);
    h.connect(0);
    for i in 0..3 {
        h.chat(&format!("m{i}"));
    }
    h.transmit();
    let held = |outputs: &[Output]| {
        outputs.iter().rev().find_map(|o| match o {
            Output::Figures(f) => Some(f.buffer_bytes),
            _ => None,
        })
    };
    let now = h.now;
    let before = held(&h.advance_to(now + Duration::from_secs(1))).unwrap();
    assert!(before > 0);
    h.ack(2);
    let now = h.now;
    let after_two = held(&h.advance_to(now + Duration::from_secs(1))).unwrap();
    assert!(0 < after_two && after_two < before);
    h.ack(3);
    let now = h.now;
    assert_eq!(held(&h.advance_to(now + Duration::from_secs(1))), Some(0));
    // Nothing is left to send again after a reconnect.
    h.lost();
    assert_eq!(h.connect(3), 4);
    assert!(h.transmit().is_empty());
}

#[test]
fn a_reconnect_replays_exactly_the_unacknowledged_frames_in_order() {
    let mut h = Harness::new(&["ws://a"]);
    h.connect(0);
    for i in 1..=5 {
        h.chat(&format!("m{i}"));
    }
    assert_eq!(Harness::seqs(&h.transmit()), [1, 2, 3, 4, 5]);
    h.ack(2);
    let lost = h.lost();
    assert!(lost.contains(&Output::Disconnect));
    assert_eq!(Harness::gates(&lost), [false]);
    assert!(
        h.transmit().is_empty(),
        "nothing is sent while disconnected"
    );
    assert_eq!(h.connect(2), 3);
    let replayed = h.transmit();
    assert_eq!(Harness::seqs(&replayed), [3, 4, 5]);
    assert_eq!(
        replayed
            .iter()
            .map(|(_, f, _)| chat_text(f))
            .collect::<Vec<_>>(),
        ["m3", "m4", "m5"]
    );
    assert!(
        replayed.iter().all(|(_, _, replay)| *replay),
        "counted as replayed"
    );
    h.chat("m6");
    assert_eq!(h.transmit(), [(Some(6), h_chat(6, "m6"), false)]);
    // A recorder that holds more than it had acknowledged is not sent it again.
    h.lost();
    assert_eq!(h.connect(5), 3);
    let sent = h.transmit();
    assert_eq!(Harness::seqs(&sent), [6]);
    assert!(sent[0].2);
}

/// What the harness's `chat` frame with local text `text` looks like on the
/// wire at `seq` (its stamp is the base instant's).
fn h_chat(seq: u64, text: &str) -> FeedFrame {
    FeedFrame::Chat {
        seq,
        at_micros: WALL_AT_BASE,
        from: ParticipantId(1),
        to: None,
        text: text.to_owned(),
    }
}

#[test]
fn failover_goes_through_the_recorders_in_order_from_the_lessons_own() {
    let mut h = Harness::new(&["ws://a", "ws://b", "ws://c"]);
    let mut tried = Vec::new();
    for _ in 0..4 {
        let (url, _) = h.until_connect();
        tried.push(url);
        h.refused("down");
    }
    assert_eq!(tried, ["ws://b", "ws://c", "ws://a", "ws://b"]);
    let (url, _) = h.until_connect();
    assert_eq!(url, "ws://c");
    h.connected(0);
    // After a success the lesson goes back to its own recorder first.
    h.lost();
    assert_eq!(h.until_connect().0, "ws://b");
}

#[test]
fn backoff_grows_to_its_bound_and_resets_on_success() {
    let mut h = Harness::new(&["ws://a"]);
    h.until_connect();
    let mut waits = Vec::new();
    for _ in 0..9 {
        h.refused("down");
        let failed_at = h.now;
        h.until_connect();
        waits.push((h.now - failed_at).as_millis());
    }
    assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    h.connected(0);
    // A lost connection is retried at once; the next failure waits the least.
    h.lost();
    let lost_at = h.now;
    h.until_connect();
    assert_eq!(h.now, lost_at);
    h.refused("down");
    let failed_at = h.now;
    h.until_connect();
    assert_eq!((h.now - failed_at).as_millis(), 100);
}

#[test]
fn no_recorder_configured_is_retried_with_backoff() {
    let mut h = Harness::new(&[]);
    let start = h.now;
    let out = h.advance_to(start + Duration::from_secs(10));
    assert!(!out.iter().any(|o| matches!(o, Output::Connect { .. })));
    assert!(h.feed.next_timeout() > h.now);
}

#[test]
fn silence_past_the_ack_timeout_loses_the_connection_and_reconnects() {
    let mut h = Harness::new(&["ws://a"]);
    h.connect(0);
    let up_at = h.now;
    // An ack keeps it alive: the timeout counts from the last one.
    let out = h.advance_to(up_at + Duration::from_secs(2));
    assert!(!out.contains(&Output::Disconnect));
    h.ack(0);
    let out = h.advance_to(up_at + Duration::from_secs(2) + ACK_TIMEOUT - Duration::from_millis(1));
    assert!(!out.contains(&Output::Disconnect));
    let out = h.advance_to(up_at + Duration::from_secs(2) + ACK_TIMEOUT);
    let lost = out.iter().position(|o| *o == Output::Disconnect);
    assert!(lost.is_some(), "{out:?}");
    assert_eq!(Harness::gates(&out), [false]);
    // And it tries again at once (at the same instant: `advance_to` stops there).
    let retry = out.iter().position(|o| matches!(o, Output::Connect { .. }));
    assert!(retry > lost, "{out:?}");
}

#[test]
fn the_gate_says_attached_only_while_a_recorder_answers_and_the_spool_is_within_bound() {
    // Memory for about two frames, then a spool that counts as lost past
    // about three.
    let mut h = Harness::with_bounds(&["ws://a"], 100, 150);
    assert_eq!(
        Harness::gates(&h.outputs),
        [false],
        "told lost at the start"
    );
    h.until_connect();
    assert!(
        Harness::gates(&h.refused("down")).is_empty(),
        "still lost: said once"
    );
    h.until_connect();
    assert_eq!(Harness::gates(&h.connected(0)), [true]);
    let mut n = 0;
    while !Harness::gates(&h.outputs).ends_with(&[true, false]) {
        n += 1;
        assert!(n < 100, "the spool bound never counted");
        h.chat(&"x".repeat(30));
    }
    // Sent, but not yet durable: still lost.
    h.transmit();
    let told = Harness::gates(&h.outputs).len();
    h.ack(n - 1);
    assert_eq!(
        Harness::gates(&h.outputs[..])[told..],
        [true],
        "back within its bound"
    );
    assert_eq!(Harness::gates(&h.lost()), [false]);
}

#[test]
fn end_follows_ended_after_a_pause_and_nothing_follows_end() {
    let mut h = Harness::new(&["ws://a"]);
    h.connect(10);
    h.ended();
    let ended_at = h.now;
    assert_eq!(Harness::seqs(&h.transmit()), [11]);
    h.ack(11);
    // The participants' leaving events come in between.
    h.advance_to(ended_at + Duration::from_secs(2));
    h.chat("goodbye");
    assert_eq!(Harness::seqs(&h.transmit()), [12]);
    h.ack(12);
    h.advance_to(ended_at + Duration::from_secs(4));
    h.ack(12);
    h.advance_to(ended_at + END_AFTER - Duration::from_millis(1));
    assert!(h.transmit().is_empty(), "no End before its time");
    h.advance_to(ended_at + END_AFTER);
    assert_eq!(
        h.transmit(),
        [(
            Some(13),
            FeedFrame::End {
                seq: 13,
                at_micros: WALL_AT_BASE + 5_000_000
            },
            false
        )]
    );
    // A frame after End is refused: never numbered, never sent.
    let frames = h.feed.frames();
    h.chat("too late");
    assert_eq!(h.feed.frames(), frames);
    assert!(h.transmit().is_empty());
    assert!(!h.done());
    h.ack(13);
    assert!(h.done(), "done once End is acknowledged");
}

#[test]
fn at_shutdown_everything_is_sent_then_flush_and_it_is_done_when_acknowledged() {
    let mut h = Harness::new(&["ws://a"]);
    h.connect(0);
    for i in 1..=3 {
        h.chat(&format!("m{i}"));
    }
    h.transmit();
    h.chat("m4");
    h.feed.stop(h.now);
    h.drain();
    let sent = h.transmit();
    assert_eq!(
        sent.iter().map(|(s, _, _)| *s).collect::<Vec<_>>(),
        [Some(4), None],
        "the rest, then one Flush"
    );
    assert!(h.transmit().is_empty(), "one Flush per connection");
    h.ack(3);
    assert!(!h.done());
    // A reconnect during the drain sends the rest and flushes again.
    h.lost();
    h.connect(3);
    let sent = h.transmit();
    assert_eq!(
        sent.iter().map(|(s, _, _)| *s).collect::<Vec<_>>(),
        [Some(4), None]
    );
    h.ack(4);
    assert!(h.done());
    assert_eq!(h.outputs.last(), Some(&Output::Done));
}

#[test]
fn at_shutdown_the_drain_ends_at_its_deadline() {
    let mut h = Harness::new(&["ws://a"]);
    h.chat("never acknowledged");
    let stopped_at = h.now;
    h.feed.stop(h.now);
    h.drain();
    loop {
        let out = h.tick();
        if out.iter().any(|o| matches!(o, Output::Connect { .. })) {
            h.refused("down");
        }
        if h.done() {
            break;
        }
        assert!(h.now < stopped_at + DRAIN_LIMIT);
    }
    assert_eq!(h.now, stopped_at + DRAIN_LIMIT);
    // Done means done: nothing more comes out.
    h.feed
        .handle_timeout(h.now + Duration::from_secs(1), h.wall());
    h.chat("later");
    assert_eq!(h.outputs.iter().filter(|o| **o == Output::Done).count(), 1);
    assert_eq!(h.outputs.last(), Some(&Output::Done));
}

#[test]
fn stopping_with_everything_acknowledged_is_done_at_once() {
    let mut h = Harness::new(&["ws://a"]);
    h.connect(0);
    h.chat("m1");
    h.transmit();
    h.ack(1);
    h.feed.stop(h.now);
    assert_eq!(h.drain(), [Output::Done]);
}

#[test]
fn a_closed_room_flushes_everything_and_says_so_once_acknowledged() {
    let mut h = Harness::new(&["ws://a"]);
    h.connect(10);
    h.chat("before the close");
    h.feed.close(h.now);
    h.drain();
    let sent = h.transmit();
    assert_eq!(Harness::seqs(&sent), [11]);
    assert_eq!(
        sent.last().map(|s| &s.1),
        Some(&FeedFrame::Flush),
        "{sent:?}"
    );
    assert!(!h.outputs.contains(&Output::Closed), "not before the ack");
    // A frame that still comes is sent, and flushed again.
    h.chat("straggler");
    let sent = h.transmit();
    assert_eq!(Harness::seqs(&sent), [12]);
    assert_eq!(sent.last().map(|s| &s.1), Some(&FeedFrame::Flush));
    h.ack(11);
    assert!(
        !h.outputs.contains(&Output::Closed),
        "one frame unacknowledged"
    );
    let out = h.ack(12);
    assert_eq!(out.iter().filter(|o| **o == Output::Closed).count(), 1);
    assert!(!h.done(), "the hub stops it, not the machine");
    // Opened again: it carries on, numbering after what it sent.
    h.feed.reopen(EPOCH);
    h.chat("after the reopen");
    let sent = h.transmit();
    assert_eq!(Harness::seqs(&sent), [13]);
    assert_eq!(chat_text(&sent[0].1), "after the reopen");
    assert!(!h.feed.is_ended());
}

#[test]
fn a_closed_room_waits_for_a_recorder_however_long_it_takes() {
    let mut h = Harness::new(&["ws://a"]);
    h.chat("held");
    h.feed.close(h.now);
    h.drain();
    // The recorder is unreachable for ten minutes.
    let later = h.now + Duration::from_secs(600);
    loop {
        h.until_connect();
        if h.now >= later {
            break;
        }
        h.refused("down");
    }
    assert!(!h.outputs.contains(&Output::Closed) && !h.done());
    h.connected(0);
    let sent = h.transmit();
    assert_eq!(Harness::seqs(&sent), [1]);
    h.ack(1);
    assert!(h.outputs.contains(&Output::Closed));
}

#[test]
fn a_feed_connects_as_its_owner_epoch_and_a_reopen_under_a_newer_lease_raises_it() {
    let mut h = Harness::new(&["ws://r1"]);
    let (_, _, epoch) = h.until_connect_owned();
    assert_eq!(epoch, EPOCH);
    h.connected(0);
    h.feed.close(h.now);
    h.drain();
    // This node took the lesson again under a newer lease (the old one lapsed).
    h.feed.reopen(EPOCH + 4);
    // An older epoch never lowers it.
    h.feed.reopen(EPOCH + 1);
    h.lost();
    let (_, _, epoch) = h.until_connect_owned();
    assert_eq!(epoch, EPOCH + 4);
}

#[test]
fn a_feed_refused_as_superseded_stops_and_never_reconnects() {
    let mut h = Harness::new(&["ws://r1", "ws://r2"]);
    h.chat("before the pause");
    h.until_connect();
    h.feed.handle_superseded(h.now, "a newer owner");
    let out = h.drain();
    assert!(out.contains(&Output::Done), "{out:?}");
    assert!(h.feed.is_superseded());
    assert!(!h.feed.is_ended());
    // Nothing more: no retry, no frame sent, inputs ignored (the shell
    // drops a done machine; time passing changes nothing either).
    h.chat("after");
    h.now += Duration::from_secs(60);
    h.feed.handle_timeout(h.now, h.wall());
    let later = h.drain();
    assert!(
        !later.iter().any(|o| matches!(o, Output::Connect { .. })),
        "{later:?}"
    );
    assert!(!h.feed.wants_send());
}

#[test]
fn a_feed_closed_as_superseded_while_up_stops() {
    let mut h = Harness::new(&["ws://r1"]);
    h.until_connect();
    h.connected(0);
    h.chat("one");
    assert_eq!(h.transmit().len(), 1);
    h.feed
        .handle_superseded(h.now, "the recorder closed the feed");
    let out = h.drain();
    // The room is told its recording is gone before the feed stops.
    let gate = out.iter().position(|o| *o == Output::Gate(false));
    let done = out.iter().position(|o| *o == Output::Done);
    assert!(gate.is_some() && gate < done, "{out:?}");
    assert!(
        out.contains(&Output::Disconnect) && out.contains(&Output::Done),
        "{out:?}"
    );
}
