//! A deterministic, virtual-time harness for the lesson core: a teacher, an
//! assistant, pupils, an observer, driven by inputs and a clock that only
//! moves when the test says so (str0m `tests/common.rs`, quinn `Pair::drive`).
//!
//! Every output is applied to a model of the world (inboxes, the media
//! plane, the recording) and the safeguarding invariants are checked after
//! every single effect and after every input. A violation panics with the
//! step that caused it.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chaperone_gateway::lesson::{
    Account, JoinRequest, Lesson, LessonConfig, LessonSetup, Output, Record, Snapshot,
};
use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::signal::{ClientMsg, ErrorCode, Farewell, ServerMsg};
use chaperone_protocol::{LessonId, ParticipantId, Role, TrackId, UserRef};

pub const CLASS: &str = "7B";

/// The people the harness knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Who {
    Teacher,
    Assistant,
    /// Pupils of the lesson's class, 0..N.
    Pupil(u8),
    /// A pupil of another class.
    Stranger,
    /// SLT observer.
    Slt,
    /// Someone with no role at all.
    Nobody,
}

impl Who {
    pub fn user(self) -> UserRef {
        let sub = match self {
            Who::Teacher => "teacher".to_owned(),
            Who::Assistant => "assistant".to_owned(),
            Who::Pupil(n) => format!("pupil-{n}"),
            Who::Stranger => "pupil-of-8c".to_owned(),
            Who::Slt => "slt".to_owned(),
            Who::Nobody => "nobody".to_owned(),
        };
        UserRef::new("https://idp.school.test", sub).unwrap()
    }

    pub fn account(self) -> Account {
        match self {
            Who::Teacher | Who::Assistant => Account {
                staff: true,
                ..Account::default()
            },
            Who::Pupil(_) => Account {
                pupil_classes: vec![CLASS.to_owned()],
                ..Account::default()
            },
            Who::Stranger => Account {
                pupil_classes: vec!["8C".to_owned()],
                ..Account::default()
            },
            Who::Slt => Account {
                safeguarding_observer: true,
                ..Account::default()
            },
            Who::Nobody => Account::default(),
        }
    }
}

/// What the harness saw happen.
#[derive(Debug, Default)]
pub struct World {
    /// Messages delivered to each participant, in order.
    pub inbox: BTreeMap<ParticipantId, Vec<ServerMsg>>,
    /// Tracks the media plane forwards.
    pub forwarding: BTreeSet<TrackId>,
    /// Participants the media plane delivers to.
    pub receiving: BTreeSet<ParticipantId>,
    /// Everything recorded, in order.
    pub records: Vec<Record>,
    /// Alerts for the safeguarding team.
    pub alerts: Vec<LessonEvent>,
    /// Snapshots persisted.
    pub snapshots: Vec<Snapshot>,
    /// Connections closed by the lesson.
    pub disconnects: Vec<(ParticipantId, Farewell)>,
    /// Media negotiation passed to the SFU.
    pub media_offers: Vec<ParticipantId>,
    /// Chat records not yet matched by a delivery: (from, to, text).
    pending_chats: Vec<(ParticipantId, Option<ParticipantId>, String)>,
    /// Chat records already matched.
    matched_chats: Vec<(ParticipantId, Option<ParticipantId>, String)>,
}

/// The harness's own model of supervision and recording, from inputs only.
#[derive(Debug)]
struct Model {
    unsupervised_since: Option<Instant>,
    recorder_lost_since: Option<Instant>,
}

pub struct Class {
    model: Model,
    pub lesson: Lesson,
    base: Instant,
    offset: Duration,
    pub config: LessonConfig,
    pub ids: BTreeMap<Who, ParticipantId>,
    pub world: World,
    pub next_deadline: Option<Instant>,
}

pub fn setup() -> LessonSetup {
    LessonSetup {
        id: LessonId::from_bytes([7; 16]),
        class: CLASS.to_owned(),
        teachers: vec![Who::Teacher.user()],
        assistants: vec![Who::Assistant.user()],
        extra_pupils: vec![],
    }
}

impl Class {
    pub fn new() -> Self {
        Self::with_config(LessonConfig::default())
    }

    pub fn with_config(config: LessonConfig) -> Self {
        // The one reading of the real clock: every later time is base + offset.
        #[allow(clippy::disallowed_methods)]
        let base = Instant::now();
        let lesson = Lesson::new(base, setup(), config.clone());
        let mut class = Self {
            model: Model {
                unsupervised_since: Some(base),
                recorder_lost_since: Some(base),
            },
            lesson,
            base,
            offset: Duration::ZERO,
            config,
            ids: BTreeMap::new(),
            world: World::default(),
            next_deadline: None,
        };
        class.drain();
        class
    }

    /// A class with a recorder attached, the teacher present and `pupils`
    /// pupils admitted.
    pub fn live(pupils: u8) -> Self {
        let mut c = Self::new();
        c.recorder(true);
        c.join(Who::Teacher).unwrap();
        for n in 0..pupils {
            c.join(Who::Pupil(n)).unwrap();
        }
        if pupils > 0 {
            c.say(Who::Teacher, ClientMsg::AdmitAll);
        }
        c
    }

    pub fn now(&self) -> Instant {
        self.base + self.offset
    }

    pub fn id(&self, who: Who) -> ParticipantId {
        *self
            .ids
            .get(&who)
            .unwrap_or_else(|| panic!("{who:?} has not joined"))
    }

    pub fn join(&mut self, who: Who) -> Result<ParticipantId, ErrorCode> {
        self.join_as(who, who.account())
    }

    pub fn join_as(&mut self, who: Who, account: Account) -> Result<ParticipantId, ErrorCode> {
        let now = self.now();
        let result = self.lesson.handle_join(
            now,
            JoinRequest {
                user: who.user(),
                name: format!("{who:?}"),
                account,
            },
        );
        if let Ok(id) = result {
            self.ids.insert(who, id);
        }
        self.drain();
        result
    }

    pub fn leave(&mut self, who: Who) {
        let id = self.id(who);
        let now = self.now();
        self.lesson.handle_leave(now, id);
        self.ids.remove(&who);
        self.drain();
    }

    pub fn say(&mut self, who: Who, msg: ClientMsg) {
        let id = self.id(who);
        let now = self.now();
        self.lesson.handle_message(now, id, msg);
        self.drain();
    }

    pub fn recorder(&mut self, attached: bool) {
        let now = self.now();
        let was_attached = self.model.recorder_lost_since.is_none();
        if attached != was_attached {
            self.model.recorder_lost_since = (!attached).then_some(now);
        }
        self.lesson.handle_recorder(now, attached);
        self.drain();
    }

    pub fn block(&mut self, who: Who) {
        let now = self.now();
        self.lesson.handle_block(now, &who.user());
        self.drain();
    }

    pub fn unblock(&mut self, who: Who) {
        let now = self.now();
        self.lesson.handle_unblock(now, &who.user());
        self.drain();
    }

    /// Moves the clock forward by `d`, firing every deadline on the way in
    /// order, as the shell would.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now() + d;
        while let Some(deadline) = self.next_deadline.filter(|t| *t <= target) {
            self.offset = deadline.max(self.now()) - self.base;
            let now = self.now();
            self.lesson.handle_timeout(now);
            self.drain();
            if self.next_deadline == Some(deadline) {
                // A deadline that does not move after firing would loop forever.
                panic!("deadline {deadline:?} did not advance after handle_timeout");
            }
        }
        self.offset = target - self.base;
        let now = self.now();
        self.lesson.handle_timeout(now);
        self.drain();
    }

    /// Jumps to the next deadline, if any; returns whether there was one.
    pub fn progress(&mut self) -> bool {
        match self.next_deadline {
            Some(t) => {
                let d = t.saturating_duration_since(self.now());
                self.advance(d);
                true
            }
            None => false,
        }
    }

    /// Messages delivered to `who` so far (by their current id).
    pub fn inbox(&self, who: Who) -> &[ServerMsg] {
        self.world
            .inbox
            .get(&self.id(who))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Clears every inbox (to look only at what follows).
    pub fn clear_inboxes(&mut self) {
        self.world.inbox.clear();
    }

    /// The typed errors `who` received.
    pub fn errors(&self, who: Who) -> Vec<ErrorCode> {
        self.inbox(who)
            .iter()
            .filter_map(|m| match m {
                ServerMsg::Error { code, .. } => Some(*code),
                _ => None,
            })
            .collect()
    }

    pub fn last_error(&self, who: Who) -> Option<ErrorCode> {
        self.errors(who).last().copied()
    }

    pub fn events(&self) -> Vec<&LessonEvent> {
        self.world
            .records
            .iter()
            .filter_map(|r| match r {
                Record::Event(e) => Some(e),
                Record::Chat { .. } => None,
            })
            .collect()
    }

    pub fn chats_received(&self, who: Who) -> Vec<(ParticipantId, Option<ParticipantId>, String)> {
        self.inbox(who)
            .iter()
            .filter_map(|m| match m {
                ServerMsg::Chat { from, to, text, .. } => Some((*from, *to, text.clone())),
                _ => None,
            })
            .collect()
    }

    /// Drains every output, applying it to the world and checking the
    /// invariants after each one and at the end.
    pub fn drain(&mut self) {
        loop {
            let out = self.lesson.poll_output();
            match out {
                Output::Timeout(t) => {
                    self.next_deadline = t;
                    break;
                }
                other => self.apply(other),
            }
        }
        self.check_state();
    }

    fn apply(&mut self, out: Output) {
        match out {
            Output::Send(to, msg) => {
                self.check_send(to, &msg);
                self.world.inbox.entry(to).or_default().push(msg);
            }
            Output::Forward { track, on } => {
                if on {
                    self.check_forward(track);
                    self.world.forwarding.insert(track);
                } else {
                    self.world.forwarding.remove(&track);
                }
            }
            Output::Receive { participant, on } => {
                if on {
                    assert!(
                        self.lesson.is_admitted(participant),
                        "INVARIANT: {participant} set to receive media while not admitted"
                    );
                    self.world.receiving.insert(participant);
                } else {
                    self.world.receiving.remove(&participant);
                }
            }
            Output::MediaOffer { participant, .. } | Output::MediaAnswer { participant, .. } => {
                assert!(
                    self.lesson.is_admitted(participant),
                    "INVARIANT: SDP from waiting {participant} reached the media plane"
                );
                self.world.media_offers.push(participant);
            }
            Output::Record(r) => {
                if let Record::Chat { from, to, text } = &r {
                    self.world.pending_chats.push((*from, *to, text.clone()));
                }
                self.world.records.push(r);
            }
            Output::Alert(e) => self.world.alerts.push(e),
            Output::Persist(s) => {
                // Every snapshot must survive the store's encoding.
                assert_eq!(Snapshot::decode(&s.encode()).unwrap(), s);
                self.world.snapshots.push(s);
            }
            Output::Disconnect(p, why) => {
                self.world.disconnects.push((p, why));
                self.world.receiving.remove(&p);
                self.ids.retain(|_, id| *id != p);
            }
            Output::Timeout(_) => unreachable!("handled by drain"),
        }
    }

    /// Invariants on each message as it is sent.
    fn check_send(&mut self, to: ParticipantId, msg: &ServerMsg) {
        let role = self.lesson.role_of(to);
        let admitted = self.lesson.is_admitted(to);
        if !admitted {
            assert!(
                matches!(
                    msg,
                    ServerMsg::Welcome { .. }
                        | ServerMsg::Waiting { .. }
                        | ServerMsg::Admitted
                        | ServerMsg::Goodbye { .. }
                        | ServerMsg::Error { .. }
                        | ServerMsg::ConcernReceived
                ),
                "INVARIANT: waiting {to} was sent {msg:?}"
            );
        }
        if let ServerMsg::WaitingList { .. } = msg {
            assert!(
                role.is_some_and(Role::is_staff),
                "INVARIANT: non-staff {to} ({role:?}) was sent the waiting list"
            );
        }
        if let ServerMsg::Chat {
            from,
            to: private_to,
            text,
            ..
        } = msg
        {
            let key = (*from, *private_to, text.clone());
            // Recorded before delivered: the record must already be there.
            let recorded =
                self.world.pending_chats.contains(&key) || self.world.matched_chats.contains(&key);
            assert!(
                recorded,
                "INVARIANT: chat {key:?} delivered to {to} before it was recorded"
            );
            if let Some(i) = self.world.pending_chats.iter().position(|k| *k == key) {
                let k = self.world.pending_chats.remove(i);
                self.world.matched_chats.push(k);
            }
            if let Some(r) = private_to {
                // A private message goes only to its two ends…
                assert!(
                    to == *from || to == *r,
                    "INVARIANT: private chat {from}->{r} delivered to {to}"
                );
                // …and a pupil is only ever at one end opposite staff.
                let roles = (self.lesson.role_of(*from), self.lesson.role_of(*r));
                if let (Some(a), Some(b)) = roles {
                    assert!(
                        !(a == Role::Pupil && b == Role::Pupil),
                        "INVARIANT: pupil-to-pupil private message {from}->{r} delivered"
                    );
                    if a == Role::Pupil || b == Role::Pupil {
                        assert!(
                            a.is_staff() || b.is_staff(),
                            "INVARIANT: private message between a pupil and non-staff delivered"
                        );
                    }
                }
            }
        }
    }

    /// The forwarding rule, checked independently for each track turned on.
    fn check_forward(&self, track: TrackId) {
        let p = track.participant;
        let role = self.lesson.role_of(p);
        assert!(
            role.is_some(),
            "INVARIANT: track {track} of an absent participant forwarded"
        );
        assert!(
            role != Some(Role::Observer),
            "INVARIANT: observer track {track} forwarded"
        );
        assert!(
            !self.lesson.is_ended(),
            "INVARIANT: track {track} forwarded after the end"
        );
        if role == Some(Role::Pupil) {
            assert!(
                self.lesson.is_admitted(p),
                "INVARIANT: waiting pupil's track {track} forwarded"
            );
            assert!(
                self.lesson.held().is_empty(),
                "INVARIANT: pupil track {track} forwarded while held {:?}",
                self.lesson.held()
            );
            let perms = self.told_permissions(p);
            if let Some(perms) = perms {
                assert!(
                    perms.allows(track.source.permission()),
                    "INVARIANT: pupil track {track} forwarded without permission ({perms:?})"
                );
            }
        }
    }

    /// The permissions the pupil was last told about (the `You` message).
    fn told_permissions(&self, p: ParticipantId) -> Option<chaperone_protocol::Permissions> {
        self.world
            .inbox
            .get(&p)?
            .iter()
            .rev()
            .find_map(|m| match m {
                ServerMsg::You { permissions, .. } => Some(*permissions),
                _ => None,
            })
    }

    /// Invariants on the whole state, after every input.
    fn check_state(&mut self) {
        // The media plane the harness built from effects equals the core's view.
        for t in &self.world.forwarding {
            assert!(
                self.lesson.is_forwarding(*t),
                "INVARIANT: harness forwards {t} but core does not"
            );
            self.check_forward(*t);
            // After settling, the pupil has been told the permissions in force.
            if self.lesson.role_of(t.participant) == Some(Role::Pupil) {
                let perms = self.told_permissions(t.participant);
                assert!(
                    perms.is_some_and(|p| p.allows(t.source.permission())),
                    "INVARIANT: {t} forwarded but its owner holds no such permission ({perms:?})"
                );
            }
        }
        for p in &self.world.receiving {
            assert!(
                self.lesson.is_admitted(*p),
                "INVARIANT: waiting {p} receives media"
            );
            if self.lesson.role_of(*p) == Some(Role::Pupil) {
                assert!(
                    self.lesson.held().is_empty(),
                    "INVARIANT: held pupil {p} receives media"
                );
            }
        }
        // Unsupervised or unrecorded beyond the grace: no pupil media at all.
        // Modelled here from the inputs alone, not from the core's own view.
        let now = self.now();
        let staff_present =
            self.ids.contains_key(&Who::Teacher) || self.ids.contains_key(&Who::Assistant);
        if staff_present {
            self.model.unsupervised_since = None;
        } else if self.model.unsupervised_since.is_none() {
            self.model.unsupervised_since = Some(now);
        }
        let overdue =
            |since: Option<Instant>, grace: Duration| since.is_some_and(|s| now - s >= grace);
        let unsupervised = overdue(self.model.unsupervised_since, self.config.supervision_grace);
        let unrecorded = overdue(self.model.recorder_lost_since, self.config.recorder_grace);
        if unsupervised || unrecorded {
            for t in &self.world.forwarding {
                assert!(
                    self.lesson.role_of(t.participant) != Some(Role::Pupil),
                    "INVARIANT: pupil track {t} forwarded while unsupervised={unsupervised} unrecorded={unrecorded}"
                );
            }
            for p in &self.world.receiving {
                assert!(
                    self.lesson.role_of(*p) != Some(Role::Pupil),
                    "INVARIANT: pupil {p} receives media while unsupervised={unsupervised} unrecorded={unrecorded}"
                );
            }
        }
        // Every chat record delivered so far was recorded first (checked on
        // delivery); every accepted chat is delivered to at least its sender
        // in the same step, so nothing recorded stays unmatched.
        assert!(
            self.world.pending_chats.is_empty(),
            "INVARIANT: chat recorded but never delivered: {:?}",
            self.world.pending_chats
        );
    }
}
