//! The hub: routes the lessons' records and the SFU's frames to each
//! lesson's feed task, starting one when a lesson opens (or first sends
//! something), tells it to finish when its room closes (for idleness, or
//! because this node let the lesson go; a later opening here continues the
//! recording, reopening the feed if it is still finishing), and at
//! shutdown routes what is already queued, tells every lesson to drain,
//! and waits for them.
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
    /// Which of the lesson's feeds this is (a lesson closed for idleness
    /// and opened again has a new one).
    number: u64,
    /// The lesson's room closed and has not opened again since.
    closing: bool,
}

/// What a lesson's feed says when it is done, or closed.
struct Done {
    lesson: LessonId,
    number: u64,
    /// Its `End` was acknowledged: nothing more is ever recorded for it.
    ended: bool,
    /// Not done: its room closed and everything is acknowledged.
    closed: bool,
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
                    let current = lessons.running.get(&done.lesson).is_some_and(|l| {
                        l.number == done.number && (!done.closed || l.closing)
                    });
                    if current && let Some(l) = lessons.running.remove(&done.lesson) && done.closed {
                        let _ = l.tx.send(Inbox::Stop).await;
                    }
                    if done.ended {
                        lessons.finished.insert(done.lesson);
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
            RoomRecord::Gap { lesson, at, reason } => {
                // Sent just before the lesson's task starts here again: the
                // lesson is open from now on.
                self.open(lessons, done, lesson).await;
                self.route(lessons, done, lesson, Item::Gap { at, reason })
                    .await
            }
            RoomRecord::Opened { lesson } => self.open(lessons, done, lesson).await,
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

    /// A lesson's room (re)opened on this node: its feed runs, and one still
    /// finishing a close carries on.
    async fn open(
        &self,
        lessons: &mut Lessons,
        done: &mpsc::UnboundedSender<Done>,
        lesson: LessonId,
    ) {
        if !lessons.finished.contains(&lesson) {
            let l = self.lesson(lessons, done, lesson);
            if l.closing {
                l.closing = false;
                let _ = l.tx.send(Inbox::Reopen).await;
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
                        ended: false,
                        closed: true,
                    });
                };
                let ended = task::run(feed, rx, tokens, rooms, share, closed).await;
                let _ = done.send(Done {
                    lesson,
                    number,
                    ended,
                    closed: false,
                });
            });
            LessonTx {
                tx,
                task,
                number,
                closing: false,
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
        let tx = self.lesson(lessons, done, lesson).tx.clone();
        if tx.send(Inbox::Item(item)).await.is_err() {
            error!(%lesson, "lesson feed stopped; frame not recorded");
        }
    }
}

/// The lessons the hub knows.
struct Lessons {
    /// Feeds running (or finished and not yet reaped).
    running: HashMap<LessonId, LessonTx>,
    /// Lessons whose feed finished with `End`: nothing more is recorded for them.
    finished: HashSet<LessonId>,
    /// Feeds started so far (numbers them).
    started: u64,
}
