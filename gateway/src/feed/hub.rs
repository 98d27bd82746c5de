//! The hub: routes the lessons' records and the SFU's frames to each
//! lesson's feed task, starting one when a lesson opens (or first sends
//! something), and at shutdown routes what is already queued, tells every
//! lesson to drain, and waits for them.
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
use super::task::{self, Inbox};
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
        };
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<LessonId>();
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
                Some(lesson) = done_rx.recv() => {
                    if let Some(l) = lessons.running.remove(&lesson) && l.task.is_finished() {
                        lessons.finished.insert(lesson);
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
        done: &mpsc::UnboundedSender<LessonId>,
        r: RoomRecord,
    ) {
        match r {
            RoomRecord::Record { lesson, at, record } => {
                self.route(lessons, done, lesson, Item::Record { at, record })
                    .await
            }
            RoomRecord::Gap { lesson, at, reason } => {
                self.route(lessons, done, lesson, Item::Gap { at, reason })
                    .await
            }
            RoomRecord::Opened { lesson } => {
                if !lessons.finished.contains(&lesson) {
                    self.lesson(&mut lessons.running, done, lesson);
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

    /// The lesson's running feed, started if it has none.
    fn lesson<'a>(
        &self,
        running: &'a mut HashMap<LessonId, LessonTx>,
        done: &mpsc::UnboundedSender<LessonId>,
        lesson: LessonId,
    ) -> &'a LessonTx {
        running.entry(lesson).or_insert_with(|| {
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
                FeedLog::new(self.settings.buffer_bytes, spool),
                &self.settings,
            );
            let share = LessonShare::new(self.shared.clone(), lesson);
            let (tokens, rooms, done) = (self.tokens.clone(), self.rooms.clone(), done.clone());
            let task = tokio::spawn(async move {
                task::run(feed, rx, tokens, rooms, share).await;
                let _ = done.send(lesson);
            });
            LessonTx { tx, task }
        })
    }

    async fn route(
        &self,
        lessons: &mut Lessons,
        done: &mpsc::UnboundedSender<LessonId>,
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
        let tx = self.lesson(&mut lessons.running, done, lesson).tx.clone();
        if tx.send(Inbox::Item(item)).await.is_err() {
            error!(%lesson, "lesson feed stopped; frame not recorded");
        }
    }
}

/// The lessons the hub knows.
struct Lessons {
    /// Feeds running (or finished and not yet reaped).
    running: HashMap<LessonId, LessonTx>,
    /// Lessons whose feed finished: nothing more is recorded for them.
    finished: HashSet<LessonId>,
}
