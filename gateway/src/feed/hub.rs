//! The hub: routes the lessons' records and the SFU's frames to each
//! lesson's feed task, starting one when a lesson opens (or first sends
//! something), tells it to finish when its room closes (for idleness, or
//! because this node let the lesson go; a later opening here continues the
//! recording, reopening the feed if it is still finishing), and at
//! shutdown routes what is already queued, tells every lesson to drain,
//! and waits for them.
//!
//! Each feed connects with the owner epoch of this node's lease on the
//! lesson (from the room's `Opened` or `Gap` record). A feed the recorder
//! calls superseded (a newer owner's feed holds the lesson) is not
//! restarted: what the lesson still sends here is dropped, counted and
//! logged, until the lesson opens here again under a newer lease.
//!
//! What it must never do: start a second feed for a lesson whose feed has
//! finished (its archive ends with `End`), or drop a frame silently: a frame
//! it cannot deliver is logged as not recorded.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chaperone_protocol::LessonId;
use chaperone_protocol::event::LessonEvent;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, warn};

use super::FeedSettings;
use super::lesson::{DRAIN_LIMIT, Item, LessonFeed};
use super::log::FeedLog;
use super::status::{LessonShare, Shared};
use super::task::{self, Finish, Inbox};
use crate::auth::tokens::TokenIssuer;
use crate::clock::now;
use crate::media::RecordedFrame;
use crate::room::{RoomRecord, Rooms};

/// Items queued to one lesson's feed before the hub waits.
const LESSON_QUEUE: usize = 8192;

/// A running lesson feed.
struct LessonTx {
    tx: mpsc::Sender<Inbox>,
    task: JoinHandle<()>,
    /// Which of the lesson's feeds this is (a lesson closed for idleness
    /// and opened again has a new one).
    number: u64,
    /// The lesson's room closed and has not opened again since.
    closing: bool,
    /// The owner epoch it connects with.
    epoch: u64,
}

/// What a lesson's feed says when it is done, or closed.
struct Done {
    lesson: LessonId,
    number: u64,
    /// How it finished (None: not done; its room closed and everything
    /// is acknowledged).
    finish: Option<Finish>,
}

/// What every lesson's feed is started with.
pub(super) struct Hub {
    pub(super) settings: Arc<FeedSettings>,
    pub(super) tokens: Arc<TokenIssuer>,
    pub(super) rooms: Rooms,
    pub(super) shared: Arc<Shared>,
}

impl Hub {
    /// Routes `records` and `frames` until the records end or the feed is
    /// stopped, then drains every lesson.
    pub(super) async fn run(
        self,
        mut records: mpsc::Receiver<RoomRecord>,
        mut frames: mpsc::Receiver<RecordedFrame>,
    ) {
        if let Err(e) = std::fs::create_dir_all(&self.settings.spool_dir) {
            error!(dir = %self.settings.spool_dir.display(), error = %e, "feed spool directory unusable; spooling will fail");
        }
        let mut lessons = Lessons {
            running: HashMap::new(),
            finished: HashSet::new(),
            epochs: HashMap::new(),
            superseded: HashMap::new(),
            started: 0,
        };
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let shared = self.shared.clone();
        loop {
            tokio::select! {
                r = records.recv() => match r {
                    Some(r) => self.route_record(&mut lessons, &done_tx, r).await,
                    None => break,
                },
                Some(f) = frames.recv() => {
                    let lesson = f.lesson;
                    self.route(&mut lessons, &done_tx, lesson, Item::Media(f)).await;
                }
                Some(done) = done_rx.recv() => {
                    // Only the feed that reported is forgotten (the lesson
                    // may have a new one by now), and a closed one only if
                    // its room has not opened again since: from here on
                    // nothing is routed to it, so stopping it loses nothing.
                    let closed = done.finish.is_none();
                    let current = lessons.running.get(&done.lesson).is_some_and(|l| {
                        l.number == done.number && (!closed || l.closing)
                    });
                    if current && let Some(l) = lessons.running.remove(&done.lesson) && closed {
                        let _ = l.tx.send(Inbox::Stop).await;
                    }
                    match done.finish {
                        Some(Finish::Ended) => {
                            lessons.finished.insert(done.lesson);
                            lessons.epochs.remove(&done.lesson);
                        }
                        Some(Finish::Superseded) if current => {
                            let epoch = lessons.epochs.get(&done.lesson).copied().unwrap_or(0);
                            lessons.superseded.insert(done.lesson, Dropped { epoch, frames: 0 });
                        }
                        _ => {}
                    }
                }
                () = shared.stop.notified() => break,
            }
        }
        // Shutdown: what is already queued goes in, then every lesson drains.
        while let Ok(r) = records.try_recv() {
            self.route_record(&mut lessons, &done_tx, r).await;
        }
        while let Ok(f) = frames.try_recv() {
            let lesson = f.lesson;
            self.route(&mut lessons, &done_tx, lesson, Item::Media(f))
                .await;
        }
        for l in lessons.running.values() {
            let _ = l.tx.send(Inbox::Stop).await;
        }
        for (lesson, l) in lessons.running {
            if tokio::time::timeout(DRAIN_LIMIT + Duration::from_secs(1), l.task)
                .await
                .is_err()
            {
                error!(%lesson, "lesson feed did not finish at shutdown");
            }
        }
    }

    async fn route_record(
        &self,
        lessons: &mut Lessons,
        done: &mpsc::UnboundedSender<Done>,
        r: RoomRecord,
    ) {
        match r {
            RoomRecord::Record { lesson, at, record } => {
                self.route(lessons, done, lesson, Item::Record { at, record })
                    .await
            }
            RoomRecord::Gap {
                lesson,
                at,
                reason,
                epoch,
            } => {
                // Sent just before the lesson's task starts here again: the
                // lesson is open from now on.
                self.open(lessons, done, lesson, epoch).await;
                self.route(lessons, done, lesson, Item::Gap { at, reason })
                    .await
            }
            RoomRecord::Opened { lesson, epoch } => self.open(lessons, done, lesson, epoch).await,
            RoomRecord::Closed { lesson } => {
                if let Some(l) = lessons.running.get_mut(&lesson) {
                    l.closing = true;
                    let _ = l.tx.send(Inbox::Close).await;
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

    /// A lesson's room (re)opened on this node, which holds its lease at
    /// owner `epoch`: its feed runs, and one still finishing a close
    /// carries on (with that epoch).
    async fn open(
        &self,
        lessons: &mut Lessons,
        done: &mpsc::UnboundedSender<Done>,
        lesson: LessonId,
        epoch: u64,
    ) {
        lessons.epochs.insert(lesson, epoch);
        if let Some(d) = lessons.superseded.get(&lesson) {
            if d.epoch >= epoch {
                return;
            }
            if d.frames > 0 {
                warn!(%lesson, frames = d.frames, "frames of a superseded feed were not recorded");
            }
            lessons.superseded.remove(&lesson);
        }
        if !lessons.finished.contains(&lesson) {
            let l = self.lesson(lessons, done, lesson);
            if l.closing || l.epoch != epoch {
                l.closing = false;
                l.epoch = epoch;
                let _ = l.tx.send(Inbox::Reopen(epoch)).await;
            }
        }
    }

    /// The lesson's running feed, started if it has none (or if the one it
    /// had has finished and not been reaped yet).
    fn lesson<'a>(
        &self,
        lessons: &'a mut Lessons,
        done: &mpsc::UnboundedSender<Done>,
        lesson: LessonId,
    ) -> &'a mut LessonTx {
        if lessons
            .running
            .get(&lesson)
            .is_some_and(|l| l.tx.is_closed())
        {
            lessons.running.remove(&lesson);
        }
        lessons.started += 1;
        let number = lessons.started;
        let epoch = lessons.epochs.get(&lesson).copied().unwrap_or(0);
        lessons.running.entry(lesson).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(LESSON_QUEUE);
            // Unique per process and lesson feed, so a restarted or second
            // node never shares a spool file.
            let spool = self.settings.spool_dir.join(format!(
                "{lesson}-{}-{:08x}.spool",
                std::process::id(),
                rand::random::<u32>()
            ));
            let feed = LessonFeed::new(
                now(),
                lesson,
                epoch,
                FeedLog::new(self.settings.buffer_bytes, spool),
                &self.settings,
            );
            let share = LessonShare::new(self.shared.clone(), lesson);
            let (tokens, rooms, done) = (self.tokens.clone(), self.rooms.clone(), done.clone());
            let task = tokio::spawn(async move {
                let on_closed = done.clone();
                let closed = move || {
                    let _ = on_closed.send(Done {
                        lesson,
                        number,
                        finish: None,
                    });
                };
                let finish = task::run(feed, rx, tokens, rooms, share, closed).await;
                let _ = done.send(Done {
                    lesson,
                    number,
                    finish: Some(finish),
                });
            });
            LessonTx {
                tx,
                task,
                number,
                closing: false,
                epoch,
            }
        })
    }

    async fn route(
        &self,
        lessons: &mut Lessons,
        done: &mpsc::UnboundedSender<Done>,
        lesson: LessonId,
        item: Item,
    ) {
        if lessons.finished.contains(&lesson) {
            let kind = match &item {
                Item::Media(_) => "media",
                Item::Record { .. } | Item::Gap { .. } => "record",
            };
            error!(%lesson, kind, "frame after the lesson's recording ended; not recorded");
            return;
        }
        if let Some(d) = lessons.superseded.get_mut(&lesson) {
            // This node lost the lesson; what it still sends is not its to record.
            d.frames += 1;
            if d.frames == 1 {
                error!(%lesson, epoch = d.epoch, "frame of a lesson a newer owner records; not recorded here");
            }
            return;
        }
        let tx = self.lesson(lessons, done, lesson).tx.clone();
        if tx.send(Inbox::Item(item)).await.is_err() {
            error!(%lesson, "lesson feed stopped; frame not recorded");
        }
    }
}

/// A superseded lesson's feed: the epoch refused, frames dropped since.
struct Dropped {
    epoch: u64,
    frames: u64,
}

/// The lessons the hub knows.
struct Lessons {
    /// Feeds running (or finished and not yet reaped).
    running: HashMap<LessonId, LessonTx>,
    /// Lessons whose feed finished with `End`: nothing more is recorded for them.
    finished: HashSet<LessonId>,
    /// The owner epoch each lesson last opened with here.
    epochs: HashMap<LessonId, u64>,
    /// Lessons whose feed a newer owner superseded, until they open here
    /// under a newer lease.
    superseded: HashMap<LessonId, Dropped>,
    /// Feeds started so far (numbers them).
    started: u64,
}
