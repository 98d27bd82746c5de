//! One test (or a few) per safeguarding rule of the lesson core, each
//! asserting the exact typed refusal or effect. Every test runs through the
//! harness, so the invariants are checked at every step as well.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use chaperone_gateway::lesson::{Account, Lesson, LessonConfig, Record, Snapshot, SnapshotError};
use chaperone_protocol::event::{Compliance, HoldReason, LessonEvent};
use chaperone_protocol::signal::{ClientMsg, ErrorCode, Farewell, ServerMsg, Target};
use chaperone_protocol::{Engagement, MediaSource, Permission, TrackId};
use common::{Class, Who};

const MIC: MediaSource = MediaSource::Microphone;
const CAM: MediaSource = MediaSource::Camera;

fn chat(text: &str) -> ClientMsg {
    ClientMsg::Chat {
        to: None,
        text: text.to_owned(),
    }
}

fn private(to: chaperone_protocol::ParticipantId, text: &str) -> ClientMsg {
    ClientMsg::Chat {
        to: Some(to),
        text: text.to_owned(),
    }
}

fn source(source: MediaSource, on: bool) -> ClientMsg {
    ClientMsg::SetSource { source, on }
}

fn refused(c: &Class, who: Who, code: ErrorCode) -> bool {
    let id = c.id(who);
    c.last_error(who) == Some(code)
        && c.events().iter().any(|e| {
            matches!(e, LessonEvent::Refused { participant, code: c2, .. } if *participant == id && *c2 == code)
        })
}

// ---------------------------------------------------------------- roster

#[test]
fn unrostered_user_is_refused_exactly_like_a_missing_lesson() {
    let mut c = Class::live(0);
    assert_eq!(c.join(Who::Nobody), Err(ErrorCode::NotFound));
    assert_eq!(
        c.join(Who::Stranger),
        Err(ErrorCode::NotFound),
        "pupil of another class"
    );
    // An admin-like account with no observer right, and an expired visitor.
    let expired = Account {
        visitor_until: Some(c.now()),
        ..Account::default()
    };
    assert_eq!(c.join_as(Who::Nobody, expired), Err(ErrorCode::NotFound));
    // A staff member who is not one of this lesson's teachers or assistants.
    let staff_elsewhere = Account {
        staff: true,
        ..Account::default()
    };
    assert_eq!(
        c.join_as(Who::Nobody, staff_elsewhere),
        Err(ErrorCode::NotFound)
    );
    // A pupil account claiming to be the teacher's identity without staff rights.
    let no_staff = Account::default();
    assert_eq!(c.join_as(Who::Teacher, no_staff), Err(ErrorCode::NotFound));
    // Nobody learnt anything: no one was told, nothing was recorded about them.
    assert!(
        c.events()
            .iter()
            .all(|e| !matches!(e, LessonEvent::Joined { user, .. } if *user == Who::Nobody.user()))
    );
}

#[test]
fn a_visitor_with_a_grant_observes_until_it_ends() {
    let mut c = Class::live(1);
    let until = c.now() + Duration::from_secs(600);
    let visitor = Account {
        visitor_until: Some(until),
        ..Account::default()
    };
    c.join_as(Who::Nobody, visitor).unwrap();
    let status = c.inbox(Who::Pupil(0)).iter().rev().find_map(|m| match m {
        ServerMsg::Status(s) => Some(s.clone()),
        _ => None,
    });
    assert!(
        status.unwrap().observer_present,
        "everyone sees an observer is present"
    );
    let visitor_id = c.id(Who::Nobody);
    c.advance(Duration::from_secs(600));
    assert!(
        c.world
            .disconnects
            .contains(&(visitor_id, Farewell::AccessEnded))
    );
}

// ---------------------------------------------------------------- waiting room

#[test]
fn pupils_wait_and_receive_only_their_waiting_status() {
    let mut c = Class::new();
    c.recorder(true);
    c.join(Who::Teacher).unwrap();
    c.join(Who::Pupil(0)).unwrap();
    c.say(Who::Teacher, chat("welcome, everyone"));
    let inbox = c.inbox(Who::Pupil(0)).to_vec();
    assert!(matches!(inbox[0], ServerMsg::Welcome { .. }));
    assert_eq!(inbox[1], ServerMsg::Waiting { locked: false });
    assert_eq!(inbox.len(), 2, "nothing else: {inbox:?}");
    // Staff see who is waiting.
    let waiting = c.inbox(Who::Teacher).iter().rev().find_map(|m| match m {
        ServerMsg::WaitingList { waiting } => Some(waiting.clone()),
        _ => None,
    });
    assert_eq!(waiting.unwrap()[0].id, c.id(Who::Pupil(0)));
}

#[test]
fn waiting_pupil_trying_to_chat_is_refused_not_admitted() {
    let mut c = Class::new();
    c.recorder(true);
    c.join(Who::Teacher).unwrap();
    c.join(Who::Pupil(0)).unwrap();
    c.say(Who::Pupil(0), chat("let me in"));
    assert!(refused(&c, Who::Pupil(0), ErrorCode::NotAdmitted));
    let teacher = c.id(Who::Teacher);
    c.say(Who::Pupil(0), private(teacher, "let me in"));
    assert!(refused(&c, Who::Pupil(0), ErrorCode::NotAdmitted));
    c.say(Who::Pupil(0), source(MIC, true));
    assert!(refused(&c, Who::Pupil(0), ErrorCode::NotAdmitted));
    c.say(Who::Pupil(0), ClientMsg::Offer { sdp: "v=0".into() });
    assert!(refused(&c, Who::Pupil(0), ErrorCode::NotAdmitted));
    assert!(
        c.world.media_offers.is_empty(),
        "no SDP from the waiting room reached the SFU"
    );
    assert!(c.chats_received(Who::Teacher).is_empty());
    assert!(
        c.world
            .records
            .iter()
            .all(|r| !matches!(r, Record::Chat { .. }))
    );
}

#[test]
fn admit_one_admit_all_and_deny() {
    let mut c = Class::new();
    c.recorder(true);
    c.join(Who::Teacher).unwrap();
    for n in 0..3 {
        c.join(Who::Pupil(n)).unwrap();
    }
    let p0 = c.id(Who::Pupil(0));
    c.say(Who::Teacher, ClientMsg::Admit { participant: p0 });
    assert!(c.lesson.is_admitted(p0));
    assert!(c.inbox(Who::Pupil(0)).contains(&ServerMsg::Admitted));
    assert!(
        c.inbox(Who::Pupil(0))
            .iter()
            .any(|m| matches!(m, ServerMsg::Roster { .. }))
    );
    let p2 = c.id(Who::Pupil(2));
    c.say(Who::Teacher, ClientMsg::Deny { participant: p2 });
    assert!(c.world.disconnects.contains(&(p2, Farewell::Denied)));
    c.say(Who::Teacher, ClientMsg::AdmitAll);
    assert!(c.lesson.is_admitted(c.id(Who::Pupil(1))));
    // Admitting someone who is not waiting is a typed error.
    c.say(Who::Teacher, ClientMsg::Admit { participant: p0 });
    assert_eq!(c.last_error(Who::Teacher), Some(ErrorCode::InvalidState));
}

#[test]
fn pupils_cannot_use_staff_controls() {
    let mut c = Class::live(2);
    let p1 = c.id(Who::Pupil(1));
    for msg in [
        ClientMsg::AdmitAll,
        ClientMsg::Remove { participant: p1 },
        ClientMsg::Lock { locked: true },
        ClientMsg::TurnOff {
            target: Target::AllPupils,
            source: MIC,
        },
        ClientMsg::SetPermission {
            target: Target::One(p1),
            permission: Permission::ScreenShare,
            granted: true,
        },
        ClientMsg::EndLesson,
    ] {
        c.say(Who::Pupil(0), msg);
        assert!(refused(&c, Who::Pupil(0), ErrorCode::Forbidden));
    }
    assert!(!c.lesson.is_ended());
}

#[test]
fn no_pupil_is_admitted_without_a_recorder() {
    let mut c = Class::new();
    c.join(Who::Teacher).unwrap();
    c.join(Who::Pupil(0)).unwrap();
    c.say(Who::Teacher, ClientMsg::AdmitAll);
    assert_eq!(c.last_error(Who::Teacher), Some(ErrorCode::NotRecording));
    assert!(!c.lesson.is_admitted(c.id(Who::Pupil(0))));
    c.recorder(true);
    c.say(Who::Teacher, ClientMsg::AdmitAll);
    assert!(c.lesson.is_admitted(c.id(Who::Pupil(0))));
}

#[test]
fn lock_closes_the_waiting_room_to_new_pupils_only() {
    let mut c = Class::live(0);
    c.say(Who::Teacher, ClientMsg::Lock { locked: true });
    assert_eq!(c.join(Who::Pupil(0)), Err(ErrorCode::Locked));
    assert!(c.join(Who::Assistant).is_ok(), "staff still join");
    c.say(Who::Teacher, ClientMsg::Lock { locked: false });
    assert!(c.join(Who::Pupil(0)).is_ok());
}

#[test]
fn removed_pupil_cannot_return_until_reallowed() {
    let mut c = Class::live(1);
    let p = c.id(Who::Pupil(0));
    c.say(Who::Teacher, ClientMsg::Remove { participant: p });
    assert!(c.world.disconnects.contains(&(p, Farewell::Removed)));
    assert_eq!(c.join(Who::Pupil(0)), Err(ErrorCode::Removed));
    c.say(Who::Teacher, ClientMsg::Reallow { participant: p });
    let again = c.join(Who::Pupil(0)).unwrap();
    assert!(
        !c.lesson.is_admitted(again),
        "back through the waiting room"
    );
}

#[test]
fn reconnect_within_grace_skips_the_waiting_room_and_after_it_does_not() {
    let mut c = Class::live(1);
    c.leave(Who::Pupil(0));
    c.advance(Duration::from_secs(5));
    let back = c.join(Who::Pupil(0)).unwrap();
    assert!(c.lesson.is_admitted(back));
    c.leave(Who::Pupil(0));
    c.advance(c.config.reconnect_grace + Duration::from_secs(1));
    let later = c.join(Who::Pupil(0)).unwrap();
    assert!(!c.lesson.is_admitted(later));
}

#[test]
fn a_second_connection_replaces_the_first() {
    let mut c = Class::live(1);
    let first = c.id(Who::Pupil(0));
    let second = c.join(Who::Pupil(0)).unwrap();
    assert_ne!(first, second);
    assert!(c.world.disconnects.contains(&(first, Farewell::Replaced)));
    assert!(c.lesson.is_admitted(second));
}

// ---------------------------------------------------------------- supervision

#[test]
fn pupils_are_held_when_no_staff_is_present_beyond_the_grace() {
    let mut c = Class::live(2);
    c.say(Who::Pupil(0), source(MIC, true));
    let mic = TrackId::new(c.id(Who::Pupil(0)), MIC);
    assert!(c.world.forwarding.contains(&mic));
    c.leave(Who::Teacher);
    c.advance(Duration::from_secs(59));
    assert!(c.world.forwarding.contains(&mic), "within the grace");
    c.advance(Duration::from_secs(1));
    assert_eq!(c.lesson.held(), &[HoldReason::Unsupervised]);
    assert!(!c.world.forwarding.contains(&mic));
    assert!(!c.world.receiving.contains(&c.id(Who::Pupil(1))));
    let told = c.inbox(Who::Pupil(0)).iter().rev().find_map(|m| match m {
        ServerMsg::Status(s) => Some(s.held.clone()),
        _ => None,
    });
    assert_eq!(
        told,
        Some(vec![HoldReason::Unsupervised]),
        "pupils are told why"
    );
    c.say(Who::Pupil(0), chat("hello?"));
    assert!(refused(&c, Who::Pupil(0), ErrorCode::Held));
    c.join(Who::Teacher).unwrap();
    assert!(c.lesson.held().is_empty());
    assert!(c.world.forwarding.contains(&mic));
}

#[test]
fn an_assistant_supervises_too() {
    let mut c = Class::live(1);
    c.join(Who::Assistant).unwrap();
    c.leave(Who::Teacher);
    c.advance(Duration::from_secs(120));
    assert!(c.lesson.held().is_empty());
}

// ---------------------------------------------------------------- recording gate

#[test]
fn pupils_are_held_when_the_recorder_is_lost_beyond_the_grace() {
    let mut c = Class::live(1);
    c.say(Who::Pupil(0), source(CAM, true));
    let cam = TrackId::new(c.id(Who::Pupil(0)), CAM);
    c.recorder(false);
    c.advance(Duration::from_secs(9));
    assert!(c.world.forwarding.contains(&cam));
    c.advance(Duration::from_secs(1));
    assert_eq!(c.lesson.held(), &[HoldReason::RecordingLost]);
    assert!(!c.world.forwarding.contains(&cam));
    let status = c.inbox(Who::Teacher).iter().rev().find_map(|m| match m {
        ServerMsg::Status(s) => Some(s.clone()),
        _ => None,
    });
    let status = status.unwrap();
    assert!(
        !status.recording,
        "the indicator says what is actually captured"
    );
    assert_eq!(
        status.held,
        vec![HoldReason::RecordingLost],
        "staff are told why"
    );
    c.recorder(true);
    assert!(c.world.forwarding.contains(&cam));
}

// ---------------------------------------------------------------- controls

#[test]
fn pupil_re_enabling_a_revoked_microphone_is_refused_not_permitted() {
    let mut c = Class::live(1);
    let p = c.id(Who::Pupil(0));
    c.say(Who::Pupil(0), source(MIC, true));
    c.say(
        Who::Teacher,
        ClientMsg::SetPermission {
            target: Target::One(p),
            permission: Permission::Microphone,
            granted: false,
        },
    );
    assert!(!c.world.forwarding.contains(&TrackId::new(p, MIC)));
    assert!(c.inbox(Who::Pupil(0)).contains(&ServerMsg::ControlChanged {
        permission: Permission::Microphone,
        granted: false,
        revoked: true,
    }));
    c.say(Who::Pupil(0), source(MIC, true));
    assert!(refused(&c, Who::Pupil(0), ErrorCode::NotPermitted));
    assert!(!c.world.forwarding.contains(&TrackId::new(p, MIC)));
    // Choosing voice+chat does not get round it either.
    c.say(
        Who::Pupil(0),
        ClientMsg::SetEngagement {
            engagement: Engagement::VoiceChat,
        },
    );
    assert!(refused(&c, Who::Pupil(0), ErrorCode::NotPermitted));
    // Leaving and rejoining does not restore it.
    c.leave(Who::Pupil(0));
    c.join(Who::Pupil(0)).unwrap();
    c.say(Who::Pupil(0), source(MIC, true));
    assert!(refused(&c, Who::Pupil(0), ErrorCode::NotPermitted));
    // Granting it again does not switch it on behind the pupil's back.
    let p = c.id(Who::Pupil(0));
    c.say(
        Who::Teacher,
        ClientMsg::SetPermission {
            target: Target::One(p),
            permission: Permission::Microphone,
            granted: true,
        },
    );
    assert!(!c.world.forwarding.contains(&TrackId::new(p, MIC)));
    c.say(Who::Pupil(0), source(MIC, true));
    assert!(c.world.forwarding.contains(&TrackId::new(p, MIC)));
}

#[test]
fn turned_off_but_permitted_sources_can_be_turned_on_again() {
    let mut c = Class::live(2);
    for n in 0..2 {
        c.say(Who::Pupil(n), source(MIC, true));
    }
    c.say(
        Who::Teacher,
        ClientMsg::TurnOff {
            target: Target::AllPupils,
            source: MIC,
        },
    );
    for n in 0..2 {
        assert!(
            !c.world
                .forwarding
                .contains(&TrackId::new(c.id(Who::Pupil(n)), MIC))
        );
    }
    c.say(Who::Pupil(0), source(MIC, true));
    assert!(
        c.world
            .forwarding
            .contains(&TrackId::new(c.id(Who::Pupil(0)), MIC))
    );
}

#[test]
fn bulk_permission_changes_apply_to_pupils_admitted_later() {
    let mut c = Class::live(1);
    c.say(
        Who::Teacher,
        ClientMsg::SetPermission {
            target: Target::AllPupils,
            permission: Permission::Camera,
            granted: false,
        },
    );
    c.join(Who::Pupil(1)).unwrap();
    c.say(Who::Teacher, ClientMsg::AdmitAll);
    c.say(Who::Pupil(1), source(CAM, true));
    assert!(refused(&c, Who::Pupil(1), ErrorCode::NotPermitted));
    // Screen share is off by default and granted per pupil.
    c.say(Who::Pupil(0), source(MediaSource::ScreenShare, true));
    assert!(refused(&c, Who::Pupil(0), ErrorCode::NotPermitted));
    let p0 = c.id(Who::Pupil(0));
    c.say(
        Who::Teacher,
        ClientMsg::SetPermission {
            target: Target::One(p0),
            permission: Permission::ScreenShare,
            granted: true,
        },
    );
    c.say(Who::Pupil(0), source(MediaSource::ScreenShare, true));
    assert!(
        c.world
            .forwarding
            .contains(&TrackId::new(p0, MediaSource::ScreenShare))
    );
}

#[test]
fn engagement_choice_switches_sources_within_permission() {
    let mut c = Class::live(1);
    let p = c.id(Who::Pupil(0));
    c.say(
        Who::Pupil(0),
        ClientMsg::SetEngagement {
            engagement: Engagement::VoiceChatCamera,
        },
    );
    assert!(c.world.forwarding.contains(&TrackId::new(p, MIC)));
    assert!(c.world.forwarding.contains(&TrackId::new(p, CAM)));
    c.say(
        Who::Pupil(0),
        ClientMsg::SetEngagement {
            engagement: Engagement::ChatOnly,
        },
    );
    assert!(!c.world.forwarding.contains(&TrackId::new(p, MIC)));
    assert!(!c.world.forwarding.contains(&TrackId::new(p, CAM)));
}

#[test]
fn teacher_camera_off_beyond_grace_is_a_recorded_compliance_event() {
    let mut c = Class::live(0);
    c.advance(Duration::from_secs(30));
    let t = c.id(Who::Teacher);
    assert!(c.events().iter().any(|e| matches!(e,
        LessonEvent::Compliance { participant, kind: Compliance::TeacherCameraOff } if *participant == t)));
    assert!(c.inbox(Who::Teacher).contains(&ServerMsg::Banner {
        kind: Compliance::TeacherCameraOff
    }));
    c.say(Who::Teacher, source(CAM, true));
    assert!(c.events().iter().any(|e| matches!(
        e,
        LessonEvent::Compliance {
            kind: Compliance::TeacherCameraOn,
            ..
        }
    )));
}

// ---------------------------------------------------------------- chat

#[test]
fn pupil_to_pupil_private_message_is_refused() {
    let mut c = Class::live(2);
    let p1 = c.id(Who::Pupil(1));
    c.say(Who::Pupil(0), private(p1, "meet me after school"));
    assert!(refused(&c, Who::Pupil(0), ErrorCode::PupilToPupil));
    assert!(c.chats_received(Who::Pupil(1)).is_empty());
    assert!(
        c.world
            .records
            .iter()
            .all(|r| !matches!(r, Record::Chat { .. }))
    );
}

#[test]
fn private_chat_only_between_pupils_and_staff() {
    let mut c = Class::live(2);
    let teacher = c.id(Who::Teacher);
    let p0 = c.id(Who::Pupil(0));
    c.say(Who::Pupil(0), private(teacher, "I don't understand"));
    c.say(Who::Teacher, private(p0, "I'll explain"));
    assert_eq!(c.chats_received(Who::Teacher).len(), 2);
    assert_eq!(c.chats_received(Who::Pupil(0)).len(), 2);
    assert!(
        c.chats_received(Who::Pupil(1)).is_empty(),
        "private means private"
    );
    // Both are recorded, with sender and recipient.
    let recorded: Vec<_> = c
        .world
        .records
        .iter()
        .filter(|r| matches!(r, Record::Chat { to: Some(_), .. }))
        .collect();
    assert_eq!(recorded.len(), 2);
    // The teacher can turn pupils' private chat off.
    c.say(
        Who::Teacher,
        ClientMsg::SetChatPolicy {
            public_chat: true,
            private_chat: false,
        },
    );
    c.say(Who::Pupil(0), private(teacher, "again"));
    assert!(refused(&c, Who::Pupil(0), ErrorCode::PrivateChatOff));
}

#[test]
fn public_chat_can_be_turned_off_for_pupils_only() {
    let mut c = Class::live(2);
    c.say(Who::Pupil(0), chat("hi all"));
    assert_eq!(c.chats_received(Who::Pupil(1)).len(), 1);
    assert_eq!(c.chats_received(Who::Teacher).len(), 1);
    c.say(
        Who::Teacher,
        ClientMsg::SetChatPolicy {
            public_chat: false,
            private_chat: true,
        },
    );
    c.say(Who::Pupil(0), chat("still here"));
    assert!(refused(&c, Who::Pupil(0), ErrorCode::PublicChatOff));
    c.say(Who::Teacher, chat("eyes on the board"));
    assert_eq!(c.chats_received(Who::Pupil(1)).len(), 2);
}

#[test]
fn chat_length_and_rate_are_capped() {
    let mut c = Class::live(1);
    c.say(
        Who::Pupil(0),
        chat(&"x".repeat(c.config.chat_max_chars + 1)),
    );
    assert!(refused(&c, Who::Pupil(0), ErrorCode::BadText));
    c.say(Who::Pupil(0), chat("   "));
    assert!(refused(&c, Who::Pupil(0), ErrorCode::BadText));
    for i in 0..c.config.chat_rate {
        c.say(Who::Pupil(0), chat(&format!("msg {i}")));
    }
    c.say(Who::Pupil(0), chat("one too many"));
    assert!(refused(&c, Who::Pupil(0), ErrorCode::RateLimited));
    c.advance(c.config.chat_window);
    c.say(Who::Pupil(0), chat("after the window"));
    assert_eq!(
        c.last_error(Who::Pupil(0)),
        Some(ErrorCode::RateLimited),
        "no new error"
    );
    assert!(
        c.chats_received(Who::Teacher)
            .iter()
            .any(|m| m.2 == "after the window")
    );
}

#[test]
fn observers_cannot_publish_or_message_pupils_privately() {
    let mut c = Class::live(1);
    c.join(Who::Slt).unwrap();
    c.say(Who::Slt, source(CAM, true));
    assert!(refused(&c, Who::Slt, ErrorCode::NotPermitted));
    let p0 = c.id(Who::Pupil(0));
    c.say(Who::Slt, private(p0, "hello"));
    assert!(refused(&c, Who::Slt, ErrorCode::Forbidden));
    let slt = c.id(Who::Slt);
    c.say(Who::Pupil(0), private(slt, "hello"));
    assert!(refused(&c, Who::Pupil(0), ErrorCode::Forbidden));
    // But they see and hear the lesson.
    assert!(c.world.receiving.contains(&slt));
}

// ---------------------------------------------------------------- concerns, blocks, end

#[test]
fn a_concern_goes_to_the_safeguarding_team_not_the_teacher() {
    let mut c = Class::live(1);
    c.clear_inboxes();
    c.say(
        Who::Pupil(0),
        ClientMsg::ReportConcern {
            text: "someone is messaging me".into(),
        },
    );
    assert!(c.inbox(Who::Pupil(0)).contains(&ServerMsg::ConcernReceived));
    assert!(matches!(
        c.world.alerts.last(),
        Some(LessonEvent::Concern { .. })
    ));
    assert!(
        c.events()
            .iter()
            .any(|e| matches!(e, LessonEvent::Concern { .. }))
    );
    assert!(
        c.inbox(Who::Teacher)
            .iter()
            .all(|m| !format!("{m:?}").contains("someone is messaging me")),
        "the teacher is not told"
    );
}

#[test]
fn staff_flag_incidents_and_pupils_cannot() {
    let mut c = Class::live(1);
    c.say(
        Who::Teacher,
        ClientMsg::FlagIncident {
            note: "inappropriate image shared".into(),
        },
    );
    assert!(matches!(
        c.world.alerts.last(),
        Some(LessonEvent::Incident { .. })
    ));
    c.say(Who::Pupil(0), ClientMsg::FlagIncident { note: "x".into() });
    assert!(refused(&c, Who::Pupil(0), ErrorCode::Forbidden));
}

#[test]
fn blocking_a_present_user_removes_them_and_refuses_them_after() {
    let mut c = Class::live(1);
    let p = c.id(Who::Pupil(0));
    c.say(Who::Pupil(0), source(MIC, true));
    c.block(Who::Pupil(0));
    assert!(c.world.disconnects.contains(&(p, Farewell::Blocked)));
    assert!(!c.world.forwarding.contains(&TrackId::new(p, MIC)));
    assert_eq!(c.join(Who::Pupil(0)), Err(ErrorCode::Blocked));
    c.unblock(Who::Pupil(0));
    assert!(c.join(Who::Pupil(0)).is_ok());
}

#[test]
fn ending_the_lesson_says_goodbye_to_everyone_and_refuses_joins() {
    let mut c = Class::live(2);
    let everyone: Vec<_> = [Who::Teacher, Who::Pupil(0), Who::Pupil(1)]
        .iter()
        .map(|w| c.id(*w))
        .collect();
    c.say(Who::Teacher, ClientMsg::EndLesson);
    for p in everyone {
        assert!(c.world.disconnects.contains(&(p, Farewell::Ended)));
    }
    assert!(c.world.forwarding.is_empty() && c.world.receiving.is_empty());
    assert_eq!(c.join(Who::Pupil(0)), Err(ErrorCode::Ended));
    assert!(
        c.events()
            .iter()
            .any(|e| matches!(e, LessonEvent::Ended { .. }))
    );
}

// ---------------------------------------------------------------- snapshots

#[test]
fn snapshot_restores_every_control_on_another_node() {
    let mut c = Class::live(3);
    let (p0, p1) = (c.id(Who::Pupil(0)), c.id(Who::Pupil(1)));
    c.say(
        Who::Teacher,
        ClientMsg::SetPermission {
            target: Target::One(p0),
            permission: Permission::Microphone,
            granted: false,
        },
    );
    c.say(Who::Teacher, ClientMsg::Remove { participant: p1 });
    c.block(Who::Pupil(2));
    c.say(Who::Teacher, ClientMsg::Lock { locked: true });
    let snapshot = c.world.snapshots.last().unwrap().clone();
    let decoded = Snapshot::decode(&snapshot.encode()).unwrap();
    assert_eq!(decoded, snapshot);

    let now = c.now();
    let mut restored =
        Lesson::restore(now, common::setup(), LessonConfig::default(), decoded).unwrap();
    restored.handle_recorder(now, true);
    let teacher = restored
        .handle_join(
            now,
            chaperone_gateway::lesson::JoinRequest {
                user: Who::Teacher.user(),
                name: "T".into(),
                account: Who::Teacher.account(),
            },
        )
        .unwrap();
    let _ = teacher;
    let join = |l: &mut Lesson, who: Who| {
        l.handle_join(
            now,
            chaperone_gateway::lesson::JoinRequest {
                user: who.user(),
                name: "x".into(),
                account: who.account(),
            },
        )
    };
    // Admitted before: straight back in, lock or not; the revoked mic stays revoked.
    let back = join(&mut restored, Who::Pupil(0)).unwrap();
    assert!(restored.is_admitted(back));
    restored.handle_message(now, back, source(MIC, true));
    let refused_mic = std::iter::from_fn(|| match restored.poll_output() {
        chaperone_gateway::lesson::Output::Timeout(_) => None,
        o => Some(o),
    })
    .any(|o| matches!(o, chaperone_gateway::lesson::Output::Send(p, ServerMsg::Error { code: ErrorCode::NotPermitted, .. }) if p == back));
    assert!(refused_mic);
    assert_eq!(join(&mut restored, Who::Pupil(1)), Err(ErrorCode::Removed));
    assert_eq!(join(&mut restored, Who::Pupil(2)), Err(ErrorCode::Blocked));
    assert_eq!(join(&mut restored, Who::Pupil(3)), Err(ErrorCode::Locked));
}

#[test]
fn snapshot_decoding_refuses_bad_input() {
    assert!(matches!(
        Snapshot::decode(b"not json"),
        Err(SnapshotError::Malformed(_))
    ));
    let big = vec![b' '; 2 * 1024 * 1024];
    assert!(matches!(
        Snapshot::decode(&big),
        Err(SnapshotError::TooLarge(_))
    ));
    let c = Class::live(0);
    let mut s = c.world.snapshots.last().unwrap().clone();
    s.version = 99;
    assert!(matches!(
        Snapshot::decode(&s.encode()),
        Err(SnapshotError::Version(99))
    ));
    let mut json: serde_json::Value =
        serde_json::from_slice(&c.world.snapshots[0].encode()).unwrap();
    json["surprise"] = serde_json::json!(1);
    assert!(matches!(
        Snapshot::decode(json.to_string().as_bytes()),
        Err(SnapshotError::Malformed(_))
    ));
}
