//! The lesson task: the thin async shell around one [`Lesson`].
//!
//! One tokio task per lesson `select!`s over its inbox and the lesson's next
//! deadline, feeds each input to the core with the current time, and carries
//! out the core's effects in order: messages to connections, forwarding
//! decisions and SDP to the media plane, records and alerts to the recorder
//! feed, snapshots to the state store. It makes no decision of its own
//! (quinn's `ConnectionDriver`).
//!
//! It must never block on a participant: each connection has a bounded
//! queue, and a connection that cannot keep up is closed rather than allowed
//! to stall the lesson for everyone else. It must never drop a record
//! silently: if the feed is gone, that is logged as an error every time.

use std::collections::{HashMap, HashSet};

use chaperone_protocol::signal::{ClientMsg, ErrorCode, Farewell, ServerMsg};
use chaperone_protocol::{LessonId, ParticipantId, UserRef};
use tokio::sync::{mpsc, oneshot};

use crate::lesson::{JoinRequest, Lesson, Output, Record, Snapshot};
use crate::media::MediaHandle;

/// Messages queued to one connection before it counts as too slow.
pub const CONNECTION_QUEUE: usize = 256;

/// Commands queued to a lesson task before senders wait.
const INBOX: usize = 1024;

/// What a connection receives from its lesson.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnEvent {
    /// Send this message to the client.
    Msg(ServerMsg),
    /// Close the connection (its `Goodbye` was the previous message).
    Close(Farewell),
}

/// What the lesson task hands to the recorder feed.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedItem {
    /// An event or chat message, with the wall-clock time it happened.
    Record {
        /// Microseconds since the Unix epoch.
        at_micros: u64,
        /// What to record.
        record: Record,
    },
    /// A concern or incident for the safeguarding team.
    Alert {
        /// Microseconds since the Unix epoch.
        at_micros: u64,
        /// The event.
        event: chaperone_protocol::event::LessonEvent,
    },
}

/// Where a lesson task sends what the core decides.
#[derive(Debug, Clone)]
pub struct RoomSinks {
    /// The media plane, if this node forwards media.
    pub media: Option<MediaHandle>,
    /// The recorder feed (records and alerts, in order).
    pub feed: mpsc::Sender<(LessonId, FeedItem)>,
    /// Snapshots to persist, latest last.
    pub persist: Option<mpsc::Sender<(LessonId, Snapshot)>>,
}

enum Command {
    Join {
        req: JoinRequest,
        conn: mpsc::Sender<ConnEvent>,
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
}

/// A handle to a running lesson task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RoomHandle {
    lesson: LessonId,
    tx: mpsc::Sender<Command>,
}

/// The lesson task has stopped (the lesson ended and everyone left, or the
/// node is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the lesson is no longer running on this node")]
pub struct RoomGone;

impl RoomHandle {
    /// The lesson.
    pub fn lesson(&self) -> LessonId {
        self.lesson
    }

    /// Asks to join; `conn` receives the participant's messages.
    pub async fn join(
        &self,
        req: JoinRequest,
        conn: mpsc::Sender<ConnEvent>,
    ) -> Result<Result<ParticipantId, ErrorCode>, RoomGone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Join { req, conn, reply })
            .await
            .map_err(|_| RoomGone)?;
        rx.await.map_err(|_| RoomGone)
    }

    /// A message from a participant.
    pub async fn message(&self, from: ParticipantId, msg: ClientMsg) -> Result<(), RoomGone> {
        self.send(Command::Message { from, msg }).await
    }

    /// A participant's connection closed.
    pub async fn leave(&self, participant: ParticipantId) -> Result<(), RoomGone> {
        self.send(Command::Leave { participant }).await
    }

    /// The recorder feed became attached or was lost.
    pub async fn recorder(&self, attached: bool) -> Result<(), RoomGone> {
        self.send(Command::Recorder { attached }).await
    }

    /// A user was blocked everywhere.
    pub async fn block(&self, user: UserRef) -> Result<(), RoomGone> {
        self.send(Command::Block { user }).await
    }

    /// A block was lifted.
    pub async fn unblock(&self, user: UserRef) -> Result<(), RoomGone> {
        self.send(Command::Unblock { user }).await
    }

    async fn send(&self, cmd: Command) -> Result<(), RoomGone> {
        self.tx.send(cmd).await.map_err(|_| RoomGone)
    }
}

/// Starts the task driving `lesson`.
pub fn spawn(lesson: Lesson, sinks: RoomSinks) -> RoomHandle {
    let (tx, rx) = mpsc::channel(INBOX);
    let id = lesson.id();
    tokio::spawn(
        Room {
            lesson,
            sinks,
            conns: HashMap::new(),
            in_media: HashSet::new(),
            deadline: None,
        }
        .run(rx),
    );
    RoomHandle { lesson: id, tx }
}

struct Room {
    lesson: Lesson,
    sinks: RoomSinks,
    conns: HashMap<ParticipantId, mpsc::Sender<ConnEvent>>,
    /// Participants the media plane knows about.
    in_media: HashSet<ParticipantId>,
    deadline: Option<std::time::Instant>,
}

impl Room {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let id = self.lesson.id();
        self.apply_outputs().await;
        loop {
            let sleep = async {
                match self.deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd),
                    None => break,
                },
                () = sleep => self.lesson.handle_timeout(crate::clock::now()),
            }
            self.apply_outputs().await;
            if self.lesson.is_ended() && self.conns.is_empty() {
                break;
            }
        }
        tracing::info!(lesson = %id, "lesson task stopped");
    }

    fn handle(&mut self, cmd: Command) {
        let now = crate::clock::now();
        match cmd {
            Command::Join { req, conn, reply } => {
                let result = self.lesson.handle_join(now, req);
                if let Ok(p) = result {
                    // Registered before the outputs are applied, so the
                    // participant receives its welcome.
                    self.conns.insert(p, conn);
                }
                let _ = reply.send(result);
            }
            Command::Message { from, msg } => self.lesson.handle_message(now, from, msg),
            Command::Leave { participant } => {
                self.conns.remove(&participant);
                self.lesson.handle_leave(now, participant);
            }
            Command::Recorder { attached } => self.lesson.handle_recorder(now, attached),
            Command::Block { user } => self.lesson.handle_block(now, &user),
            Command::Unblock { user } => self.lesson.handle_unblock(now, &user),
        }
    }

    /// Carries out every pending effect, in order.
    async fn apply_outputs(&mut self) {
        let lesson = self.lesson.id();
        loop {
            match self.lesson.poll_output() {
                Output::Timeout(at) => {
                    self.deadline = at;
                    return;
                }
                Output::Send(p, msg) => self.deliver(p, ConnEvent::Msg(msg)),
                Output::Disconnect(p, why) => {
                    self.deliver(p, ConnEvent::Close(why));
                    self.conns.remove(&p);
                    self.leave_media(p).await;
                }
                Output::Forward { track, on } => {
                    if let Some(media) = &self.sinks.media
                        && let Err(e) = media.set_forward(lesson, track, on).await
                    {
                        tracing::error!(%lesson, %track, on, error = %e, "media plane refused a forwarding change");
                    }
                }
                Output::Receive { participant, on } => {
                    if let Some(media) = &self.sinks.media
                        && let Err(e) = media.set_receive(lesson, participant, on).await
                    {
                        tracing::error!(%lesson, %participant, on, error = %e, "media plane refused a receive change");
                    }
                }
                Output::MediaOffer { participant, sdp } => self.offer(participant, sdp).await,
                Output::MediaAnswer { participant, sdp } => {
                    if let Some(media) = &self.sinks.media
                        && let Err(e) = media.answer(lesson, participant, sdp).await
                    {
                        tracing::warn!(%lesson, %participant, error = %e, "SDP answer refused");
                        self.deliver(participant, error_msg(ErrorCode::Malformed, "answer"));
                    }
                }
                Output::Record(record) => {
                    self.feed(FeedItem::Record {
                        at_micros: crate::clock::unix_millis() * 1000,
                        record,
                    })
                    .await;
                }
                Output::Alert(event) => {
                    self.feed(FeedItem::Alert {
                        at_micros: crate::clock::unix_millis() * 1000,
                        event,
                    })
                    .await;
                }
                Output::Persist(snapshot) => {
                    if let Some(persist) = &self.sinks.persist
                        && persist.send((lesson, snapshot)).await.is_err()
                    {
                        tracing::error!(%lesson, "state store writer is gone: snapshot not persisted");
                    }
                }
            }
        }
    }

    async fn offer(&mut self, participant: ParticipantId, sdp: String) {
        let lesson = self.lesson.id();
        let Some(media) = self.sinks.media.clone() else {
            self.deliver(participant, error_msg(ErrorCode::Internal, "offer"));
            return;
        };
        if self.in_media.insert(participant)
            && let Err(e) = media.add_participant(lesson, participant).await
        {
            tracing::error!(%lesson, %participant, error = %e, "media plane refused a participant");
        }
        match media.offer(lesson, participant, sdp).await {
            Ok(answer) => self.deliver(
                participant,
                ConnEvent::Msg(ServerMsg::Answer { sdp: answer }),
            ),
            Err(e) => {
                tracing::warn!(%lesson, %participant, error = %e, "SDP offer refused");
                self.deliver(participant, error_msg(ErrorCode::Malformed, "offer"));
            }
        }
    }

    async fn leave_media(&mut self, participant: ParticipantId) {
        if self.in_media.remove(&participant)
            && let Some(media) = &self.sinks.media
            && let Err(e) = media
                .remove_participant(self.lesson.id(), participant)
                .await
        {
            tracing::warn!(%participant, error = %e, "media plane could not remove a participant");
        }
    }

    /// Queues `event` for a connection; a connection whose queue is full is
    /// too slow to keep, and is told to close and forgotten.
    fn deliver(&mut self, p: ParticipantId, event: ConnEvent) {
        let Some(conn) = self.conns.get(&p) else {
            return;
        };
        if conn.try_send(event).is_err() {
            tracing::warn!(lesson = %self.lesson.id(), participant = %p, "connection too slow or gone; closing it");
            self.conns.remove(&p);
            let now = crate::clock::now();
            self.lesson.handle_leave(now, p);
        }
    }

    /// Hands a record to the feed, waiting for room rather than dropping it:
    /// nothing recorded is ever lost. The feed buffers and spools on its own,
    /// so waiting here is backpressure, not a stall.
    async fn feed(&self, item: FeedItem) {
        let lesson = self.lesson.id();
        if self.sinks.feed.send((lesson, item)).await.is_err() {
            tracing::error!(%lesson, "recorder feed is closed: a record could not be handed over");
        }
    }
}

fn error_msg(code: ErrorCode, action: &str) -> ConnEvent {
    ConnEvent::Msg(ServerMsg::Error {
        code,
        action: Some(action.to_owned()),
    })
}

/// The lessons running on this node, by id.
#[derive(Debug, Clone, Default)]
pub struct Rooms {
    inner: std::sync::Arc<std::sync::Mutex<HashMap<LessonId, RoomHandle>>>,
}

impl Rooms {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LessonId, RoomHandle>> {
        // Each critical section is one map operation; a panic elsewhere cannot
        // leave the map half-updated, so a poisoned lock is still sound.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a running lesson.
    pub fn insert(&self, room: RoomHandle) {
        self.lock().insert(room.lesson(), room);
    }

    /// The lesson's task, if it runs here.
    pub fn get(&self, lesson: LessonId) -> Option<RoomHandle> {
        self.lock().get(&lesson).cloned()
    }

    /// Forgets a lesson.
    pub fn remove(&self, lesson: LessonId) {
        self.lock().remove(&lesson);
    }

    /// Every lesson running here.
    pub fn all(&self) -> Vec<RoomHandle> {
        self.lock().values().cloned().collect()
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
                    let _ = room.block(user.clone()).await;
                }
            }
            Ok(StoreEvent::Unblocked { user }) => {
                for room in rooms.all() {
                    let _ = room.unblock(user.clone()).await;
                }
            }
            Ok(StoreEvent::SessionsEnded { .. } | StoreEvent::Lesson { .. }) => {}
            Err(RecvError::Lagged(missed)) => {
                tracing::error!(missed, "missed cluster events; re-applying the block list");
                match store.list_blocks().await {
                    Ok(blocks) => {
                        for (user, _) in blocks {
                            for room in rooms.all() {
                                let _ = room.block(user.clone()).await;
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
