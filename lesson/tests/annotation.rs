//! The annotation rules, one test each: who may draw, on what, how often,
//! who sees each mark and with what name, undo, redo, erase and clears,
//! the share ending, isolation, and what survives a failover. The harness
//! checks the invariants throughout (every mark sent was recorded as
//! accepted from someone allowed to draw it, no pupil is sent another
//! pupil's name, isolation holds).

mod common;

use std::time::Duration;

use chaperone_lesson::{LessonConfig, Snapshot};
use chaperone_protocol::annotation::{
    AuthorHandle, COORD_SCALE, Colour, MAX_MARKS_PER_LAYER, MAX_POINTS, Mark, MarkId, Point,
    Stroke, Tool,
};
use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::signal::{ClientMsg, ErrorCode, ServerMsg, Target};
use chaperone_protocol::{MediaSource, ParticipantId, Permission};
use common::{Class, Who};

const SCREEN: MediaSource = MediaSource::ScreenShare;

fn stroke(tool: Tool, points: Vec<Point>) -> Stroke {
    Stroke {
        tool,
        colour: Colour(0xe0_1b_24),
        width: 40,
        points,
        text: (tool == Tool::Text).then(|| "look here".to_owned()),
    }
}

fn pen(points: Vec<Point>) -> Stroke {
    stroke(Tool::Pen, points)
}

fn draw(layer: ParticipantId, stroke: Stroke) -> ClientMsg {
    ClientMsg::Draw { layer, stroke }
}

fn share(on: bool) -> ClientMsg {
    ClientMsg::SetSource { source: SCREEN, on }
}

fn grant(p: ParticipantId, permission: Permission, granted: bool) -> ClientMsg {
    ClientMsg::SetPermission {
        target: Target::One(p),
        permission,
        granted,
    }
}

/// A running lesson: teacher sharing their screen, `n` pupils admitted.
fn sharing(n: usize) -> (Class, ParticipantId, Vec<ParticipantId>) {
    let (mut c, t) = Class::started(n + 1);
    c.accept(t, share(true));
    let pupils = (0..n).map(|i| c.admitted_pupil(i, t)).collect();
    c.clear();
    (c, t, pupils)
}

/// The marks `p` was sent, in order.
fn marks(c: &Class, p: ParticipantId) -> Vec<Mark> {
    c.inbox(p)
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Mark(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// The marks `p` is showing now, from what they were sent (laser flashes
/// fade and are not counted).
fn showing(c: &Class, p: ParticipantId) -> Vec<MarkId> {
    let mut shown = Vec::new();
    for m in c.inbox(p) {
        match m {
            ServerMsg::Mark(m) if m.stroke.tool != Tool::Laser => shown.push(m.id),
            ServerMsg::Unmark { ids } => shown.retain(|x| !ids.contains(x)),
            _ => {}
        }
    }
    shown.sort();
    shown
}

fn accepted(c: &Class) -> Vec<MarkId> {
    c.events
        .iter()
        .filter_map(|e| match e {
            LessonEvent::Annotated { mark, .. } => Some(*mark),
            _ => None,
        })
        .collect()
}

#[test]
fn staff_mark_on_a_live_share_reaches_every_admitted_participant_and_is_recorded() {
    let (mut c, t, pupils) = sharing(2);
    let waiting = c.join(Who::Pupil(2));
    let o = c.join(Who::Observer);
    c.clear();
    c.accept(t, draw(t, pen(vec![[100, 100], [2000, 3000]])));
    let id = accepted(&c)[0];
    assert!(matches!(
        &c.events[0],
        LessonEvent::Annotated { mark, layer, participant, stroke }
            if *mark == id && *layer == t && *participant == t && stroke.points.len() == 2
    ));
    for p in [t, pupils[0], pupils[1], o] {
        let got = marks(&c, p);
        assert_eq!(got.len(), 1, "{p}");
        assert_eq!(got[0].id, id);
        assert!(got[0].staff);
        // Staff marks carry the teacher's name for everyone.
        assert_eq!(got[0].name.as_deref(), Some("Teacher"), "{p}");
        assert_eq!(got[0].mine, p == t);
    }
    assert!(
        c.inbox(waiting).is_empty(),
        "the waiting room is sent no mark"
    );
}

#[test]
fn no_mark_without_a_live_share_of_that_screen() {
    let (mut c, t) = Class::started(1);
    let p = c.admitted_pupil(0, t);
    c.refuse(t, draw(t, pen(vec![[1, 1]])), ErrorCode::NoShare);
    c.accept(t, share(true));
    // The pupil is not sharing: their screen is no layer.
    c.refuse(t, draw(p, pen(vec![[1, 1]])), ErrorCode::NoShare);
    c.refuse(
        t,
        draw(ParticipantId(999), pen(vec![[1, 1]])),
        ErrorCode::NoShare,
    );
    c.accept(t, draw(t, pen(vec![[1, 1]])));
    // A pupil's share is a layer once it is forwarded.
    c.accept(t, grant(p, Permission::ScreenShare, true));
    c.accept(p, share(true));
    c.accept(t, draw(p, stroke(Tool::Rectangle, vec![[0, 0], [10, 10]])));
    assert_eq!(accepted(&c).len(), 2);
}

#[test]
fn pupil_without_annotate_is_refused_and_nothing_is_delivered() {
    let (mut c, t, pupils) = sharing(2);
    let (a, b) = (pupils[0], pupils[1]);
    c.refuse(a, draw(t, pen(vec![[5, 5]])), ErrorCode::NotPermitted);
    c.refuse(
        a,
        ClientMsg::ExtendMark {
            points: vec![[6, 6]],
        },
        ErrorCode::NotPermitted,
    );
    c.refuse(a, ClientMsg::UndoMark, ErrorCode::NotPermitted);
    c.refuse(a, ClientMsg::RedoMark, ErrorCode::NotPermitted);
    c.refuse(
        a,
        ClientMsg::EraseMark { mark: MarkId(1) },
        ErrorCode::NotPermitted,
    );
    // Staff verbs are staff's.
    c.refuse(
        a,
        ClientMsg::ClearMarks { author: None },
        ErrorCode::Forbidden,
    );
    c.refuse(
        a,
        ClientMsg::IsolateMarks { isolated: true },
        ErrorCode::Forbidden,
    );
    assert!(accepted(&c).is_empty());
    for p in [t, b] {
        assert!(marks(&c, p).is_empty());
    }
    // Granted: accepted, and other pupils see it without the pupil's name.
    c.accept(t, grant(a, Permission::Annotate, true));
    c.accept(a, draw(t, stroke(Tool::Arrow, vec![[5, 5], [900, 900]])));
    let to_b = marks(&c, b);
    assert_eq!(to_b.len(), 1);
    assert_eq!(to_b[0].name, None);
    assert!(!to_b[0].staff && !to_b[0].mine);
    let to_a = marks(&c, a);
    assert!(to_a[0].mine);
    assert_eq!(to_a[0].name, None);
    // Staff see who drew it.
    assert_eq!(marks(&c, t)[0].name.as_deref(), Some("Pupil(0)"));
    assert_eq!(to_b[0].author, marks(&c, t)[0].author);
}

#[test]
fn observers_and_the_waiting_room_may_not_draw() {
    let (mut c, t, _) = sharing(1);
    let o = c.join(Who::Observer);
    c.refuse(o, draw(t, pen(vec![[1, 1]])), ErrorCode::NotPermitted);
    let w = c.join(Who::Pupil(1));
    // Even with annotate granted to every pupil, waiting is waiting.
    c.accept(
        t,
        ClientMsg::SetPermission {
            target: Target::AllPupils,
            permission: Permission::Annotate,
            granted: true,
        },
    );
    c.refuse(w, draw(t, pen(vec![[1, 1]])), ErrorCode::NotAdmitted);
    assert!(accepted(&c).is_empty());
}

#[test]
fn revoking_annotate_mid_stroke_stops_the_rest_of_it() {
    let (mut c, t, pupils) = sharing(2);
    let (a, b) = (pupils[0], pupils[1]);
    c.accept(t, grant(a, Permission::Annotate, true));
    c.accept(a, draw(t, pen(vec![[10, 10], [20, 20]])));
    c.accept(
        a,
        ClientMsg::ExtendMark {
            points: vec![[30, 30]],
        },
    );
    c.accept(t, grant(a, Permission::Annotate, false));
    c.refuse(
        a,
        ClientMsg::ExtendMark {
            points: vec![[40, 40]],
        },
        ErrorCode::NotPermitted,
    );
    c.refuse(a, draw(t, pen(vec![[1, 1]])), ErrorCode::NotPermitted);
    // B saw the stroke up to the revocation, and nothing after.
    let points: Vec<Point> = c
        .inbox(b)
        .iter()
        .flat_map(|m| match m {
            ServerMsg::Mark(m) => m.stroke.points.clone(),
            ServerMsg::MarkExtended { points, .. } => points.clone(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(points, vec![[10, 10], [20, 20], [30, 30]]);
    let extended = c
        .events
        .iter()
        .filter(|e| matches!(e, LessonEvent::MarkExtended { .. }))
        .count();
    assert_eq!(extended, 1);
}

#[test]
fn the_share_ending_clears_its_layer_and_records_the_clear() {
    let (mut c, t, pupils) = sharing(1);
    let p = pupils[0];
    c.accept(t, draw(t, pen(vec![[1, 1]])));
    c.accept(t, draw(t, stroke(Tool::Ellipse, vec![[1, 1], [50, 50]])));
    let ids = accepted(&c);
    assert_eq!(showing(&c, p), ids);
    c.accept(t, share(false));
    assert!(showing(&c, p).is_empty());
    assert!(showing(&c, t).is_empty());
    assert!(c.events.contains(&LessonEvent::MarksCleared {
        marks: ids,
        by: None
    }));
    assert_eq!(c.lesson.marks_kept(), 0);
    c.refuse(t, draw(t, pen(vec![[1, 1]])), ErrorCode::NoShare);
    // Sharing again starts a clean layer.
    c.accept(t, share(true));
    assert!(showing(&c, p).is_empty());
}

#[test]
fn a_pupil_sharing_loses_the_layer_when_their_share_is_revoked() {
    let (mut c, t, pupils) = sharing(1);
    let p = pupils[0];
    c.accept(t, grant(p, Permission::ScreenShare, true));
    c.accept(p, share(true));
    c.accept(t, draw(p, pen(vec![[1, 1]])));
    assert_eq!(showing(&c, p).len(), 1);
    c.accept(t, grant(p, Permission::ScreenShare, false));
    assert!(showing(&c, p).is_empty());
    assert_eq!(c.lesson.marks_kept(), 0);
}

#[test]
fn undo_and_redo_take_back_only_ones_own_marks() {
    let (mut c, t, pupils) = sharing(2);
    let (a, b) = (pupils[0], pupils[1]);
    c.accept(t, grant(a, Permission::Annotate, true));
    c.accept(a, draw(t, pen(vec![[1, 1]])));
    c.accept(t, draw(t, pen(vec![[2, 2]])));
    let [mine, teachers] = accepted(&c)[..] else {
        panic!("two marks");
    };
    // The teacher's mark is newer, yet the pupil's undo takes back theirs.
    c.accept(a, ClientMsg::UndoMark);
    assert_eq!(showing(&c, b), vec![teachers]);
    assert!(c.events.contains(&LessonEvent::MarkUndone {
        mark: mine,
        participant: a
    }));
    // Nothing more of theirs: undo does nothing.
    c.accept(a, ClientMsg::UndoMark);
    assert_eq!(showing(&c, b), vec![teachers]);
    c.accept(a, ClientMsg::RedoMark);
    assert_eq!(showing(&c, b), vec![mine, teachers]);
    // Undo, then a new mark: the undone one cannot be put back.
    c.accept(a, ClientMsg::UndoMark);
    c.accept(a, draw(t, stroke(Tool::Line, vec![[3, 3], [4, 4]])));
    c.accept(a, ClientMsg::RedoMark);
    let third = *accepted(&c).last().expect("three marks");
    assert_eq!(showing(&c, b), vec![teachers, third]);
    assert_eq!(c.lesson.marks_kept(), 2);
}

#[test]
fn erase_removes_only_ones_own_mark() {
    let (mut c, t, pupils) = sharing(2);
    let (a, b) = (pupils[0], pupils[1]);
    c.accept(t, grant(a, Permission::Annotate, true));
    c.accept(t, draw(t, pen(vec![[2, 2]])));
    c.accept(a, draw(t, pen(vec![[1, 1]])));
    let [teachers, mine] = accepted(&c)[..] else {
        panic!("two marks");
    };
    c.refuse(
        a,
        ClientMsg::EraseMark { mark: teachers },
        ErrorCode::Forbidden,
    );
    c.refuse(
        a,
        ClientMsg::EraseMark { mark: MarkId(777) },
        ErrorCode::InvalidState,
    );
    c.accept(a, ClientMsg::EraseMark { mark: mine });
    assert_eq!(showing(&c, b), vec![teachers]);
    assert!(c.events.contains(&LessonEvent::MarkErased {
        mark: mine,
        participant: a
    }));
    // An erased mark is not undone: redo does not bring it back.
    c.accept(a, ClientMsg::RedoMark);
    assert_eq!(showing(&c, b), vec![teachers]);
}

#[test]
fn staff_clear_every_mark_or_one_persons() {
    let (mut c, t, pupils) = sharing(2);
    let (a, b) = (pupils[0], pupils[1]);
    for p in [a, b] {
        c.accept(t, grant(p, Permission::Annotate, true));
    }
    c.accept(a, draw(t, pen(vec![[1, 1]])));
    c.accept(a, draw(t, pen(vec![[1, 2]])));
    c.accept(b, draw(t, pen(vec![[2, 2]])));
    c.accept(t, draw(t, pen(vec![[3, 3]])));
    let ids = accepted(&c);
    let a_handle = marks(&c, t)[0].author;
    c.refuse(
        t,
        ClientMsg::ClearMarks {
            author: Some(AuthorHandle(999)),
        },
        ErrorCode::UnknownParticipant,
    );
    c.accept(
        t,
        ClientMsg::ClearMarks {
            author: Some(a_handle),
        },
    );
    assert!(c.events.contains(&LessonEvent::MarksCleared {
        marks: ids[..2].to_vec(),
        by: Some(t)
    }));
    for p in [t, a, b] {
        assert_eq!(showing(&c, p), ids[2..].to_vec(), "{p}");
    }
    c.accept(t, ClientMsg::ClearMarks { author: None });
    for p in [t, a, b] {
        assert!(showing(&c, p).is_empty(), "{p}");
    }
    assert!(c.events.contains(&LessonEvent::MarksCleared {
        marks: ids[2..].to_vec(),
        by: Some(t)
    }));
    // A clear is recorded even when there is nothing left to clear.
    c.accept(t, ClientMsg::ClearMarks { author: None });
    assert_eq!(
        c.events.last(),
        Some(&LessonEvent::MarksCleared {
            marks: vec![],
            by: Some(t)
        })
    );
}

#[test]
fn isolated_pupils_see_only_staff_marks_and_their_own() {
    let (mut c, t, pupils) = sharing(2);
    let (a, b) = (pupils[0], pupils[1]);
    let o = c.join(Who::Observer);
    for p in [a, b] {
        c.accept(t, grant(p, Permission::Annotate, true));
    }
    c.accept(a, draw(t, pen(vec![[1, 1]])));
    c.accept(b, draw(t, pen(vec![[2, 2]])));
    c.accept(t, draw(t, pen(vec![[3, 3]])));
    let [by_a, by_b, by_t] = accepted(&c)[..] else {
        panic!("three marks");
    };
    assert_eq!(showing(&c, a), vec![by_a, by_b, by_t]);
    c.accept(t, ClientMsg::IsolateMarks { isolated: true });
    assert!(c.last_status(a).expect("status").marks_isolated);
    assert!(c.events.contains(&LessonEvent::MarksIsolated {
        isolated: true,
        by: t
    }));
    assert_eq!(showing(&c, a), vec![by_a, by_t]);
    assert_eq!(showing(&c, b), vec![by_b, by_t]);
    assert_eq!(showing(&c, t), vec![by_a, by_b, by_t]);
    assert_eq!(showing(&c, o), vec![by_a, by_b, by_t]);
    // New marks follow the rule too.
    c.accept(a, draw(t, stroke(Tool::Text, vec![[5, 5]])));
    let new = *accepted(&c).last().expect("a fourth mark");
    assert!(!showing(&c, b).contains(&new));
    assert!(showing(&c, t).contains(&new));
    // A laser flash as well.
    let before = marks(&c, b).len();
    c.accept(a, draw(t, stroke(Tool::Laser, vec![[7, 7]])));
    assert_eq!(marks(&c, b).len(), before);
    c.accept(t, ClientMsg::IsolateMarks { isolated: false });
    assert_eq!(showing(&c, b), vec![by_a, by_b, by_t, new]);
}

#[test]
fn laser_flashes_are_shown_and_recorded_but_never_kept() {
    let (mut c, t, pupils) = sharing(1);
    let p = pupils[0];
    c.accept(t, draw(t, stroke(Tool::Laser, vec![[1, 1], [2, 2]])));
    assert_eq!(marks(&c, p).len(), 1);
    assert_eq!(marks(&c, p)[0].stroke.tool, Tool::Laser);
    assert_eq!(accepted(&c).len(), 1);
    assert_eq!(c.lesson.marks_kept(), 0);
    // Not undone (nothing kept), not shown to a late arrival.
    let undone = c.events.len();
    c.accept(t, ClientMsg::UndoMark);
    assert_eq!(c.events.len(), undone);
    let late = c.admitted_pupil(1, t);
    assert!(marks(&c, late).is_empty());
}

#[test]
fn someone_admitted_later_is_sent_the_marks_shown_now() {
    let (mut c, t, _) = sharing(1);
    c.accept(t, draw(t, pen(vec![[1, 1]])));
    c.accept(
        t,
        ClientMsg::ExtendMark {
            points: vec![[2, 2], [3, 3]],
        },
    );
    c.accept(t, draw(t, pen(vec![[9, 9]])));
    c.accept(t, ClientMsg::UndoMark);
    let late = c.join(Who::Pupil(1));
    assert!(marks(&c, late).is_empty());
    c.accept(t, ClientMsg::Admit { participant: late });
    let got = marks(&c, late);
    assert_eq!(got.len(), 1, "the undone mark is not sent");
    assert_eq!(got[0].stroke.points, vec![[1, 1], [2, 2], [3, 3]]);
}

#[test]
fn malformed_marks_and_a_full_layer_are_refused() {
    let (mut c, t, _) = sharing(1);
    let out = (COORD_SCALE + 1, 0);
    for bad in [
        pen(vec![[out.0, out.1]]),
        pen(vec![[1, 1]; MAX_POINTS + 1]),
        stroke(Tool::Line, vec![[1, 1]]),
        Stroke {
            text: None,
            ..stroke(Tool::Text, vec![[1, 1]])
        },
        Stroke {
            width: 0,
            ..pen(vec![[1, 1]])
        },
    ] {
        c.refuse(t, draw(t, bad), ErrorCode::BadMark);
    }
    // Extending nothing, or past the bounds.
    c.refuse(
        t,
        ClientMsg::ExtendMark {
            points: vec![[1, 1]],
        },
        ErrorCode::InvalidState,
    );
    c.accept(t, draw(t, pen(vec![[1, 1]; MAX_POINTS - 1])));
    c.refuse(
        t,
        ClientMsg::ExtendMark {
            points: vec![[1, 1]; 2],
        },
        ErrorCode::BadMark,
    );
    c.refuse(
        t,
        ClientMsg::ExtendMark {
            points: vec![[COORD_SCALE + 1, 1]],
        },
        ErrorCode::BadMark,
    );
    c.accept(
        t,
        ClientMsg::ExtendMark {
            points: vec![[COORD_SCALE, 1]],
        },
    );
    // A shape is never extended.
    c.accept(t, draw(t, stroke(Tool::Rectangle, vec![[1, 1], [2, 2]])));
    c.refuse(
        t,
        ClientMsg::ExtendMark {
            points: vec![[1, 1]],
        },
        ErrorCode::InvalidState,
    );
    // Fill the layer (pausing so the rate limit does not bite).
    c.skip(Duration::from_secs(1));
    while c.lesson.marks_kept() < MAX_MARKS_PER_LAYER {
        c.skip(Duration::from_millis(70));
        c.accept(t, draw(t, pen(vec![[1, 1]])));
    }
    c.skip(Duration::from_secs(1));
    c.refuse(t, draw(t, pen(vec![[1, 1]])), ErrorCode::LayerFull);
    // Laser flashes are not kept, so they still pass.
    c.accept(t, draw(t, stroke(Tool::Laser, vec![[1, 1]])));
}

#[test]
fn annotation_is_rate_limited_per_person_across_reconnects() {
    let config = LessonConfig::default();
    let (mut c, t, pupils) = sharing(1);
    let p = pupils[0];
    c.accept(t, grant(p, Permission::Annotate, true));
    for _ in 0..config.annotation_rate {
        c.accept(p, draw(t, stroke(Tool::Laser, vec![[1, 1]])));
    }
    c.refuse(
        p,
        draw(t, stroke(Tool::Laser, vec![[1, 1]])),
        ErrorCode::RateLimited,
    );
    // Reconnecting gives no fresh allowance.
    c.leave(p);
    let p = c.join(Who::Pupil(0));
    assert!(c.lesson.is_admitted(p));
    c.refuse(p, draw(t, pen(vec![[1, 1]])), ErrorCode::RateLimited);
    // The teacher's allowance is their own.
    c.accept(t, draw(t, pen(vec![[1, 1]])));
    c.skip(config.annotation_window);
    c.accept(p, draw(t, pen(vec![[1, 1]])));
}

#[test]
fn held_pupils_may_not_draw() {
    let (mut c, t, pupils) = sharing(1);
    let p = pupils[0];
    c.accept(t, grant(p, Permission::Annotate, true));
    c.recorder(false);
    c.advance(Duration::from_secs(11));
    assert!(!c.lesson.held().is_empty());
    c.refuse(p, draw(t, pen(vec![[1, 1]])), ErrorCode::Held);
    // Staff still may.
    c.accept(t, draw(t, pen(vec![[1, 1]])));
}

#[test]
fn a_pupils_handle_is_stable_across_reconnects_and_says_nothing_of_who_they_are() {
    let (mut c, t, pupils) = sharing(2);
    let (a, b) = (pupils[0], pupils[1]);
    c.accept(t, grant(a, Permission::Annotate, true));
    c.accept(a, draw(t, pen(vec![[1, 1]])));
    c.leave(a);
    let a2 = c.join(Who::Pupil(0));
    c.accept(a2, draw(t, pen(vec![[2, 2]])));
    let seen = marks(&c, b);
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].author, seen[1].author);
    // The handle is not the participant id (which the roster names).
    assert_ne!(u64::from(seen[0].author.0), a.0);
    assert_ne!(u64::from(seen[1].author.0), a2.0);
    // Their undo still reaches the mark drawn from the first connection.
    c.accept(a2, ClientMsg::UndoMark);
    c.accept(a2, ClientMsg::UndoMark);
    assert!(showing(&c, b).is_empty());
}

#[test]
fn isolation_survives_a_failover_and_marks_do_not() {
    let (mut c, t, _) = sharing(1);
    c.accept(t, ClientMsg::IsolateMarks { isolated: true });
    c.accept(t, draw(t, pen(vec![[1, 1]])));
    let first = accepted(&c)[0];
    let snapshot = c.persisted.last().cloned().expect("persisted");
    assert!(snapshot.marks_isolated);
    c.restore(snapshot);
    assert!(c.lesson.marks_isolated());
    assert_eq!(c.lesson.marks_kept(), 0);
    c.recorder(true);
    let t = c.join(Who::Teacher);
    c.accept(t, share(true));
    c.accept(t, draw(t, pen(vec![[1, 1]])));
    let second = *accepted(&c).last().expect("a mark after failover");
    assert!(second > first, "mark ids are never reused in a recording");
}

#[test]
fn a_snapshot_from_before_annotation_decodes_with_marks_shared() {
    let (c, _, _) = sharing(0);
    let snapshot = c.persisted.last().cloned().expect("persisted");
    let mut json: serde_json::Value =
        serde_json::from_slice(&snapshot.encode()).expect("snapshot is JSON");
    json.as_object_mut()
        .expect("an object")
        .remove("marks_isolated")
        .expect("the field is written");
    let old = Snapshot::decode(json.to_string().as_bytes()).expect("old snapshot decodes");
    assert!(!old.marks_isolated);
}
