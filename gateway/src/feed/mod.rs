//! The recorder feed: every lesson's records (events, public and private
//! chat) and every media frame the SFU forwarded become feed frames
//! (`protocol::feed`) streamed over one WebSocket per lesson to a recorder
//! (`recorder serve`, or the same service run in-process by `gateway --dev`
//! and single-node deployments).
//!
//! What it must never do: drop a frame, or tell a lesson its recording is
//! attached when it is not. Hence:
//!
//! - every frame stays in the lesson's [`FeedLog`] (memory, then a local
//!   spool file) until the recorder acknowledges it as durable, and is
//!   replayed, in order, after a reconnect, to the same or another recorder;
//! - the recording gate is the acknowledged feed: a lesson is told its
//!   recorder is attached when a recorder has answered its `Hello`, and lost
//!   when the connection drops or acknowledgements stop (the recorder sends
//!   one at least every second), or the spool passes its bound;
//! - a lesson's frames are numbered here from 1 and sent as `base + n`,
//!   where `base` is what the recorder already holds for the lesson when this
//!   node first reaches it (a lesson taken over from another node, or a
//!   gateway restarted mid-lesson, continues the archive's numbering instead
//!   of colliding with it: a first `Hello` says `resume_from: 0`).
//!
//! A lesson's final frame (`End`) follows its `Ended` event after a few
//! seconds (its participants' leaving events come in between); once the
//! recorder acknowledges it the lesson's feed is done.

pub mod embedded;
pub mod log;
mod readiness;
mod status;

pub use readiness::ReadinessProbe;
pub use status::{FeedFigures, FeedMetrics, FeedStatus};
use status::{LessonShare, Shared};

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chaperone_protocol::LessonId;
use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::feed::{FeedFrame, MAX_FEED_FRAME};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, error, info, warn};

use crate::auth::tokens::TokenIssuer;
use crate::clock::{now, unix_millis};
use crate::media::RecordedFrame;
use crate::room::{RoomRecord, Rooms};
use chaperone_lesson::Record;
use log::FeedLog;

/// How long after `Ended` the `End` frame follows (the last records).
const END_AFTER: Duration = Duration::from_secs(5);
/// Items queued to one lesson's feed before the hub waits.
const LESSON_QUEUE: usize = 8192;
/// Frames queued on one connection's writer.
const WRITER_QUEUE: usize = 256;
/// Longest wait for a recorder to accept a connection and answer `Hello`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Lifetime of the service token presented when connecting.
const SERVICE_TOKEN_SECS: u64 = 60;
/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// At shutdown, how long lessons may take to have everything acknowledged.
const DRAIN_LIMIT: Duration = Duration::from_secs(15);
/// How often a lesson's share of the node's figures (lag, buffer, spool) is
/// refreshed.
const FIGURES_EVERY: Duration = Duration::from_secs(1);

/// Settings of the feed.
#[derive(Clone, Debug)]
pub struct FeedSettings {
    /// Recorder base URLs (`ws://host:port`); the feed is `<url>/feed`. A
    /// lesson goes to one of them (by its id) and fails over in order.
    pub recorders: Vec<String>,
    /// Bytes of unacknowledged frames one lesson keeps in memory before
    /// spooling the oldest to disk.
    pub buffer_bytes: usize,
    /// Where spool files go.
    pub spool_dir: PathBuf,
    /// Spool bytes per lesson past which its recording counts as lost
    /// (pupils are held; nothing is dropped).
    pub spool_max_bytes: u64,
    /// Silence on a connection (no acknowledgement) after which it is lost.
    pub ack_timeout: Duration,
}

enum Item {
    Record { at: Instant, record: Record },
    Media(RecordedFrame),
    Stop,
}

struct LessonTx {
    tx: mpsc::Sender<Item>,
    task: JoinHandle<()>,
}

/// Starts the feed on the lessons' `records` and the SFU's `frames`; it
/// tells `rooms` when each lesson's recording is attached or lost.
pub fn spawn(
    settings: FeedSettings,
    tokens: Arc<TokenIssuer>,
    mut records: mpsc::Receiver<RoomRecord>,
    mut frames: mpsc::Receiver<RecordedFrame>,
    rooms: Rooms,
) -> (JoinHandle<()>, FeedStatus) {
    let shared = Arc::new(Shared::default());
    let status = FeedStatus(shared.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = std::fs::create_dir_all(&settings.spool_dir) {
            error!(dir = %settings.spool_dir.display(), error = %e, "feed spool directory unusable; spooling will fail");
        }
        let settings = Arc::new(settings);
        let mut lessons: HashMap<LessonId, LessonTx> = HashMap::new();
        let mut finished: HashSet<LessonId> = HashSet::new();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<LessonId>();
        let hub = Hub {
            settings,
            tokens,
            rooms,
            shared: shared.clone(),
            done: done_tx,
        };
        loop {
            tokio::select! {
                r = records.recv() => match r {
                    Some(r) => hub.route_record(&mut lessons, &finished, r).await,
                    None => break,
                },
                Some(f) = frames.recv() => {
                    let lesson = f.lesson;
                    hub.route(&mut lessons, &finished, lesson, Item::Media(f)).await;
                }
                Some(lesson) = done_rx.recv() => {
                    if let Some(l) = lessons.remove(&lesson) && l.task.is_finished() {
                        finished.insert(lesson);
                    }
                }
                () = shared.stop.notified() => break,
            }
        }
        // Shutdown: what is already queued goes in, then every lesson drains.
        while let Ok(r) = records.try_recv() {
            hub.route_record(&mut lessons, &finished, r).await;
        }
        while let Ok(f) = frames.try_recv() {
            let lesson = f.lesson;
            hub.route(&mut lessons, &finished, lesson, Item::Media(f))
                .await;
        }
        for l in lessons.values() {
            let _ = l.tx.send(Item::Stop).await;
        }
        for (lesson, l) in lessons {
            if tokio::time::timeout(DRAIN_LIMIT + Duration::from_secs(1), l.task)
                .await
                .is_err()
            {
                error!(%lesson, "lesson feed did not finish at shutdown");
            }
        }
    });
    (task, status)
}

struct Hub {
    settings: Arc<FeedSettings>,
    tokens: Arc<TokenIssuer>,
    rooms: Rooms,
    shared: Arc<Shared>,
    done: mpsc::UnboundedSender<LessonId>,
}

impl Hub {
    async fn route_record(
        &self,
        lessons: &mut HashMap<LessonId, LessonTx>,
        finished: &HashSet<LessonId>,
        r: RoomRecord,
    ) {
        match r {
            RoomRecord::Record { lesson, at, record } => {
                self.route(lessons, finished, lesson, Item::Record { at, record })
                    .await
            }
            RoomRecord::Opened { lesson } => {
                if !finished.contains(&lesson) {
                    self.lesson(lessons, lesson);
                }
            }
            RoomRecord::Alert { lesson, event, .. } => {
                // Also recorded as a Record; this is the safeguarding team's
                // signal. The kind only: a concern's words are for the DSL.
                let kind = match &event {
                    LessonEvent::Concern { participant, .. } => {
                        format!("concern from {participant}")
                    }
                    LessonEvent::Incident { .. } => "incident flagged".to_owned(),
                    _ => "alert".to_owned(),
                };
                warn!(target: "safeguarding", %lesson, %kind, "concern or incident raised");
            }
        }
    }

    fn lesson<'a>(
        &self,
        lessons: &'a mut HashMap<LessonId, LessonTx>,
        lesson: LessonId,
    ) -> &'a LessonTx {
        lessons.entry(lesson).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(LESSON_QUEUE);
            let spool = self.settings.spool_dir.join(format!(
                "{lesson}-{}-{:08x}.spool",
                std::process::id(),
                rand::random::<u32>()
            ));
            let feed = LessonFeed {
                lesson,
                log: FeedLog::new(self.settings.buffer_bytes, spool),
                settings: self.settings.clone(),
                tokens: self.tokens.clone(),
                gate: gate(lesson, self.rooms.clone()),
                share: LessonShare::new(self.shared.clone(), lesson),
                base: None,
                sent: 0,
                conn: Conn::Idle { retry_at: now() },
                attempt: 0,
                backoff: Duration::from_millis(100),
                told: None,
                ended_at: None,
                end_seq: None,
                stopping: None,
                max_sent: 0,
                flushed: false,
                figures_at: now(),
            };
            let done = self.done.clone();
            let task = tokio::spawn(async move {
                feed.run(rx).await;
                let _ = done.send(lesson);
            });
            LessonTx { tx, task }
        })
    }

    async fn route(
        &self,
        lessons: &mut HashMap<LessonId, LessonTx>,
        finished: &HashSet<LessonId>,
        lesson: LessonId,
        item: Item,
    ) {
        if finished.contains(&lesson) {
            let kind = match &item {
                Item::Media(_) => "media",
                Item::Record { .. } => "record",
                Item::Stop => return,
            };
            error!(%lesson, kind, "frame after the lesson's recording ended; not recorded");
            return;
        }
        let tx = self.lesson(lessons, lesson).tx.clone();
        if tx.send(item).await.is_err() {
            error!(%lesson, "lesson feed stopped; frame not recorded");
        }
    }
}

/// A lesson's connection to a recorder.
enum Conn {
    /// Not connected; try again at `retry_at`.
    Idle { retry_at: Instant },
    /// Connecting.
    Connecting(JoinHandle<Result<Connection, String>>),
    /// Connected and acknowledged.
    Up(Connection),
}

struct Connection {
    url: String,
    writer: mpsc::Sender<Message>,
    acks: mpsc::Receiver<u64>,
    /// What the recorder said it holds, answering `Hello`.
    first_ack: u64,
    last_ack_at: Instant,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Connection {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct LessonFeed {
    lesson: LessonId,
    log: FeedLog,
    settings: Arc<FeedSettings>,
    tokens: Arc<TokenIssuer>,
    /// The recording gate, as the room should see it (see [`gate`]).
    gate: tokio::sync::watch::Sender<bool>,
    share: LessonShare,
    /// The recorder's seq before this node's first frame (None until a
    /// recorder first answered).
    base: Option<u64>,
    /// Local seqs up to this have been sent on the current connection.
    sent: u64,
    conn: Conn,
    /// Failed attempts since the last success (which recorder is next).
    attempt: usize,
    backoff: Duration,
    /// What the room was last told (None: nothing yet).
    told: Option<bool>,
    /// When the lesson ended, if it did.
    ended_at: Option<Instant>,
    /// The local seq of the `End` frame, once appended.
    end_seq: Option<u64>,
    /// Shutdown: the deadline for everything to be acknowledged.
    stopping: Option<Instant>,
    max_sent: u64,
    /// At shutdown: a `Flush` was sent after the last frame on this connection.
    flushed: bool,
    /// When the figures are next refreshed: an absolute deadline, so a busy
    /// feed (woken by frames far more often than once a second) still
    /// refreshes them.
    figures_at: Instant,
}

fn micros_at(at: Instant) -> u64 {
    let age = now().saturating_duration_since(at);
    (unix_millis() * 1000).saturating_sub(u64::try_from(age.as_micros()).unwrap_or(u64::MAX))
}

/// `bytes` with the feed seq (bytes 6..14 of every frame that has one) set
/// to `seq`.
fn with_seq(bytes: &Bytes, seq: u64) -> Bytes {
    let mut out = bytes.to_vec();
    if let Some(field) = out.get_mut(6..14) {
        field.copy_from_slice(&seq.to_be_bytes());
    }
    Bytes::from(out)
}

impl LessonFeed {
    async fn run(mut self, mut inbox: mpsc::Receiver<Item>) {
        info!(lesson = %self.lesson, "lesson feed started");
        let mut inbox_open = true;
        loop {
            if self.finished() {
                break;
            }
            if let Some(deadline) = self.stopping
                && (self.log.all_acked() || now() >= deadline)
            {
                if !self.log.all_acked() {
                    error!(lesson = %self.lesson, unacknowledged = self.log.next_seq() - 1 - self.log.acked(),
                        "shutdown before the recorder acknowledged everything; those frames are lost");
                }
                break;
            }
            self.publish();
            let timer = self.next_timer();
            let want_send =
                self.sent + 1 < self.log.next_seq() || (self.stopping.is_some() && !self.flushed);
            let writer = match &self.conn {
                Conn::Up(c) if want_send => Some(c.writer.clone()),
                _ => None,
            };
            let wake = tokio::select! {
                item = inbox.recv(), if inbox_open => Wake::Item(item),
                permit = reserve(writer) => Wake::Permit(permit),
                event = conn_event(&mut self.conn) => event,
                () = tokio::time::sleep_until(timer.into()) => Wake::Timer,
            };
            match wake {
                Wake::Item(Some(Item::Stop) | None) => {
                    inbox_open = false;
                    self.stopping = Some(now() + DRAIN_LIMIT);
                }
                Wake::Item(Some(item)) => self.append(item),
                Wake::Permit(Some(permit)) => self.send_next(permit),
                Wake::Permit(None) => self.lost("the connection's writer stopped"),
                Wake::Ack(Some(up_to)) => self.on_ack(up_to),
                Wake::Ack(None) => self.lost("the recorder closed the connection"),
                Wake::Connected(joined) => self.on_connected(joined),
                Wake::Timer => self.on_timer(),
            }
        }
        info!(lesson = %self.lesson, frames = self.log.next_seq() - 1, "lesson feed done");
    }

    fn finished(&self) -> bool {
        self.end_seq.is_some_and(|e| self.log.acked() >= e)
    }

    /// Appends a record or media frame (and the `End` frame when due).
    fn append(&mut self, item: Item) {
        if self.end_seq.is_some() {
            error!(lesson = %self.lesson, "frame after the lesson's end; not recorded");
            return;
        }
        let (at, build): (Instant, Box<dyn FnOnce(u64) -> FeedFrame>) = match item {
            Item::Record { at, record } => {
                if matches!(record, Record::Event(LessonEvent::Ended { .. })) {
                    self.ended_at = Some(now());
                }
                let at_micros = micros_at(at);
                (
                    at,
                    Box::new(move |seq| match record {
                        Record::Event(event) => FeedFrame::Event {
                            seq,
                            at_micros,
                            event,
                        },
                        Record::Chat { from, to, text } => FeedFrame::Chat {
                            seq,
                            at_micros,
                            from,
                            to,
                            text,
                        },
                    }),
                )
            }
            Item::Media(f) => {
                let arrival_micros = micros_at(f.at);
                (
                    f.at,
                    Box::new(move |seq| FeedFrame::Media {
                        seq,
                        track: f.track,
                        arrival_micros,
                        media_time: f.media_time,
                        clock_rate: f.clock_rate,
                        codec: f.codec,
                        discontinuity: f.discontinuity,
                        data: f.data.to_vec(),
                    }),
                )
            }
            Item::Stop => return,
        };
        self.push(at, build);
    }

    fn push(&mut self, at: Instant, build: Box<dyn FnOnce(u64) -> FeedFrame>) {
        let result = self.log.append(at, |seq| build(seq).to_bytes());
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                error!(lesson = %self.lesson, error = %e, "frame not encodable; not recorded")
            }
            Err(e) => {
                // The spool could not take it: memory keeps it (see FeedLog).
                error!(lesson = %self.lesson, error = %e, "feed spool failing; frames held in memory");
            }
        }
    }

    fn append_end(&mut self) {
        let at_micros = unix_millis() * 1000;
        let seq = self.log.next_seq();
        self.push(
            now(),
            Box::new(move |seq| FeedFrame::End { seq, at_micros }),
        );
        if self.log.next_seq() > seq {
            self.end_seq = Some(seq);
            info!(lesson = %self.lesson, "lesson ended; its last frame is queued");
        }
    }

    fn send_next(&mut self, permit: mpsc::OwnedPermit<Message>) {
        let seq = self.sent + 1;
        if seq >= self.log.next_seq() {
            // Shutting down and everything is sent: ask for it to be written now.
            if let Ok(flush) = FeedFrame::Flush.to_bytes() {
                permit.send(Message::Binary(flush.into()));
            }
            self.flushed = true;
            return;
        }
        let base = self.base.unwrap_or(0);
        match self.log.get(seq) {
            Ok(Some(bytes)) => {
                permit.send(Message::Binary(with_seq(&bytes, base + seq)));
                self.sent = seq;
                if seq <= self.max_sent {
                    self.share.replayed();
                } else {
                    self.max_sent = seq;
                }
            }
            Ok(None) => {
                // Acknowledged meanwhile: move on.
                self.sent = seq.max(self.log.acked());
            }
            Err(e) => {
                error!(lesson = %self.lesson, seq, error = %e, "cannot read a spooled frame; reconnecting");
                self.lost("spool read failed");
            }
        }
    }

    fn on_ack(&mut self, up_to: u64) {
        let base = self.base.unwrap_or(0);
        if let Conn::Up(c) = &mut self.conn {
            c.last_ack_at = now();
        }
        if up_to > base {
            self.log.ack(up_to - base);
        }
    }

    fn on_connected(&mut self, joined: Result<Result<Connection, String>, tokio::task::JoinError>) {
        match joined {
            Ok(Ok(c)) => {
                let base = *self.base.get_or_insert(c.first_ack);
                if c.first_ack > base {
                    self.log.ack(c.first_ack - base);
                } else if c.first_ack < base + self.log.acked() {
                    error!(lesson = %self.lesson, recorder = %c.url, holds = c.first_ack,
                        acknowledged = base + self.log.acked(),
                        "recorder holds less than it acknowledged; the difference is recorded as a gap");
                }
                info!(lesson = %self.lesson, recorder = %c.url, base, resume = base + self.log.acked() + 1, "feed connected");
                self.sent = self.log.acked();
                self.flushed = false;
                self.attempt = 0;
                self.backoff = Duration::from_millis(100);
                self.conn = Conn::Up(c);
            }
            Ok(Err(e)) => self.failed(&e),
            Err(e) => self.failed(&e.to_string()),
        }
    }

    fn failed(&mut self, why: &str) {
        warn!(lesson = %self.lesson, why, retry_in = ?self.backoff, "recorder not reached");
        self.attempt += 1;
        self.conn = Conn::Idle {
            retry_at: now() + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    fn lost(&mut self, why: &str) {
        warn!(lesson = %self.lesson, why, "recorder feed lost; reconnecting");
        self.conn = Conn::Idle { retry_at: now() };
    }

    fn next_timer(&self) -> Instant {
        let far = now() + Duration::from_secs(3600);
        let mut t = match &self.conn {
            Conn::Idle { retry_at } => *retry_at,
            Conn::Connecting(_) => far,
            Conn::Up(c) => c.last_ack_at + self.settings.ack_timeout,
        };
        if let Some(e) = self.ended_at
            && self.end_seq.is_none()
        {
            t = t.min(e + END_AFTER);
        }
        if let Some(s) = self.stopping {
            t = t.min(s);
        }
        t.min(self.figures_at)
    }

    fn on_timer(&mut self) {
        let now = now();
        if now >= self.figures_at {
            self.publish_figures();
        }
        if let Some(e) = self.ended_at
            && self.end_seq.is_none()
            && now >= e + END_AFTER
        {
            self.append_end();
        }
        match &self.conn {
            Conn::Idle { retry_at } if now >= *retry_at => self.connect(),
            Conn::Up(c) if now >= c.last_ack_at + self.settings.ack_timeout => {
                self.lost("no acknowledgement within the timeout")
            }
            _ => {}
        }
    }

    fn connect(&mut self) {
        let urls = &self.settings.recorders;
        if urls.is_empty() {
            self.failed("no recorder configured");
            return;
        }
        let first = usize::from(self.lesson.as_bytes()[0]) % urls.len();
        let url = urls[(first + self.attempt) % urls.len()].clone();
        let token = match self.tokens.issue_service(
            unix_millis() / 1000,
            SERVICE_TOKEN_SECS,
            format!("{:032x}", rand::random::<u128>()),
            self.lesson,
        ) {
            Ok(t) => t,
            Err(e) => {
                self.failed(&format!("cannot issue a service token: {e}"));
                return;
            }
        };
        let resume_from = self.base.map_or(0, |b| b + self.log.acked() + 1);
        let lesson = self.lesson;
        debug!(%lesson, %url, resume_from, "connecting to a recorder");
        self.conn = Conn::Connecting(tokio::spawn(open(url, token, lesson, resume_from)));
    }

    /// Tells the room (and the node's figures) whether its recording is
    /// attached, when that changes.
    fn publish(&mut self) {
        let attached = matches!(self.conn, Conn::Up(_))
            && self.log.spool_bytes() <= self.settings.spool_max_bytes;
        if self.told == Some(attached) {
            return;
        }
        self.share.gate(attached);
        self.told = Some(attached);
        if !attached && self.log.spool_bytes() > self.settings.spool_max_bytes {
            error!(lesson = %self.lesson, spool = self.log.spool_bytes(),
                "feed spool past its bound: the recording counts as lost until the recorder catches up");
        }
        self.gate.send_replace(attached);
        self.publish_figures();
    }

    /// This lesson's share of the node's figures (at least every second).
    fn publish_figures(&mut self) {
        self.figures_at = now() + FIGURES_EVERY;
        let lag = self.log.oldest().map_or(0, |t| {
            u64::try_from(now().saturating_duration_since(t).as_micros()).unwrap_or(u64::MAX)
        });
        self.share
            .figures(self.log.mem_bytes() as u64, self.log.spool_bytes(), lag);
    }
}

/// Tells the lesson's room whether its recording is attached, in order and
/// without the feed ever waiting on the room's inbox: the feed sets the
/// latest value, this task delivers it (a value superseded before delivery
/// is skipped, never reordered). It ends with the feed.
fn gate(lesson: LessonId, rooms: Rooms) -> tokio::sync::watch::Sender<bool> {
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let attached = *rx.borrow_and_update();
            if let Some(room) = rooms.get(lesson) {
                room.recorder(attached).await;
            }
        }
    });
    tx
}

/// What woke a lesson's feed.
enum Wake {
    Item(Option<Item>),
    Permit(Option<mpsc::OwnedPermit<Message>>),
    Ack(Option<u64>),
    Connected(Result<Result<Connection, String>, tokio::task::JoinError>),
    Timer,
}

async fn reserve(writer: Option<mpsc::Sender<Message>>) -> Option<mpsc::OwnedPermit<Message>> {
    match writer {
        Some(w) => w.reserve_owned().await.ok(),
        None => std::future::pending().await,
    }
}

/// The next thing the connection says: an ack (None: it closed), or the
/// outcome of connecting.
async fn conn_event(conn: &mut Conn) -> Wake {
    match conn {
        Conn::Up(c) => Wake::Ack(c.acks.recv().await),
        Conn::Connecting(task) => Wake::Connected(task.await),
        Conn::Idle { .. } => std::future::pending().await,
    }
}

/// Opens a feed connection: upgrade with the service token, `Hello`, and
/// the recorder's first `Ack`.
async fn open(
    url: String,
    token: String,
    lesson: LessonId,
    resume_from: u64,
) -> Result<Connection, String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = format!("{}/feed", url.trim_end_matches('/'))
        .into_client_request()
        .map_err(|e| format!("bad recorder URL {url}: {e}"))?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .map_err(|_| "token is not a header value".to_owned())?,
    );
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_FEED_FRAME + 4))
        .max_frame_size(Some(MAX_FEED_FRAME + 4));
    let (ws, _) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(request, Some(config), false),
    )
    .await
    .map_err(|_| format!("{url}: connect timed out"))?
    .map_err(|e| format!("{url}: {e}"))?;
    let (mut sink, mut stream) = ws.split();
    let hello = FeedFrame::Hello {
        lesson,
        resume_from,
    }
    .to_bytes()
    .map_err(|e| e.to_string())?;
    sink.send(Message::Binary(hello.into()))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let first = tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            match stream.next().await {
                Some(Ok(Message::Binary(b))) => return Ok(b),
                Some(Ok(Message::Close(_))) | None => {
                    return Err("closed before answering".to_owned());
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| format!("{url}: no answer to hello"))??;
    let first_ack = match FeedFrame::parse(&first) {
        Ok(FeedFrame::Ack { up_to }) => up_to,
        other => return Err(format!("{url}: unexpected answer to hello: {other:?}")),
    };
    let (writer, mut rx) = mpsc::channel::<Message>(WRITER_QUEUE);
    let write_task = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.feed(m).await.is_err() {
                return;
            }
            while let Ok(m) = rx.try_recv() {
                if sink.feed(m).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let (ack_tx, acks) = mpsc::channel(64);
    let read_task = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                Message::Binary(b) => match FeedFrame::parse(&b) {
                    Ok(FeedFrame::Ack { up_to }) => {
                        if ack_tx.send(up_to).await.is_err() {
                            return;
                        }
                    }
                    other => {
                        warn!(?other, "unexpected frame from the recorder");
                        return;
                    }
                },
                Message::Close(_) => return,
                _ => {}
            }
        }
    });
    Ok(Connection {
        url,
        writer,
        acks,
        first_ack,
        last_ack_at: now(),
        tasks: [write_task, read_task],
    })
}
