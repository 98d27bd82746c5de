//! Signaling end to end in one process: real sockets on 127.0.0.1:0, real
//! WebSocket clients, the real lesson task and core. Each test is bounded:
//! every wait is for a specific message, with a timeout.

mod signal_support;

use chaperone_protocol::signal::{ClientMsg, ErrorCode, Farewell, ServerMsg};
use chaperone_protocol::{ParticipantId, Role};
use signal_support::*;

fn err(code: ErrorCode) -> impl Fn(&ServerMsg) -> bool {
    move |m| matches!(m, ServerMsg::Error { code: c, .. } if *c == code)
}

fn welcome_id(m: &ServerMsg) -> ParticipantId {
    match m {
        ServerMsg::Welcome { you, .. } => *you,
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// Teacher in, two pupils waiting.
async fn teacher_and_two_waiting(
    s: &Server,
) -> anyhow::Result<(Client, Client, ParticipantId, Client, ParticipantId)> {
    let mut t = s.connect("t-teacher").await?;
    let first = t.recv().await?;
    assert!(
        matches!(
            first,
            ServerMsg::Welcome {
                role: Role::Teacher,
                ..
            }
        ),
        "{first:?}"
    );
    t.recv_until(|m| matches!(m, ServerMsg::WaitingList { .. }))
        .await?;

    let mut a = s.connect("t-ann").await?;
    let a_id = welcome_id(&a.recv().await?);
    assert_eq!(a.recv().await?, ServerMsg::Waiting { locked: false });
    let mut b = s.connect("t-bob").await?;
    let b_id = welcome_id(&b.recv().await?);
    assert_eq!(b.recv().await?, ServerMsg::Waiting { locked: false });

    t.recv_until(|m| matches!(m, ServerMsg::WaitingList { waiting } if waiting.len() == 2))
        .await?;
    Ok((t, a, a_id, b, b_id))
}

#[tokio::test]
async fn waiting_room_admission_and_chat_rules() -> anyhow::Result<()> {
    let s = start().await?;
    let (mut t, mut a, a_id, mut b, b_id) = teacher_and_two_waiting(&s).await?;

    // A waiting pupil may not chat.
    a.send(&ClientMsg::Chat {
        to: None,
        text: "hello?".into(),
    })
    .await?;
    assert_eq!(
        a.recv().await?,
        ServerMsg::Error {
            code: ErrorCode::NotAdmitted,
            action: Some("chat".into())
        }
    );

    // The waiting room gets nothing but its own status: locking is the
    // first thing either pupil hears after `Waiting`.
    t.send(&ClientMsg::Lock { locked: true }).await?;
    assert_eq!(a.recv().await?, ServerMsg::Waiting { locked: true });
    assert_eq!(b.recv().await?, ServerMsg::Waiting { locked: true });
    t.send(&ClientMsg::Lock { locked: false }).await?;
    assert_eq!(a.recv().await?, ServerMsg::Waiting { locked: false });
    assert_eq!(b.recv().await?, ServerMsg::Waiting { locked: false });

    // No recorder: nobody is admitted.
    t.send(&ClientMsg::Admit { participant: a_id }).await?;
    t.recv_until(err(ErrorCode::NotRecording)).await?;

    s.room.recorder(true).await;
    for p in [a_id, b_id] {
        t.send(&ClientMsg::Admit { participant: p }).await?;
    }
    for c in [&mut a, &mut b] {
        assert_eq!(c.recv().await?, ServerMsg::Admitted);
        let roster = c.recv().await?;
        assert!(matches!(roster, ServerMsg::Roster { .. }), "{roster:?}");
    }

    // Public chat reaches everyone admitted.
    a.send(&ClientMsg::Chat {
        to: None,
        text: "hi all".into(),
    })
    .await?;
    let is_hi = |m: &ServerMsg| matches!(m, ServerMsg::Chat { from, text, to: None, .. } if *from == a_id && text == "hi all");
    for c in [&mut t, &mut a, &mut b] {
        c.recv_until(is_hi).await?;
    }

    // Pupil to pupil privately: refused, and the other pupil gets nothing.
    a.send(&ClientMsg::Chat {
        to: Some(b_id),
        text: "psst".into(),
    })
    .await?;
    a.recv_until(err(ErrorCode::PupilToPupil)).await?;
    t.send(&ClientMsg::Chat {
        to: None,
        text: "marker".into(),
    })
    .await?;
    let next = b.recv().await?;
    assert!(
        matches!(&next, ServerMsg::Chat { text, .. } if text == "marker"),
        "bob heard something before the marker: {next:?}"
    );

    // A pupil may message the teacher privately; only the two see it.
    let t_id = ParticipantId(1);
    a.send(&ClientMsg::Chat {
        to: Some(t_id),
        text: "miss?".into(),
    })
    .await?;
    t.recv_until(|m| matches!(m, ServerMsg::Chat { to: Some(_), text, .. } if text == "miss?"))
        .await?;
    t.send(&ClientMsg::Chat {
        to: None,
        text: "marker2".into(),
    })
    .await?;
    let next = b.recv().await?;
    assert!(
        matches!(&next, ServerMsg::Chat { text, .. } if text == "marker2"),
        "bob saw a private message: {next:?}"
    );
    Ok(())
}

#[tokio::test]
async fn cross_site_or_missing_origin_is_403_without_upgrade() -> anyhow::Result<()> {
    let s = start().await?;
    let r = s
        .refused(LESSON, Some("t-ann"), Some("https://evil.test"))
        .await?;
    assert_eq!(r.status.as_u16(), 403);
    let r = s.refused(LESSON, Some("t-ann"), None).await?;
    assert_eq!(r.status.as_u16(), 403);
    // A refused handshake joined nobody: the teacher sees an empty waiting room.
    let mut t = s.connect("t-teacher").await?;
    let list = t
        .recv_until(|m| matches!(m, ServerMsg::WaitingList { .. }))
        .await?;
    assert_eq!(
        list.last(),
        Some(&ServerMsg::WaitingList { waiting: vec![] })
    );
    Ok(())
}

#[tokio::test]
async fn unknown_lesson_and_not_yours_are_the_same_404() -> anyhow::Result<()> {
    let s = start().await?;
    let unknown = s.refused(OTHER_LESSON, Some("t-ann"), Some(ORIGIN)).await?;
    let not_yours = s.refused(LESSON, Some("t-eve"), Some(ORIGIN)).await?;
    let malformed = s
        .open_path("/ws/lessons/not-a-lesson-id", Some("t-ann"))
        .await?;
    assert_eq!(unknown.status.as_u16(), 404);
    assert_eq!(not_yours.status.as_u16(), 404);
    assert_eq!(malformed.status.as_u16(), 404);
    assert_eq!(unknown.body, not_yours.body);
    assert_eq!(unknown.body, malformed.body);
    assert_eq!(unknown.body, r#"{"error":{"code":"not_found"}}"#);
    Ok(())
}

#[tokio::test]
async fn missing_or_unknown_token_is_401() -> anyhow::Result<()> {
    let s = start().await?;
    assert_eq!(
        s.refused(LESSON, None, Some(ORIGIN)).await?.status.as_u16(),
        401
    );
    let bad = s.refused(LESSON, Some("forged"), Some(ORIGIN)).await?;
    assert_eq!(bad.status.as_u16(), 401);
    // Same answer whether or not the lesson exists.
    let bad_elsewhere = s
        .refused(OTHER_LESSON, Some("forged"), Some(ORIGIN))
        .await?;
    assert_eq!(bad.body, bad_elsewhere.body);
    Ok(())
}

#[tokio::test]
async fn junk_gets_typed_errors_and_the_connection_survives() -> anyhow::Result<()> {
    let s = start().await?;
    let mut t = s.connect("t-teacher").await?;
    t.recv_until(|m| matches!(m, ServerMsg::WaitingList { .. }))
        .await?;

    t.send_raw("{not json".into()).await?;
    t.recv_until(err(ErrorCode::Malformed)).await?;
    t.send_raw(r#"{"chat":{"text":"x","extra":1}}"#.into())
        .await?;
    t.recv_until(err(ErrorCode::Malformed)).await?;
    t.send_raw(r#"{"self_destruct":{}}"#.into()).await?;
    t.recv_until(err(ErrorCode::Malformed)).await?;

    // Over the protocol limit, under the socket limit: a typed refusal.
    let big = format!(
        r#"{{"chat":{{"text":"{}"}}}}"#,
        "x".repeat(chaperone_protocol::signal::MAX_CLIENT_MSG)
    );
    t.send_raw(big).await?;
    t.recv_until(err(ErrorCode::TooLarge)).await?;

    // Still serving this connection.
    t.send(&ClientMsg::Chat {
        to: None,
        text: "still here".into(),
    })
    .await?;
    t.recv_until(|m| matches!(m, ServerMsg::Chat { text, .. } if text == "still here"))
        .await?;

    // Over the socket limit: the socket is closed (1009), nothing panics,
    // and the server serves the next connection.
    let huge = "y".repeat(test_config().max_ws_message + 1);
    t.send_raw(huge).await?;
    t.gone().await?;
    let mut t2 = s.connect("t-teacher").await?;
    assert!(matches!(t2.recv().await?, ServerMsg::Welcome { .. }));
    Ok(())
}

#[tokio::test]
async fn hello_must_come_first_with_the_right_version() -> anyhow::Result<()> {
    let s = start().await?;

    let mut c = s
        .open(LESSON, Some("t-ann"), Some(ORIGIN))
        .await?
        .expect("upgraded");
    c.send_raw(r#"{"hello":{"version":999}}"#.into()).await?;
    // The lesson's `Welcome` was held back: the refusal is the first message.
    assert_eq!(
        c.recv().await?,
        ServerMsg::Error {
            code: ErrorCode::UnsupportedVersion,
            action: Some("hello".into())
        }
    );
    assert_eq!(c.closed().await?, 4001);

    let mut c = s
        .open(LESSON, Some("t-bob"), Some(ORIGIN))
        .await?
        .expect("upgraded");
    c.send(&ClientMsg::Chat {
        to: None,
        text: "skip hello".into(),
    })
    .await?;
    assert_eq!(
        c.recv().await?,
        ServerMsg::Error {
            code: ErrorCode::InvalidState,
            action: Some("chat".into())
        }
    );
    assert_eq!(c.closed().await?, 4002);

    // Both left the lesson when their sockets closed.
    let mut t = s.connect("t-teacher").await?;
    let list = t
        .recv_until(|m| matches!(m, ServerMsg::WaitingList { .. }))
        .await?;
    assert_eq!(
        list.last(),
        Some(&ServerMsg::WaitingList { waiting: vec![] })
    );
    Ok(())
}

#[tokio::test]
async fn flooding_is_rate_limited_then_closed() -> anyhow::Result<()> {
    let s = start().await?;
    let mut a = s.connect("t-ann").await?;
    a.recv().await?; // welcome
    a.recv().await?; // waiting
    // A repeated hello is accepted and changes nothing: a cheap message to flood with.
    let hello = r#"{"hello":{"version":1}}"#;
    for _ in 0..200 {
        if a.send_raw(hello.into()).await.is_err() {
            break;
        }
    }
    a.recv_until(err(ErrorCode::RateLimited)).await?;
    assert_eq!(a.closed().await?, 4008);
    Ok(())
}

#[tokio::test]
async fn removed_pupil_is_refused_on_reconnect() -> anyhow::Result<()> {
    let s = start().await?;
    let (mut t, mut a, a_id, _b, _) = teacher_and_two_waiting(&s).await?;
    s.room.recorder(true).await;
    t.send(&ClientMsg::Admit { participant: a_id }).await?;
    a.recv_until(|m| *m == ServerMsg::Admitted).await?;

    t.send(&ClientMsg::Remove { participant: a_id }).await?;
    a.recv_until(|m| {
        *m == ServerMsg::Goodbye {
            reason: Farewell::Removed,
        }
    })
    .await?;
    assert_eq!(a.closed().await?, 4003);

    let r = s.refused(LESSON, Some("t-ann"), Some(ORIGIN)).await?;
    assert_eq!(r.status.as_u16(), 403);
    assert_eq!(r.body, r#"{"error":{"code":"removed"}}"#);
    Ok(())
}

#[tokio::test]
async fn dropped_pupil_returns_admitted_within_the_grace() -> anyhow::Result<()> {
    let s = start().await?;
    let (mut t, _a, _, b, b_id) = teacher_and_two_waiting(&s).await?;
    s.room.recorder(true).await;
    t.send(&ClientMsg::Admit { participant: b_id }).await?;
    t.recv_until(|m| matches!(m, ServerMsg::Roster { participants } if participants.iter().any(|p| p.id == b_id)))
        .await?;

    b.close().await?;
    t.recv_until(|m| matches!(m, ServerMsg::Roster { participants } if participants.iter().all(|p| p.id != b_id)))
        .await?;

    let mut b = s.connect("t-bob").await?;
    let new_id = welcome_id(&b.recv().await?);
    assert_ne!(new_id, b_id);
    assert_eq!(b.recv().await?, ServerMsg::Admitted);
    Ok(())
}

#[tokio::test]
async fn second_connection_replaces_the_first() -> anyhow::Result<()> {
    let s = start().await?;
    let mut t1 = s.connect("t-teacher").await?;
    t1.recv_until(|m| matches!(m, ServerMsg::WaitingList { .. }))
        .await?;
    let mut t2 = s.connect("t-teacher").await?;
    assert!(matches!(t2.recv().await?, ServerMsg::Welcome { .. }));
    t1.recv_until(|m| {
        *m == ServerMsg::Goodbye {
            reason: Farewell::Replaced,
        }
    })
    .await?;
    assert_eq!(t1.closed().await?, 4009);
    Ok(())
}

#[tokio::test]
async fn ending_the_lesson_closes_everyone_normally() -> anyhow::Result<()> {
    let s = start().await?;
    let (mut t, mut a, _, _b, _) = teacher_and_two_waiting(&s).await?;
    t.send(&ClientMsg::EndLesson).await?;
    assert_eq!(t.closed().await?, 1000);
    a.recv_until(|m| {
        *m == ServerMsg::Goodbye {
            reason: Farewell::Ended,
        }
    })
    .await?;
    assert_eq!(a.closed().await?, 1000);
    let r = s.refused(LESSON, Some("t-ann"), Some(ORIGIN)).await?;
    assert_eq!(r.status.as_u16(), 410);
    Ok(())
}

#[tokio::test]
async fn silent_connection_is_closed_after_the_idle_timeout() -> anyhow::Result<()> {
    let config = chaperone_gateway::signal::SignalConfig {
        idle_timeout: std::time::Duration::from_millis(300),
        ping_interval: std::time::Duration::from_secs(60),
        ..test_config()
    };
    let s = start_with(config, Default::default()).await?;
    let mut a = s.connect("t-ann").await?;
    assert_eq!(a.closed().await?, 4000);
    Ok(())
}

#[tokio::test]
async fn a_client_that_reads_answers_pings_and_stays() -> anyhow::Result<()> {
    let config = chaperone_gateway::signal::SignalConfig {
        idle_timeout: std::time::Duration::from_millis(400),
        ping_interval: std::time::Duration::from_millis(100),
        ..test_config()
    };
    let s = start_with(config, Default::default()).await?;
    let mut a = s.connect("t-ann").await?;
    a.recv().await?; // welcome
    a.recv().await?; // waiting
    // Reading lets tungstenite answer the server's pings; after several idle
    // timeouts' worth of pings the connection is still open.
    let pings = a.count_pings(10).await?;
    assert_eq!(pings, 10);
    Ok(())
}
