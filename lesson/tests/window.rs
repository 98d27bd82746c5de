//! The lesson's window (issue 17): when its time runs out the lesson core
//! ends it exactly as a teacher's "end lesson" does, with the cause
//! recorded; its staff are warned before; an extension moves the close.
//! Time is virtual: the harness jumps from deadline to deadline and checks
//! the safeguarding invariants (and its own model of the close) throughout.

mod common;

use std::time::Duration;

use chaperone_lesson::{LessonConfig, Snapshot};
use chaperone_protocol::ParticipantId;
use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::signal::{ClientMsg, ErrorCode, Farewell, ServerMsg};
use common::{Class, Who};

const MIN: Duration = Duration::from_secs(60);

/// A running lesson (teacher, one admitted pupil) that closes in `in_`.
fn closing_in(in_: Duration) -> (Class, ParticipantId, ParticipantId) {
    let (mut c, t) = Class::started(2);
    let p = c.admitted_pupil(0, t);
    c.window(Some(in_));
    (c, t, p)
}

fn closings(c: &Class, p: ParticipantId) -> Vec<u64> {
    c.inbox(p)
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Closing { in_secs } => Some(*in_secs),
            _ => None,
        })
        .collect()
}

fn time_ran_out(c: &Class) -> bool {
    c.events.windows(2).any(|w| {
        w[0] == LessonEvent::TimeRanOut {}
            && w[1]
                == LessonEvent::Ended {
                    by: ParticipantId::SERVER,
                }
    })
}

#[test]
fn when_its_time_runs_out_the_lesson_ends_for_everyone_with_the_cause_recorded() {
    let (mut c, t, p) = closing_in(10 * MIN);
    c.clear();
    // Not a moment early.
    c.advance(10 * MIN - Duration::from_millis(1));
    assert!(!c.lesson.is_ended());
    assert!(c.disconnects.is_empty());
    c.advance(Duration::from_millis(1));
    assert!(c.lesson.is_ended());
    assert!(time_ran_out(&c), "{:?}", c.events);
    // Everyone is said goodbye to, as when a teacher ends it.
    for x in [t, p] {
        assert!(
            c.disconnects.contains(&(x, Farewell::Ended)),
            "{:?}",
            c.disconnects
        );
        assert_eq!(
            c.inbox(x).last(),
            Some(&ServerMsg::Goodbye {
                reason: Farewell::Ended
            })
        );
    }
    assert!(c.forwarded.is_empty() && c.receiving.is_empty());
    // Ended for good: no deadline, no join, and a snapshot that says so.
    assert_eq!(c.deadline, None);
    assert_eq!(c.try_join(Who::Teacher), Err(ErrorCode::Ended));
    assert_eq!(c.try_join(Who::Pupil(1)), Err(ErrorCode::Ended));
    let snapshot = c.persisted.last().cloned().expect("persisted");
    assert!(snapshot.ended);
    c.restore(snapshot);
    assert_eq!(c.try_join(Who::Pupil(0)), Err(ErrorCode::Ended));
}

#[test]
fn the_close_is_a_deadline_the_core_reports() {
    let (mut c, _, _) = closing_in(10 * MIN);
    let warn = c.now() + 5 * MIN;
    let close = c.now() + 10 * MIN;
    assert_eq!(c.lesson.closes_at(), Some(close));
    // Other deadlines (the teacher's camera is on, nothing else) come later.
    assert_eq!(c.deadline, Some(warn));
    assert!(c.progress());
    assert_eq!(c.deadline, Some(close));
    assert!(c.progress());
    assert!(c.lesson.is_ended());
    assert_eq!(c.deadline, None);
}

#[test]
fn staff_are_warned_before_the_close_and_pupils_are_not() {
    let (mut c, t, p) = closing_in(10 * MIN);
    assert!(closings(&c, t).is_empty(), "not yet");
    c.advance(5 * MIN);
    assert_eq!(closings(&c, t), [300]);
    assert!(closings(&c, p).is_empty());
    // Staff who arrive during the warning period are told on joining.
    c.advance(2 * MIN);
    let a = c.join(Who::Assistant);
    assert_eq!(closings(&c, a), [180]);
    // Nobody is told twice of the same close.
    c.advance(MIN);
    assert_eq!(closings(&c, t), [300]);
    assert_eq!(closings(&c, a), [180]);
    // Observers are not staff.
    let o = c.join(Who::Observer);
    assert!(closings(&c, o).is_empty());
}

#[test]
fn an_extension_moves_the_close_and_the_warning() {
    let (mut c, t, p) = closing_in(10 * MIN);
    c.advance(6 * MIN);
    assert_eq!(closings(&c, t), [300]);
    // Extended by 15 minutes, before it closed: 19 minutes left now.
    c.window(Some(19 * MIN));
    c.advance(4 * MIN);
    assert!(
        !c.lesson.is_ended(),
        "the old close has passed, the lesson runs on"
    );
    assert!(c.lesson.is_admitted(p));
    assert_eq!(
        closings(&c, t),
        [300],
        "no warning until the new close is near"
    );
    c.advance(10 * MIN);
    assert_eq!(closings(&c, t), [300, 300]);
    // Extended again inside the warning period: warned again of the new close.
    c.window(Some(4 * MIN));
    assert_eq!(closings(&c, t), [300, 300, 240]);
    c.advance(4 * MIN);
    assert!(c.lesson.is_ended());
    assert!(time_ran_out(&c));
}

#[test]
fn a_close_that_passed_before_the_extension_arrived_has_ended_the_lesson() {
    let (mut c, _, p) = closing_in(MIN);
    // A message races the shell's timer: the close is applied first.
    c.skip(2 * MIN);
    c.say(p, ClientMsg::RaiseHand { raised: true });
    assert!(c.lesson.is_ended());
    assert!(time_ran_out(&c));
    // An extension arriving after that reopens nothing.
    c.window(Some(30 * MIN));
    assert!(c.lesson.is_ended());
    assert_eq!(c.try_join(Who::Pupil(0)), Err(ErrorCode::Ended));
}

#[test]
fn a_window_handed_in_after_it_closed_ends_the_lesson_at_once() {
    let (mut c, t) = Class::started(1);
    c.window(Some(Duration::ZERO));
    assert!(c.lesson.is_ended());
    assert!(time_ran_out(&c));
    assert!(c.disconnects.contains(&(t, Farewell::Ended)));
}

#[test]
fn a_lesson_without_a_close_runs_on() {
    let (mut c, _, p) = closing_in(10 * MIN);
    c.window(None);
    c.advance(60 * MIN);
    assert!(!c.lesson.is_ended());
    assert!(c.lesson.is_admitted(p));
}

#[test]
fn a_teacher_ending_the_lesson_first_is_not_a_time_out() {
    let (mut c, t, _) = closing_in(10 * MIN);
    c.clear();
    c.say(t, ClientMsg::EndLesson);
    c.advance(20 * MIN);
    assert!(c.events.contains(&LessonEvent::Ended { by: t }));
    assert!(!c.events.contains(&LessonEvent::TimeRanOut {}));
}

#[test]
fn the_warning_period_is_configurable() {
    let config = LessonConfig {
        close_warning: 2 * MIN,
        ..LessonConfig::default()
    };
    let mut c = Class::with_config(1, config);
    c.recorder(true);
    let t = c.join(Who::Teacher);
    c.window(Some(10 * MIN));
    c.advance(7 * MIN);
    assert!(closings(&c, t).is_empty());
    c.advance(MIN);
    assert_eq!(closings(&c, t), [120]);
}

#[test]
fn snapshots_from_before_the_window_still_restore() {
    // A snapshot as written before this change (no field was added for it).
    let (c, _, _) = closing_in(10 * MIN);
    let json = String::from_utf8(c.persisted.last().expect("persisted").encode()).expect("utf-8");
    assert!(!json.contains("close"), "{json}");
    assert!(Snapshot::decode(json.as_bytes()).is_ok());
}
