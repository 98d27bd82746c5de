//! The lesson task: the thin async shell around one [`Lesson`], in the style
//! of quinn's `ConnectionDriver`.
//!
//! One tokio task per lesson owns the [`Lesson`] and `select!`s over its
//! inbox ([`RoomHandle`] commands: join, message, leave, recorder, block,
//! server offer, shutdown) and `sleep_until` the core's next deadline. After
//! every input it drains [`Lesson::poll_output`] and applies each effect in
//! order:
//!
//! | effect | goes to |
//! |---|---|
//! | `Send` | that participant's connection channel (bounded; `try_send`) |
//! | `Forward`, `Receive`, `MediaOffer`, `MediaAnswer` | the optional [`MediaHandle`] |
//! | `Record`, `Alert` | the [`RoomRecord`] channel the recorder feed consumes |
//! | `Persist` | the optional [`PersistFn`] |
//! | `Disconnect` | that connection: [`Outbound::Close`] after its `Goodbye` |
//!
//! It must never decide anything (every rule is the core's), never block the
//! lesson on one participant's connection (a connection that cannot keep up
//! is dropped and treated as having left), and never drop a record silently.
//! It is the only lesson code that reads the clock, through [`now`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chaperone_protocol::event::{Compliance, HoldReason, LessonEvent};
use chaperone_protocol::signal::{ClientMsg, ErrorCode, Farewell, ServerMsg};
use chaperone_protocol::{LessonId, ParticipantId, UserRef};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::media::{MediaError, MediaHandle};
use crate::signal::errors;
use chaperone_lesson::{JoinRequest, Lesson, LessonConfig, LessonSetup, Output, Record, Snapshot};

/// Commands queued to one lesson task before senders wait.
pub const INBOX_CAPACITY: usize = 1024;

/// The shell's clock: the one place lesson code reads the time.
///
/// It reads tokio's clock (not `std::time::Instant::now`, which clippy bans
/// outside the shell) so that `#[tokio::test(start_paused = true)]` drives
/// the lesson's graces in virtual time; outside paused tests the two agree.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// What the lesson task sends down one participant's connection.
#[derive(Clone, Debug, PartialEq)]
pub enum Outbound {
    /// A message to write to the socket.
    Msg(ServerMsg),
    /// Close the socket for this reason (the `Goodbye` has already been queued).
    Close(Farewell),
}

/// Something for the recorder feed: every [`Record`] and [`Output::Alert`]
/// of a lesson, stamped with the shell's clock.
#[derive(Clone, Debug, PartialEq)]
pub enum RoomRecord {
    /// The lesson's task started: its recorder feed should connect now, so
    /// that the recording is attached before pupils need admitting.
    Opened {
        /// The lesson.
        lesson: LessonId,
    },
    /// An event or a chat message to append to the lesson's recording.
    Record {
        /// The lesson.
        lesson: LessonId,
        /// When the shell applied it.
        at: Instant,
        /// What to record.
        record: Record,
    },
    /// A concern or incident the safeguarding team must see.
    Alert {
        /// The lesson.
        lesson: LessonId,
        /// When the shell applied it.
        at: Instant,
        /// The concern or incident (also recorded as a [`RoomRecord::Record`]).
        event: LessonEvent,
    },
}

/// Saves a lesson's control state (the store plugs in here). Called on the
/// lesson task, so it must not block: queue the write and return.
pub type PersistFn = Arc<dyn Fn(&Snapshot) + Send + Sync>;

/// What every lesson task is connected to.
#[derive(Clone)]
pub struct RoomDeps {
    /// Where records and alerts go (the recorder feed). If it is full the
    /// lesson waits: nothing recorded is dropped.
    pub records: mpsc::Sender<RoomRecord>,
    /// The media plane, if this node runs one.
    pub media: Option<MediaHandle>,
    /// Where snapshots go, if the lesson is persisted.
    pub persist: Option<PersistFn>,
}

impl fmt::Debug for RoomDeps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomDeps")
            .field("media", &self.media)
            .field("persist", &self.persist.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum Command {
    Join {
        req: Box<JoinRequest>,
        conn: mpsc::Sender<Outbound>,
        reply: oneshot::Sender<Result<ParticipantId, ErrorCode>>,
    },
    Message {
        from: ParticipantId,
        msg: ClientMsg,
    },
    Leave {
        participant: ParticipantId,
    },
    Recorder {
        attached: bool,
    },
    Block {
        user: UserRef,
    },
    Unblock {
        user: UserRef,
    },
    ServerOffer {
        participant: ParticipantId,
        sdp: String,
    },
    Shutdown,
}

/// A cheap, cloneable handle to one lesson's task.
#[derive(Clone, Debug)]
pub struct RoomHandle {
    lesson: LessonId,
    tx: mpsc::Sender<Command>,
}

impl RoomHandle {
    /// The lesson.
    pub fn lesson(&self) -> LessonId {
        self.lesson
    }

    /// Whether the lesson task has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    async fn send(&self, cmd: Command) -> bool {
        self.tx.send(cmd).await.is_ok()
    }

    /// Someone authenticated asks to join; `conn` receives everything the
    /// lesson says to them from now on (starting with `Welcome`). A stopped
    /// lesson answers `NotFound`, as for a lesson that was never here.
    pub async fn join(
        &self,
        req: JoinRequest,
        conn: mpsc::Sender<Outbound>,
    ) -> Result<ParticipantId, ErrorCode> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Join {
            req: Box::new(req),
            conn,
            reply,
        };
        if !self.send(cmd).await {
            return Err(ErrorCode::NotFound);
        }
        rx.await.unwrap_or(Err(ErrorCode::NotFound))
    }

    /// A message from a joined participant's connection.
    pub async fn message(&self, from: ParticipantId, msg: ClientMsg) {
        self.send(Command::Message { from, msg }).await;
    }

    /// A participant's connection ended.
    pub async fn leave(&self, participant: ParticipantId) {
        self.send(Command::Leave { participant }).await;
    }

    /// [`RoomHandle::leave`] from a synchronous context (a drop guard): never
    /// waits, and never loses the leave while a runtime is running.
    pub fn leave_soon(&self, participant: ParticipantId) {
        match self.tx.try_send(Command::Leave { participant }) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(cmd)) => {
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let tx = self.tx.clone();
                    rt.spawn(async move {
                        let _ = tx.send(cmd).await;
                    });
                }
            }
        }
    }

    /// The recorder feed became attached (acknowledged) or was lost.
    pub async fn recorder(&self, attached: bool) {
        self.send(Command::Recorder { attached }).await;
    }

    /// A user was blocked everywhere.
    pub async fn block(&self, user: UserRef) {
        self.send(Command::Block { user }).await;
    }

    /// A block was lifted.
    pub async fn unblock(&self, user: UserRef) {
        self.send(Command::Unblock { user }).await;
    }

    /// The media plane wants to renegotiate with a participant (a
    /// [`crate::media::MediaEvent::Offer`]); it goes to them as `ServerMsg::Offer`.
    pub async fn server_offer(&self, participant: ParticipantId, sdp: String) {
        self.send(Command::ServerOffer { participant, sdp }).await;
    }

    /// Stops the lesson task; every connection is closed.
    pub async fn shutdown(&self) {
        self.send(Command::Shutdown).await;
    }
}

/// Every lesson task on this node, by lesson id.
#[derive(Clone, Debug)]
pub struct Rooms {
    deps: RoomDeps,
    rooms: Arc<Mutex<HashMap<LessonId, RoomHandle>>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl Rooms {
    /// An empty registry whose lessons use `deps`.
    pub fn new(deps: RoomDeps) -> Self {
        Self {
            deps,
            rooms: Arc::default(),
            metrics: None,
        }
    }

    /// The same registry, whose lessons report to `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LessonId, RoomHandle>> {
        // A poisoned map is still a valid map: every update is one insert or remove.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The running task of a lesson, if this node has one.
    pub fn get(&self, lesson: LessonId) -> Option<RoomHandle> {
        let mut rooms = self.lock();
        match rooms.get(&lesson) {
            Some(h) if h.is_closed() => {
                rooms.remove(&lesson);
                None
            }
            other => other.cloned(),
        }
    }

    /// The lesson's task, starting it (a new, empty lesson) if it is not running.
    pub fn open(&self, setup: LessonSetup, config: LessonConfig) -> RoomHandle {
        let id = setup.id;
        self.get_or_start(id, || Lesson::new(now(), setup, config))
    }

    /// The lesson's task, starting it from a persisted snapshot (another
    /// node's lesson taken over) if it is not running.
    pub fn restore(
        &self,
        setup: LessonSetup,
        config: LessonConfig,
        snapshot: Snapshot,
    ) -> Result<RoomHandle, chaperone_lesson::SnapshotError> {
        let id = setup.id;
        if let Some(h) = self.get(id) {
            return Ok(h);
        }
        let lesson = Lesson::restore(now(), setup, config, snapshot)?;
        Ok(self.get_or_start(id, || lesson))
    }

    fn get_or_start(&self, id: LessonId, make: impl FnOnce() -> Lesson) -> RoomHandle {
        let mut rooms = self.lock();
        if let Some(h) = rooms.get(&id).filter(|h| !h.is_closed()) {
            return h.clone();
        }
        let handle = start(make(), self.deps.clone(), self.metrics.clone());
        rooms.insert(id, handle.clone());
        handle
    }

    /// Every lesson running on this node.
    pub fn all(&self) -> Vec<RoomHandle> {
        self.lock().values().cloned().collect()
    }

    /// Stops every lesson task.
    pub async fn shutdown_all(&self) {
        let all: Vec<RoomHandle> = self.lock().drain().map(|(_, h)| h).collect();
        for h in all {
            h.shutdown().await;
        }
    }

    /// Routes the media plane's server offers to their lessons until the
    /// media driver stops.
    pub fn route_media_events(
        &self,
        mut events: mpsc::UnboundedReceiver<crate::media::MediaEvent>,
    ) -> tokio::task::JoinHandle<()> {
        let rooms = self.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    crate::media::MediaEvent::Offer {
                        lesson,
                        participant,
                        sdp,
                    } => match rooms.get(lesson) {
                        Some(room) => room.server_offer(participant, sdp).await,
                        None => debug!(%lesson, %participant, "media offer for no lesson"),
                    },
                }
            }
        })
    }
}

/// Starts a task for `lesson`.
pub fn spawn(lesson: Lesson, deps: RoomDeps) -> RoomHandle {
    start(lesson, deps, None)
}

fn start(
    lesson: Lesson,
    deps: RoomDeps,
    metrics: Option<Arc<crate::metrics::Metrics>>,
) -> RoomHandle {
    let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
    let id = lesson.id();
    let task = RoomTask {
        id,
        lesson,
        deps,
        conns: HashMap::new(),
        in_media: HashSet::new(),
        gone: Vec::new(),
        metrics,
        control: None,
        waiting_since: HashMap::new(),
        held: Vec::new(),
    };
    // Every event of the lesson task carries the lesson id (its span).
    let span = tracing::info_span!("lesson", lesson = %id);
    tokio::spawn(tracing::Instrument::instrument(task.run(rx), span));
    RoomHandle { lesson: id, tx }
}

struct RoomTask {
    id: LessonId,
    lesson: Lesson,
    deps: RoomDeps,
    /// Each present participant's connection.
    conns: HashMap<ParticipantId, mpsc::Sender<Outbound>>,
    /// Participants added to the media plane.
    in_media: HashSet<ParticipantId>,
    /// Connections dropped while applying effects, to be told to the core.
    gone: Vec<ParticipantId>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The message being applied and when it arrived, until its first
    /// forwarding change has reached the SFU (control latency).
    control: Option<(Instant, &'static str)>,
    /// Pupils in the waiting room, since when (waiting-room time).
    waiting_since: HashMap<ParticipantId, Instant>,
    /// Why the lesson's pupils are held now, as counted in the metrics.
    held: Vec<HoldReason>,
}

impl RoomTask {
    async fn run(mut self, mut inbox: mpsc::Receiver<Command>) {
        info!(lesson = %self.id, "lesson task started");
        self.record(RoomRecord::Opened { lesson: self.id }).await;
        loop {
            let deadline = self.drain().await;
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = inbox.recv() => match cmd {
                    Some(Command::Shutdown) | None => break,
                    Some(cmd) => self.handle(cmd).await,
                },
                () = sleep => self.lesson.handle_timeout(now()),
            }
        }
        for p in std::mem::take(&mut self.in_media) {
            self.media_remove(p).await;
        }
        for p in std::mem::take(&mut self.conns).into_keys() {
            self.forget(p);
        }
        // A stopped lesson holds nobody.
        self.set_held(Vec::new());
        // Dropping the senders (above) closes every connection.
        info!(lesson = %self.id, "lesson task stopped");
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Join { req, conn, reply } => {
                let user = req.user.clone();
                let result = self.lesson.handle_join(now(), *req);
                if let Some(m) = &self.metrics {
                    m.joins.joined(self.id, &user, result.ok());
                }
                if let Ok(p) = result {
                    // Registered before the core's output is drained, so the
                    // `Welcome` it just queued reaches this connection.
                    self.conns.insert(p, conn);
                }
                if reply.send(result).is_err()
                    && let Ok(p) = result
                {
                    // The connection gave up waiting: it will never read.
                    debug!(lesson = %self.id, participant = %p, "joiner went away");
                    self.conns.remove(&p);
                    self.forget(p);
                    self.lesson.handle_leave(now(), p);
                }
            }
            Command::Message { from, msg } => {
                if self.conns.contains_key(&from) {
                    let at = now();
                    self.control = Some((at, msg.name()));
                    self.lesson.handle_message(at, from, msg);
                }
            }
            Command::Leave { participant } => {
                self.conns.remove(&participant);
                self.forget(participant);
                self.lesson.handle_leave(now(), participant);
                self.media_remove(participant).await;
            }
            Command::Recorder { attached } => self.lesson.handle_recorder(now(), attached),
            Command::Block { user } => self.lesson.handle_block(now(), &user),
            Command::Unblock { user } => self.lesson.handle_unblock(now(), &user),
            Command::ServerOffer { participant, sdp } => {
                // Only someone the core lets receive media is in the media
                // plane; a stale offer for anyone else is dropped.
                if self.lesson.is_admitted(participant) {
                    self.deliver(participant, ServerMsg::Offer { sdp });
                }
            }
            Command::Shutdown => {}
        }
    }

    /// Applies every queued effect, in order; returns the next deadline.
    async fn drain(&mut self) -> Option<Instant> {
        loop {
            match self.lesson.poll_output() {
                Output::Timeout(at) => {
                    if self.gone.is_empty() {
                        // A message that changed no forwarding is not a control.
                        self.control = None;
                        return at;
                    }
                    let now = now();
                    for p in std::mem::take(&mut self.gone) {
                        self.forget(p);
                        self.lesson.handle_leave(now, p);
                        self.media_remove(p).await;
                    }
                }
                Output::Send(p, msg) => self.deliver(p, msg),
                Output::Forward { track, on } => {
                    if let Some(media) = &self.deps.media
                        && let Err(e) = media.set_forward(self.id, track, on).await
                    {
                        error!(lesson = %self.id, %track, on, error = %e, "media: forward failed");
                    }
                    if let (Some(m), Some((at, kind))) = (&self.metrics, self.control.take()) {
                        m.control_seconds
                            .observe(now().saturating_duration_since(at).as_secs_f64());
                        m.controls.with_label_values(&[kind]).inc();
                    }
                }
                Output::Receive { participant, on } => {
                    if let Some(media) = &self.deps.media
                        && let Err(e) = media.set_receive(self.id, participant, on).await
                    {
                        error!(lesson = %self.id, %participant, on, error = %e, "media: receive failed");
                    }
                }
                Output::MediaOffer { participant, sdp } => {
                    let reply = match self.media_offer(participant, sdp).await {
                        Ok(answer) => ServerMsg::Answer { sdp: answer },
                        Err(e) => media_refusal(self.id, participant, "offer", &e),
                    };
                    self.deliver(participant, reply);
                }
                Output::MediaAnswer { participant, sdp } => {
                    let result = match &self.deps.media {
                        Some(media) => media.answer(self.id, participant, sdp).await,
                        None => Err(MediaError::Stopped),
                    };
                    if let Err(e) = result {
                        let reply = media_refusal(self.id, participant, "answer", &e);
                        self.deliver(participant, reply);
                    }
                }
                Output::Record(record) => {
                    let at = now();
                    self.observe(&record, at);
                    self.record(RoomRecord::Record {
                        lesson: self.id,
                        at,
                        record,
                    })
                    .await;
                }
                Output::Alert(event) => {
                    let at = now();
                    self.record(RoomRecord::Alert {
                        lesson: self.id,
                        at,
                        event,
                    })
                    .await;
                }
                Output::Persist(snapshot) => {
                    if let Some(persist) = &self.deps.persist {
                        persist(&snapshot);
                    }
                }
                Output::Disconnect(p, farewell) => {
                    // The core has already removed them; only the socket is left.
                    if let Some(conn) = self.conns.remove(&p) {
                        // If the queue is full, dropping the sender closes it anyway.
                        let _ = conn.try_send(Outbound::Close(farewell));
                    }
                    self.forget(p);
                    self.media_remove(p).await;
                }
            }
        }
    }

    /// Counts what a record says for the metrics: the core stays pure, the
    /// shell counts its outputs as it applies them.
    fn observe(&mut self, record: &Record, at: Instant) {
        let Some(m) = self.metrics.clone() else {
            return;
        };
        let Record::Event(event) = record else {
            return;
        };
        match event {
            LessonEvent::Waiting { participant } => {
                self.waiting_since.insert(*participant, at);
            }
            LessonEvent::Admitted { participant, .. } => {
                if let Some(since) = self.waiting_since.remove(participant) {
                    m.waiting_room_seconds
                        .observe(at.saturating_duration_since(since).as_secs_f64());
                }
            }
            LessonEvent::Denied { participant, .. }
            | LessonEvent::Removed { participant, .. }
            | LessonEvent::Left { participant } => {
                self.waiting_since.remove(participant);
            }
            LessonEvent::Hold { reasons } => self.set_held(reasons.clone()),
            LessonEvent::Compliance {
                kind: Compliance::TeacherCameraOff,
                ..
            } => m.teacher_camera_off.inc(),
            LessonEvent::Concern { .. } => m.concerns.inc(),
            LessonEvent::Incident { .. } => m.incidents.inc(),
            LessonEvent::JoinRefused { code, .. } => {
                m.join_refused(&crate::metrics::code_label(*code));
            }
            _ => {}
        }
    }

    /// Moves the `lessons_held` gauges from the reasons counted so far to `now`.
    fn set_held(&mut self, now: Vec<HoldReason>) {
        if let Some(m) = &self.metrics {
            for r in self.held.iter().filter(|r| !now.contains(r)) {
                m.lessons_held
                    .with_label_values(&[crate::metrics::hold_label(*r)])
                    .dec();
            }
            for r in now.iter().filter(|r| !self.held.contains(r)) {
                m.lessons_held
                    .with_label_values(&[crate::metrics::hold_label(*r)])
                    .inc();
            }
        }
        self.held = now;
    }

    /// A participant is gone: nothing of theirs is timed any more.
    fn forget(&mut self, p: ParticipantId) {
        self.waiting_since.remove(&p);
        if let Some(m) = &self.metrics {
            m.joins.left(self.id, p);
        }
    }

    /// Queues a message to a participant's connection without waiting. A
    /// connection that cannot keep up is dropped and treated as a leave.
    fn deliver(&mut self, p: ParticipantId, msg: ServerMsg) {
        let Some(conn) = self.conns.get(&p) else {
            return;
        };
        match conn.try_send(Outbound::Msg(msg)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                warn!(lesson = %self.id, participant = %p, "connection cannot keep up; disconnecting");
                self.conns.remove(&p);
                self.gone.push(p);
            }
            Err(TrySendError::Closed(_)) => {
                self.conns.remove(&p);
                self.gone.push(p);
            }
        }
    }

    async fn record(&self, rec: RoomRecord) {
        let rec = match self.deps.records.try_send(rec) {
            Ok(()) => return,
            Err(TrySendError::Full(rec)) => {
                warn!(lesson = %self.id, "recorder feed is full; the lesson waits for it");
                rec
            }
            Err(TrySendError::Closed(rec)) => rec,
        };
        if self.deps.records.send(rec).await.is_err() {
            error!(lesson = %self.id, "recorder feed is closed: a lesson record was not delivered");
        }
    }

    async fn media_offer(&mut self, p: ParticipantId, sdp: String) -> Result<String, MediaError> {
        let media = self.deps.media.as_ref().ok_or(MediaError::Stopped)?;
        if !self.in_media.contains(&p) {
            match media.add_participant(self.id, p).await {
                Ok(()) | Err(MediaError::AlreadyAdded { .. }) => {
                    self.in_media.insert(p);
                }
                Err(e) => return Err(e),
            }
        }
        media.offer(self.id, p, sdp).await
    }

    async fn media_remove(&mut self, p: ParticipantId) {
        if self.in_media.remove(&p)
            && let Some(media) = &self.deps.media
            && let Err(e) = media.remove_participant(self.id, p).await
        {
            error!(lesson = %self.id, participant = %p, error = %e, "media: remove failed");
        }
    }
}

/// The typed refusal for a failed media negotiation, logged.
fn media_refusal(
    lesson: LessonId,
    participant: ParticipantId,
    action: &str,
    e: &MediaError,
) -> ServerMsg {
    warn!(%lesson, %participant, action, error = %e, "media negotiation refused");
    ServerMsg::Error {
        code: errors::media_error_code(e),
        action: Some(action.to_owned()),
    }
}

/// Carries cluster events from the state store's pub/sub to every lesson on
/// this node, until the store's event stream closes: a block published on
/// any node removes the person from every lesson here.
///
/// If this node falls behind and misses events, it re-reads the whole block
/// list and applies it (blocking is idempotent), so a missed message never
/// leaves a blocked person in a lesson.
pub async fn relay_cluster_events<S: crate::store::StateStore>(store: S, rooms: Rooms) {
    use crate::store::StoreEvent;
    use tokio::sync::broadcast::error::RecvError;
    let mut events = store.subscribe();
    loop {
        match events.recv().await {
            Ok(StoreEvent::Blocked { user }) => {
                for room in rooms.all() {
                    room.block(user.clone()).await;
                }
            }
            Ok(StoreEvent::Unblocked { user }) => {
                for room in rooms.all() {
                    room.unblock(user.clone()).await;
                }
            }
            Ok(StoreEvent::SessionsEnded { .. } | StoreEvent::Lesson { .. }) => {}
            Err(RecvError::Lagged(missed)) => {
                tracing::error!(missed, "missed cluster events; re-applying the block list");
                match store.list_blocks().await {
                    Ok(blocks) => {
                        for (user, _) in blocks {
                            for room in rooms.all() {
                                room.block(user.clone()).await;
                            }
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot re-read the block list"),
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}
