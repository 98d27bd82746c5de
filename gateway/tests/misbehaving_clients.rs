//! Clients that ignore the teacher, through the whole stack: a node
//! (`App::build`, with its SFU and recorder), lesson WebSockets, and Rust
//! WebRTC clients on str0m that negotiate over signaling and then send
//! audio, camera and screen share whatever they are told. The server holds:
//! a muted pupil's audio stops reaching everyone, a screen share without
//! permission reaches nobody, and a waiting pupil gets no media and every
//! attempt it makes is refused.
#![allow(clippy::unwrap_used)]

mod media_support;
mod peer_support;
mod web_support;

use std::time::Duration;

use chaperone_protocol::signal::{ClientMsg, ErrorCode, ServerMsg, Target};
use chaperone_protocol::{Engagement, MediaSource};
use media_support::{Pending, wait_for};
use peer_support::{Peer, connect, frozen, join};
use web_support::Node;

#[tokio::test]
async fn the_server_holds_against_clients_that_ignore_it() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let node = Node::start(|_| {}).await.unwrap();
        let mut teacher_b = node.browser();
        teacher_b.login_ok("teacher").await.unwrap();
        let lesson = teacher_b.create_lesson("7A").await.unwrap();
        let teacher = join(&node, "teacher", &lesson).await;
        teacher
            .wait("teacher admitted", |m| matches!(m, ServerMsg::Admitted))
            .await;

        let a = join(&node, "pupil-a", &lesson).await;
        let b = join(&node, "pupil-b", &lesson).await;
        a.wait("A waiting", |m| matches!(m, ServerMsg::Waiting { .. }))
            .await;
        b.wait("B waiting", |m| matches!(m, ServerMsg::Waiting { .. }))
            .await;

        // A waiting pupil tries everything: SDP, chat, controls. All refused;
        // it never gets an answer, a roster or a chat message.
        let (_pending, offer) = Pending::new(true).await.unwrap();
        a.send(ClientMsg::Offer { sdp: offer });
        a.send(ClientMsg::Chat {
            to: None,
            text: "let me in".into(),
        });
        a.send(ClientMsg::AdmitAll);
        // ...and raises a hand, which no one may see from the waiting room.
        a.send(ClientMsg::RaiseHand { raised: true });
        wait_for(Duration::from_secs(5), || {
            a.seen(|m| {
                matches!(m, ServerMsg::Error { code: ErrorCode::NotAdmitted, action: Some(x) } if x == "raise_hand")
            })
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !a.seen(|m| matches!(
                m,
                ServerMsg::Answer { .. }
                    | ServerMsg::Offer { .. }
                    | ServerMsg::Roster { .. }
                    | ServerMsg::Chat { .. }
            )),
            "a waiting pupil received {:?}",
            a.inbox.lock().unwrap()
        );
        assert!(
            !teacher.seen(|m| matches!(m, ServerMsg::Chat { .. })),
            "a waiting pupil's chat reached the teacher"
        );
        assert!(
            !teacher.seen(|m| matches!(m, ServerMsg::Hands { raised } if !raised.is_empty())),
            "a waiting pupil's hand reached the teacher"
        );
        // Raw UDP at the media port (garbage, a STUN binding request with no
        // session) gets nothing back.
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let media_addr = node.app.media.local_addr();
        udp.send_to(b"let me in", media_addr).await.unwrap();
        let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        stun.extend_from_slice(&[7; 12]);
        udp.send_to(&stun, media_addr).await.unwrap();
        let mut buf = [0u8; 1500];
        assert!(
            tokio::time::timeout(Duration::from_millis(700), udp.recv_from(&mut buf))
                .await
                .is_err(),
            "the media port answered a stranger"
        );

        teacher.send(ClientMsg::AdmitAll);
        a.wait("A admitted", |m| matches!(m, ServerMsg::Admitted))
            .await;
        b.wait("B admitted", |m| matches!(m, ServerMsg::Admitted))
            .await;
        for p in [&a, &b] {
            p.send(ClientMsg::SetEngagement {
                engagement: Engagement::VoiceChatCamera,
            });
        }
        // A's client publishes audio, camera and a screen share from the
        // start, whatever it is allowed; B's publishes audio and camera.
        let ca = a.media(true).await;
        let cb = b.media(false).await;
        let id_a = a.you();

        // A's voice reaches B.
        let rx = cb.counters.clone();
        wait_for(Duration::from_secs(10), || rx.audio_rx() > 20)
            .await
            .unwrap();
        // The screen share was never permitted: nobody receives a frame of it.
        assert_eq!(
            cb.counters.screen_rx(),
            0,
            "screen share without permission reached B"
        );
        // Asking for it changes nothing.
        a.send(ClientMsg::SetSource {
            source: MediaSource::ScreenShare,
            on: true,
        });
        wait_for(Duration::from_secs(5), || {
            a.refused(ErrorCode::NotPermitted)
        })
        .await
        .unwrap();

        // The teacher turns A's mic off. A's client keeps sending audio...
        teacher.send(ClientMsg::TurnOff {
            target: Target::One(id_a),
            source: MediaSource::Microphone,
        });
        a.wait("A told its mic is off", |m| {
            matches!(m, ServerMsg::ControlChanged { granted: false, .. })
        })
        .await;
        let sent_before = ca.counters.audio_tx();
        let (x, y) = frozen(|| rx.audio_rx()).await;
        assert!(
            ca.counters.audio_tx() > sent_before + 20,
            "A kept sending audio"
        );
        // ...and B receives none of it.
        assert_eq!(x, y, "muted audio still reached B");

        // A turns its mic on again (allowed: it was turned off, not revoked),
        // then the teacher revokes the permission: nothing flows after that.
        a.send(ClientMsg::SetSource {
            source: MediaSource::Microphone,
            on: true,
        });
        wait_for(Duration::from_secs(5), || rx.audio_rx() > y + 10)
            .await
            .unwrap();
        teacher.send(ClientMsg::SetPermission {
            target: Target::One(id_a),
            permission: chaperone_protocol::Permission::Microphone,
            granted: false,
        });
        a.wait("A told its mic is revoked", |m| {
            matches!(m, ServerMsg::ControlChanged { revoked: true, .. })
        })
        .await;
        let (x, y) = frozen(|| rx.audio_rx()).await;
        assert_eq!(x, y, "revoked audio still reached B");
        a.send(ClientMsg::SetSource {
            source: MediaSource::Microphone,
            on: true,
        });
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(rx.audio_rx(), y, "a revoked mic came back by asking");
        assert_eq!(cb.counters.screen_rx(), 0);

        // Private messages between pupils are refused and never delivered.
        a.send(ClientMsg::Chat {
            to: Some(b.you()),
            text: "psst".into(),
        });
        wait_for(Duration::from_secs(5), || {
            a.refused(ErrorCode::PupilToPupil)
        })
        .await
        .unwrap();
        assert!(!b.seen(|m| matches!(m, ServerMsg::Chat { .. })));

        // The metrics saw it: the controls' enforcement times, the frames
        // forwarded and the muted frames dropped, the refused join of no one.
        let text = node.scrape().await.unwrap();
        let value = |name: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        assert!(
            value("chaperone_control_enforcement_seconds_count") >= 2.0,
            "{text}"
        );
        assert!(
            value("chaperone_controls_total{kind=\"turn_off\"}") >= 1.0,
            "{text}"
        );
        assert!(
            value("chaperone_media_frames_forwarded_total") > 0.0,
            "{text}"
        );
        assert!(
            value("chaperone_media_frames_dropped_total{reason=\"not_forwarded\"}") > 0.0,
            "{text}"
        );
        assert_eq!(value("chaperone_lessons_live"), 1.0);
        assert_eq!(value("chaperone_recorder_attached"), 1.0);
        // No label carries an id.
        assert!(!text.contains(&lesson), "a lesson id in a label");

        // No message carried anyone's address: SDP from the server names
        // only the SFU's own candidate.
        let media_port = node.app.media.advertised().port().to_string();
        for p in [&a, &b] {
            for m in p.inbox.lock().unwrap().iter() {
                if let ServerMsg::Answer { sdp } | ServerMsg::Offer { sdp } = m {
                    for line in sdp.lines().filter(|l| l.starts_with("a=candidate")) {
                        assert!(line.contains(&media_port), "foreign candidate: {line}");
                    }
                }
            }
        }
        drop((ca, cb));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_dropped_pupil_comes_back_without_waiting_but_a_removed_one_stays_out() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let node = Node::start(|_| {}).await.unwrap();
        let mut teacher_b = node.browser();
        teacher_b.login_ok("teacher").await.unwrap();
        let lesson = teacher_b.create_lesson("7A").await.unwrap();
        let teacher = join(&node, "teacher", &lesson).await;
        teacher
            .wait("teacher admitted", |m| matches!(m, ServerMsg::Admitted))
            .await;

        // A pupil's browser: a session, and a fresh room token per connection.
        let mut pupil_b = node.browser();
        pupil_b.login_ok("pupil-a").await.unwrap();
        let a = Peer::new(connect(&node, &mut pupil_b, &lesson).await.unwrap());
        a.wait("waiting", |m| matches!(m, ServerMsg::Waiting { .. }))
            .await;
        teacher.send(ClientMsg::AdmitAll);
        a.wait("admitted", |m| matches!(m, ServerMsg::Admitted))
            .await;
        let id = a.you();

        // The socket drops (network flap): the pupil reconnects, re-authorised
        // with a new token, and is straight back in, never in the waiting room.
        drop(a);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = Peer::new(connect(&node, &mut pupil_b, &lesson).await.unwrap());
        again
            .wait("re-admitted", |m| matches!(m, ServerMsg::Admitted))
            .await;
        assert!(!again.seen(|m| matches!(m, ServerMsg::Waiting { .. })));

        // Removed: the pupil is told, and every reconnection is refused.
        let now_id = again.you();
        assert_ne!(now_id, id, "a new connection gets a new participant id");
        teacher.send(ClientMsg::Remove {
            participant: now_id,
        });
        again
            .wait("told of the removal", |m| {
                matches!(
                    m,
                    ServerMsg::Goodbye {
                        reason: chaperone_protocol::signal::Farewell::Removed
                    }
                )
            })
            .await;
        match connect(&node, &mut pupil_b, &lesson).await {
            // They know the lesson: they are told plainly they were removed.
            Err(status) => assert_eq!(status, 403, "a removed pupil is refused"),
            Ok(ws) => {
                let p = Peer::new(ws);
                p.wait("refused", |m| {
                    matches!(m, ServerMsg::Goodbye { .. } | ServerMsg::Error { .. })
                })
                .await;
                assert!(!p.seen(|m| matches!(m, ServerMsg::Admitted | ServerMsg::Waiting { .. })));
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn everyone_sees_an_observer_who_cannot_publish() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let node = Node::start(|_| {}).await.unwrap();
        let mut teacher_b = node.browser();
        teacher_b.login_ok("teacher").await.unwrap();
        let lesson = teacher_b.create_lesson("7A").await.unwrap();
        let teacher = join(&node, "teacher", &lesson).await;
        teacher
            .wait("teacher admitted", |m| matches!(m, ServerMsg::Admitted))
            .await;
        let pupil = join(&node, "pupil-a", &lesson).await;
        pupil
            .wait("waiting", |m| matches!(m, ServerMsg::Waiting { .. }))
            .await;
        teacher.send(ClientMsg::AdmitAll);
        pupil
            .wait("admitted", |m| matches!(m, ServerMsg::Admitted))
            .await;

        let dsl = join(&node, "dsl", &lesson).await;
        dsl.wait("observer in", |m| {
            matches!(
                m,
                ServerMsg::Welcome {
                    role: chaperone_protocol::Role::Observer,
                    ..
                }
            )
        })
        .await;
        let present = |m: &ServerMsg| matches!(m, ServerMsg::Status(s) if s.observer_present);
        teacher.wait("teacher sees the observer", present).await;
        pupil.wait("pupil sees the observer", present).await;
        // Observers never publish.
        dsl.send(ClientMsg::SetSource {
            source: MediaSource::Camera,
            on: true,
        });
        wait_for(Duration::from_secs(5), || {
            dsl.refused(ErrorCode::NotPermitted) || dsl.refused(ErrorCode::Forbidden)
        })
        .await
        .unwrap();
    })
    .await
    .unwrap();
}
