//! Random command sequences against the lesson core. The harness checks the
//! safeguarding invariants after every output and every input; these
//! properties only generate the commands, friendly and hostile alike.

mod common;

use std::time::Duration;

use chaperone_protocol::annotation::{AuthorHandle, COORD_SCALE, Colour, MarkId, Stroke, Tool};
use chaperone_protocol::signal::{ClientMsg, ServerMsg, Target};
use chaperone_protocol::{Engagement, MediaSource, ParticipantId, Permission};
use common::{Class, Who};
use proptest::prelude::*;
use proptest::test_runner::Config;

const PEOPLE: [Who; 10] = [
    Who::Teacher,
    Who::Assistant,
    Who::Pupil(0),
    Who::Pupil(1),
    Who::Pupil(2),
    Who::Pupil(3),
    Who::Outsider,
    Who::Observer,
    Who::Stranger,
    Who::Visitor,
];

#[derive(Debug, Clone)]
enum Op {
    Join(usize),
    Leave(usize),
    Recorder(bool),
    Block(usize),
    Unblock(usize),
    /// Advance by this many seconds, firing deadlines.
    Advance(u64),
    /// Move the clock without a timeout (a message races the timer).
    Skip(u64),
    /// A message from a person (by index) to the lesson.
    Msg(usize, M),
    /// The node dies; another restores the lesson from its last snapshot.
    Failover,
    /// The shell says the lesson's time runs out this many seconds from
    /// now (first learnt, or moved by staff), or that it has no close.
    Window(Option<u64>),
}

/// A person reference for targets: a person's current id, an old id, or nobody.
#[derive(Debug, Clone, Copy)]
enum Ref {
    Person(usize),
    Old(usize),
    Nobody,
}

#[derive(Debug, Clone)]
enum M {
    Hello,
    Admit(Ref),
    AdmitAll,
    Deny(Ref),
    Remove(Ref),
    Reallow(Ref),
    Lock(bool),
    SetPermission(Option<Ref>, Permission, bool),
    TurnOff(Option<Ref>, MediaSource),
    SetChatPolicy(bool, bool),
    FlagIncident,
    EndLesson,
    SetEngagement(Engagement),
    SetSource(MediaSource, bool),
    Chat(Option<Ref>, u8),
    Concern(u8),
    RaiseHand(bool),
    LowerHand(Option<Ref>),
    ShowHands(bool),
    Offer,
    Answer,
    /// A mark on someone's screen (by reference), of a tool, well formed or not.
    Draw(Ref, usize, bool),
    Extend(bool),
    Undo,
    Redo,
    /// Erase a mark: one of the recorded ones (by index), or an unknown id.
    Erase(u8),
    /// Clear all marks, or one author's (by handle number).
    ClearMarks(Option<u32>),
    Isolate(bool),
}

fn person() -> impl Strategy<Value = usize> {
    0..PEOPLE.len()
}

fn reference() -> impl Strategy<Value = Ref> {
    prop_oneof![
        6 => person().prop_map(Ref::Person),
        1 => person().prop_map(Ref::Old),
        1 => Just(Ref::Nobody),
    ]
}

fn source() -> impl Strategy<Value = MediaSource> {
    prop_oneof![
        Just(MediaSource::Microphone),
        Just(MediaSource::Camera),
        Just(MediaSource::ScreenShare)
    ]
}

fn permission() -> impl Strategy<Value = Permission> {
    prop_oneof![
        Just(Permission::Microphone),
        Just(Permission::Camera),
        Just(Permission::ScreenShare),
        Just(Permission::Annotate)
    ]
}

fn engagement() -> impl Strategy<Value = Engagement> {
    prop_oneof![
        Just(Engagement::ChatOnly),
        Just(Engagement::VoiceChat),
        Just(Engagement::ChatCamera),
        Just(Engagement::VoiceChatCamera)
    ]
}

fn msg() -> impl Strategy<Value = M> {
    prop_oneof![
        1 => Just(M::Hello),
        4 => reference().prop_map(M::Admit),
        2 => Just(M::AdmitAll),
        1 => reference().prop_map(M::Deny),
        1 => reference().prop_map(M::Remove),
        1 => reference().prop_map(M::Reallow),
        1 => any::<bool>().prop_map(M::Lock),
        3 => (proptest::option::of(reference()), permission(), any::<bool>())
            .prop_map(|(t, p, g)| M::SetPermission(t, p, g)),
        2 => (proptest::option::of(reference()), source()).prop_map(|(t, s)| M::TurnOff(t, s)),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(a, b)| M::SetChatPolicy(a, b)),
        1 => Just(M::FlagIncident),
        1 => (0u8..40).prop_map(|x| if x == 0 { M::EndLesson } else { M::Hello }),
        3 => engagement().prop_map(M::SetEngagement),
        5 => (source(), any::<bool>()).prop_map(|(s, on)| M::SetSource(s, on)),
        6 => (proptest::option::of(reference()), 0u8..8).prop_map(|(t, k)| M::Chat(t, k)),
        1 => (0u8..8).prop_map(M::Concern),
        3 => any::<bool>().prop_map(M::RaiseHand),
        1 => proptest::option::of(reference()).prop_map(M::LowerHand),
        1 => any::<bool>().prop_map(M::ShowHands),
        1 => Just(M::Offer),
        1 => Just(M::Answer),
        // Half the marks go on the teacher's screen (shared in a running lesson).
        10 => (prop_oneof![Just(Ref::Person(0)), reference()], 0..Tool::ALL.len(), proptest::bool::weighted(0.9))
            .prop_map(|(r, t, ok)| M::Draw(r, t, ok)),
        3 => proptest::bool::weighted(0.9).prop_map(M::Extend),
        1 => Just(M::Undo),
        1 => Just(M::Redo),
        1 => any::<u8>().prop_map(M::Erase),
        1 => proptest::option::of(0u32..5).prop_map(M::ClearMarks),
        1 => any::<bool>().prop_map(M::Isolate),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => person().prop_map(Op::Join),
        2 => person().prop_map(Op::Leave),
        2 => any::<bool>().prop_map(Op::Recorder),
        1 => person().prop_map(Op::Block),
        1 => person().prop_map(Op::Unblock),
        2 => prop_oneof![0u64..5, Just(11u64), Just(31), Just(61), Just(120)].prop_map(Op::Advance),
        2 => prop_oneof![1u64..5, Just(11u64), Just(61)].prop_map(Op::Skip),
        20 => (person(), msg()).prop_map(|(p, m)| Op::Msg(p, m)),
        1 => Just(Op::Failover),
        1 => prop_oneof![Just(None), (0u64..5).prop_map(Some), Just(Some(61)), Just(Some(301)), Just(Some(900))].prop_map(Op::Window),
    ]
}

fn resolve(c: &Class, r: Ref) -> ParticipantId {
    match r {
        Ref::Person(i) => c
            .pid(PEOPLE[i])
            .or_else(|| c.ids.get(&PEOPLE[i]).and_then(|v| v.last().copied()))
            .unwrap_or(ParticipantId(999)),
        Ref::Old(i) => c
            .ids
            .get(&PEOPLE[i])
            .and_then(|v| v.first().copied())
            .unwrap_or(ParticipantId(0)),
        Ref::Nobody => ParticipantId(4242),
    }
}

fn target(c: &Class, t: Option<Ref>) -> Target {
    t.map_or(Target::AllPupils, |r| Target::One(resolve(c, r)))
}

fn text(k: u8) -> String {
    match k {
        0 => String::new(),
        1 => "   ".to_owned(),
        2 => "x".repeat(2001),
        n => format!("message {n}"),
    }
}

fn to_client(c: &Class, m: &M) -> ClientMsg {
    match m.clone() {
        M::Hello => ClientMsg::Hello { version: 1 },
        M::Admit(r) => ClientMsg::Admit {
            participant: resolve(c, r),
        },
        M::AdmitAll => ClientMsg::AdmitAll,
        M::Deny(r) => ClientMsg::Deny {
            participant: resolve(c, r),
        },
        M::Remove(r) => ClientMsg::Remove {
            participant: resolve(c, r),
        },
        M::Reallow(r) => ClientMsg::Reallow {
            participant: resolve(c, r),
        },
        M::Lock(locked) => ClientMsg::Lock { locked },
        M::SetPermission(t, permission, granted) => ClientMsg::SetPermission {
            target: target(c, t),
            permission,
            granted,
        },
        M::TurnOff(t, source) => ClientMsg::TurnOff {
            target: target(c, t),
            source,
        },
        M::SetChatPolicy(public_chat, private_chat) => ClientMsg::SetChatPolicy {
            public_chat,
            private_chat,
        },
        M::FlagIncident => ClientMsg::FlagIncident {
            note: "incident".to_owned(),
        },
        M::EndLesson => ClientMsg::EndLesson,
        M::SetEngagement(engagement) => ClientMsg::SetEngagement { engagement },
        M::SetSource(source, on) => ClientMsg::SetSource { source, on },
        M::Chat(to, k) => ClientMsg::Chat {
            to: to.map(|r| resolve(c, r)),
            text: text(k),
        },
        M::Concern(k) => ClientMsg::ReportConcern { text: text(k) },
        M::RaiseHand(raised) => ClientMsg::RaiseHand { raised },
        M::LowerHand(t) => ClientMsg::LowerHand {
            target: target(c, t),
        },
        M::ShowHands(visible) => ClientMsg::ShowHands { visible },
        M::Offer => ClientMsg::Offer {
            sdp: "v=0".to_owned(),
        },
        M::Answer => ClientMsg::Answer {
            sdp: "v=0".to_owned(),
        },
        M::Draw(r, t, ok) => {
            let tool = Tool::ALL[t];
            let (least, _) = tool.points();
            let at = if ok { COORD_SCALE / 2 } else { COORD_SCALE + 1 };
            ClientMsg::Draw {
                layer: resolve(c, r),
                stroke: Stroke {
                    tool,
                    colour: Colour(0x33_66_99),
                    width: 10,
                    points: vec![[at, 10]; least.max(1)],
                    text: (tool == Tool::Text).then(|| "label".to_owned()),
                },
            }
        }
        M::Extend(ok) => ClientMsg::ExtendMark {
            points: vec![[if ok { 5 } else { COORD_SCALE + 1 }, 5]],
        },
        M::Undo => ClientMsg::UndoMark,
        M::Redo => ClientMsg::RedoMark,
        M::Erase(k) => ClientMsg::EraseMark {
            mark: c
                .marks
                .keys()
                .nth(usize::from(k) % (c.marks.len() + 1))
                .copied()
                .unwrap_or(MarkId(99_999)),
        },
        M::ClearMarks(h) => ClientMsg::ClearMarks {
            author: h.map(AuthorHandle),
        },
        M::Isolate(isolated) => ClientMsg::IsolateMarks { isolated },
    }
}

/// Applies `ops` to `c`; returns whether some pupil's media was still being
/// forwarded after the tenth operation (the coverage test below uses it to
/// show the sequences reach the states where the rules bite).
fn apply(c: &mut Class, ops: &[Op]) -> bool {
    let mut pupil_media = false;
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Join(i) => {
                let _ = c.try_join(PEOPLE[*i]);
            }
            Op::Leave(i) => {
                if let Some(p) = c.pid(PEOPLE[*i]) {
                    c.leave(p);
                }
            }
            Op::Recorder(a) => c.recorder(*a),
            Op::Block(i) => c.block(PEOPLE[*i]),
            Op::Unblock(i) => c.unblock(PEOPLE[*i]),
            Op::Advance(s) => c.advance(Duration::from_secs(*s)),
            Op::Skip(s) => c.skip(Duration::from_secs(*s)),
            Op::Msg(i, m) => {
                let from = resolve(c, Ref::Person(*i));
                let msg = to_client(c, m);
                c.say(from, msg);
            }
            Op::Failover => {
                let snapshot = c
                    .persisted
                    .last()
                    .cloned()
                    .expect("a lesson persists at creation");
                c.restore(snapshot);
            }
            Op::Window(s) => c.window(s.map(Duration::from_secs)),
        }
        pupil_media |= i >= 10
            && c.forwarded
                .iter()
                .any(|t| c.lesson.role_of(t.participant) == Some(chaperone_protocol::Role::Pupil));
    }
    // Whatever happened, time running out must leave the lesson consistent.
    c.advance(Duration::from_secs(200));
    pupil_media
}

fn run(ops: &[Op]) -> bool {
    apply(&mut Class::new(4), ops)
}

/// A lesson that starts with the recorder and teacher in and most pupils
/// admitted and publishing, the teacher sharing their screen and pupils
/// allowed to draw on it, so that sequences spend their time where the
/// rules bite.
fn run_from_started(ops: &[Op]) -> bool {
    started_class(ops).0
}

fn started_class(ops: &[Op]) -> (bool, Class) {
    let (mut c, t) = Class::started(4);
    c.say(
        t,
        ClientMsg::SetSource {
            source: MediaSource::ScreenShare,
            on: true,
        },
    );
    for n in 0..3 {
        c.admitted_pupil(n, t);
    }
    c.say(
        t,
        ClientMsg::SetPermission {
            target: Target::AllPupils,
            permission: Permission::Annotate,
            granted: true,
        },
    );
    for n in 0..3 {
        let p = c.pid(Who::Pupil(n)).expect("admitted above");
        c.say(
            p,
            ClientMsg::SetEngagement {
                engagement: Engagement::VoiceChatCamera,
            },
        );
    }
    let reached = apply(&mut c, ops);
    (reached, c)
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 20_000,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config(5_000))]
    /// From an empty lesson: joins, admissions, holds and refusals in any order.
    #[test]
    fn invariants_hold_from_an_empty_lesson(ops in proptest::collection::vec(op(), 1..60)) {
        run(&ops);
    }
}

proptest! {
    #![proptest_config(config(5_000))]
    /// From a running lesson with pupils admitted and publishing.
    #[test]
    fn invariants_hold_in_a_running_lesson(ops in proptest::collection::vec(op(), 1..60)) {
        run_from_started(&ops);
    }
}

/// The random sequences reach the states that matter: pupils' media still
/// forwarded after ten random operations, in a fair share of sequences from
/// a running lesson (a property that only ever exercised refusals would
/// test much less than it claims).
#[test]
fn sequences_reach_forwarded_pupil_media() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = proptest::collection::vec(op(), 11..60);
    let runs = 300;
    let reached = (0..runs)
        .filter(|_| run_from_started(&strategy.new_tree(&mut runner).expect("strategy").current()))
        .count();
    assert!(
        reached * 5 >= runs,
        "only {reached}/{runs} sequences kept any pupil media flowing"
    );
}

/// The random sequences reach delivered marks: a mark drawn by a pupil
/// shown to another pupil, in a fair share of sequences from a running
/// lesson (the invariants on marks would otherwise test refusals only).
#[test]
fn sequences_reach_pupil_marks_shown_to_other_pupils() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = proptest::collection::vec(op(), 11..60);
    let runs = 300;
    let reached = (0..runs)
        .filter(|_| {
            let (_, c) =
                started_class(&strategy.new_tree(&mut runner).expect("strategy").current());
            c.inbox
                .values()
                .flatten()
                .any(|m| matches!(m, ServerMsg::Mark(m) if !m.staff && !m.mine))
        })
        .count();
    assert!(
        reached * 10 >= runs,
        "only {reached}/{runs} sequences showed a pupil's mark to someone else"
    );
}
