//! The lesson task: owns one [`Lesson`], applies its effects in order,
//! reads its lesson's close for it, and sleeps until its next deadline.
//! Every rule is the core's; this only moves bytes and counts what happened
//! for the metrics.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaperone_lesson::{Lesson, Output, Record};
use chaperone_protocol::event::{Compliance, HoldReason, LessonEvent};
use chaperone_protocol::signal::ServerMsg;
use chaperone_protocol::{LessonId, ParticipantId};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tracing::{debug, error, info, warn};

use super::handle::Command;
use super::{INBOX_CAPACITY, Outbound, RoomDeps, RoomHandle, RoomRecord};
use crate::catalog::Windows;
use crate::clock::{now, unix_millis};
use crate::errors;
use crate::media::MediaError;

/// How long the task waits before reading its lesson's close again after
/// the store failed to answer.
const WINDOW_RETRY: Duration = Duration::from_secs(5);

/// The read of a lesson's close (Unix ms; `None`: it has none), retried
/// until the store answers.
type WindowRead = Pin<Box<dyn Future<Output = Option<u64>> + Send>>;

/// Starts a task for `lesson`.
pub fn spawn(lesson: Lesson, deps: RoomDeps) -> RoomHandle {
    start(lesson, deps, None, None, 0, None)
}

pub(super) fn start(
    lesson: Lesson,
    deps: RoomDeps,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    idle_close: Option<Duration>,
    epoch: u64,
    windows: Option<Windows>,
) -> RoomHandle {
    let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
    let id = lesson.id();
    let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let task = RoomTask {
        id,
        ended: ended.clone(),
        lesson,
        deps,
        conns: HashMap::new(),
        in_media: HashSet::new(),
        gone: Vec::new(),
        metrics,
        control: None,
        waiting_since: HashMap::new(),
        held: Vec::new(),
        idle_close,
        empty_since: Some(now()),
        epoch,
        windows,
        // The close is read as soon as the task starts.
        window_stale: true,
    };
    // Every event of the lesson task carries the lesson id (its span).
    let span = tracing::info_span!("lesson", lesson = %id);
    tokio::spawn(tracing::Instrument::instrument(task.run(rx), span));
    RoomHandle {
        lesson: id,
        tx,
        ended,
    }
}

struct RoomTask {
    id: LessonId,
    /// Shared with the handles: set when the task stops because the lesson ended.
    ended: Arc<std::sync::atomic::AtomicBool>,
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
    /// How long the task runs with nobody connected (None: until the lesson ends).
    idle_close: Option<Duration>,
    /// Since when nobody has been connected (None: someone is).
    empty_since: Option<Instant>,
    /// The fencing epoch of this node's lease on the lesson (0 without a
    /// cluster).
    epoch: u64,
    /// Where the lesson's close is read (None: the lesson has none).
    windows: Option<Windows>,
    /// The close must be read (again): at the start, and when told the
    /// window changed.
    window_stale: bool,
}

impl RoomTask {
    async fn run(mut self, mut inbox: mpsc::Receiver<Command>) {
        info!(lesson = %self.id, "lesson task started");
        self.record(RoomRecord::Opened {
            lesson: self.id,
            epoch: self.epoch,
        })
        .await;
        // The read of the lesson's close under way, if any: a newer request
        // replaces it (the latest description wins).
        let mut window_read: Option<WindowRead> = None;
        loop {
            if std::mem::take(&mut self.window_stale) {
                window_read = self.read_window();
            }
            let deadline = self.drain().await;
            // An ended lesson with nobody connected is finished: its task
            // stops, its memory and timers go (its recording is already
            // complete: the feed sends `End` on its own after `Ended`).
            if self.lesson.is_ended() && self.conns.is_empty() {
                self.ended.store(true, std::sync::atomic::Ordering::Release);
                break;
            }
            // Nobody connected for the idle timeout: the room closes (the
            // same stop, without ending the lesson). Its control state is
            // already persisted (every change is); its feed is told to
            // write everything and finish, so the recording is complete up
            // to here; a later join starts the task again from the snapshot
            // and the recording continues.
            let idle_at = self.idle_deadline();
            if idle_at.is_some_and(|at| now() >= at) {
                info!(lesson = %self.id, "nobody connected for the idle timeout: closing the room");
                self.record(RoomRecord::Closed { lesson: self.id }).await;
                break;
            }
            let deadline = match (deadline, idle_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = inbox.recv() => match cmd {
                    Some(Command::Shutdown) | None => {
                        // Let go here (another node has it now, or this one
                        // is draining): the feed sends what it holds and
                        // finishes, rather than stay connected beside the
                        // next owner's.
                        self.record(RoomRecord::Closed { lesson: self.id }).await;
                        break;
                    }
                    Some(cmd) => self.handle(cmd).await,
                },
                () = sleep => self.lesson.handle_timeout(now()),
                closes = async {
                    match window_read.as_mut() {
                        Some(read) => read.await,
                        None => std::future::pending().await,
                    }
                }, if window_read.is_some() => {
                    window_read = None;
                    let at = closes.map(instant_of);
                    debug!(lesson = %self.id, closes_at_ms = ?closes, "the lesson's close");
                    self.lesson.handle_window(now(), at);
                }
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
        // Everything the lesson held is freed here; the allocator is asked
        // to give it back to the system (glibc keeps it otherwise).
        drop(self);
        drop(inbox);
        super::trim::release_free_memory_soon();
    }

    /// Reads when the lesson closes from its description, retrying while
    /// the store does not answer (`None`: this registry enforces no close).
    fn read_window(&self) -> Option<WindowRead> {
        let windows = self.windows.clone()?;
        let id = self.id;
        Some(Box::pin(async move {
            loop {
                match windows.closes_at(id).await {
                    Ok(at) => return at,
                    Err(e) => {
                        warn!(lesson = %id, error = %e, "cannot read the lesson's close; trying again");
                        tokio::time::sleep(WINDOW_RETRY).await;
                    }
                }
            }
        }))
    }

    /// When the room closes if nobody connects before then.
    fn idle_deadline(&mut self) -> Option<Instant> {
        if !self.conns.is_empty() {
            self.empty_since = None;
            return None;
        }
        let since = *self.empty_since.get_or_insert_with(now);
        self.idle_close.map(|idle| since + idle)
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
            Command::Snapshot { reply } => {
                let _ = reply.send(self.lesson.snapshot());
            }
            Command::VideoPaused {
                participant,
                paused,
            } => {
                if self.lesson.is_admitted(participant) {
                    self.deliver(
                        participant,
                        ServerMsg::MediaQuality {
                            video_paused: paused,
                        },
                    );
                }
            }
            Command::Window => self.window_stale = true,
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
            LessonEvent::Annotated { .. } => m.marks.inc(),
            LessonEvent::Refused { action, code, .. }
                if crate::metrics::ANNOTATION_ACTIONS.contains(&action.as_str()) =>
            {
                m.marks_refused
                    .with_label_values(&[&crate::metrics::code_label(*code)])
                    .inc();
            }
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
            // Staff's screen and camera come first in layer selection, and
            // estimates towards each subscriber are counted by role.
            if let Some(role) = self.lesson.role_of(p) {
                media.set_role(self.id, p, role).await?;
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

/// The monotonic instant of a wall-clock moment (Unix ms): now if it has
/// passed. The lesson core keeps time on the monotonic clock; a lesson's
/// window is wall-clock time shared by every node.
fn instant_of(unix_ms: u64) -> Instant {
    now() + Duration::from_millis(unix_ms.saturating_sub(unix_millis()))
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
