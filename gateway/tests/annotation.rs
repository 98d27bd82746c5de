//! Annotation through the whole stack: a node (`App::build`, its SFU and
//! embedded recorder) and lesson WebSockets. A pupil's client without
//! `annotate` sends marks anyway: each is refused with a typed error, never
//! delivered to anyone, and counted in `/metrics`. Marks that are allowed
//! reach the other pupil without the drawer's name, and every accepted
//! mark, extension, undo, clear and laser flash is in the sealed archive
//! as a lesson event with its time.
#![allow(clippy::unwrap_used)]

mod media_support;
mod peer_support;
mod web_support;

use std::str::FromStr;
use std::time::Duration;

use chaperone_protocol::annotation::{Colour, MarkId, Stroke, Tool};
use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::feed::FeedFrame;
use chaperone_protocol::signal::{ClientMsg, ErrorCode, ServerMsg, Target};
use chaperone_protocol::{MediaSource, Permission};
use media_support::wait_for;
use peer_support::{Peer, join};
use web_support::Node;

fn stroke(tool: Tool, points: Vec<[u16; 2]>) -> Stroke {
    Stroke {
        tool,
        colour: Colour(0x1c_71_d8),
        width: 30,
        points,
        text: None,
    }
}

fn marks_seen(p: &Peer) -> usize {
    p.inbox
        .lock()
        .unwrap()
        .iter()
        .filter(|m| matches!(m, ServerMsg::Mark(_) | ServerMsg::MarkExtended { .. }))
        .count()
}

fn refusals(p: &Peer, action: &str) -> usize {
    p.inbox
        .lock()
        .unwrap()
        .iter()
        .filter(|m| {
            matches!(m, ServerMsg::Error { code: ErrorCode::NotPermitted, action: Some(a) } if a == action)
        })
        .count()
}

async fn refused_total(node: &Node, code: &str) -> f64 {
    let text = node.scrape().await.unwrap();
    let series = format!("chaperone_annotation_refused_total{{code=\"{code}\"}}");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn marks_without_annotate_are_refused_uncounted_nowhere_and_allowed_ones_are_recorded() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let mut node = Node::start(|_| {}).await.unwrap();
        let mut teacher_b = node.browser();
        teacher_b.login_ok("teacher").await.unwrap();
        let lesson = teacher_b.create_lesson("7A").await.unwrap();
        let teacher = join(&node, "teacher", &lesson).await;
        teacher
            .wait("teacher admitted", |m| matches!(m, ServerMsg::Admitted))
            .await;
        let a = join(&node, "pupil-a", &lesson).await;
        let b = join(&node, "pupil-b", &lesson).await;
        for p in [&a, &b] {
            p.wait("waiting", |m| matches!(m, ServerMsg::Waiting { .. }))
                .await;
        }
        teacher.send(ClientMsg::AdmitAll);
        for p in [&a, &b] {
            p.wait("admitted", |m| matches!(m, ServerMsg::Admitted)).await;
        }
        let t = teacher.you();
        // The teacher shares their screen (the lesson forwards it once it is on).
        teacher.send(ClientMsg::SetSource {
            source: MediaSource::ScreenShare,
            on: true,
        });
        b.wait("the teacher's screen is shared", |m| {
            matches!(m, ServerMsg::Roster { participants } if participants.iter().any(|x| x.id == t && x.forwarded.contains(&MediaSource::ScreenShare)))
        })
        .await;
        let before = refused_total(&node, "not_permitted").await;

        // Pupil A's client ignores that it may not draw.
        // Within the connection's own rate limit (a burst of 40): the lesson refuses each.
        let tries = 12;
        for i in 0..tries {
            a.send(ClientMsg::Draw {
                layer: t,
                stroke: stroke(Tool::Pen, vec![[100 + i, 100], [200, 200]]),
            });
            a.send(ClientMsg::ExtendMark {
                points: vec![[300, 300]],
            });
        }
        a.send(ClientMsg::Draw {
            layer: t,
            stroke: stroke(Tool::Laser, vec![[5000, 5000]]),
        });
        wait_for(Duration::from_secs(15), || {
            refusals(&a, "draw") == tries as usize + 1 && refusals(&a, "extend_mark") == tries as usize
        })
        .await
        .unwrap_or_else(|_| panic!("every mark refused: {:?}", a.inbox.lock().unwrap()));
        // A round trip through the lesson after the last attempt: anything
        // the attempts caused has been delivered by now.
        teacher.send(ClientMsg::Chat {
            to: None,
            text: "after".into(),
        });
        b.wait("the chat after", |m| matches!(m, ServerMsg::Chat { text, .. } if text == "after"))
            .await;
        for p in [&teacher, &a, &b] {
            assert_eq!(marks_seen(p), 0, "a refused mark was delivered");
        }
        let after = refused_total(&node, "not_permitted").await;
        assert_eq!(after - before, f64::from(2 * tries + 1), "every refusal counted");

        // Granted, A's marks reach B without A's name; the teacher sees it.
        teacher.send(ClientMsg::SetPermission {
            target: Target::One(a.you()),
            permission: Permission::Annotate,
            granted: true,
        });
        a.wait("granted", |m| {
            matches!(m, ServerMsg::ControlChanged { permission: Permission::Annotate, granted: true, .. })
        })
        .await;
        a.send(ClientMsg::Draw {
            layer: t,
            stroke: stroke(Tool::Pen, vec![[1000, 1000], [1100, 1100]]),
        });
        a.send(ClientMsg::ExtendMark {
            points: vec![[1200, 1200]],
        });
        b.wait("A's mark, extended", |m| matches!(m, ServerMsg::MarkExtended { .. }))
            .await;
        let to_b: Vec<_> = b
            .inbox
            .lock()
            .unwrap()
            .iter()
            .filter_map(|m| match m {
                ServerMsg::Mark(m) => Some(m.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(to_b.len(), 1);
        assert_eq!(to_b[0].name, None, "a pupil's name reached another pupil");
        teacher
            .wait("the teacher sees who drew it", |m| {
                matches!(m, ServerMsg::Mark(m) if m.name.as_deref().is_some_and(|n| !n.is_empty()))
            })
            .await;
        let a_mark = to_b[0].id;
        // The teacher points, draws, takes it back, and clears.
        teacher.send(ClientMsg::Draw {
            layer: t,
            stroke: stroke(Tool::Laser, vec![[4000, 4000]]),
        });
        teacher.send(ClientMsg::Draw {
            layer: t,
            stroke: stroke(Tool::Arrow, vec![[10, 10], [900, 900]]),
        });
        teacher.send(ClientMsg::UndoMark);
        teacher.send(ClientMsg::ClearMarks { author: None });
        b.wait("the clear", |m| matches!(m, ServerMsg::Unmark { ids } if ids.contains(&a_mark)))
            .await;

        // Everything is in the archive, each as an event with its time.
        node.app.shutdown().await;
        let store = node.recordings.path().join("recordings");
        let identity = age::x25519::Identity::from_str(
            std::fs::read_to_string(node.recordings.path().join("review-identity.txt"))
                .unwrap()
                .lines()
                .find(|l| l.starts_with("AGE-SECRET-KEY-"))
                .unwrap(),
        )
        .unwrap();
        let dir = store.join(format!("lessons/{lesson}/segments"));
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "age"))
            .collect();
        names.sort();
        let mut events = Vec::new();
        for path in names {
            let segment =
                chaperone_review::open::open_segment(&std::fs::read(&path).unwrap(), &identity)
                    .unwrap();
            for r in segment.records() {
                if let FeedFrame::Event {
                    at_micros, event, ..
                } = FeedFrame::parse(&r.frame).unwrap()
                {
                    assert!(at_micros > 0);
                    events.push(event);
                }
            }
        }
        let annotated: Vec<(MarkId, Tool)> = events
            .iter()
            .filter_map(|e| match e {
                LessonEvent::Annotated { mark, stroke, .. } => Some((*mark, stroke.tool)),
                _ => None,
            })
            .collect();
        assert_eq!(
            annotated.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
            vec![Tool::Pen, Tool::Laser, Tool::Arrow],
            "exactly the accepted marks are recorded: {events:?}"
        );
        assert!(events.iter().any(|e| matches!(e, LessonEvent::MarkExtended { mark, points } if *mark == a_mark && points == &vec![[1200, 1200]])));
        let arrow = annotated[2].0;
        assert!(events.contains(&LessonEvent::MarkUndone {
            mark: arrow,
            participant: t
        }));
        assert!(events.contains(&LessonEvent::MarksCleared {
            marks: vec![a_mark, arrow],
            by: Some(t)
        }));
        let refused = events
            .iter()
            .filter(|e| matches!(e, LessonEvent::Refused { action, code: ErrorCode::NotPermitted, .. } if action == "draw" || action == "extend_mark"))
            .count();
        assert_eq!(refused, 2 * tries as usize + 1, "every refusal is evidence");
    })
    .await
    .unwrap();
}
