//! The lesson core: a pure state machine that owns every safeguarding rule of
//! one live lesson: roster, waiting room, supervision, the recording gate,
//! teacher controls, chat rules, concerns, blocks.
//!
//! It never does I/O, never reads a clock and holds no `Arc`, lock or
//! channel. The async shell drives it:
//!
//! 1. create it with [`Lesson::new`] (or [`Lesson::restore`] from a
//!    persisted [`Snapshot`] on another node);
//! 2. feed it inputs, each with the current time: [`Lesson::handle_join`],
//!    [`Lesson::handle_message`], [`Lesson::handle_leave`],
//!    [`Lesson::handle_recorder`], [`Lesson::handle_block`],
//!    [`Lesson::handle_window`] (when its time runs out, and whenever staff
//!    extend it), [`Lesson::handle_timeout`];
//! 3. after every input, drain [`Lesson::poll_output`] until it returns
//!    [`Output::Timeout`], apply each effect (send, forward, record, persist,
//!    disconnect), and call [`Lesson::handle_timeout`] at the deadline.
//!
//! Design: after each input the core recomputes what every participant may
//! send, receive and see, and emits the difference from what it last emitted.
//! Deriving the media plane from state, instead of patching it per command,
//! is what makes "a source that is not allowed is never forwarded" hold for
//! every sequence of commands, not just the ones someone thought of.
//!
//! Layout: this file holds the public types, the lesson's state and its
//! accessors; the rules are `impl Lesson` blocks, one file per concern:
//!
//! - `roster`: joining and roles, the waiting room (admit, deny, remove,
//!   re-allow, lock), leaving and the reconnect grace, blocks, the end;
//! - `controls`: permissions and defaults, turn-off, engagement, sources;
//! - `chat`: public and private chat, its policy and rate limit, concerns
//!   and incidents;
//! - `hands`: raised hands, their order, and who sees them;
//! - `annotation`: marks on a shared screen, who may draw them and who
//!   sees them;
//! - `supervision`: holds, the recorder gate, the teacher-camera rule,
//!   expiries and deadlines;
//! - `window`: when the lesson's time runs out, the warning staff get
//!   before it, and the end by the server when it comes;
//! - `dispatch`: client messages, through the gates, to their verbs;
//! - `forwarding`: the forwarding rule and the media plane derived from it;
//! - `settle`: the derivation after every input;
//! - `snapshot`: the state that survives a node, taken and restored.

#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

mod annotation;
mod chat;
mod controls;
mod dispatch;
mod forwarding;
mod hands;
mod roster;
mod settle;
mod snapshot;
mod supervision;
mod window;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use chaperone_protocol::event::{HoldReason, LessonEvent};
use chaperone_protocol::signal::{
    Farewell, LessonStatus, ParticipantInfo, ServerMsg, WaitingEntry,
};
use chaperone_protocol::{
    LessonId, MediaSource, ParticipantId, Permissions, Role, TrackId, UserRef,
};

use roster::Departed;
pub use snapshot::{SNAPSHOT_VERSION, Snapshot, SnapshotError};

/// Timings and limits of a lesson. Defaults are the product's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LessonConfig {
    /// How long admitted pupils may be without a teacher or assistant before
    /// they are held.
    pub supervision_grace: Duration,
    /// How long the recorder may be lost before pupils are held.
    pub recorder_grace: Duration,
    /// How long a teacher's camera may be off before a compliance event.
    pub teacher_camera_grace: Duration,
    /// How long a dropped participant may come back without waiting again.
    pub reconnect_grace: Duration,
    /// Longest chat message, in characters.
    pub chat_max_chars: usize,
    /// Chat messages (and concerns) a pupil may send per `chat_window`.
    pub chat_rate: usize,
    /// The window for `chat_rate`.
    pub chat_window: Duration,
    /// Permissions given to pupils admitted later, until a teacher changes them.
    pub pupil_defaults: Permissions,
    /// Annotation messages (marks, extensions, undo, redo, erase) anyone
    /// may send per `annotation_window`.
    pub annotation_rate: usize,
    /// The window for `annotation_rate`.
    pub annotation_window: Duration,
    /// How long before the lesson's time runs out its staff are warned
    /// (so they can extend it) that the server will end it.
    pub close_warning: Duration,
}

impl Default for LessonConfig {
    fn default() -> Self {
        Self {
            supervision_grace: Duration::from_secs(60),
            recorder_grace: Duration::from_secs(10),
            teacher_camera_grace: Duration::from_secs(30),
            reconnect_grace: Duration::from_secs(30),
            chat_max_chars: chaperone_protocol::signal::MAX_CHAT_CHARS,
            chat_rate: 5,
            chat_window: Duration::from_secs(10),
            pupil_defaults: Permissions::PUPIL_DEFAULT,
            // The lesson page sends a pen stroke in pieces every 150 ms and
            // a laser flash at most every 200 ms: 12 a second at most, well
            // inside the signaling connection's own 20 a second.
            annotation_rate: 15,
            annotation_window: Duration::from_secs(1),
            close_warning: Duration::from_secs(5 * 60),
        }
    }
}

/// Who belongs to a lesson, as created by staff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LessonSetup {
    /// The lesson.
    pub id: LessonId,
    /// The class whose pupils are on the roster (from the identity provider's claims).
    pub class: String,
    /// The lesson's teachers.
    pub teachers: Vec<UserRef>,
    /// Other staff in the room.
    pub assistants: Vec<UserRef>,
    /// Pupils rostered individually, beyond the class.
    pub extra_pupils: Vec<UserRef>,
}

/// What the identity layer vouches for about a person asking to join. The
/// core decides from this and the lesson's setup what role, if any, they get.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Account {
    /// Holds a staff role (teacher or assistant) at the school.
    pub staff: bool,
    /// Classes they belong to as a pupil (empty if not a pupil).
    pub pupil_classes: Vec<String>,
    /// Senior leadership or Designated Safeguarding Lead: may observe any lesson.
    pub safeguarding_observer: bool,
    /// A visitor grant covering this lesson, valid until this instant.
    pub visitor_until: Option<Instant>,
}

/// A request to join, after authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinRequest {
    /// Who.
    pub user: UserRef,
    /// Their display name.
    pub name: String,
    /// What they are at the school.
    pub account: Account,
}

/// Something a lesson records: an event, or a chat message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A lesson event.
    Event(LessonEvent),
    /// A chat message, public (`to` is `None`) or private.
    Chat {
        /// Sender.
        from: ParticipantId,
        /// Private recipient.
        to: Option<ParticipantId>,
        /// Text.
        text: String,
    },
}

/// An effect for the shell to carry out, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send a message to a participant.
    Send(ParticipantId, ServerMsg),
    /// Start or stop forwarding a track to anyone.
    Forward {
        /// The track.
        track: TrackId,
        /// Forward (true) or drop every packet of it.
        on: bool,
    },
    /// Start or stop delivering media to a participant.
    Receive {
        /// The participant.
        participant: ParticipantId,
        /// Deliver (true) or deliver nothing.
        on: bool,
    },
    /// Pass an SDP offer from an admitted participant to the media plane.
    MediaOffer {
        /// The participant.
        participant: ParticipantId,
        /// SDP text.
        sdp: String,
    },
    /// Pass an SDP answer from an admitted participant to the media plane.
    MediaAnswer {
        /// The participant.
        participant: ParticipantId,
        /// SDP text.
        sdp: String,
    },
    /// Append to the lesson's recording feed.
    Record(Record),
    /// A concern or incident the safeguarding team must see (besides the recording).
    Alert(LessonEvent),
    /// Save the lesson's control state (roster, admissions, permissions, policy).
    Persist(Snapshot),
    /// Close a participant's connection (after its `Goodbye`).
    Disconnect(ParticipantId, Farewell),
    /// Nothing more to do until this instant (or until the next input, if `None`).
    Timeout(Option<Instant>),
}

/// Where a present participant is. Only pupils ever wait; staff and
/// observers are admitted on joining.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Presence {
    Waiting,
    Admitted,
}

/// A participant present now (one connection).
#[derive(Clone, Debug)]
struct Participant {
    user: UserRef,
    name: String,
    role: Role,
    presence: Presence,
    /// Sources the participant has switched on (whether or not forwarded).
    on: BTreeSet<MediaSource>,
    /// Teachers only: since when the camera has been off.
    camera_off_since: Option<Instant>,
    /// Teachers only: whether a camera-off compliance event is outstanding.
    camera_flagged: bool,
    /// Observers with a visitor grant: when it ends.
    access_until: Option<Instant>,
    // What the participant was last told, so only changes are sent.
    sent_roster: u64,
    sent_waiting: u64,
    sent_status: Option<LessonStatus>,
    sent_you: Option<ServerMsg>,
    sent_hands: Option<Vec<ParticipantId>>,
    /// Staff only: the close they were last warned of.
    sent_closing: Option<Instant>,
}

/// One live lesson. See the module docs for the call order.
#[derive(Debug)]
pub struct Lesson {
    setup: LessonSetup,
    config: LessonConfig,
    next_id: u64,
    participants: BTreeMap<ParticipantId, Participant>,
    by_user: HashMap<UserRef, ParticipantId>,
    departed: HashMap<UserRef, Departed>,
    /// Per-user permissions: kept across reconnects so that leaving and
    /// rejoining never restores a revoked source.
    permissions: HashMap<UserRef, Permissions>,
    defaults: Permissions,
    removed: BTreeMap<ParticipantId, UserRef>,
    blocked: HashSet<UserRef>,
    chat_log: HashMap<UserRef, VecDeque<Instant>>,
    locked: bool,
    public_chat: bool,
    private_chat: bool,
    /// Raised hands, oldest first (admitted pupils only; see `hands.rs`).
    hands: Vec<ParticipantId>,
    /// Whether pupils see whose hands are up.
    hands_visible: bool,
    /// Marks on shared screens (see `annotation.rs`).
    annotation: annotation::Annotation,
    ended: bool,
    /// When the lesson's time runs out and the server ends it (`None`: the
    /// shell has not said, or it never does); see `window.rs`.
    closes_at: Option<Instant>,
    recorder_attached: bool,
    /// Since when no recorder has been attached (set at creation).
    recorder_lost_since: Option<Instant>,
    /// Since when no staff member has been present (set at creation).
    unsupervised_since: Option<Instant>,
    held: Vec<HoldReason>,
    forwarding: BTreeSet<TrackId>,
    receiving: BTreeSet<ParticipantId>,
    roster: Vec<ParticipantInfo>,
    roster_version: u64,
    waiting: Vec<WaitingEntry>,
    waiting_version: u64,
    persisted: Option<Snapshot>,
    outputs: VecDeque<Output>,
}

impl Lesson {
    /// A new lesson with nobody in it, created at `now`.
    pub fn new(now: Instant, setup: LessonSetup, config: LessonConfig) -> Self {
        let defaults = config.pupil_defaults;
        let mut lesson = Self {
            setup,
            config,
            next_id: 1,
            participants: BTreeMap::new(),
            by_user: HashMap::new(),
            departed: HashMap::new(),
            permissions: HashMap::new(),
            defaults,
            removed: BTreeMap::new(),
            blocked: HashSet::new(),
            chat_log: HashMap::new(),
            locked: false,
            public_chat: true,
            private_chat: true,
            hands: Vec::new(),
            hands_visible: false,
            annotation: annotation::Annotation::default(),
            ended: false,
            closes_at: None,
            recorder_attached: false,
            recorder_lost_since: Some(now),
            unsupervised_since: Some(now),
            held: Vec::new(),
            forwarding: BTreeSet::new(),
            receiving: BTreeSet::new(),
            roster: Vec::new(),
            // Versions start at 1 so that a new participant (who has seen
            // version 0) is always sent the current roster and waiting list.
            roster_version: 1,
            waiting: Vec::new(),
            waiting_version: 1,
            persisted: None,
            outputs: VecDeque::new(),
        };
        lesson.settle(now);
        lesson
    }

    /// The lesson's id.
    pub fn id(&self) -> LessonId {
        self.setup.id
    }

    /// Whether the lesson has ended.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// When the lesson's time runs out, as the shell last said.
    pub fn closes_at(&self) -> Option<Instant> {
        self.closes_at
    }

    /// Why pupils are held right now (empty if they are not).
    pub fn held(&self) -> &[HoldReason] {
        &self.held
    }

    /// The role of a present participant.
    pub fn role_of(&self, p: ParticipantId) -> Option<Role> {
        self.participants.get(&p).map(|x| x.role)
    }

    /// Whether a present participant has been admitted (staff always are).
    pub fn is_admitted(&self, p: ParticipantId) -> bool {
        self.participants
            .get(&p)
            .is_some_and(|x| x.presence == Presence::Admitted)
    }

    /// Whether a track is being forwarded now.
    pub fn is_forwarding(&self, track: TrackId) -> bool {
        self.forwarding.contains(&track)
    }

    /// Whether a participant is receiving media now.
    pub fn is_receiving(&self, p: ParticipantId) -> bool {
        self.receiving.contains(&p)
    }

    /// The next effect. Call until it returns [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        self.outputs
            .pop_front()
            .unwrap_or(Output::Timeout(self.next_deadline()))
    }

    /// Queues a message to a participant.
    fn send(&mut self, to: ParticipantId, msg: ServerMsg) {
        self.outputs.push_back(Output::Send(to, msg));
    }

    /// Queues a lesson event for the recording.
    fn record(&mut self, event: LessonEvent) {
        self.outputs.push_back(Output::Record(Record::Event(event)));
    }
}
