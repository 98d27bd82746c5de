//! One test per lesson rule, each asserting the exact typed refusal or
//! effect. The harness checks the safeguarding invariants throughout.
//!
//! This file is long because it holds one short test per rule of the lesson
//! core, grouped by concern, so that a rule and its test are found together.

mod common;

use std::time::Duration;

use chaperone_lesson::{Lesson, LessonConfig, Snapshot, SnapshotError};
use chaperone_protocol::event::{Compliance, HoldReason, LessonEvent};
use chaperone_protocol::signal::{ClientMsg, ErrorCode, Farewell, ServerMsg, Target};
use chaperone_protocol::{Engagement, MediaSource, Permission, TrackId};
use common::{Class, Who, setup};

const MIC: MediaSource = MediaSource::Microphone;
const CAM: MediaSource = MediaSource::Camera;

fn on(source: MediaSource) -> ClientMsg {
    ClientMsg::SetSource { source, on: true }
}

fn chat(to: Option<chaperone_protocol::ParticipantId>, text: &str) -> ClientMsg {
    ClientMsg::Chat {
        to,
        text: text.to_owned(),
    }
}

// ---------------------------------------------------------------- roster

#[test]
fn unrostered_user_is_refused_not_found() {
    let (mut c, _) = Class::started(2);
    for who in [
        Who::Stranger,
        Who::Outsider,
        Who::Admin,
        Who::ExpiredVisitor,
        Who::OtherStaff,
    ] {
        assert_eq!(c.try_join(who), Err(ErrorCode::NotFound), "{who:?}");
        // The person learns nothing; the recording keeps the attempt.
        let refused = chaperone_protocol::event::LessonEvent::JoinRefused {
            user: common::user(who),
            code: ErrorCode::NotFound,
        };
        assert_eq!(c.events.last(), Some(&refused), "{who:?}");
    }
    assert!(c.present.len() == 1, "only the teacher is present");
}

#[test]
fn observer_joins_and_everyone_sees_observer_present() {
    let (mut c, t) = Class::started(1);
    let p = c.admitted_pupil(0, t);
    let o = c.join(Who::Observer);
    assert!(c.lesson.is_admitted(o));
    for who in [t, p, o] {
        assert!(
            c.last_status(who).expect("status").observer_present,
            "{who}"
        );
    }
    c.refuse(o, on(CAM), ErrorCode::NotPermitted);
    c.refuse(o, chat(Some(p), "hi"), ErrorCode::Forbidden);
    c.refuse(o, chat(None, "hi"), ErrorCode::Forbidden);
    c.refuse(p, chat(Some(o), "hi"), ErrorCode::Forbidden);
    c.accept(o, chat(Some(t), "fine"));
}

#[test]
fn visitor_access_ends_with_the_grant() {
    let (mut c, t) = Class::started(1);
    let p = c.admitted_pupil(0, t);
    let v = c.join(Who::Visitor);
    assert!(c.lesson.is_admitted(v) && c.lesson.is_receiving(v));
    c.refuse(v, chat(Some(p), "hello"), ErrorCode::Forbidden);
    c.advance(common::VISITOR_GRANT);
    assert_eq!(
        c.inbox(v).last(),
        Some(&ServerMsg::Goodbye {
            reason: Farewell::AccessEnded
        })
    );
    assert!(c.disconnects.contains(&(v, Farewell::AccessEnded)));
    assert!(!c.lesson.is_receiving(v));
    assert!(!c.last_status(p).expect("status").observer_present);
    assert_eq!(c.try_join(Who::Visitor), Err(ErrorCode::NotFound));
}

// ---------------------------------------------------------- waiting room

#[test]
fn pupils_wait_and_only_staff_see_the_waiting_list() {
    let (mut c, t) = Class::started(2);
    let a = c.join(Who::Assistant);
    let p = c.join(Who::Pupil(0));
    assert!(!c.lesson.is_admitted(p));
    assert_eq!(
        c.inbox(p),
        &[
            ServerMsg::Welcome {
                version: 1,
                you: p,
                role: chaperone_protocol::Role::Pupil
            },
            ServerMsg::Waiting { locked: false }
        ]
    );
    for s in [t, a] {
        assert!(c.received(
            s,
            |m| matches!(m, ServerMsg::WaitingList { waiting } if waiting.iter().any(|w| w.id == p))
        ));
    }
    c.say(t, ClientMsg::Admit { participant: p });
    assert!(c.lesson.is_admitted(p));
    assert!(c.received(p, |m| *m == ServerMsg::Admitted));
    assert!(c.received(p, |m| matches!(m, ServerMsg::Roster { .. })));
    assert!(!c.received(p, |m| matches!(m, ServerMsg::WaitingList { .. })));
}

#[test]
fn admit_all_and_deny_one() {
    let (mut c, t) = Class::started(3);
    let p0 = c.join(Who::Pupil(0));
    let p1 = c.join(Who::Pupil(1));
    c.accept(t, ClientMsg::AdmitAll);
    assert!(c.lesson.is_admitted(p0) && c.lesson.is_admitted(p1));
    let p2 = c.join(Who::Pupil(2));
    c.accept(t, ClientMsg::Deny { participant: p2 });
    assert_eq!(
        c.inbox(p2).last(),
        Some(&ServerMsg::Goodbye {
            reason: Farewell::Denied
        })
    );
    assert!(c.disconnects.contains(&(p2, Farewell::Denied)));
    assert!(c.lesson.role_of(p2).is_none());
    c.refuse(
        t,
        ClientMsg::Admit { participant: p0 },
        ErrorCode::InvalidState,
    );
    c.refuse(
        t,
        ClientMsg::Admit { participant: p2 },
        ErrorCode::UnknownParticipant,
    );
}

#[test]
fn waiting_pupil_chatting_is_refused_not_admitted() {
    let (mut c, t) = Class::started(2);
    let admitted = c.admitted_pupil(1, t);
    let p = c.join(Who::Pupil(0));
    c.refuse(p, chat(None, "let me in"), ErrorCode::NotAdmitted);
    c.refuse(p, chat(Some(t), "let me in"), ErrorCode::NotAdmitted);
    c.refuse(p, on(CAM), ErrorCode::NotAdmitted);
    c.refuse(
        p,
        ClientMsg::Offer { sdp: "v=0".into() },
        ErrorCode::NotAdmitted,
    );
    c.refuse(p, ClientMsg::AdmitAll, ErrorCode::NotAdmitted);
    assert!(c.chats.is_empty());
    assert!(c.chat_texts(admitted).is_empty() && c.chat_texts(t).is_empty());
    assert!(c.media_sdp.is_empty());
    assert!(!c.lesson.is_receiving(p));
}

#[test]
fn locked_lesson_refuses_new_pupils_but_not_staff() {
    let (mut c, t) = Class::started(2);
    let waiting = c.join(Who::Pupil(1));
    c.accept(t, ClientMsg::Lock { locked: true });
    assert_eq!(
        c.inbox(waiting).last(),
        Some(&ServerMsg::Waiting { locked: true })
    );
    assert_eq!(c.try_join(Who::Pupil(0)), Err(ErrorCode::Locked));
    c.join(Who::Assistant);
    c.accept(t, ClientMsg::Lock { locked: false });
    c.join(Who::Pupil(0));
}

#[test]
fn admission_refused_not_recording_while_no_recorder() {
    let mut c = Class::new(1);
    let t = c.join(Who::Teacher);
    let p = c.join(Who::Pupil(0));
    c.refuse(
        t,
        ClientMsg::Admit { participant: p },
        ErrorCode::NotRecording,
    );
    c.refuse(t, ClientMsg::AdmitAll, ErrorCode::NotRecording);
    assert!(!c.lesson.is_admitted(p));
    c.recorder(true);
    c.accept(t, ClientMsg::Admit { participant: p });
}

#[test]
fn removed_pupil_refused_until_reallowed() {
    let (mut c, t) = Class::started(1);
    let p = c.admitted_pupil(0, t);
    c.accept(t, ClientMsg::Remove { participant: p });
    assert!(c.disconnects.contains(&(p, Farewell::Removed)));
    assert_eq!(c.try_join(Who::Pupil(0)), Err(ErrorCode::Removed));
    c.advance(Duration::from_secs(120));
    assert_eq!(c.try_join(Who::Pupil(0)), Err(ErrorCode::Removed));
    c.accept(t, ClientMsg::Reallow { participant: p });
    let again = c.join(Who::Pupil(0));
    assert!(
        !c.lesson.is_admitted(again),
        "a re-allowed pupil waits again"
    );
}

#[test]
fn reconnect_within_grace_is_admitted_after_grace_waits() {
    let (mut c, t) = Class::started(1);
    let p = c.admitted_pupil(0, t);
    c.leave(p);
    c.advance(Duration::from_secs(29));
    let p2 = c.join(Who::Pupil(0));
    assert!(c.lesson.is_admitted(p2));
    c.leave(p2);
    c.advance(Duration::from_secs(30));
    let p3 = c.join(Who::Pupil(0));
    assert!(!c.lesson.is_admitted(p3));
}

#[test]
fn second_connection_replaces_the_first() {
    let (mut c, t) = Class::started(1);
    let p = c.admitted_pupil(0, t);
    let p2 = c.join(Who::Pupil(0));
    assert_eq!(
        c.inbox(p).last(),
        Some(&ServerMsg::Goodbye {
            reason: Farewell::Replaced
        })
    );
    assert!(c.disconnects.contains(&(p, Farewell::Replaced)));
    assert!(c.lesson.is_admitted(p2));
}

#[test]
fn refused_rejoin_does_not_drop_the_existing_connection() {
    let (mut c, t) = Class::started(1);
    let p = c.join(Who::Pupil(0));
    c.accept(t, ClientMsg::Lock { locked: true });
    // The same pupil tries again from a second device while the room is locked.
    assert_eq!(c.try_join(Who::Pupil(0)), Err(ErrorCode::Locked));
    assert!(
        c.lesson.role_of(p).is_some() && c.pid(Who::Pupil(0)) == Some(p),
        "the pupil lost their place in the waiting room to a refused join"
    );
    assert!(!c.disconnects.iter().any(|(x, _)| *x == p));
    // An admitted pupil's second device is let straight back in.
    c.accept(t, ClientMsg::Lock { locked: false });
    c.say(t, ClientMsg::Admit { participant: p });
    c.accept(t, ClientMsg::Lock { locked: true });
    let p2 = c.join(Who::Pupil(0));
    assert!(c.lesson.is_admitted(p2));
    assert!(c.disconnects.contains(&(p, Farewell::Replaced)));
}

// ------------------------------------------------------- supervision, recording

#[test]
fn teacher_leaving_holds_pupils_after_grace_and_returning_releases() {
    let (mut c, t) = Class::started(2);
    let p = c.admitted_pupil(0, t);
    c.accept(
        p,
        ClientMsg::SetEngagement {
            engagement: Engagement::VoiceChat,
        },
    );
    let mic = TrackId::new(p, MIC);
    assert!(c.lesson.is_forwarding(mic));
    c.leave(t);
    c.advance(Duration::from_secs(59));
    assert!(c.lesson.is_forwarding(mic), "within the grace");
    c.advance(Duration::from_secs(1));
    assert_eq!(c.lesson.held(), &[HoldReason::Unsupervised]);
    assert!(!c.lesson.is_forwarding(mic));
    assert!(!c.lesson.is_receiving(p));
    assert_eq!(
        c.last_status(p).expect("status").held,
        vec![HoldReason::Unsupervised]
    );
    c.refuse(p, chat(None, "anyone?"), ErrorCode::Held);
    let t2 = c.join(Who::Teacher);
    assert!(c.lesson.held().is_empty());
    assert!(c.lesson.is_forwarding(mic));
    assert!(c.last_status(p).expect("status").held.is_empty());
    c.accept(p, chat(Some(t2), "back"));
}

#[test]
fn held_applies_to_a_message_racing_the_timer() {
    let (mut c, t) = Class::started(1);
    let p = c.admitted_pupil(0, t);
    c.recorder(false);
    c.skip(Duration::from_secs(11));
    c.refuse(p, chat(None, "late"), ErrorCode::Held);
}

#[test]
fn recorder_lost_holds_after_grace() {
    let (mut c, t) = Class::started(1);
    let p = c.admitted_pupil(0, t);
    c.accept(p, on(CAM));
    c.recorder(false);
    assert!(!c.last_status(p).expect("status").recording);
    c.advance(Duration::from_secs(9));
    assert!(c.lesson.is_forwarding(TrackId::new(p, CAM)));
    c.advance(Duration::from_secs(1));
    assert_eq!(c.lesson.held(), &[HoldReason::RecordingLost]);
    assert!(!c.lesson.is_forwarding(TrackId::new(p, CAM)));
    assert!(
        c.lesson.is_forwarding(TrackId::new(t, CAM)),
        "staff are not held"
    );
    c.recorder(true);
    assert!(c.lesson.is_forwarding(TrackId::new(p, CAM)));
    assert!(c.last_status(p).expect("status").recording);
}

// ------------------------------------------------------------- controls

#[test]
fn turn_off_lets_the_pupil_turn_on_again() {
    let (mut c, t) = Class::started(1);
    let p = c.admitted_pupil(0, t);
    c.accept(p, on(MIC));
    c.accept(
        t,
        ClientMsg::TurnOff {
            target: Target::One(p),
            source: MIC,
        },
    );
    assert!(!c.lesson.is_forwarding(TrackId::new(p, MIC)));
    assert!(c.received(p, |m| *m
        == ServerMsg::ControlChanged {
            permission: Permission::Microphone,
            granted: false,
            revoked: false
        }));
    c.accept(p, on(MIC));
    assert!(c.lesson.is_forwarding(TrackId::new(p, MIC)));
}

#[test]
fn pupil_re_enabling_a_revoked_microphone_is_refused_not_permitted() {
    let (mut c, t) = Class::started(1);
    let p = c.admitted_pupil(0, t);
    c.accept(p, on(MIC));
    c.accept(
        t,
        ClientMsg::SetPermission {
            target: Target::One(p),
            permission: Permission::Microphone,
            granted: false,
        },
    );
    assert!(!c.lesson.is_forwarding(TrackId::new(p, MIC)));
    c.refuse(p, on(MIC), ErrorCode::NotPermitted);
    c.refuse(
        p,
        ClientMsg::SetEngagement {
            engagement: Engagement::VoiceChat,
        },
        ErrorCode::NotPermitted,
    );
    // Leaving and coming back does not restore it.
    c.leave(p);
    let p = c.join(Who::Pupil(0));
    c.refuse(p, on(MIC), ErrorCode::NotPermitted);
    c.accept(
        t,
        ClientMsg::SetPermission {
            target: Target::One(p),
            permission: Permission::Microphone,
            granted: true,
        },
    );
    assert!(
        !c.lesson.is_forwarding(TrackId::new(p, MIC)),
        "granted again, but still off"
    );
    c.accept(p, on(MIC));
    assert!(c.lesson.is_forwarding(TrackId::new(p, MIC)));
}

#[test]
fn pupil_sending_staff_commands_is_forbidden() {
    let (mut c, t) = Class::started(2);
    let p = c.admitted_pupil(0, t);
    let w = c.join(Who::Pupil(1));
    for msg in [
        ClientMsg::Admit { participant: w },
        ClientMsg::AdmitAll,
        ClientMsg::Remove { participant: p },
        ClientMsg::Lock { locked: true },
        ClientMsg::SetPermission {
            target: Target::AllPupils,
            permission: Permission::ScreenShare,
            granted: true,
        },
        ClientMsg::TurnOff {
            target: Target::AllPupils,
            source: CAM,
        },
        ClientMsg::SetChatPolicy {
            public_chat: true,
            private_chat: true,
        },
        ClientMsg::FlagIncident { note: "x".into() },
        ClientMsg::EndLesson,
    ] {
        c.refuse(p, msg, ErrorCode::Forbidden);
    }
    assert!(!c.lesson.is_admitted(w));
    assert!(!c.lesson.is_ended());
}

#[test]
fn bulk_controls_and_defaults_for_later_pupils() {
    let (mut c, t) = Class::started(2);
    let p = c.admitted_pupil(0, t);
    c.accept(
        p,
        ClientMsg::SetEngagement {
            engagement: Engagement::VoiceChatCamera,
        },
    );
    c.accept(
        t,
        ClientMsg::TurnOff {
            target: Target::AllPupils,
            source: MIC,
        },
    );
    assert!(!c.lesson.is_forwarding(TrackId::new(p, MIC)));
    assert!(c.lesson.is_forwarding(TrackId::new(p, CAM)));
    c.accept(
        t,
        ClientMsg::SetPermission {
            target: Target::AllPupils,
            permission: Permission::Camera,
            granted: false,
        },
    );
    assert!(!c.lesson.is_forwarding(TrackId::new(p, CAM)));
    let later = c.admitted_pupil(1, t);
    c.refuse(later, on(CAM), ErrorCode::NotPermitted);
    c.accept(later, on(MIC));
    c.refuse(later, on(MediaSource::ScreenShare), ErrorCode::NotPermitted);
    c.accept(
        t,
        ClientMsg::SetPermission {
            target: Target::One(later),
            permission: Permission::ScreenShare,
            granted: true,
        },
    );
    c.accept(later, on(MediaSource::ScreenShare));
    assert!(
        c.lesson
            .is_forwarding(TrackId::new(later, MediaSource::ScreenShare))
    );
}

#[test]
fn engagement_is_chosen_within_permission() {
    let (mut c, t) = Class::started(1);
    let p = c.admitted_pupil(0, t);
    c.accept(
        p,
        ClientMsg::SetEngagement {
            engagement: Engagement::ChatCamera,
        },
    );
    assert!(c.lesson.is_forwarding(TrackId::new(p, CAM)));
    assert!(!c.lesson.is_forwarding(TrackId::new(p, MIC)));
    c.accept(
        p,
        ClientMsg::SetEngagement {
            engagement: Engagement::ChatOnly,
        },
    );
    assert!(!c.lesson.is_forwarding(TrackId::new(p, CAM)));
    c.accept(
        t,
        ClientMsg::SetPermission {
            target: Target::One(p),
            permission: Permission::Camera,
            granted: false,
        },
    );
    c.refuse(
        p,
        ClientMsg::SetEngagement {
            engagement: Engagement::VoiceChatCamera,
        },
        ErrorCode::NotPermitted,
    );
    c.accept(
        p,
        ClientMsg::SetEngagement {
            engagement: Engagement::VoiceChat,
        },
    );
    assert!(c.lesson.is_forwarding(TrackId::new(p, MIC)));
}

#[test]
fn teacher_camera_off_too_long_is_a_compliance_event() {
    let (mut c, t) = Class::started(0);
    c.accept(
        t,
        ClientMsg::SetSource {
            source: CAM,
            on: false,
        },
    );
    c.advance(Duration::from_secs(29));
    assert!(!c.received(t, |m| matches!(m, ServerMsg::Banner { .. })));
    c.advance(Duration::from_secs(1));
    assert!(c.received(t, |m| *m
        == ServerMsg::Banner {
            kind: Compliance::TeacherCameraOff
        }));
    assert!(c.events.contains(&LessonEvent::Compliance {
        participant: t,
        kind: Compliance::TeacherCameraOff
    }));
    c.accept(t, on(CAM));
    assert!(c.events.contains(&LessonEvent::Compliance {
        participant: t,
        kind: Compliance::TeacherCameraOn
    }));
}

// ------------------------------------------------------------------ chat

#[test]
fn public_chat_and_public_chat_off() {
    let (mut c, t) = Class::started(2);
    let p0 = c.admitted_pupil(0, t);
    let p1 = c.admitted_pupil(1, t);
    c.accept(p0, chat(None, "hello all"));
    for r in [t, p0, p1] {
        assert_eq!(c.chat_texts(r), vec!["hello all"]);
    }
    assert_eq!(c.chats, vec![(p0, None, "hello all".to_owned())]);
    c.accept(
        t,
        ClientMsg::SetChatPolicy {
            public_chat: false,
            private_chat: true,
        },
    );
    c.refuse(p1, chat(None, "x"), ErrorCode::PublicChatOff);
    c.accept(t, chat(None, "staff still can"));
    c.accept(p1, chat(Some(t), "private is fine"));
}

#[test]
fn pupil_to_pupil_private_chat_is_refused() {
    let (mut c, t) = Class::started(2);
    let p0 = c.admitted_pupil(0, t);
    let p1 = c.admitted_pupil(1, t);
    c.refuse(p0, chat(Some(p1), "psst"), ErrorCode::PupilToPupil);
    assert!(c.chat_texts(p1).is_empty());
    assert!(c.chats.is_empty());
}

#[test]
fn private_chat_pupil_staff_and_private_chat_off() {
    let (mut c, t) = Class::started(2);
    let p0 = c.admitted_pupil(0, t);
    let p1 = c.admitted_pupil(1, t);
    c.accept(p0, chat(Some(t), "help"));
    c.accept(t, chat(Some(p0), "sure"));
    assert_eq!(c.chat_texts(p0), vec!["help", "sure"]);
    assert_eq!(c.chat_texts(t), vec!["help", "sure"]);
    assert!(c.chat_texts(p1).is_empty());
    c.accept(
        t,
        ClientMsg::SetChatPolicy {
            public_chat: true,
            private_chat: false,
        },
    );
    c.refuse(p0, chat(Some(t), "again"), ErrorCode::PrivateChatOff);
    c.accept(t, chat(Some(p0), "staff may still write"));
}

#[test]
fn chat_length_cap_and_rate_limit() {
    let (mut c, t) = Class::started(1);
    let p = c.admitted_pupil(0, t);
    c.refuse(p, chat(None, &"x".repeat(2001)), ErrorCode::BadText);
    c.refuse(p, chat(None, "   "), ErrorCode::BadText);
    // Text that would read differently on other screens (Trojan Source).
    c.refuse(p, chat(None, "meet at 7\u{202E}A7"), ErrorCode::BadText);
    c.refuse(
        p,
        chat(None, "isolate \u{2067}x\u{2069}"),
        ErrorCode::BadText,
    );
    c.refuse(p, chat(None, "bell \u{7}"), ErrorCode::BadText);
    c.accept(p, chat(None, "two\nlines"));
    c.accept(p, chat(None, &"x".repeat(2000)));
    for i in 0..3 {
        c.accept(p, chat(None, &format!("m{i}")));
    }
    c.refuse(p, chat(None, "too many"), ErrorCode::RateLimited);
    c.advance(Duration::from_secs(10));
    c.accept(p, chat(None, "after the window"));
}

#[test]
fn concern_goes_to_the_dsl_not_the_teacher() {
    let (mut c, t) = Class::started(2);
    let p = c.admitted_pupil(0, t);
    let w = c.join(Who::Pupil(1));
    c.accept(
        p,
        ClientMsg::ReportConcern {
            text: "worried".into(),
        },
    );
    c.accept(
        w,
        ClientMsg::ReportConcern {
            text: "from the waiting room".into(),
        },
    );
    for (who, text) in [(p, "worried"), (w, "from the waiting room")] {
        let e = LessonEvent::Concern {
            participant: who,
            text: text.into(),
        };
        assert!(c.alerts.contains(&e) && c.events.contains(&e));
        assert!(c.received(who, |m| *m == ServerMsg::ConcernReceived));
    }
    let t_inbox = format!("{:?}", c.inbox(t));
    assert!(!t_inbox.contains("worried") && !t_inbox.contains("waiting room"));
    c.refuse(
        t,
        ClientMsg::ReportConcern { text: "x".into() },
        ErrorCode::Forbidden,
    );
}

#[test]
fn incident_is_staff_only() {
    let (mut c, t) = Class::started(1);
    let p = c.admitted_pupil(0, t);
    c.accept(
        t,
        ClientMsg::FlagIncident {
            note: "note".into(),
        },
    );
    assert!(c.alerts.contains(&LessonEvent::Incident {
        by: t,
        note: "note".into()
    }));
    c.refuse(
        p,
        ClientMsg::FlagIncident { note: "x".into() },
        ErrorCode::Forbidden,
    );
}

// ------------------------------------------------------------ block, end

#[test]
fn blocked_user_is_removed_and_refused() {
    let (mut c, t) = Class::started(1);
    let p = c.admitted_pupil(0, t);
    c.accept(p, on(CAM));
    c.block(Who::Pupil(0));
    assert_eq!(
        c.inbox(p).last(),
        Some(&ServerMsg::Goodbye {
            reason: Farewell::Blocked
        })
    );
    assert!(c.disconnects.contains(&(p, Farewell::Blocked)));
    assert!(!c.lesson.is_forwarding(TrackId::new(p, CAM)));
    assert_eq!(c.try_join(Who::Pupil(0)), Err(ErrorCode::Blocked));
    c.unblock(Who::Pupil(0));
    let again = c.join(Who::Pupil(0));
    assert!(!c.lesson.is_admitted(again));
}

#[test]
fn end_lesson_says_goodbye_and_refuses_joins() {
    let (mut c, t) = Class::started(1);
    let p = c.admitted_pupil(0, t);
    let w = c.join(Who::Assistant);
    c.accept(t, ClientMsg::EndLesson);
    for x in [t, p, w] {
        assert!(c.disconnects.contains(&(x, Farewell::Ended)), "{x}");
    }
    assert!(c.lesson.is_ended());
    assert_eq!(c.try_join(Who::Pupil(0)), Err(ErrorCode::Ended));
    assert_eq!(c.try_join(Who::Teacher), Err(ErrorCode::Ended));
    assert_eq!(c.try_join(Who::Stranger), Err(ErrorCode::NotFound));
}

// ----------------------------------------------------------------- hands

fn hands(
    c: &Class,
    p: chaperone_protocol::ParticipantId,
) -> Option<Vec<chaperone_protocol::ParticipantId>> {
    c.inbox(p).iter().rev().find_map(|m| match m {
        ServerMsg::Hands { raised } => Some(raised.clone()),
        _ => None,
    })
}

#[test]
fn raised_hands_queue_in_order_for_staff_and_are_recorded() {
    let (mut c, t) = Class::started(2);
    let a = c.admitted_pupil(0, t);
    let b = c.admitted_pupil(1, t);
    c.accept(b, ClientMsg::RaiseHand { raised: true });
    c.accept(a, ClientMsg::RaiseHand { raised: true });
    // Raising a raised hand keeps its place.
    c.accept(b, ClientMsg::RaiseHand { raised: true });
    assert_eq!(hands(&c, t), Some(vec![b, a]));
    assert_eq!(c.lesson.raised_hands(), &[b, a]);
    c.accept(b, ClientMsg::RaiseHand { raised: false });
    assert_eq!(hands(&c, t), Some(vec![a]));
    assert!(
        c.events
            .contains(&LessonEvent::HandRaised { participant: b })
    );
    assert!(c.events.contains(&LessonEvent::HandLowered {
        participant: b,
        by: None
    }));
}

#[test]
fn pupils_see_only_their_own_hand_unless_the_teacher_shows_hands() {
    let (mut c, t) = Class::started(2);
    let a = c.admitted_pupil(0, t);
    let b = c.admitted_pupil(1, t);
    c.accept(a, ClientMsg::RaiseHand { raised: true });
    c.accept(b, ClientMsg::RaiseHand { raised: true });
    assert_eq!(hands(&c, a), Some(vec![a]));
    assert_eq!(hands(&c, b), Some(vec![b]));
    c.accept(t, ClientMsg::ShowHands { visible: true });
    assert!(c.last_status(a).expect("status").hands_visible);
    assert_eq!(hands(&c, b), Some(vec![a, b]));
    assert!(c.events.contains(&LessonEvent::HandsShown {
        visible: true,
        by: t
    }));
    c.accept(t, ClientMsg::ShowHands { visible: false });
    assert_eq!(hands(&c, a), Some(vec![a]));
    // An observer sees every hand, like staff.
    let o = c.join(Who::Observer);
    assert_eq!(hands(&c, o), Some(vec![a, b]));
}

#[test]
fn staff_lower_one_hand_or_all() {
    let (mut c, t) = Class::started(3);
    let a = c.admitted_pupil(0, t);
    let b = c.admitted_pupil(1, t);
    let d = c.admitted_pupil(2, t);
    for p in [a, b, d] {
        c.accept(p, ClientMsg::RaiseHand { raised: true });
    }
    c.accept(
        t,
        ClientMsg::LowerHand {
            target: Target::One(b),
        },
    );
    assert_eq!(hands(&c, t), Some(vec![a, d]));
    assert!(c.events.contains(&LessonEvent::HandLowered {
        participant: b,
        by: Some(t)
    }));
    assert_eq!(
        hands(&c, b),
        Some(vec![]),
        "the pupil learns their hand was lowered"
    );
    c.accept(
        t,
        ClientMsg::LowerHand {
            target: Target::AllPupils,
        },
    );
    assert_eq!(hands(&c, t), Some(vec![]));
    c.refuse(
        t,
        ClientMsg::LowerHand {
            target: Target::One(t),
        },
        ErrorCode::Forbidden,
    );
}

#[test]
fn hand_raising_is_refused_to_the_waiting_room_staff_observers_and_held_pupils() {
    let (mut c, t) = Class::started(2);
    let a = c.admitted_pupil(0, t);
    let w = c.join(Who::Pupil(1));
    c.refuse(
        w,
        ClientMsg::RaiseHand { raised: true },
        ErrorCode::NotAdmitted,
    );
    assert_eq!(
        hands(&c, t),
        None,
        "a waiting pupil's hand never reaches staff"
    );
    c.refuse(
        t,
        ClientMsg::RaiseHand { raised: true },
        ErrorCode::Forbidden,
    );
    let o = c.join(Who::Observer);
    c.refuse(
        o,
        ClientMsg::RaiseHand { raised: true },
        ErrorCode::Forbidden,
    );
    c.refuse(
        a,
        ClientMsg::LowerHand {
            target: Target::AllPupils,
        },
        ErrorCode::Forbidden,
    );
    c.refuse(
        a,
        ClientMsg::ShowHands { visible: true },
        ErrorCode::Forbidden,
    );
    c.recorder(false);
    c.advance(Duration::from_secs(11));
    c.refuse(a, ClientMsg::RaiseHand { raised: true }, ErrorCode::Held);
}

#[test]
fn a_pupil_who_leaves_or_is_removed_drops_out_of_the_queue() {
    let (mut c, t) = Class::started(2);
    let a = c.admitted_pupil(0, t);
    let b = c.admitted_pupil(1, t);
    c.accept(a, ClientMsg::RaiseHand { raised: true });
    c.accept(b, ClientMsg::RaiseHand { raised: true });
    c.leave(a);
    assert_eq!(hands(&c, t), Some(vec![b]));
    c.accept(t, ClientMsg::Remove { participant: b });
    assert_eq!(hands(&c, t), Some(vec![]));
}

// -------------------------------------------------------------- snapshot

#[test]
fn snapshot_round_trips_and_decode_refuses_bad_bytes() {
    let (mut c, t) = Class::started(2);
    c.admitted_pupil(0, t);
    let s = c.persisted.last().expect("persisted").clone();
    assert_eq!(Snapshot::decode(&s.encode()), Ok(s.clone()));
    assert!(matches!(
        Snapshot::decode(&vec![b' '; 1024 * 1024 + 1]),
        Err(SnapshotError::TooLarge(_))
    ));
    assert!(matches!(
        Snapshot::decode(b"garbage"),
        Err(SnapshotError::Malformed(_))
    ));
    let mut v = s.clone();
    v.version = 99;
    assert_eq!(
        Snapshot::decode(&v.encode()),
        Err(SnapshotError::Version(99))
    );
    let mut json: serde_json::Value = serde_json::from_slice(&s.encode()).expect("json");
    json["extra"] = serde_json::Value::Bool(true);
    assert!(matches!(
        Snapshot::decode(&serde_json::to_vec(&json).expect("json")),
        Err(SnapshotError::Malformed(_))
    ));
    let mut other = s;
    other.lesson = chaperone_protocol::LessonId::from_bytes([1; 16]);
    assert!(Lesson::restore(c.now(), setup(), LessonConfig::default(), other).is_err());
}

#[test]
fn restore_returns_waiting_pupils_to_the_waiting_room_even_when_locked() {
    let (mut c, t) = Class::started(3);
    c.admitted_pupil(0, t);
    let w = c.join(Who::Pupil(1));
    assert!(!c.lesson.is_admitted(w));
    c.accept(t, ClientMsg::Lock { locked: true });
    let snap = c.persisted.last().expect("persisted").clone();
    assert_eq!(
        snap.waiting.len(),
        1,
        "the waiting pupil is in the snapshot"
    );
    let snap = Snapshot::decode(&snap.encode()).expect("decodes");
    c.restore(snap);
    c.recorder(true);
    c.join(Who::Teacher);
    let w = c.join(Who::Pupil(1));
    assert!(
        c.lesson.role_of(w).is_some() && !c.lesson.is_admitted(w),
        "a waiting pupil waits again after the lesson moved"
    );
    let p0 = c.join(Who::Pupil(0));
    assert!(c.lesson.is_admitted(p0));
    // The lock still closes the room to someone new.
    assert_eq!(c.try_join(Who::Pupil(2)), Err(ErrorCode::Locked));
}

#[test]
fn restore_keeps_controls_and_readmits_pupils() {
    let (mut c, t) = Class::started(4);
    let p0 = c.admitted_pupil(0, t);
    let p1 = c.admitted_pupil(1, t);
    c.admitted_pupil(3, t);
    c.accept(
        t,
        ClientMsg::SetPermission {
            target: Target::One(p0),
            permission: Permission::Microphone,
            granted: false,
        },
    );
    c.accept(t, ClientMsg::Remove { participant: p1 });
    c.block(Who::Pupil(3));
    c.accept(t, ClientMsg::Lock { locked: true });
    let snap = c.persisted.last().expect("persisted").clone();
    let snap = Snapshot::decode(&snap.encode()).expect("decodes");
    c.restore(snap);
    c.recorder(true);
    c.join(Who::Teacher);
    let p0 = c.join(Who::Pupil(0));
    assert!(
        c.lesson.is_admitted(p0),
        "admitted before, admitted again without waiting"
    );
    c.refuse(p0, on(MIC), ErrorCode::NotPermitted);
    assert_eq!(c.try_join(Who::Pupil(1)), Err(ErrorCode::Removed));
    assert_eq!(c.try_join(Who::Pupil(3)), Err(ErrorCode::Blocked));
    assert_eq!(c.try_join(Who::Pupil(2)), Err(ErrorCode::Locked));
}
