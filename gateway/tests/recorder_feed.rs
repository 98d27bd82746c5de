//! The recorder feed through the whole stack: a gateway node in-process,
//! str0m WebRTC clients publishing real media through its SFU, and a real
//! `recorder serve` process (killed with SIGKILL in one test) writing the
//! archive, which is then opened with the review identity and verified.
//!
//! What must hold: every media frame the SFU forwarded (it counts them) is in
//! the archive exactly once, in order, with every chat message (private ones
//! too) and the lesson's events; a recorder killed mid-lesson and replaced
//! loses nothing after the replay; with no recorder pupils are not admitted,
//! and when it is lost beyond the grace pupils are held.
#![allow(clippy::unwrap_used)]

mod media_support;
mod peer_support;
mod recorder_support;
mod web_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::feed::FeedFrame;
use chaperone_protocol::signal::{ClientMsg, ErrorCode, ServerMsg};
use chaperone_protocol::{Engagement, LessonId, MediaSource, TrackId};
use media_support::wait_for;
use peer_support::{Peer, join};
use recorder_support::RecorderSetup;
use web_support::Node;

/// A node whose recordings go to `recorder`, holding pupils `grace` seconds
/// after the recorder is lost.
async fn node_for(recorder: &RecorderSetup, grace: u64) -> Node {
    let url = recorder.url();
    Node::start(move |c| {
        c.recorder.urls = vec![url];
        c.lesson.recorder_grace_secs = grace;
        c.feed.ack_timeout_ms = 2000;
    })
    .await
    .unwrap()
}

/// The issuer the node's service tokens carry: its public URL. Known only
/// once the node is listening, so the recorder's setup is made first with
/// a placeholder and fixed here.
async fn start_pair(grace: u64) -> (Node, RecorderSetup) {
    // Bind the node first to learn its URL, then give it to the recorder.
    let mut setup = RecorderSetup::new("http://placeholder");
    let node = node_for(&setup, grace).await;
    setup.issuer = node.base();
    (node, setup)
}

/// Teacher and one pupil in a lesson, both publishing audio and camera.
struct Lesson {
    id: String,
    teacher: Peer,
    pupil: Peer,
    clients: Vec<media_support::Client>,
}

async fn start_lesson(node: &Node) -> Lesson {
    let mut b = node.browser();
    b.login_ok("teacher").await.unwrap();
    let id = b.create_lesson("7A").await.unwrap();
    let teacher = join(node, "teacher", &id).await;
    teacher
        .wait("teacher admitted", |m| matches!(m, ServerMsg::Admitted))
        .await;
    let pupil = join(node, "pupil-a", &id).await;
    pupil
        .wait("pupil waiting", |m| matches!(m, ServerMsg::Waiting { .. }))
        .await;
    teacher.send(ClientMsg::AdmitAll);
    pupil
        .wait("pupil admitted", |m| matches!(m, ServerMsg::Admitted))
        .await;
    pupil.send(ClientMsg::SetEngagement {
        engagement: Engagement::VoiceChatCamera,
    });
    for source in [MediaSource::Microphone, MediaSource::Camera] {
        teacher.send(ClientMsg::SetSource { source, on: true });
    }
    let ct = teacher.media(false).await;
    let cp = pupil.media(false).await;
    let rx = cp.counters.clone();
    wait_for(Duration::from_secs(20), || {
        rx.audio_rx() > 20 && rx.video_rx() > 5
    })
    .await
    .unwrap_or_else(|_| panic!("pupil got audio {} video {}", rx.audio_rx(), rx.video_rx()));
    Lesson {
        id,
        teacher,
        pupil,
        clients: vec![ct, cp],
    }
}

fn chats(lesson: &Lesson, what: &str) {
    let teacher_id = lesson.teacher.you();
    match what {
        "public" => lesson.teacher.send(ClientMsg::Chat {
            to: None,
            text: "good morning, class".into(),
        }),
        "private" => {
            lesson.pupil.send(ClientMsg::Chat {
                to: Some(teacher_id),
                text: "can I ask something privately?".into(),
            });
            lesson.teacher.send(ClientMsg::Chat {
                to: Some(lesson.pupil.you()),
                text: "of course".into(),
            });
        }
        _ => unreachable!(),
    }
}

/// Ends the lesson and waits for its final manifest to verify.
async fn end_and_verify(node: &Node, setup: &RecorderSetup, lesson: &Lesson) -> LessonId {
    lesson.teacher.send(ClientMsg::EndLesson);
    let id: LessonId = lesson.id.parse().unwrap();
    let mut report = setup.verify(id).await;
    for _ in 0..300 {
        if report.ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        report = setup.verify(id).await;
    }
    assert!(report.ok, "{}", report.to_human());
    assert!(report.is_final, "{}", report.to_human());
    let _ = node;
    id
}

/// Checks the archive against what the SFU forwarded: every frame once, in
/// seq order with no hole, each track's media times increasing.
async fn check_archive(node: &Node, setup: &RecorderSetup, id: LessonId) {
    let frames = setup.frames(id);
    let seqs: Vec<u64> = frames.iter().map(|(s, _)| *s).collect();
    let first = seqs[0];
    assert_eq!(
        seqs,
        (first..first + seqs.len() as u64).collect::<Vec<_>>(),
        "seqs are continuous, each once"
    );
    let mut per_track: BTreeMap<TrackId, Vec<u64>> = BTreeMap::new();
    for (_, f) in &frames {
        if let FeedFrame::Media {
            track, media_time, ..
        } = f
        {
            per_track.entry(*track).or_default().push(*media_time);
        }
    }
    for (track, times) in &per_track {
        assert!(
            times.windows(2).all(|w| w[0] < w[1]),
            "{track}: media frames duplicated or out of order"
        );
    }
    let stats = node.app.media.stats().await.unwrap();
    let archived: u64 = per_track.values().map(|t| t.len() as u64).sum();
    assert_eq!(
        stats.record_dropped, 0,
        "the SFU dropped frames for the recorder"
    );
    assert!(stats.recorded > 100, "{stats:?}");
    assert_eq!(
        archived, stats.recorded,
        "every frame the SFU forwarded is in the archive exactly once"
    );
    // Both people's microphone and camera are there.
    assert_eq!(per_track.len(), 4, "{:?}", per_track.keys());

    let texts: BTreeSet<(bool, String)> = frames
        .iter()
        .filter_map(|(_, f)| match f {
            FeedFrame::Chat { to, text, .. } => Some((to.is_some(), text.clone())),
            _ => None,
        })
        .collect();
    for expected in [
        (false, "good morning, class"),
        (true, "can I ask something privately?"),
        (true, "of course"),
    ] {
        assert!(
            texts.contains(&(expected.0, expected.1.to_owned())),
            "{expected:?} not recorded: {texts:?}"
        );
    }
    let events: Vec<&LessonEvent> = frames
        .iter()
        .filter_map(|(_, f)| match f {
            FeedFrame::Event { event, .. } => Some(event),
            _ => None,
        })
        .collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, LessonEvent::Admitted { .. }))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, LessonEvent::Ended { .. }))
    );
    assert!(matches!(frames.last(), Some((_, FeedFrame::End { .. }))));
}

#[tokio::test]
async fn every_forwarded_frame_and_message_is_in_the_archive() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let (node, setup) = start_pair(10).await;
        let _recorder = setup.start().await;
        let lesson = start_lesson(&node).await;
        chats(&lesson, "public");
        chats(&lesson, "private");
        // A few segments' worth of media.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let id = end_and_verify(&node, &setup, &lesson).await;
        drop(lesson.clients);
        check_archive(&node, &setup, id).await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_recorder_killed_mid_lesson_and_replaced_loses_nothing() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let (node, setup) = start_pair(10).await;
        let mut recorder = setup.start().await;
        let lesson = start_lesson(&node).await;
        chats(&lesson, "public");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        // kill -9, mid-segment: whatever it had not made durable is still
        // in the gateway's feed log.
        recorder.kill();
        chats(&lesson, "private");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!node.app.recorder.attached(), "the feed knows it is lost");
        // Another recorder process on the same store takes over.
        let _second = setup.start().await;
        wait_for(Duration::from_secs(15), || node.app.recorder.attached())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let figures = node.app.recorder.figures();
        let id = end_and_verify(&node, &setup, &lesson).await;
        drop(lesson.clients);
        check_archive(&node, &setup, id).await;
        assert!(figures.replayed > 0, "nothing was replayed: {figures:?}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn without_a_recorder_pupils_wait_and_when_it_is_lost_they_are_held() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let (node, setup) = start_pair(2).await;
        // No recorder yet.
        let mut b = node.browser();
        b.login_ok("teacher").await.unwrap();
        let id = b.create_lesson("7A").await.unwrap();
        let teacher = join(&node, "teacher", &id).await;
        teacher
            .wait("teacher admitted", |m| matches!(m, ServerMsg::Admitted))
            .await;
        let pupil = join(&node, "pupil-a", &id).await;
        pupil
            .wait("pupil waiting", |m| matches!(m, ServerMsg::Waiting { .. }))
            .await;
        teacher.send(ClientMsg::AdmitAll);
        wait_for(Duration::from_secs(5), || {
            teacher.refused(ErrorCode::NotRecording)
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!pupil.seen(|m| matches!(m, ServerMsg::Admitted)));

        // The recorder comes: the recording is attached, admission works.
        let mut recorder = setup.start().await;
        teacher
            .wait(
                "recording shown",
                |m| matches!(m, ServerMsg::Status(s) if s.recording),
            )
            .await;
        teacher.send(ClientMsg::AdmitAll);
        pupil
            .wait("pupil admitted", |m| matches!(m, ServerMsg::Admitted))
            .await;

        // It dies and does not come back: after the grace pupils are held.
        recorder.kill();
        pupil
            .wait(
                "pupil held",
                |m| matches!(m, ServerMsg::Status(s) if !s.held.is_empty()),
            )
            .await;
        // It comes back: released.
        let _again = setup.start().await;
        let released = pupil.inbox.lock().unwrap().len();
        wait_for(Duration::from_secs(15), || {
            pupil.inbox.lock().unwrap()[released..]
                .iter()
                .any(|m| matches!(m, ServerMsg::Status(s) if s.held.is_empty() && s.recording))
        })
        .await
        .unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_recorder_stopped_gracefully_writes_what_it_holds_first() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let (node, mut setup) = start_pair(10).await;
        // Segments every five minutes: nothing is written during the test
        // unless the recorder's shutdown writes it.
        setup.segment_secs = 300;
        let mut recorder = setup.start().await;
        let lesson = start_lesson(&node).await;
        chats(&lesson, "public");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let id: LessonId = lesson.id.parse().unwrap();
        assert!(setup.frames(id).is_empty(), "nothing sealed yet");
        // SIGTERM: the open segment is sealed, stored and checkpointed
        // before the process exits.
        recorder.terminate();
        let written = setup.frames(id);
        assert!(
            written
                .iter()
                .any(|(_, f)| matches!(f, FeedFrame::Media { .. })),
            "the shutdown wrote the open segment"
        );
        let report = setup.verify(id).await;
        assert!(
            report
                .problems()
                .all(|f| matches!(f, chaperone_recorder::verify::Finding::NotFinal { .. })),
            "{}",
            report.to_human()
        );
        // Another one takes over; the lesson ends complete.
        setup.segment_secs = 1;
        let _second = setup.start().await;
        wait_for(Duration::from_secs(15), || node.app.recorder.attached())
            .await
            .unwrap();
        chats(&lesson, "private");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let id = end_and_verify(&node, &setup, &lesson).await;
        drop(lesson.clients);
        check_archive(&node, &setup, id).await;
    })
    .await
    .unwrap();
}
