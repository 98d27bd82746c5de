//! [`Rooms`]: every lesson task on this node, by lesson id, started on
//! demand (a new lesson, or one restored from a snapshot) and forgotten when
//! its task stops (the lesson ended, or nobody was connected for the idle
//! timeout).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chaperone_lesson::{Lesson, LessonConfig, LessonSetup, Snapshot};
use chaperone_protocol::LessonId;
use tokio::sync::mpsc;
use tracing::debug;

use super::task::start;
use super::{RoomDeps, RoomHandle, RoomRecord};
use crate::clock::now;

/// Every lesson task on this node, by lesson id.
#[derive(Clone, Debug)]
pub struct Rooms {
    deps: RoomDeps,
    rooms: Arc<Mutex<HashMap<LessonId, RoomHandle>>>,
    /// Lessons whose task stopped because they ended (16 bytes each).
    ended: Arc<Mutex<std::collections::HashSet<LessonId>>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// How long a lesson's task runs with nobody connected before it
    /// closes (None: until it ends).
    idle_close: Option<std::time::Duration>,
    /// Where lessons learn when they close (None: they never do).
    windows: Option<crate::catalog::Windows>,
}

impl Rooms {
    /// An empty registry whose lessons use `deps`.
    pub fn new(deps: RoomDeps) -> Self {
        Self {
            deps,
            rooms: Arc::default(),
            ended: Arc::default(),
            metrics: None,
            idle_close: None,
            windows: None,
        }
    }

    /// The same registry, whose lessons are ended by the server when their
    /// window closes (their end plus `lesson.close_grace_mins`, or later if
    /// staff extended it), as `windows` says.
    pub(crate) fn with_windows(mut self, windows: crate::catalog::Windows) -> Self {
        self.windows = Some(windows);
        self
    }

    /// The same registry, whose lessons close after `idle` with nobody
    /// connected (`lesson.idle_close_secs`): the task stops and its
    /// recording is written; the next join starts it again from its last
    /// snapshot, and its recording continues.
    pub fn with_idle_close(mut self, idle: std::time::Duration) -> Self {
        self.idle_close = Some(idle);
        self
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
                self.forget(h);
                rooms.remove(&lesson);
                None
            }
            other => other.cloned(),
        }
    }

    /// Remembers that a stopped lesson ended.
    fn forget(&self, h: &RoomHandle) {
        if h.is_ended() {
            self.ended
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(h.lesson);
        }
    }

    /// Whether the lesson ran here and ended.
    pub fn has_ended(&self, lesson: LessonId) -> bool {
        let _ = self.get(lesson);
        self.ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&lesson)
    }

    /// The lesson's task, starting it (a new, empty lesson) if it is not
    /// running, on a node without a cluster.
    pub fn open(&self, setup: LessonSetup, config: LessonConfig) -> RoomHandle {
        self.open_owned(setup, config, 0)
    }

    /// [`Rooms::open`] under this node's lease of owner `epoch` (the
    /// recorder takes the lesson's feed only from its newest owner).
    pub fn open_owned(&self, setup: LessonSetup, config: LessonConfig, epoch: u64) -> RoomHandle {
        let id = setup.id;
        self.get_or_start(id, epoch, || Lesson::new(now(), setup, config))
    }

    /// The lesson's task, starting it from a persisted snapshot (another
    /// node's lesson taken over) if it is not running, under this node's
    /// lease of owner `epoch`. `lost`: the last owner stopped without
    /// handing the lesson over, for this reason; the recording is told so
    /// before anything of the lesson here.
    pub async fn restore(
        &self,
        setup: LessonSetup,
        config: LessonConfig,
        snapshot: Snapshot,
        (epoch, lost): (u64, Option<&str>),
    ) -> Result<RoomHandle, chaperone_lesson::SnapshotError> {
        let id = setup.id;
        if let Some(h) = self.get(id) {
            return Ok(h);
        }
        let lesson = Lesson::restore(now(), setup, config, snapshot)?;
        if let Some(reason) = lost {
            let gap = RoomRecord::Gap {
                lesson: id,
                at: now(),
                reason: reason.to_owned(),
                epoch,
            };
            if self.deps.records.send(gap).await.is_err() {
                tracing::error!(lesson = %id, "recorder feed is closed: the lesson's gap was not recorded");
            }
        }
        Ok(self.get_or_start(id, epoch, || lesson))
    }

    fn get_or_start(&self, id: LessonId, epoch: u64, make: impl FnOnce() -> Lesson) -> RoomHandle {
        let mut rooms = self.lock();
        if let Some(h) = rooms.get(&id).filter(|h| !h.is_closed()) {
            return h.clone();
        }
        let handle = start(
            make(),
            self.deps.clone(),
            self.metrics.clone(),
            self.idle_close,
            epoch,
            self.windows.clone(),
        );
        rooms.insert(id, handle.clone());
        handle
    }

    /// Every lesson running on this node (stopped ones are forgotten).
    pub fn all(&self) -> Vec<RoomHandle> {
        let mut rooms = self.lock();
        rooms.retain(|_, h| {
            let closed = h.is_closed();
            if closed {
                self.forget(h);
            }
            !closed
        });
        rooms.values().cloned().collect()
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
                    crate::media::MediaEvent::VideoPaused {
                        lesson,
                        participant,
                        paused,
                    } => match rooms.get(lesson) {
                        Some(room) => room.video_paused(participant, paused).await,
                        None => debug!(%lesson, %participant, "media quality for no lesson"),
                    },
                }
            }
        })
    }
}
