//! Signaling messages: one round trip per message, the exact wire shape, and
//! refusals (oversized, unknown type, unknown field, wrong version) with the
//! right typed error. Every lesson event round-trips through JSON too.
#![allow(clippy::unwrap_used)]

use chaperone_protocol::annotation::{AuthorHandle, Colour, Mark, MarkId, Stroke, Tool};
use chaperone_protocol::event::{Compliance, HoldReason, LessonEvent};
use chaperone_protocol::signal::{
    ClientMsg, ErrorCode, Farewell, LessonStatus, MAX_CLIENT_MSG, PROTOCOL_VERSION,
    ParticipantInfo, ServerMsg, Target, WaitingEntry,
};
use chaperone_protocol::{
    Engagement, MediaSource, ParticipantId, Permission, Permissions, ProtocolError, Role, TrackId,
    UserRef,
};
use proptest::prelude::*;

const P: ParticipantId = ParticipantId(3);

fn client_round_trip(msg: ClientMsg) {
    let json = serde_json::to_vec(&msg).unwrap();
    assert_eq!(
        ClientMsg::decode(&json).unwrap(),
        msg,
        "{}",
        String::from_utf8_lossy(&json)
    );
}

fn server_round_trip(msg: ServerMsg) {
    let text = msg.encode();
    assert_eq!(ServerMsg::decode(text.as_bytes()).unwrap(), msg, "{text}");
}

fn pen_stroke() -> Stroke {
    Stroke {
        tool: Tool::Pen,
        colour: Colour(0xe0_1b_24),
        width: 30,
        points: vec![[0, 0], [5000, 5000], [10_000, 10_000]],
        text: None,
    }
}

fn text_stroke() -> Stroke {
    Stroke {
        tool: Tool::Text,
        colour: Colour(0x00_00_ff),
        width: 200,
        points: vec![[100, 200]],
        text: Some("x = 2".into()),
    }
}

#[test]
fn every_client_message_round_trips() {
    let all = vec![
        ClientMsg::Hello {
            version: PROTOCOL_VERSION,
        },
        ClientMsg::Admit { participant: P },
        ClientMsg::AdmitAll,
        ClientMsg::Deny { participant: P },
        ClientMsg::Remove { participant: P },
        ClientMsg::Reallow { participant: P },
        ClientMsg::Lock { locked: true },
        ClientMsg::SetPermission {
            target: Target::One(P),
            permission: Permission::Annotate,
            granted: true,
        },
        ClientMsg::SetPermission {
            target: Target::AllPupils,
            permission: Permission::Microphone,
            granted: false,
        },
        ClientMsg::TurnOff {
            target: Target::AllPupils,
            source: MediaSource::Camera,
        },
        ClientMsg::SetChatPolicy {
            public_chat: false,
            private_chat: true,
        },
        ClientMsg::FlagIncident {
            note: "note".into(),
        },
        ClientMsg::EndLesson,
        ClientMsg::SetEngagement {
            engagement: Engagement::VoiceChatCamera,
        },
        ClientMsg::SetSource {
            source: MediaSource::ScreenShare,
            on: true,
        },
        ClientMsg::Chat {
            to: None,
            text: "hello".into(),
        },
        ClientMsg::Chat {
            to: Some(P),
            text: "private".into(),
        },
        ClientMsg::ReportConcern {
            text: "worried".into(),
        },
        ClientMsg::RaiseHand { raised: true },
        ClientMsg::LowerHand {
            target: Target::One(P),
        },
        ClientMsg::ShowHands { visible: true },
        ClientMsg::Draw {
            layer: P,
            stroke: text_stroke(),
        },
        ClientMsg::ExtendMark {
            points: vec![[1, 2], [3, 4]],
        },
        ClientMsg::UndoMark,
        ClientMsg::RedoMark,
        ClientMsg::EraseMark { mark: MarkId(9) },
        ClientMsg::ClearMarks { author: None },
        ClientMsg::ClearMarks {
            author: Some(AuthorHandle(2)),
        },
        ClientMsg::IsolateMarks { isolated: true },
        ClientMsg::Offer {
            sdp: "v=0\r\n".into(),
        },
        ClientMsg::Answer {
            sdp: "v=0\r\n".into(),
        },
    ];
    let names: std::collections::BTreeSet<_> = all.iter().map(ClientMsg::name).collect();
    assert_eq!(names.len(), 28, "one of each message type");
    for msg in all {
        client_round_trip(msg);
    }
}

#[test]
fn every_server_message_round_trips() {
    let info = ParticipantInfo {
        id: P,
        name: "Sam".into(),
        role: Role::Pupil,
        permissions: Permissions::PUPIL_DEFAULT,
        sources_on: vec![MediaSource::Microphone],
        forwarded: vec![],
    };
    let all = vec![
        ServerMsg::Welcome {
            version: PROTOCOL_VERSION,
            you: P,
            role: Role::Pupil,
        },
        ServerMsg::Waiting { locked: false },
        ServerMsg::Admitted,
        ServerMsg::Roster {
            participants: vec![info],
        },
        ServerMsg::WaitingList {
            waiting: vec![WaitingEntry {
                id: P,
                name: "Sam".into(),
            }],
        },
        ServerMsg::You {
            permissions: Permissions::NONE,
            sources_on: vec![],
            forwarded: vec![],
        },
        ServerMsg::Status(LessonStatus {
            recording: true,
            held: vec![HoldReason::Unsupervised],
            locked: false,
            observer_present: true,
            public_chat: true,
            private_chat: false,
            hands_visible: true,
            marks_isolated: true,
        }),
        ServerMsg::ControlChanged {
            permission: Permission::Microphone,
            granted: false,
            revoked: true,
        },
        ServerMsg::Chat {
            from: P,
            from_name: "Sam".into(),
            to: Some(ParticipantId(1)),
            text: "hi".into(),
        },
        ServerMsg::Banner {
            kind: Compliance::TeacherCameraOff,
        },
        ServerMsg::ConcernReceived,
        ServerMsg::Hands {
            raised: vec![P, ParticipantId(1)],
        },
        ServerMsg::Error {
            code: ErrorCode::PupilToPupil,
            action: Some("chat".into()),
        },
        ServerMsg::Mark(Mark {
            id: MarkId(4),
            layer: P,
            author: AuthorHandle(1),
            staff: false,
            mine: true,
            name: None,
            stroke: pen_stroke(),
        }),
        ServerMsg::Mark(Mark {
            id: MarkId(5),
            layer: P,
            author: AuthorHandle(2),
            staff: true,
            mine: false,
            name: Some("Ms Khan".into()),
            stroke: text_stroke(),
        }),
        ServerMsg::MarkExtended {
            id: MarkId(4),
            points: vec![[10, 10]],
        },
        ServerMsg::Unmark {
            ids: vec![MarkId(4), MarkId(5)],
        },
        ServerMsg::Offer { sdp: "v=0".into() },
        ServerMsg::Answer { sdp: "v=0".into() },
        ServerMsg::MediaQuality { video_paused: true },
        ServerMsg::Closing { in_secs: 300 },
        ServerMsg::Goodbye {
            reason: Farewell::Removed,
        },
    ];
    for msg in all {
        server_round_trip(msg);
    }
}

#[test]
fn messages_are_externally_tagged_in_snake_case() {
    assert_eq!(
        serde_json::to_string(&ClientMsg::Admit { participant: P }).unwrap(),
        r#"{"admit":{"participant":3}}"#
    );
    assert_eq!(
        serde_json::to_string(&ClientMsg::AdmitAll).unwrap(),
        r#""admit_all""#
    );
    assert_eq!(
        ServerMsg::Error {
            code: ErrorCode::NotAdmitted,
            action: None
        }
        .encode(),
        r#"{"error":{"code":"not_admitted"}}"#
    );
}

#[test]
fn a_mark_has_its_wire_shape_and_refuses_unknown_fields() {
    assert_eq!(
        serde_json::to_string(&ClientMsg::Draw {
            layer: P,
            stroke: Stroke {
                tool: Tool::Arrow,
                colour: Colour(0x12_ab_0f),
                width: 8,
                points: vec![[1, 2], [3, 4]],
                text: None,
            },
        })
        .unwrap(),
        r##"{"draw":{"layer":3,"stroke":{"tool":"arrow","colour":"#12ab0f","width":8,"points":[[1,2],[3,4]]}}}"##
    );
    assert_eq!(
        serde_json::to_string(&ClientMsg::UndoMark).unwrap(),
        r#""undo_mark""#
    );
    for bad in [
        // An unknown field in the stroke (a client claiming to be staff).
        r##"{"draw":{"layer":3,"stroke":{"tool":"pen","colour":"#000000","width":8,"points":[[1,2]],"staff":true}}}"##,
        // An unknown tool.
        r##"{"draw":{"layer":3,"stroke":{"tool":"flood_fill","colour":"#000000","width":8,"points":[[1,2]]}}}"##,
        // A colour that is not #rrggbb.
        r##"{"draw":{"layer":3,"stroke":{"tool":"pen","colour":"red","width":8,"points":[[1,2]]}}}"##,
        // A coordinate that is not a 16-bit unsigned integer.
        r##"{"draw":{"layer":3,"stroke":{"tool":"pen","colour":"#000000","width":8,"points":[[-1,2]]}}}"##,
        r##"{"extend_mark":{"points":[[1.5,2]]}}"##,
        // An unknown field on clear.
        r##"{"clear_marks":{"author":1,"everyone":true}}"##,
    ] {
        assert!(
            matches!(
                ClientMsg::decode(bad.as_bytes()),
                Err(ProtocolError::Malformed(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn oversized_client_message_is_refused_before_parsing() {
    let big = vec![b'x'; MAX_CLIENT_MSG + 1];
    let err = ClientMsg::decode(&big).unwrap_err();
    assert_eq!(
        err,
        ProtocolError::TooLarge {
            len: MAX_CLIENT_MSG + 1,
            max: MAX_CLIENT_MSG
        }
    );
    assert_eq!(ErrorCode::for_protocol_error(&err), ErrorCode::TooLarge);
}

#[test]
fn unknown_message_type_is_malformed() {
    let err = ClientMsg::decode(br#"{"make_me_teacher":{}}"#).unwrap_err();
    assert!(matches!(err, ProtocolError::Malformed(_)));
    assert_eq!(ErrorCode::for_protocol_error(&err), ErrorCode::Malformed);
}

#[test]
fn unknown_field_is_malformed() {
    let err = ClientMsg::decode(br#"{"chat":{"text":"hi","as_teacher":true}}"#).unwrap_err();
    assert!(matches!(err, ProtocolError::Malformed(_)), "{err:?}");
}

#[test]
fn wrong_hello_version_is_unsupported() {
    let err = ClientMsg::decode(br#"{"hello":{"version":999}}"#).unwrap_err();
    assert_eq!(err, ProtocolError::UnsupportedVersion(999));
    assert_eq!(
        ErrorCode::for_protocol_error(&err),
        ErrorCode::UnsupportedVersion
    );
}

#[test]
fn every_lesson_event_round_trips_through_json() {
    let user = UserRef::new("https://idp", "sub").unwrap();
    let track = TrackId::new(P, MediaSource::Camera);
    let all = vec![
        LessonEvent::Joined {
            participant: P,
            user: user.clone(),
            name: "n".into(),
            role: Role::Observer,
        },
        LessonEvent::Waiting { participant: P },
        LessonEvent::Admitted {
            participant: P,
            by: P,
        },
        LessonEvent::Denied {
            participant: P,
            by: P,
        },
        LessonEvent::Removed {
            participant: P,
            by: P,
        },
        LessonEvent::Reallowed {
            user: user.clone(),
            by: P,
        },
        LessonEvent::Left { participant: P },
        LessonEvent::Blocked { user },
        LessonEvent::Locked {
            locked: true,
            by: P,
        },
        LessonEvent::PermissionChanged {
            participant: P,
            permission: Permission::ScreenShare,
            granted: true,
            by: P,
        },
        LessonEvent::DefaultsChanged {
            permission: Permission::Camera,
            granted: false,
            by: P,
        },
        LessonEvent::SourceChanged {
            participant: P,
            source: MediaSource::Microphone,
            on: false,
            by: Some(P),
        },
        LessonEvent::EngagementChosen {
            participant: P,
            engagement: Engagement::ChatOnly,
        },
        LessonEvent::Forwarding { track, on: true },
        LessonEvent::ChatPolicy {
            public_chat: true,
            private_chat: false,
            by: P,
        },
        LessonEvent::Hold { reasons: vec![] },
        LessonEvent::Recorder { attached: false },
        LessonEvent::Concern {
            participant: P,
            text: "t".into(),
        },
        LessonEvent::Incident {
            by: P,
            note: "n".into(),
        },
        LessonEvent::HandRaised { participant: P },
        LessonEvent::HandLowered {
            participant: P,
            by: Some(ParticipantId(1)),
        },
        LessonEvent::HandsShown {
            visible: true,
            by: P,
        },
        LessonEvent::Compliance {
            participant: P,
            kind: Compliance::TeacherCameraOn,
        },
        LessonEvent::Refused {
            participant: P,
            action: "chat".into(),
            code: ErrorCode::Held,
        },
        LessonEvent::JoinRefused {
            user: UserRef::new("https://idp", "blocked").unwrap(),
            code: ErrorCode::Blocked,
        },
        LessonEvent::Annotated {
            mark: MarkId(1),
            layer: P,
            participant: ParticipantId(1),
            stroke: pen_stroke(),
        },
        LessonEvent::MarkExtended {
            mark: MarkId(1),
            points: vec![[0, 0]],
        },
        LessonEvent::MarkUndone {
            mark: MarkId(1),
            participant: P,
        },
        LessonEvent::MarkRedone {
            mark: MarkId(1),
            participant: P,
        },
        LessonEvent::MarkErased {
            mark: MarkId(1),
            participant: P,
        },
        LessonEvent::MarksCleared {
            marks: vec![MarkId(1), MarkId(2)],
            by: Some(P),
        },
        LessonEvent::MarksCleared {
            marks: vec![],
            by: None,
        },
        LessonEvent::MarksIsolated {
            isolated: true,
            by: P,
        },
        LessonEvent::TimeRanOut {},
        LessonEvent::Ended { by: P },
        LessonEvent::Ended {
            by: ParticipantId::SERVER,
        },
    ];
    for e in all {
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            serde_json::from_str::<LessonEvent>(&json).unwrap(),
            e,
            "{json}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = ClientMsg::decode(&bytes);
        let _ = ServerMsg::decode(&bytes);
    }

    #[test]
    fn decoding_json_like_text_never_panics(text in r#"\{"[a-z_]{1,12}":\{("[a-z_]{1,10}":("[^"]{0,8}"|[0-9]{1,20}|true|null),?){0,3}\}\}"#) {
        let _ = ClientMsg::decode(text.as_bytes());
    }
}
