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

mod feed_support;
mod media_support;
mod peer_support;
mod recorder_support;
mod web_support;

use std::time::Duration;

use chaperone_protocol::LessonId;
use chaperone_protocol::feed::FeedFrame;
use chaperone_protocol::signal::{ClientMsg, ErrorCode, ServerMsg};
use feed_support::{chats, check_archive, end_and_verify, start_lesson, start_pair};
use media_support::wait_for;
use peer_support::join;

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
        // Media kept flowing: the figures say how far behind the recording is.
        let lost = node.app.recorder.figures();
        assert!(
            lost.lag_micros >= 1_000_000 && lost.buffer_bytes > 0,
            "the feed's figures did not follow the loss: {lost:?}"
        );
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
        setup.settings.segment_secs = Some(300);
        let mut recorder = setup.start().await;
        let lesson = start_lesson(&node).await;
        chats(&lesson, "public");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let id: LessonId = lesson.id.parse().unwrap();
        assert!(setup.frames(id).is_empty(), "nothing sealed yet");
        // SIGTERM: the open segment is sealed, stored and checkpointed
        // before the process exits.
        recorder.terminate(Duration::from_secs(60)).unwrap();
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
                .all(|f| matches!(f, chaperone_archive::verify::Finding::NotFinal { .. })),
            "{}",
            report.to_human()
        );
        // Another one takes over; the lesson ends complete.
        setup.settings.segment_secs = Some(1);
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
