//! The whole recording path under test: a gateway node in-process whose
//! feeds go to a real `recorder serve` process, a lesson with a teacher and
//! a pupil publishing real media through the SFU, and the archive checked
//! against what the SFU forwarded.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::feed::FeedFrame;
use chaperone_protocol::signal::{ClientMsg, ServerMsg};
use chaperone_protocol::{Engagement, LessonId, MediaSource, TrackId};

use crate::media_support::{self, wait_for};
use crate::peer_support::{Peer, join};
use crate::recorder_support::RecorderSetup;
use crate::web_support::Node;

/// A node whose recordings go to `recorder`, holding pupils `grace` seconds
/// after the recorder is lost.
pub async fn node_for(recorder: &RecorderSetup, grace: u64) -> Node {
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
pub async fn start_pair(grace: u64) -> (Node, RecorderSetup) {
    // Bind the node first to learn its URL, then give it to the recorder.
    let mut setup = RecorderSetup::new("http://placeholder");
    let node = node_for(&setup, grace).await;
    setup.settings.gateway_url = node.base();
    (node, setup)
}

/// Teacher and one pupil in a lesson, both publishing audio and camera.
pub struct Lesson {
    pub id: String,
    pub teacher: Peer,
    pub pupil: Peer,
    pub clients: Vec<media_support::Client>,
}

pub async fn start_lesson(node: &Node) -> Lesson {
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

pub fn chats(lesson: &Lesson, what: &str) {
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
pub async fn end_and_verify(node: &Node, setup: &RecorderSetup, lesson: &Lesson) -> LessonId {
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
pub async fn check_archive(node: &Node, setup: &RecorderSetup, id: LessonId) {
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
