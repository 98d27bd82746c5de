//! A deterministic, virtual-time harness for the lesson core.
//!
//! A [`Class`] owns one [`Lesson`], a virtual clock, and a model of
//! everything the lesson has said and done, built only from its outputs:
//! each participant's inbox, the media plane (forwarded tracks, receiving
//! participants), recorded events and chat, alerts, snapshots, disconnects.
//! As each output is applied the safeguarding invariants are checked, and
//! after each input the media plane is compared with the forwarding rule
//! computed here, independently of the core. Any violation panics with the
//! offending output and the state around it. Time never sleeps: `advance`
//! jumps from deadline to deadline.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chaperone_lesson::{
    Account, JoinRequest, Lesson, LessonConfig, LessonSetup, Output, Record, Snapshot,
};
use chaperone_protocol::event::{HoldReason, LessonEvent};
use chaperone_protocol::signal::{ClientMsg, ErrorCode, Farewell, ServerMsg};
use chaperone_protocol::{
    LessonId, MediaSource, ParticipantId, Permissions, Role, TrackId, UserRef,
};

/// The class on the lesson's roster.
pub const CLASS: &str = "7B";
/// How long after the start a [`Who::Visitor`]'s grant lasts.
pub const VISITOR_GRANT: Duration = Duration::from_secs(90);
const ISSUER: &str = "https://idp.school.test";

/// The people who may try to join.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Who {
    /// The lesson's teacher.
    Teacher,
    /// The lesson's assistant.
    Assistant,
    /// The n-th pupil of the class.
    Pupil(usize),
    /// A pupil of another class.
    Outsider,
    /// SLT/DSL with observer rights.
    Observer,
    /// An admin with no observer rights.
    Admin,
    /// A staff member who is not in this lesson's lists.
    OtherStaff,
    /// A visitor whose grant has expired.
    ExpiredVisitor,
    /// A visitor (inspector) whose grant ends 90 s after the lesson starts.
    Visitor,
    /// Someone the school knows nothing about.
    Stranger,
}

/// What the harness believes about a present participant, from outputs alone.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Who they are.
    pub who: Who,
    /// Role from their `Welcome`.
    pub role: Role,
    /// Whether an `Admitted` has been sent to them.
    pub admitted: bool,
    /// The last `You` they were sent.
    pub permissions: Permissions,
    /// Sources on, from the last `You`.
    pub sources_on: BTreeSet<MediaSource>,
}

/// A lesson with a teacher, an assistant and `n` pupils, on a virtual clock.
#[derive(Debug)]
pub struct Class {
    pub lesson: Lesson,
    pub setup: LessonSetup,
    pub config: LessonConfig,
    pub pupils: usize,
    base: Instant,
    offset: Duration,
    /// Every message sent to each participant, in order.
    pub inbox: BTreeMap<ParticipantId, Vec<ServerMsg>>,
    /// Present participants, as seen from outputs.
    pub present: BTreeMap<ParticipantId, Seen>,
    /// Every participant id ever handed out, by person (latest last).
    pub ids: BTreeMap<Who, Vec<ParticipantId>>,
    /// Tracks the media plane forwards.
    pub forwarded: BTreeSet<TrackId>,
    /// Participants the media plane delivers to.
    pub receiving: BTreeSet<ParticipantId>,
    /// Recorded lesson events, in order.
    pub events: Vec<LessonEvent>,
    /// Recorded chat, in order.
    pub chats: Vec<(ParticipantId, Option<ParticipantId>, String)>,
    /// Alerts raised.
    pub alerts: Vec<LessonEvent>,
    /// Snapshots persisted.
    pub persisted: Vec<Snapshot>,
    /// Connections closed, with why.
    pub disconnects: Vec<(ParticipantId, Farewell)>,
    /// Media offers and answers passed on.
    pub media_sdp: Vec<ParticipantId>,
    /// The last deadline the lesson asked for.
    pub deadline: Option<Instant>,
    // Independent model of the holds.
    recorder_attached: bool,
    recorder_lost_since: Option<Instant>,
    unsupervised_since: Option<Instant>,
    ended: bool,
    /// Chat records emitted during the current input.
    input_chat_records: Vec<(ParticipantId, Option<ParticipantId>, String)>,
    /// Number of inputs driven (for reports).
    pub steps: u64,
    /// A participant whose connection is ending in the current input: the
    /// lesson may still say goodbye (e.g. their access expired first).
    leaving: Option<ParticipantId>,
    /// People blocked, from the harness's own calls.
    pub blocked: BTreeSet<Who>,
    /// Pupils removed and not re-allowed, from the recorded events.
    pub removed: BTreeSet<Who>,
}

pub fn user(who: Who) -> UserRef {
    let subject = match who {
        Who::Teacher => "teacher".to_owned(),
        Who::Assistant => "assistant".to_owned(),
        Who::Pupil(n) => format!("pupil-{n}"),
        Who::Outsider => "outsider".to_owned(),
        Who::Observer => "dsl".to_owned(),
        Who::Admin => "admin".to_owned(),
        Who::OtherStaff => "other-teacher".to_owned(),
        Who::ExpiredVisitor => "inspector".to_owned(),
        Who::Visitor => "visitor".to_owned(),
        Who::Stranger => "stranger".to_owned(),
    };
    UserRef::new(ISSUER, subject).expect("fixed test names are valid")
}

pub fn setup() -> LessonSetup {
    LessonSetup {
        id: LessonId::from_bytes([7; 16]),
        class: CLASS.to_owned(),
        teachers: vec![user(Who::Teacher)],
        assistants: vec![user(Who::Assistant)],
        extra_pupils: Vec::new(),
    }
}

impl Class {
    /// A fresh lesson with `pupils` pupils on the roster and default timings.
    pub fn new(pupils: usize) -> Self {
        Self::with_config(pupils, LessonConfig::default())
    }

    pub fn with_config(pupils: usize, config: LessonConfig) -> Self {
        // The one place a test reads the clock: everything after is virtual.
        #[allow(clippy::disallowed_methods)]
        let base = Instant::now();
        let setup = setup();
        let lesson = Lesson::new(base, setup.clone(), config.clone());
        let mut class = Self {
            lesson,
            setup,
            config,
            pupils,
            base,
            offset: Duration::ZERO,
            inbox: BTreeMap::new(),
            present: BTreeMap::new(),
            ids: BTreeMap::new(),
            forwarded: BTreeSet::new(),
            receiving: BTreeSet::new(),
            events: Vec::new(),
            chats: Vec::new(),
            alerts: Vec::new(),
            persisted: Vec::new(),
            disconnects: Vec::new(),
            media_sdp: Vec::new(),
            deadline: None,
            recorder_attached: false,
            recorder_lost_since: Some(base),
            unsupervised_since: Some(base),
            ended: false,
            input_chat_records: Vec::new(),
            steps: 0,
            leaving: None,
            blocked: BTreeSet::new(),
            removed: BTreeSet::new(),
        };
        class.drain();
        class
    }

    /// A lesson with the recorder attached, the teacher in with the camera
    /// on, and every inbox cleared. Returns the teacher's id.
    pub fn started(pupils: usize) -> (Self, ParticipantId) {
        let mut c = Self::new(pupils);
        c.recorder(true);
        let t = c.join(Who::Teacher);
        c.say(
            t,
            ClientMsg::SetSource {
                source: MediaSource::Camera,
                on: true,
            },
        );
        c.clear();
        (c, t)
    }

    /// Joins pupil `n` and admits them (by `staff`). Returns their id.
    pub fn admitted_pupil(&mut self, n: usize, staff: ParticipantId) -> ParticipantId {
        let p = self.join(Who::Pupil(n));
        self.say(staff, ClientMsg::Admit { participant: p });
        assert!(self.lesson.is_admitted(p), "pupil {n} should be admitted");
        p
    }

    pub fn now(&self) -> Instant {
        self.base + self.offset
    }

    pub fn request(&self, who: Who) -> JoinRequest {
        let account = match who {
            Who::Teacher | Who::Assistant | Who::OtherStaff => Account {
                staff: true,
                ..Account::default()
            },
            Who::Pupil(_) => Account {
                pupil_classes: vec![CLASS.to_owned()],
                ..Account::default()
            },
            Who::Outsider => Account {
                pupil_classes: vec!["9Z".to_owned()],
                ..Account::default()
            },
            Who::Observer => Account {
                safeguarding_observer: true,
                ..Account::default()
            },
            Who::ExpiredVisitor => Account {
                visitor_until: Some(self.now()),
                ..Account::default()
            },
            Who::Visitor => Account {
                visitor_until: Some(self.base + VISITOR_GRANT),
                ..Account::default()
            },
            Who::Admin | Who::Stranger => Account::default(),
        };
        JoinRequest {
            user: user(who),
            name: format!("{who:?}"),
            account,
        }
    }

    // ------------------------------------------------------------------
    // Inputs
    // ------------------------------------------------------------------

    pub fn try_join(&mut self, who: Who) -> Result<ParticipantId, ErrorCode> {
        let now = self.now();
        let req = self.request(who);
        let result = self.lesson.handle_join(now, req);
        if let Ok(p) = result {
            assert!(
                !self.blocked.contains(&who),
                "blocked {who:?} got in as {p}"
            );
            assert!(
                !self.removed.contains(&who),
                "removed {who:?} got back in as {p}"
            );
            assert!(!self.ended, "{who:?} joined an ended lesson");
            self.ids.entry(who).or_default().push(p);
        }
        self.drain_with_joiner(result.ok().map(|p| (p, who)));
        if let Ok(p) = result {
            assert!(self.present.contains_key(&p), "joined {p} got no Welcome");
        }
        result
    }

    pub fn join(&mut self, who: Who) -> ParticipantId {
        self.try_join(who)
            .unwrap_or_else(|e| panic!("{who:?} should be able to join, got {e:?}"))
    }

    /// The current id of a present person.
    pub fn pid(&self, who: Who) -> Option<ParticipantId> {
        self.ids
            .get(&who)
            .and_then(|v| v.last().copied())
            .filter(|p| self.present.contains_key(p))
    }

    pub fn say(&mut self, from: ParticipantId, msg: ClientMsg) {
        let now = self.now();
        self.lesson.handle_message(now, from, msg);
        self.drain();
    }

    pub fn leave(&mut self, p: ParticipantId) {
        let now = self.now();
        self.present.remove(&p);
        self.leaving = Some(p);
        self.lesson.handle_leave(now, p);
        self.drain();
        self.leaving = None;
    }

    pub fn recorder(&mut self, attached: bool) {
        let now = self.now();
        if attached != self.recorder_attached {
            self.recorder_attached = attached;
            self.recorder_lost_since = (!attached).then_some(now);
        }
        self.lesson.handle_recorder(now, attached);
        self.drain();
    }

    pub fn block(&mut self, who: Who) {
        let now = self.now();
        self.blocked.insert(who);
        self.lesson.handle_block(now, &user(who));
        self.drain();
    }

    pub fn unblock(&mut self, who: Who) {
        let now = self.now();
        self.blocked.remove(&who);
        self.lesson.handle_unblock(now, &user(who));
        self.drain();
    }

    /// Moves the clock to the next deadline and fires it. False if none.
    pub fn progress(&mut self) -> bool {
        let Some(at) = self.deadline else {
            return false;
        };
        // After a `skip` the deadline may have passed: fire it now.
        let at = at.max(self.now());
        self.offset = at - self.base;
        self.lesson.handle_timeout(at);
        self.drain();
        true
    }

    /// Advances virtual time by `d`, firing every deadline on the way.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now() + d;
        let mut guard = 0;
        while let Some(at) = self.deadline {
            if at > target {
                break;
            }
            guard += 1;
            assert!(guard < 1000, "deadlines do not advance: {at:?}");
            self.progress();
        }
        self.offset = target - self.base;
        let now = self.now();
        self.lesson.handle_timeout(now);
        self.drain();
    }

    /// Moves the clock without telling the lesson, as when a message
    /// arrives before the shell's timer fires.
    pub fn skip(&mut self, d: Duration) {
        self.offset += d;
    }

    /// Replaces the lesson with one restored from `snapshot` (another node).
    pub fn restore(&mut self, snapshot: Snapshot) {
        let now = self.now();
        self.lesson = Lesson::restore(now, self.setup.clone(), self.config.clone(), snapshot)
            .expect("snapshot restores");
        self.present.clear();
        self.forwarded.clear();
        self.receiving.clear();
        self.recorder_attached = false;
        self.recorder_lost_since = Some(now);
        self.unsupervised_since = Some(now);
        self.drain();
    }

    // ------------------------------------------------------------------
    // Looking at what happened
    // ------------------------------------------------------------------

    pub fn inbox(&self, p: ParticipantId) -> &[ServerMsg] {
        self.inbox.get(&p).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Forgets everything received and recorded so far.
    pub fn clear(&mut self) {
        self.inbox.clear();
        self.events.clear();
        self.chats.clear();
        self.alerts.clear();
        self.disconnects.clear();
    }

    /// The error codes `p` has been sent.
    pub fn errors(&self, p: ParticipantId) -> Vec<ErrorCode> {
        self.inbox(p)
            .iter()
            .filter_map(|m| match m {
                ServerMsg::Error { code, .. } => Some(*code),
                _ => None,
            })
            .collect()
    }

    pub fn last_error(&self, p: ParticipantId) -> Option<ErrorCode> {
        self.errors(p).last().copied()
    }

    /// Sends `msg` from `p` and asserts it is refused with `code`, both to
    /// the sender and in the recording.
    pub fn refuse(&mut self, p: ParticipantId, msg: ClientMsg, code: ErrorCode) {
        let action = msg.name().to_owned();
        let before_inbox = self.inbox(p).len();
        let before_events = self.events.len();
        self.say(p, msg);
        let got: Vec<&ServerMsg> = self.inbox(p)[before_inbox..].iter().collect();
        assert!(
            got.contains(&&ServerMsg::Error {
                code,
                action: Some(action.clone())
            }),
            "{action} from {p} should be refused with {code:?}, got {got:?}"
        );
        assert!(
            self.events[before_events..].contains(&LessonEvent::Refused {
                participant: p,
                action: action.clone(),
                code,
            }),
            "refusal of {action} from {p} with {code:?} is not recorded"
        );
    }

    /// Sends `msg` and asserts it is not refused.
    pub fn accept(&mut self, p: ParticipantId, msg: ClientMsg) {
        let before = self.inbox(p).len();
        let name = msg.name();
        self.say(p, msg);
        let errs: Vec<&ServerMsg> = self.inbox(p)[before..]
            .iter()
            .filter(|m| matches!(m, ServerMsg::Error { .. }))
            .collect();
        assert!(errs.is_empty(), "{name} from {p} was refused: {errs:?}");
    }

    pub fn received(&self, p: ParticipantId, f: impl Fn(&ServerMsg) -> bool) -> bool {
        self.inbox(p).iter().any(f)
    }

    pub fn chat_texts(&self, p: ParticipantId) -> Vec<String> {
        self.inbox(p)
            .iter()
            .filter_map(|m| match m {
                ServerMsg::Chat { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn last_status(
        &self,
        p: ParticipantId,
    ) -> Option<chaperone_protocol::signal::LessonStatus> {
        self.inbox(p).iter().rev().find_map(|m| match m {
            ServerMsg::Status(s) => Some(s.clone()),
            _ => None,
        })
    }

    /// The hold reasons the harness expects now, from its own model.
    pub fn expected_holds(&self) -> Vec<HoldReason> {
        let now = self.now();
        let over =
            |since: Option<Instant>, grace: Duration| since.is_some_and(|s| now >= s + grace);
        let mut v = Vec::new();
        if over(self.unsupervised_since, self.config.supervision_grace) {
            v.push(HoldReason::Unsupervised);
        }
        if over(self.recorder_lost_since, self.config.recorder_grace) {
            v.push(HoldReason::RecordingLost);
        }
        v
    }

    // ------------------------------------------------------------------
    // Applying outputs, checking invariants
    // ------------------------------------------------------------------

    fn drain(&mut self) {
        self.drain_with_joiner(None);
    }

    fn fail(&self, what: &str, out: &Output) -> ! {
        panic!(
            "SAFEGUARDING INVARIANT VIOLATED: {what}\n  output: {out:?}\n  at: +{:?}\n  present: {:?}\n  forwarded: {:?}\n  holds expected: {:?}, lesson: {:?}",
            self.offset,
            self.present,
            self.forwarded,
            self.expected_holds(),
            self.lesson.held()
        )
    }

    fn drain_with_joiner(&mut self, joiner: Option<(ParticipantId, Who)>) {
        self.steps += 1;
        self.input_chat_records.clear();
        loop {
            let out = self.lesson.poll_output();
            if let Output::Timeout(at) = out {
                self.deadline = at;
                break;
            }
            self.apply(&out, joiner);
        }
        self.check_settled();
    }

    fn apply(&mut self, out: &Output, joiner: Option<(ParticipantId, Who)>) {
        let holds = self.expected_holds();
        match out {
            Output::Send(to, msg) => {
                if let ServerMsg::Welcome { you, role, .. } = msg {
                    let who = match joiner {
                        Some((p, who)) if p == *you && p == *to => who,
                        _ => self.fail("Welcome outside a join, or to the wrong id", out),
                    };
                    self.present.insert(
                        *you,
                        Seen {
                            who,
                            role: *role,
                            admitted: false,
                            permissions: Permissions::NONE,
                            sources_on: BTreeSet::new(),
                        },
                    );
                }
                let Some(seen) = self.present.get(to).cloned() else {
                    if self.leaving == Some(*to) && matches!(msg, ServerMsg::Goodbye { .. }) {
                        self.inbox.entry(*to).or_default().push(msg.clone());
                        return;
                    }
                    self.fail("message sent to someone not present", out);
                };
                let waiting_ok = matches!(
                    msg,
                    ServerMsg::Welcome { .. }
                        | ServerMsg::Waiting { .. }
                        | ServerMsg::Admitted
                        | ServerMsg::Goodbye { .. }
                        | ServerMsg::Error { .. }
                        | ServerMsg::ConcernReceived
                );
                if !seen.admitted && !waiting_ok {
                    self.fail(
                        "a waiting participant was sent more than its waiting status",
                        out,
                    );
                }
                let staff = seen.role.is_staff();
                match msg {
                    ServerMsg::Admitted => {
                        if let Some(s) = self.present.get_mut(to) {
                            s.admitted = true;
                        }
                    }
                    ServerMsg::WaitingList { .. } if !staff => {
                        self.fail("a non-staff participant was sent the waiting list", out)
                    }
                    ServerMsg::Banner { .. } if !staff => {
                        self.fail("a non-staff participant was sent a banner", out)
                    }
                    ServerMsg::You {
                        permissions,
                        sources_on,
                        ..
                    } => {
                        if let Some(s) = self.present.get_mut(to) {
                            s.permissions = *permissions;
                            s.sources_on = sources_on.iter().copied().collect();
                        }
                    }
                    ServerMsg::Chat {
                        from,
                        to: priv_to,
                        text,
                        ..
                    } => {
                        let matching = self
                            .input_chat_records
                            .iter()
                            .filter(|(f, t, x)| f == from && t == priv_to && x == text)
                            .count();
                        if matching != 1 {
                            self.fail(
                                "a chat was delivered without exactly one record before it",
                                out,
                            );
                        }
                        let sender_role = self.present.get(from).map(|s| s.role);
                        if sender_role == Some(Role::Pupil) && !holds.is_empty() {
                            self.fail(
                                "a pupil's chat was delivered while pupils should be held",
                                out,
                            );
                        }
                        if let Some(r) = priv_to {
                            if *to != *from && *to != *r {
                                self.fail("a private chat was delivered to a third party", out);
                            }
                            let recipient_role = self.present.get(r).map(|s| s.role);
                            let roles = [sender_role, recipient_role];
                            if roles.contains(&Some(Role::Pupil)) {
                                let other = if sender_role == Some(Role::Pupil) {
                                    recipient_role
                                } else {
                                    sender_role
                                };
                                if !other.is_some_and(Role::is_staff) {
                                    self.fail(
                                        "a pupil's private chat was not with a staff member",
                                        out,
                                    );
                                }
                            }
                        } else if sender_role == Some(Role::Observer) {
                            self.fail("an observer posted in public chat", out);
                        }
                    }
                    _ => {}
                }
                self.inbox.entry(*to).or_default().push(msg.clone());
            }
            Output::Forward { track, on } => {
                if *on {
                    let Some(owner) = self.present.get(&track.participant).cloned() else {
                        self.fail("forwarding a track of someone not present", out);
                    };
                    match owner.role {
                        Role::Observer => self.fail("an observer's track is forwarded", out),
                        Role::Pupil => {
                            if !owner.admitted {
                                self.fail("a waiting pupil's track is forwarded", out);
                            }
                            if !holds.is_empty() {
                                self.fail(
                                    "a pupil's track is forwarded while unsupervised or unrecorded",
                                    out,
                                );
                            }
                            if !self.recorder_attached && self.recorder_lost_since.is_none() {
                                self.fail(
                                    "a pupil's track is forwarded with no recorder ever attached",
                                    out,
                                );
                            }
                        }
                        _ => {}
                    }
                    if self.ended {
                        self.fail("forwarding after the lesson ended", out);
                    }
                    if !self.forwarded.insert(*track) {
                        self.fail("Forward on for a track already forwarded", out);
                    }
                } else if !self.forwarded.remove(track) {
                    self.fail("Forward off for a track not forwarded", out);
                }
            }
            Output::Receive { participant, on } => {
                if *on {
                    match self.present.get(participant) {
                        Some(s) if s.admitted => {
                            if s.role == Role::Pupil && !holds.is_empty() {
                                self.fail("a held pupil receives media", out);
                            }
                        }
                        _ => self.fail("media delivered to a waiting or absent participant", out),
                    }
                    if !self.receiving.insert(*participant) {
                        self.fail("Receive on twice", out);
                    }
                } else if !self.receiving.remove(participant) {
                    self.fail("Receive off for a participant not receiving", out);
                }
            }
            Output::MediaOffer { participant, .. } | Output::MediaAnswer { participant, .. } => {
                if !self.present.get(participant).is_some_and(|s| s.admitted) {
                    self.fail("SDP passed on for a participant who is not admitted", out);
                }
                self.media_sdp.push(*participant);
            }
            Output::Record(Record::Event(e)) => {
                match e {
                    LessonEvent::Ended { .. } => self.ended = true,
                    LessonEvent::Removed { participant, .. } => {
                        let who = self
                            .ids
                            .iter()
                            .find(|(_, v)| v.contains(participant))
                            .map(|(w, _)| *w);
                        match who {
                            Some(w) => {
                                self.removed.insert(w);
                            }
                            None => self.fail("removal of an unknown participant", out),
                        }
                    }
                    LessonEvent::Reallowed { user: u, .. } => {
                        self.removed.retain(|w| user(*w) != *u);
                    }
                    _ => {}
                }
                self.events.push(e.clone());
            }
            Output::Record(Record::Chat { from, to, text }) => {
                self.input_chat_records.push((*from, *to, text.clone()));
                self.chats.push((*from, *to, text.clone()));
            }
            Output::Alert(e) => self.alerts.push(e.clone()),
            Output::Persist(s) => self.persisted.push(s.clone()),
            Output::Disconnect(p, why) => {
                let goodbye = self
                    .inbox(*p)
                    .last()
                    .is_some_and(|m| *m == ServerMsg::Goodbye { reason: *why });
                if !goodbye {
                    self.fail("disconnect without a Goodbye first", out);
                }
                if self.forwarded.iter().any(|t| t.participant == *p) || self.receiving.contains(p)
                {
                    self.fail("disconnected with media still flowing", out);
                }
                self.present.remove(p);
                self.disconnects.push((*p, *why));
            }
            Output::Timeout(_) => {}
        }
        // Supervision as the harness sees it: staff present or not.
        let staff_present = self.present.values().any(|s| s.role.is_staff());
        if staff_present {
            self.unsupervised_since = None;
        }
    }

    /// After an input: the media plane must be exactly what the rule says.
    fn check_settled(&mut self) {
        let now = self.now();
        let staff_present = self.present.values().any(|s| s.role.is_staff());
        if staff_present {
            self.unsupervised_since = None;
        } else if self.unsupervised_since.is_none() {
            self.unsupervised_since = Some(now);
        }
        let holds = self.expected_holds();
        assert_eq!(
            self.lesson.held(),
            holds.as_slice(),
            "the lesson's holds differ from the harness model at +{:?}",
            self.offset
        );
        let mut want_fwd = BTreeSet::new();
        let mut want_rx = BTreeSet::new();
        for (p, s) in &self.present {
            assert_eq!(self.lesson.role_of(*p), Some(s.role), "role of {p}");
            assert_eq!(self.lesson.is_admitted(*p), s.admitted, "admission of {p}");
            if self.ended || !s.admitted {
                continue;
            }
            let pupil = s.role == Role::Pupil;
            if !pupil || holds.is_empty() {
                want_rx.insert(*p);
            }
            for src in &s.sources_on {
                let ok = match s.role {
                    Role::Teacher | Role::Assistant => true,
                    Role::Observer => false,
                    Role::Pupil => holds.is_empty() && s.permissions.allows(src.permission()),
                };
                if ok {
                    want_fwd.insert(TrackId::new(*p, *src));
                }
            }
        }
        assert_eq!(
            self.forwarded, want_fwd,
            "forwarded tracks differ from the forwarding rule at +{:?}; present: {:#?}",
            self.offset, self.present
        );
        assert_eq!(
            self.receiving, want_rx,
            "receiving set differs from the rule"
        );
        for t in &self.forwarded {
            assert!(
                self.lesson.is_forwarding(*t),
                "lesson forgot it forwards {t}"
            );
        }
        for p in &self.receiving {
            assert!(self.lesson.is_receiving(*p), "lesson forgot {p} receives");
        }
        for p in self.present.keys() {
            for s in MediaSource::ALL {
                let t = TrackId::new(*p, s);
                assert_eq!(
                    self.lesson.is_forwarding(t),
                    self.forwarded.contains(&t),
                    "{t}"
                );
            }
            assert_eq!(
                self.lesson.is_receiving(*p),
                self.receiving.contains(p),
                "{p}"
            );
        }
        if self.ended {
            assert!(
                self.present.is_empty(),
                "someone is still present after the end"
            );
        }
    }
}
