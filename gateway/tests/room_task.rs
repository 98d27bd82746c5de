//! The lesson task, the async shell around the core: with tokio's paused
//! clock, graces run out without waiting, and effects reach connections and
//! the recorder feed in order.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chaperone_gateway::lesson::{Account, JoinRequest, Lesson, LessonConfig, LessonSetup, Record};
use chaperone_gateway::room::{self, ConnEvent, FeedItem, RoomHandle, RoomSinks};
use chaperone_protocol::event::HoldReason;
use chaperone_protocol::signal::{ClientMsg, ErrorCode, Farewell, ServerMsg};
use chaperone_protocol::{LessonId, ParticipantId, UserRef};
use tokio::sync::mpsc;

const LESSON: LessonId = LessonId::from_bytes([5; 16]);

fn user(sub: &str) -> UserRef {
    UserRef::new("https://idp.test", sub).unwrap()
}

fn teacher() -> JoinRequest {
    JoinRequest {
        user: user("teacher"),
        name: "Ms T".into(),
        account: Account {
            staff: true,
            ..Account::default()
        },
    }
}

fn pupil(n: u8) -> JoinRequest {
    JoinRequest {
        user: user(&format!("pupil-{n}")),
        name: format!("Pupil {n}"),
        account: Account {
            pupil_classes: vec!["7B".into()],
            ..Account::default()
        },
    }
}

struct Fixture {
    room: RoomHandle,
    feed: mpsc::Receiver<(LessonId, FeedItem)>,
}

fn start() -> Fixture {
    let setup = LessonSetup {
        id: LESSON,
        class: "7B".into(),
        teachers: vec![user("teacher")],
        assistants: vec![],
        extra_pupils: vec![],
    };
    let lesson = Lesson::new(
        chaperone_gateway::clock::now(),
        setup,
        LessonConfig::default(),
    );
    let (feed_tx, feed) = mpsc::channel(10_000);
    let room = room::spawn(
        lesson,
        RoomSinks {
            media: None,
            feed: feed_tx,
            persist: None,
        },
    );
    Fixture { room, feed }
}

async fn join(
    room: &RoomHandle,
    req: JoinRequest,
    queue: usize,
) -> (ParticipantId, mpsc::Receiver<ConnEvent>) {
    let (tx, rx) = mpsc::channel(queue);
    let p = room.join(req, tx).await.unwrap().unwrap();
    (p, rx)
}

/// Everything queued for a connection right now.
async fn drain(rx: &mut mpsc::Receiver<ConnEvent>) -> Vec<ConnEvent> {
    // Let the lesson task run first.
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

fn msgs(events: &[ConnEvent]) -> Vec<&ServerMsg> {
    events
        .iter()
        .filter_map(|e| match e {
            ConnEvent::Msg(m) => Some(m),
            ConnEvent::Close(_) => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn waiting_pupils_get_only_their_status_and_admission_works() {
    let f = start();
    let (t, mut t_rx) = join(&f.room, teacher(), 64).await;
    let (p, mut p_rx) = join(&f.room, pupil(0), 64).await;
    let got = drain(&mut p_rx).await;
    let got = msgs(&got);
    assert!(matches!(got[0], ServerMsg::Welcome { .. }));
    assert_eq!(got[1], &ServerMsg::Waiting { locked: false });
    assert_eq!(got.len(), 2, "{got:?}");
    let teacher_saw = drain(&mut t_rx).await;
    assert!(
        msgs(&teacher_saw)
            .iter()
            .any(|m| matches!(m, ServerMsg::WaitingList { waiting } if waiting.len() == 1))
    );

    // No recorder yet: admission is refused, and the teacher is told why.
    f.room
        .message(t, ClientMsg::Admit { participant: p })
        .await
        .unwrap();
    let teacher_saw = drain(&mut t_rx).await;
    assert!(msgs(&teacher_saw).iter().any(|m| matches!(
        m,
        ServerMsg::Error {
            code: ErrorCode::NotRecording,
            ..
        }
    )));

    f.room.recorder(true).await.unwrap();
    f.room
        .message(t, ClientMsg::Admit { participant: p })
        .await
        .unwrap();
    let got = drain(&mut p_rx).await;
    assert!(msgs(&got).contains(&&ServerMsg::Admitted));
    assert!(
        msgs(&got)
            .iter()
            .any(|m| matches!(m, ServerMsg::Roster { .. }))
    );
}

#[tokio::test(start_paused = true)]
async fn chat_is_recorded_before_it_is_delivered_and_holds_fire_on_virtual_time() {
    let mut f = start();
    f.room.recorder(true).await.unwrap();
    let (t, mut t_rx) = join(&f.room, teacher(), 256).await;
    let (p, mut p_rx) = join(&f.room, pupil(0), 256).await;
    f.room.message(t, ClientMsg::AdmitAll).await.unwrap();
    f.room
        .message(
            p,
            ClientMsg::Chat {
                to: Some(t),
                text: "a private question".into(),
            },
        )
        .await
        .unwrap();
    let teacher_saw = drain(&mut t_rx).await;
    assert!(
        msgs(&teacher_saw)
            .iter()
            .any(|m| matches!(m, ServerMsg::Chat { text, .. } if text == "a private question"))
    );
    let mut recorded_chat = false;
    while let Ok((lesson, item)) = f.feed.try_recv() {
        assert_eq!(lesson, LESSON);
        if let FeedItem::Record {
            record: Record::Chat { from, to, .. },
            ..
        } = item
        {
            assert_eq!((from, to), (p, Some(t)));
            recorded_chat = true;
        }
    }
    assert!(
        recorded_chat,
        "the private message reached the recorder feed"
    );

    // The teacher leaves; 60 s of virtual time later pupils are held.
    f.room.leave(t).await.unwrap();
    drop(t_rx);
    drain(&mut p_rx).await;
    tokio::time::sleep(Duration::from_secs(61)).await;
    let got = drain(&mut p_rx).await;
    let held = msgs(&got).iter().rev().find_map(|m| match m {
        ServerMsg::Status(s) => Some(s.held.clone()),
        _ => None,
    });
    assert_eq!(held, Some(vec![HoldReason::Unsupervised]));
}

#[tokio::test(start_paused = true)]
async fn removal_closes_the_connection_after_its_goodbye() {
    let f = start();
    f.room.recorder(true).await.unwrap();
    let (t, _t_rx) = join(&f.room, teacher(), 256).await;
    let (p, mut p_rx) = join(&f.room, pupil(0), 256).await;
    f.room.message(t, ClientMsg::AdmitAll).await.unwrap();
    f.room
        .message(t, ClientMsg::Remove { participant: p })
        .await
        .unwrap();
    let got = drain(&mut p_rx).await;
    let n = got.len();
    assert_eq!(
        got[n - 2],
        ConnEvent::Msg(ServerMsg::Goodbye {
            reason: Farewell::Removed
        })
    );
    assert_eq!(got[n - 1], ConnEvent::Close(Farewell::Removed));
    let again = f.room.join(pupil(0), mpsc::channel(8).0).await.unwrap();
    assert_eq!(again, Err(ErrorCode::Removed));
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_cannot_keep_up_is_dropped_without_stalling_the_lesson() {
    let f = start();
    f.room.recorder(true).await.unwrap();
    let (t, mut t_rx) = join(&f.room, teacher(), 4096).await;
    // A pupil whose client never reads: a queue of 4.
    let (_slow, _slow_rx) = join(&f.room, pupil(0), 4).await;
    f.room.message(t, ClientMsg::AdmitAll).await.unwrap();
    for i in 0..50 {
        f.room
            .message(
                t,
                ClientMsg::Chat {
                    to: None,
                    text: format!("message {i}"),
                },
            )
            .await
            .unwrap();
    }
    let teacher_saw = drain(&mut t_rx).await;
    let echoed = msgs(&teacher_saw)
        .iter()
        .filter(|m| matches!(m, ServerMsg::Chat { .. }))
        .count();
    assert_eq!(echoed, 50, "the lesson went on for everyone else");
    // The slow pupil was dropped from the lesson (the roster shows the teacher alone).
    let last_roster = msgs(&teacher_saw).iter().rev().find_map(|m| match m {
        ServerMsg::Roster { participants } => Some(participants.len()),
        _ => None,
    });
    assert_eq!(last_roster, Some(1));
}
