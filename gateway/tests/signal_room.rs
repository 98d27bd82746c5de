//! The lesson task (room) on its own, in paused tokio time: graces fire in
//! virtual time, never by sleeping. Connections are plain channels here.

mod signal_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chaperone_gateway::room::{Outbound, RoomDeps, RoomHandle, RoomRecord, Rooms};
use chaperone_lesson::{LessonConfig, Record, Snapshot};
use chaperone_protocol::ParticipantId;
use chaperone_protocol::event::{HoldReason, LessonEvent};
use chaperone_protocol::signal::{ClientMsg, ErrorCode, Farewell, ServerMsg};
use signal_support::{LESSON, OTHER_LESSON, pupil, setup, teacher};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

/// Virtual time: long enough for every grace, still bounded.
const WAIT: Duration = Duration::from_secs(600);

type Conn = mpsc::Receiver<Outbound>;

async fn next(conn: &mut Conn) -> Outbound {
    timeout(WAIT, conn.recv())
        .await
        .expect("a message in time")
        .expect("connection open")
}

async fn until(conn: &mut Conn, mut pred: impl FnMut(&ServerMsg) -> bool) -> ServerMsg {
    loop {
        if let Outbound::Msg(m) = next(conn).await
            && pred(&m)
        {
            return m;
        }
    }
}

fn rooms(
    persist: Option<chaperone_gateway::room::PersistFn>,
) -> (Rooms, mpsc::Receiver<RoomRecord>) {
    let (records, rx) = mpsc::channel(10_000);
    (
        Rooms::new(RoomDeps {
            records,
            media: None,
            persist,
        }),
        rx,
    )
}

async fn join(
    room: &RoomHandle,
    req: chaperone_lesson::JoinRequest,
    cap: usize,
) -> (ParticipantId, Conn) {
    let (tx, rx) = mpsc::channel(cap);
    let p = room.join(req, tx).await.expect("joined");
    (p, rx)
}

#[tokio::test(start_paused = true)]
async fn pupils_are_held_after_sixty_seconds_without_staff() {
    let (rooms, _records) = rooms(None);
    let room = rooms.open(setup(), LessonConfig::default());
    let (t, mut tc) = join(&room, teacher(), 256).await;
    let (a, mut ac) = join(&room, pupil("ann", "7A"), 256).await;
    room.recorder(true).await;
    room.message(t, ClientMsg::Admit { participant: a }).await;
    until(&mut ac, |m| *m == ServerMsg::Admitted).await;
    until(
        &mut tc,
        |m| matches!(m, ServerMsg::Roster { participants } if participants.len() == 2),
    )
    .await;

    let left = Instant::now();
    room.leave(t).await;
    let held = until(
        &mut ac,
        |m| matches!(m, ServerMsg::Status(s) if !s.held.is_empty()),
    )
    .await;
    let ServerMsg::Status(status) = held else {
        unreachable!("matched a status")
    };
    assert_eq!(status.held, vec![HoldReason::Unsupervised]);
    let after = left.elapsed();
    assert!(after >= Duration::from_secs(60), "held after {after:?}");
    assert!(
        after < Duration::from_secs(61),
        "held late, after {after:?}"
    );

    // An admitted pupil chatting while held is refused.
    room.message(
        a,
        ClientMsg::Chat {
            to: None,
            text: "anyone?".into(),
        },
    )
    .await;
    until(&mut ac, |m| {
        matches!(
            m,
            ServerMsg::Error {
                code: ErrorCode::Held,
                ..
            }
        )
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn recorder_lost_beyond_its_grace_holds_pupils() {
    let (rooms, _records) = rooms(None);
    let room = rooms.open(setup(), LessonConfig::default());
    let (t, _tc) = join(&room, teacher(), 256).await;
    let (a, mut ac) = join(&room, pupil("ann", "7A"), 256).await;
    room.recorder(true).await;
    room.message(t, ClientMsg::Admit { participant: a }).await;
    until(&mut ac, |m| *m == ServerMsg::Admitted).await;

    let lost = Instant::now();
    room.recorder(false).await;
    let held = until(
        &mut ac,
        |m| matches!(m, ServerMsg::Status(s) if !s.held.is_empty()),
    )
    .await;
    assert!(matches!(held, ServerMsg::Status(s) if s.held == vec![HoldReason::RecordingLost]));
    assert!(lost.elapsed() >= Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_cannot_keep_up_is_dropped_not_waited_for() {
    let (rooms, _records) = rooms(None);
    let room = rooms.open(setup(), LessonConfig::default());
    let (_t, mut tc) = join(&room, teacher(), 256).await;
    until(&mut tc, |m| matches!(m, ServerMsg::WaitingList { .. })).await;
    // Room for one message; the lesson sends two (welcome, waiting).
    let (_a, mut ac) = join(&room, pupil("ann", "7A"), 1).await;

    // The lesson went on without waiting, and treated the pupil as gone.
    until(
        &mut tc,
        |m| matches!(m, ServerMsg::WaitingList { waiting } if waiting.len() == 1),
    )
    .await;
    until(
        &mut tc,
        |m| matches!(m, ServerMsg::WaitingList { waiting } if waiting.is_empty()),
    )
    .await;
    assert!(matches!(
        next(&mut ac).await,
        Outbound::Msg(ServerMsg::Welcome { .. })
    ));
    assert_eq!(
        timeout(WAIT, ac.recv()).await.expect("closed in time"),
        None
    );
}

#[tokio::test(start_paused = true)]
async fn disconnect_closes_after_the_goodbye() {
    let (rooms, _records) = rooms(None);
    let room = rooms.open(setup(), LessonConfig::default());
    let (t, _tc) = join(&room, teacher(), 256).await;
    let (a, mut ac) = join(&room, pupil("ann", "7A"), 256).await;
    room.message(t, ClientMsg::Deny { participant: a }).await;
    until(&mut ac, |m| {
        *m == ServerMsg::Goodbye {
            reason: Farewell::Denied,
        }
    })
    .await;
    assert_eq!(next(&mut ac).await, Outbound::Close(Farewell::Denied));
    assert_eq!(
        timeout(WAIT, ac.recv()).await.expect("closed in time"),
        None
    );
}

#[tokio::test(start_paused = true)]
async fn records_alerts_and_snapshots_leave_the_task() {
    let saved: Arc<Mutex<Vec<Snapshot>>> = Arc::default();
    let sink = saved.clone();
    let (rooms, mut records) = rooms(Some(Arc::new(move |s: &Snapshot| {
        sink.lock().expect("not poisoned").push(s.clone());
    })));
    let room = rooms.open(setup(), LessonConfig::default());
    let (a, mut ac) = join(&room, pupil("ann", "7A"), 256).await;
    room.message(
        a,
        ClientMsg::ReportConcern {
            text: "worried".into(),
        },
    )
    .await;
    until(&mut ac, |m| *m == ServerMsg::ConcernReceived).await;

    let mut joined = false;
    let mut alert = false;
    while !(joined && alert) {
        match timeout(WAIT, records.recv())
            .await
            .expect("record in time")
            .expect("open")
        {
            RoomRecord::Record {
                lesson,
                record: Record::Event(LessonEvent::Joined { .. }),
                ..
            } => {
                assert_eq!(lesson, LESSON);
                joined = true;
            }
            RoomRecord::Alert {
                event: LessonEvent::Concern { text, .. },
                ..
            } => {
                assert_eq!(text, "worried");
                alert = true;
            }
            _ => {}
        }
    }
    assert!(
        !saved.lock().expect("not poisoned").is_empty(),
        "no snapshot persisted"
    );
}

#[tokio::test(start_paused = true)]
async fn a_closed_recorder_feed_does_not_stop_the_lesson() {
    let (rooms, records) = rooms(None);
    drop(records);
    let room = rooms.open(setup(), LessonConfig::default());
    let (t, mut tc) = join(&room, teacher(), 256).await;
    room.message(
        t,
        ClientMsg::Chat {
            to: None,
            text: "hello".into(),
        },
    )
    .await;
    until(&mut tc, |m| matches!(m, ServerMsg::Chat { .. })).await;
}

#[tokio::test(start_paused = true)]
async fn registry_finds_starts_once_and_shuts_down() {
    let (rooms, _records) = rooms(None);
    assert!(rooms.get(LESSON).is_none());
    let room = rooms.open(setup(), LessonConfig::default());
    let again = rooms.open(setup(), LessonConfig::default());
    assert_eq!(again.lesson(), LESSON);
    let (_t, mut tc) = join(&again, teacher(), 256).await;
    // Same task: a second teacher connection via the first handle replaces it.
    let (_t2, mut tc2) = join(&room, teacher(), 256).await;
    until(&mut tc, |m| {
        *m == ServerMsg::Goodbye {
            reason: Farewell::Replaced,
        }
    })
    .await;
    assert!(rooms.get(LESSON).is_some());
    assert!(rooms.get(OTHER_LESSON).is_none());

    rooms.shutdown_all().await;
    // Drain to the end: the channel closes when the task stops.
    while timeout(WAIT, tc2.recv())
        .await
        .expect("closed in time")
        .is_some()
    {}
    assert!(rooms.get(LESSON).is_none());
    assert_eq!(
        room.join(pupil("ann", "7A"), mpsc::channel(4).0).await,
        Err(ErrorCode::NotFound)
    );
}

#[tokio::test(start_paused = true)]
async fn a_blocked_user_is_said_goodbye_and_refused_after() {
    let (rooms, _records) = rooms(None);
    let room = rooms.open(setup(), LessonConfig::default());
    let (_a, mut ac) = join(&room, pupil("ann", "7A"), 256).await;
    room.block(signal_support::user("ann")).await;
    until(&mut ac, |m| {
        *m == ServerMsg::Goodbye {
            reason: Farewell::Blocked,
        }
    })
    .await;
    assert_eq!(next(&mut ac).await, Outbound::Close(Farewell::Blocked));
    let again = room.join(pupil("ann", "7A"), mpsc::channel(4).0).await;
    assert_eq!(again, Err(ErrorCode::Blocked));
    room.unblock(signal_support::user("ann")).await;
    let (_a2, mut ac2) = join(&room, pupil("ann", "7A"), 256).await;
    until(&mut ac2, |m| matches!(m, ServerMsg::Waiting { .. })).await;
}

/// Real time: the media driver reads the real clock.
#[tokio::test]
async fn media_offers_are_answered_and_bad_sdp_gets_a_typed_error() {
    use std::sync::Arc as StdArc;
    use str0m::media::{Direction, MediaKind};

    let (media, events) = chaperone_gateway::media::driver::start(Default::default())
        .await
        .expect("media driver starts on loopback");
    let (records, _records_rx) = mpsc::channel(10_000);
    let rooms = Rooms::new(RoomDeps {
        records,
        media: Some(media),
        persist: None,
    });
    let _router = rooms.route_media_events(events);
    let room = rooms.open(setup(), LessonConfig::default());
    let (t, mut tc) = join(&room, teacher(), 256).await;
    let (a, mut ac) = join(&room, pupil("ann", "7A"), 256).await;

    // Junk SDP from the (always admitted) teacher: typed, not fatal.
    room.message(
        t,
        ClientMsg::Offer {
            sdp: "v=0 junk".into(),
        },
    )
    .await;
    let refusal = until(&mut tc, |m| matches!(m, ServerMsg::Error { .. })).await;
    assert_eq!(
        refusal,
        ServerMsg::Error {
            code: ErrorCode::Malformed,
            action: Some("offer".into())
        }
    );

    // A waiting pupil never reaches the media plane.
    room.message(a, ClientMsg::Offer { sdp: "v=0".into() })
        .await;
    until(&mut ac, |m| {
        matches!(
            m,
            ServerMsg::Error {
                code: ErrorCode::NotAdmitted,
                ..
            }
        )
    })
    .await;

    // A real offer gets a real answer.
    #[allow(clippy::disallowed_methods)] // a test client's own clock
    let start = std::time::Instant::now();
    let mut rtc = str0m::Rtc::builder()
        .set_crypto_provider(StdArc::new(str0m::crypto::from_feature_flags()))
        .build(start);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, _pending) = api.apply().expect("an offer with one m-line");
    room.message(
        t,
        ClientMsg::Offer {
            sdp: offer.to_sdp_string(),
        },
    )
    .await;
    let answer = until(&mut tc, |m| matches!(m, ServerMsg::Answer { .. })).await;
    assert!(matches!(answer, ServerMsg::Answer { sdp } if sdp.starts_with("v=0")));
}

#[tokio::test(start_paused = true)]
async fn a_pupil_back_after_the_reconnect_grace_waits_again() {
    let (rooms, _records) = rooms(None);
    let room = rooms.open(setup(), LessonConfig::default());
    let (t, mut tc) = join(&room, teacher(), 256).await;
    let (a, mut ac) = join(&room, pupil("ann", "7A"), 256).await;
    room.recorder(true).await;
    room.message(t, ClientMsg::Admit { participant: a }).await;
    until(&mut ac, |m| *m == ServerMsg::Admitted).await;
    // The teacher's roster tells when each step has been applied (at this
    // virtual instant), so time is advanced only after it.
    let pair =
        |m: &ServerMsg| matches!(m, ServerMsg::Roster { participants } if participants.len() == 2);
    let alone =
        |m: &ServerMsg| matches!(m, ServerMsg::Roster { participants } if participants.len() == 1);
    until(&mut tc, pair).await;
    room.leave(a).await;
    until(&mut tc, alone).await;

    // Within the grace (30 s): straight back in.
    tokio::time::advance(Duration::from_secs(29)).await;
    let (a2, mut ac2) = join(&room, pupil("ann", "7A"), 256).await;
    assert!(matches!(
        next(&mut ac2).await,
        Outbound::Msg(ServerMsg::Welcome { .. })
    ));
    assert_eq!(next(&mut ac2).await, Outbound::Msg(ServerMsg::Admitted));
    until(&mut tc, pair).await;
    room.leave(a2).await;
    until(&mut tc, alone).await;

    // Past it: the waiting room again.
    tokio::time::advance(Duration::from_secs(31)).await;
    let (_a3, mut ac3) = join(&room, pupil("ann", "7A"), 256).await;
    assert!(matches!(
        next(&mut ac3).await,
        Outbound::Msg(ServerMsg::Welcome { .. })
    ));
    assert_eq!(
        next(&mut ac3).await,
        Outbound::Msg(ServerMsg::Waiting { locked: false })
    );
}
