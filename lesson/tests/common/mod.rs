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
//!
//! This file is the driver: the [`Class`], its inputs, its clock, and ways
//! of looking at what happened. `people.rs` says who may try to join and
//! what each is; `invariants.rs` holds the model and every check, and every
//! input here ends by draining the lesson through it.
#![allow(dead_code)]

mod invariants;
mod people;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chaperone_lesson::{Lesson, LessonConfig, LessonSetup, Snapshot};
use chaperone_protocol::annotation::MarkId;
use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::signal::{ClientMsg, ErrorCode, Farewell, ServerMsg};
use chaperone_protocol::{MediaSource, ParticipantId, TrackId};

pub use invariants::Seen;
pub use people::{Who, setup, user};
// Each test crate uses a different part of the harness (hence `dead_code`
// above); not every one names these.
#[allow(unused_imports)]
pub use people::{CLASS, VISITOR_GRANT};

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
    /// Every mark recorded as accepted: who drew it (by their id then), and
    /// on whose shared screen.
    pub marks: BTreeMap<MarkId, MarkRec>,
    /// When the lesson's time runs out, as last handed in, and the close
    /// before that (a close that passed before a later one arrived ends
    /// the lesson): the harness's own model of the window.
    closes_at: Option<Instant>,
    closes_before: Option<Instant>,
}

/// A mark as the recording shows it.
#[derive(Clone, Copy, Debug)]
pub struct MarkRec {
    pub author: ParticipantId,
    pub who: Who,
    pub staff: bool,
    pub layer: ParticipantId,
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
            marks: BTreeMap::new(),
            closes_at: None,
            closes_before: None,
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

    /// The shell says the lesson's time runs out `in_` from now (`None`:
    /// it has no close), as when it learns the window or staff extend it.
    pub fn window(&mut self, in_: Option<Duration>) {
        let now = self.now();
        let at = in_.map(|d| now + d);
        self.closes_before = self.closes_at;
        self.closes_at = at;
        self.lesson.handle_window(now, at);
        self.drain();
        self.closes_before = None;
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
        // The new node's shell has not said when it closes yet.
        self.closes_at = None;
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
}
