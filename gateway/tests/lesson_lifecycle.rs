//! A lesson's life cycle on the server (issue 17), through a whole node over
//! real HTTP and WebSockets: the window it may be joined in (no room token
//! and no join before it opens or after it closes, staff can keep it open
//! longer, nobody else can), and a room nobody is in closing after the idle
//! timeout with its recording written to a real `recorder serve` process,
//! then opening again on the next join with the recording continuing; a
//! lesson still running when its window closes ended by the server (its
//! staff warned first, everyone told it ended, its recording final), and
//! an extension made before the close keeping it running.
#![allow(clippy::unwrap_used)]

mod feed_support;
mod media_support;
mod peer_support;
mod recorder_support;
mod web_support;

use std::time::Duration;

use chaperone_gateway::store::StateStore as _;
use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::feed::FeedFrame;
use chaperone_protocol::signal::{ClientMsg, Farewell, ServerMsg};
use chaperone_protocol::{LessonId, ParticipantId};
use media_support::wait_for;
use peer_support::join;
use recorder_support::RecorderSetup;
use reqwest::StatusCode;
use serde_json::json;
use web_support::{Browser, Node, open_ws};

const MIN: u64 = 60_000;

async fn lesson_at(b: &mut Browser, starts_at_ms: u64, ends_at_ms: u64) -> String {
    let a = b
        .post(
            "/api/lessons",
            json!({"title": "Fractions", "class": "7A",
                "starts_at_ms": starts_at_ms, "ends_at_ms": ends_at_ms}),
        )
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    a.json()["id"].as_str().unwrap().to_owned()
}

/// Every audit record of `action` about `lesson`: (actor's subject, outcome).
async fn audited(slt: &mut Browser, action: &str, lesson: &str) -> Vec<(String, String)> {
    let log = slt.get("/api/audit?from=0").await.unwrap().json();
    log.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == action && r["lesson"] == lesson)
        .map(|r| {
            (
                r["actor"]["subject"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn outside_its_window_a_lesson_issues_no_token_and_refuses_joins() {
    let node = Node::start(|c| {
        c.lesson.open_before_mins = 15;
        c.lesson.close_grace_mins = 0;
    })
    .await
    .unwrap();
    let now = chaperone_gateway::clock::unix_millis();
    let mut teacher = node.browser();
    teacher.login_ok("teacher").await.unwrap();
    let mut pupil = node.browser();
    pupil.login_ok("pupil-a").await.unwrap();

    // Two hours ahead: not open yet, for staff or pupils.
    let later = lesson_at(&mut teacher, now + 120 * MIN, now + 180 * MIN).await;
    for b in [&mut teacher, &mut pupil] {
        let a = b.room_token(&later).await.unwrap();
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
        let j = a.json();
        assert_eq!(j["error"], "not_open");
        assert_eq!(j["opens_at_ms"], now + 105 * MIN);
        assert!(
            j["message"]
                .as_str()
                .unwrap()
                .starts_with("This lesson opens at "),
            "{j}"
        );
    }
    let view = teacher
        .get(&format!("/api/lessons/{later}"))
        .await
        .unwrap()
        .json();
    assert_eq!(view["state"], "upcoming");

    // A token issued while a lesson was open does not join once it is not:
    // the join checks the window itself (here the lesson was moved later).
    let moved = lesson_at(&mut teacher, now, now + 60 * MIN).await;
    let token = pupil.room_token(&moved).await.unwrap().json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = moved.clone();
    let mut record: serde_json::Value = serde_json::from_str(
        &node
            .store
            .get_record("lessons", &key)
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    record["starts_at_ms"] = json!(now + 120 * MIN);
    record["ends_at_ms"] = json!(now + 180 * MIN);
    node.store
        .put_record("lessons", &key, record.to_string())
        .await
        .unwrap();
    assert_eq!(
        open_ws(&node, &moved, &token).await.unwrap().err(),
        Some(403),
        "a join before the window opens"
    );

    // A lesson that has ended and whose grace (none here) has passed.
    let short = lesson_at(&mut teacher, now, now + 1500).await;
    let token = pupil.room_token(&short).await.unwrap().json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let closes = now + 1500;
    while chaperone_gateway::clock::unix_millis() <= closes {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        open_ws(&node, &short, &token).await.unwrap().err(),
        Some(410),
        "a join after the window closed, with a token issued inside it"
    );
    for b in [&mut teacher, &mut pupil] {
        let a = b.room_token(&short).await.unwrap();
        assert_eq!(a.status, StatusCode::GONE, "{}", a.body);
        assert_eq!(a.json()["error"], "closed");
        assert_eq!(a.json()["message"], "This lesson has closed.");
    }
    let view = pupil
        .get(&format!("/api/lessons/{short}"))
        .await
        .unwrap()
        .json();
    assert_eq!(view["state"], "ended");

    // Nobody but the lesson's staff keeps it open longer: not a pupil, not
    // SLT (who may see every lesson); each refusal is audited.
    let mut slt = node.browser();
    slt.login_ok("slt").await.unwrap();
    for b in [&mut pupil, &mut slt] {
        let a = b
            .post(
                &format!("/api/lessons/{short}/extend"),
                json!({"minutes": 5}),
            )
            .await
            .unwrap();
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    }
    assert_eq!(
        pupil.room_token(&short).await.unwrap().status,
        StatusCode::GONE,
        "a refused extension changes nothing"
    );
    for bad in [json!({"minutes": 0}), json!({"minutes": 121}), json!({})] {
        let a = teacher
            .post(&format!("/api/lessons/{short}/extend"), bad)
            .await
            .unwrap();
        assert!(a.status.is_client_error(), "{}", a.body);
    }
    // Its teacher does: open again from now, for the minutes asked.
    let before = chaperone_gateway::clock::unix_millis();
    let a = teacher
        .post(
            &format!("/api/lessons/{short}/extend"),
            json!({"minutes": 5}),
        )
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let view = a.json();
    assert_eq!(view["state"], "live");
    let closes_at = view["closes_at_ms"].as_u64().unwrap();
    assert!(
        closes_at >= before + 5 * MIN
            && closes_at <= chaperone_gateway::clock::unix_millis() + 5 * MIN,
        "{view}"
    );
    let t = pupil.room_token(&short).await.unwrap();
    assert_eq!(t.status, StatusCode::OK, "{}", t.body);
    let mut ws = open_ws(&node, &short, t.json()["token"].as_str().unwrap())
        .await
        .unwrap()
        .expect("the extended lesson is joined");
    assert!(matches!(
        web_support::recv(&mut ws).await.unwrap(),
        ServerMsg::Welcome { .. }
    ));

    let extended = audited(&mut slt, "lesson_extended", &short).await;
    assert!(
        extended.contains(&("teacher".to_owned(), "ok".to_owned())),
        "{extended:?}"
    );
    assert!(
        extended.contains(&("pupil-a".to_owned(), "forbidden".to_owned()))
            && extended.contains(&("slt".to_owned(), "forbidden".to_owned())),
        "{extended:?}"
    );
    let refused = audited(&mut slt, "room_token_refused", &later).await;
    assert!(
        refused.contains(&("pupil-a".to_owned(), "not_open".to_owned())),
        "{refused:?}"
    );
}

/// The chat texts in the lesson's archive, in order.
fn chat_texts(setup: &RecorderSetup, lesson: LessonId) -> Vec<String> {
    setup
        .frames(lesson)
        .into_iter()
        .filter_map(|(_, f)| match f {
            FeedFrame::Chat { text, .. } => Some(text),
            _ => None,
        })
        .collect()
}

async fn lessons_live(node: &Node) -> f64 {
    let text = node.scrape().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("chaperone_lessons_live "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn an_empty_lesson_closes_after_the_idle_timeout_and_its_recording_verifies() {
    tokio::time::timeout(Duration::from_secs(150), async {
        let mut setup = RecorderSetup::new("http://placeholder");
        let url = setup.url();
        let node = Node::start(move |c| {
            c.recorder.urls = vec![url];
            c.lesson.idle_close_secs = 2;
            c.feed.ack_timeout_ms = 2000;
        })
        .await
        .unwrap();
        setup.settings.gateway_url = node.base();
        let _recorder = setup.start().await;
        let mut b = node.browser();
        b.login_ok("teacher").await.unwrap();
        let id = b.create_lesson("7A").await.unwrap();
        let lesson: LessonId = id.parse().unwrap();

        for (visit, words) in ["first visit", "second visit"].into_iter().enumerate() {
            let teacher = join(&node, "teacher", &id).await;
            teacher
                .wait("teacher admitted", |m| matches!(m, ServerMsg::Admitted))
                .await;
            teacher.send(ClientMsg::Chat {
                to: None,
                text: words.into(),
            });
            wait_for(Duration::from_secs(15), || node.app.recorder.attached())
                .await
                .unwrap();
            assert_eq!(lessons_live(&node).await, 1.0);
            // Everyone leaves; the room stays for the idle timeout, then closes.
            drop(teacher);
            wait_for(Duration::from_secs(30), || node.app.rooms.all().is_empty())
                .await
                .unwrap_or_else(|_| panic!("visit {visit}: the empty lesson did not close"));
            assert_eq!(lessons_live(&node).await, 0.0);
            // Its feed had the recorder write everything, and finished.
            wait_for(Duration::from_secs(30), || {
                chat_texts(&setup, lesson).iter().any(|t| t == words)
            })
            .await
            .unwrap_or_else(|_| panic!("visit {visit}: {words:?} not written"));
            wait_for(Duration::from_secs(15), || {
                let f = node.app.recorder.figures();
                f.buffer_bytes == 0 && f.spool_bytes == 0
            })
            .await
            .unwrap();
            // Signed and complete up to here; not final, since the lesson
            // has not ended and may be joined again.
            let report = setup.verify(lesson).await;
            assert!(
                report
                    .problems()
                    .all(|f| matches!(f, chaperone_archive::verify::Finding::NotFinal { .. })),
                "{}",
                report.to_human()
            );
            assert!(report.segments_ok >= 1, "{}", report.to_human());
        }
        // The second visit continued the first's recording, in order.
        let texts = chat_texts(&setup, lesson);
        assert_eq!(texts, ["first visit", "second visit"], "{texts:?}");
        let seqs: Vec<u64> = setup.frames(lesson).iter().map(|(s, _)| *s).collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "one numbering without holes or repeats: {seqs:?}"
        );
    })
    .await
    .unwrap();
}

/// The lesson events in the lesson's archive, in order.
fn events(setup: &RecorderSetup, lesson: LessonId) -> Vec<LessonEvent> {
    setup
        .frames(lesson)
        .into_iter()
        .filter_map(|(_, f)| match f {
            FeedFrame::Event { event, .. } => Some(event),
            _ => None,
        })
        .collect()
}

/// The seconds left in each close warning `peer` received.
fn warnings(peer: &peer_support::Peer) -> Vec<u64> {
    peer.inbox
        .lock()
        .unwrap()
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Closing { in_secs } => Some(*in_secs),
            _ => None,
        })
        .collect()
}

/// A node recording to a real `recorder serve`, whose lessons close as
/// soon as they end (no grace) and warn staff `warning_mins` before.
async fn recorded_node(
    warning_mins: u64,
) -> (Node, RecorderSetup, recorder_support::RecorderProcess) {
    let mut setup = RecorderSetup::new("http://placeholder");
    let url = setup.url();
    let node = Node::start(move |c| {
        c.recorder.urls = vec![url];
        c.lesson.close_grace_mins = 0;
        c.lesson.close_warning_mins = warning_mins;
        c.feed.ack_timeout_ms = 2000;
    })
    .await
    .unwrap();
    setup.settings.gateway_url = node.base();
    let recorder = setup.start().await;
    (node, setup, recorder)
}

/// The teacher and an admitted pupil in `lesson`, the recording attached.
async fn teacher_and_pupil(node: &Node, lesson: &str) -> (peer_support::Peer, peer_support::Peer) {
    let teacher = join(node, "teacher", lesson).await;
    teacher
        .wait("teacher admitted", |m| matches!(m, ServerMsg::Admitted))
        .await;
    wait_for(Duration::from_secs(15), || node.app.recorder.attached())
        .await
        .unwrap();
    let pupil = join(node, "pupil-a", lesson).await;
    pupil
        .wait("pupil waiting", |m| matches!(m, ServerMsg::Waiting { .. }))
        .await;
    let p = pupil.you();
    // The recorder may be acknowledged a moment after the teacher's page saw it.
    wait_for(Duration::from_secs(15), || {
        if !pupil.seen(|m| matches!(m, ServerMsg::Admitted)) {
            teacher.send(ClientMsg::Admit { participant: p });
        }
        pupil.seen(|m| matches!(m, ServerMsg::Admitted))
    })
    .await
    .unwrap_or_else(|_| panic!("pupil not admitted: {:?}", pupil.inbox.lock().unwrap()));
    (teacher, pupil)
}

#[tokio::test]
async fn a_lesson_running_when_its_window_closes_is_ended_by_the_server_and_its_recording_is_final()
{
    tokio::time::timeout(Duration::from_secs(150), async {
        let (node, setup, _recorder) = recorded_node(1).await;
        let mut staff = node.browser();
        staff.login_ok("teacher").await.unwrap();
        let now = chaperone_gateway::clock::unix_millis();
        let closes = now + 20_000;
        let id = lesson_at(&mut staff, now, closes).await;
        let lesson: LessonId = id.parse().unwrap();
        let (teacher, pupil) = teacher_and_pupil(&node, &id).await;

        // Inside the warning period from the start (one minute): the
        // teacher is warned with the time left; the pupil is not.
        teacher
            .wait("the close warning", |m| {
                matches!(m, ServerMsg::Closing { .. })
            })
            .await;
        let left = warnings(&teacher)[0];
        assert!((1..=20).contains(&left), "{left}");
        assert!(warnings(&pupil).is_empty());
        assert!(!teacher.seen(|m| matches!(m, ServerMsg::Goodbye { .. })));

        // The window closes: both are told the lesson ended, as when a
        // teacher ends it, not a moment before the close.
        for (who, peer) in [("teacher", &teacher), ("pupil", &pupil)] {
            wait_for(Duration::from_secs(40), || {
                peer.seen(|m| {
                    *m == ServerMsg::Goodbye {
                        reason: Farewell::Ended,
                    }
                })
            })
            .await
            .unwrap_or_else(|_| panic!("{who} not told: {:?}", peer.inbox.lock().unwrap()));
        }
        assert!(chaperone_gateway::clock::unix_millis() >= closes);
        // The room is gone for good: ended, not merely closed.
        wait_for(Duration::from_secs(15), || node.app.rooms.all().is_empty())
            .await
            .unwrap();
        assert!(node.app.rooms.has_ended(lesson));
        assert_eq!(lessons_live(&node).await, 0.0);

        // The recording is final and verifies, with the cause recorded.
        wait_for(Duration::from_secs(30), || {
            let f = node.app.recorder.figures();
            f.buffer_bytes == 0 && f.spool_bytes == 0
        })
        .await
        .unwrap();
        let mut report = setup.verify(lesson).await;
        for _ in 0..100 {
            if report.is_final {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            report = setup.verify(lesson).await;
        }
        assert!(report.is_final, "{}", report.to_human());
        assert_eq!(report.problems().count(), 0, "{}", report.to_human());
        let recorded = events(&setup, lesson);
        let end = recorded
            .iter()
            .position(|e| *e == LessonEvent::TimeRanOut {})
            .unwrap_or_else(|| panic!("no time_ran_out: {recorded:?}"));
        assert_eq!(
            recorded.get(end + 1),
            Some(&LessonEvent::Ended {
                by: ParticipantId::SERVER
            })
        );

        // Its API says it ended, and when (from the register); its staff
        // cannot reopen it.
        let mut view = serde_json::Value::Null;
        for _ in 0..50 {
            view = staff
                .get(&format!("/api/lessons/{id}"))
                .await
                .unwrap()
                .json();
            if view["ended_at_ms"].is_u64() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(view["ended_at_ms"].as_u64().unwrap() >= closes, "{view}");
        assert_eq!(view["state"], "ended", "{view}");
        let a = staff
            .post(&format!("/api/lessons/{id}/extend"), json!({"minutes": 5}))
            .await
            .unwrap();
        assert!(a.status.is_client_error(), "{}", a.body);
        assert_eq!(
            staff.room_token(&id).await.unwrap().status,
            StatusCode::GONE
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_extension_before_the_close_keeps_the_lesson_running() {
    tokio::time::timeout(Duration::from_secs(150), async {
        // Warned two minutes before: the extension's new close is inside
        // that too, so the teacher's second warning shows the room heard it.
        let (node, _setup, _recorder) = recorded_node(2).await;
        let mut staff = node.browser();
        staff.login_ok("teacher").await.unwrap();
        let now = chaperone_gateway::clock::unix_millis();
        let closes = now + 15_000;
        let id = lesson_at(&mut staff, now, closes).await;
        let (teacher, pupil) = teacher_and_pupil(&node, &id).await;
        teacher
            .wait("the close warning", |m| {
                matches!(m, ServerMsg::Closing { .. })
            })
            .await;
        assert!(
            chaperone_gateway::clock::unix_millis() < closes,
            "too slow to test"
        );

        let a = staff
            .post(&format!("/api/lessons/{id}/extend"), json!({"minutes": 1}))
            .await
            .unwrap();
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.json()["closes_at_ms"], closes + MIN);
        // The lesson's task read the new close: a new warning, a minute later.
        wait_for(Duration::from_secs(10), || warnings(&teacher).len() >= 2)
            .await
            .unwrap_or_else(|_| panic!("no second warning: {:?}", warnings(&teacher)));
        let w = warnings(&teacher);
        assert!(w[1] > 60 && w[1] > w[0], "{w:?}");

        // Past the old close, it runs on: nobody is said goodbye to and chat
        // still reaches the class.
        while chaperone_gateway::clock::unix_millis() < closes + 3000 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for peer in [&teacher, &pupil] {
            assert!(!peer.seen(|m| matches!(m, ServerMsg::Goodbye { .. })));
        }
        teacher.send(ClientMsg::Chat {
            to: None,
            text: "still here".into(),
        });
        pupil
            .wait(
                "chat after the old close",
                |m| matches!(m, ServerMsg::Chat { text, .. } if text == "still here"),
            )
            .await;
        let lesson: LessonId = id.parse().unwrap();
        assert!(!node.app.rooms.has_ended(lesson));
        assert_eq!(lessons_live(&node).await, 1.0);
    })
    .await
    .unwrap();
}
