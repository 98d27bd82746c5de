//! The feed's figures, as the rest of the node sees them: the counters every
//! lesson's feed adds its share to ([`Shared`], through a [`LessonShare`]),
//! the handle the node holds ([`FeedStatus`]: the recording gate for
//! readiness, the figures, the stop signal) and their Prometheus form
//! ([`FeedMetrics`]).
//!
//! What it must never do: count a lesson as attached that is not. A lesson's
//! share starts detached and leaves the counters when its feed ends
//! (whatever way it ends), so the node-wide `detached` is exactly the number
//! of lessons whose latest gate was "lost".

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use chaperone_protocol::LessonId;
use tokio::sync::Notify;

/// The feed's shared figures (readiness, metrics, the recording gate).
#[derive(Debug, Default)]
pub(super) struct Shared {
    lessons: AtomicI64,
    detached: AtomicI64,
    buffer_bytes: AtomicU64,
    spool_bytes: AtomicU64,
    lags: std::sync::Mutex<HashMap<LessonId, u64>>,
    /// Feeds running per lesson (a closed lesson's feed runs until the
    /// recorder has acknowledged everything it holds).
    feeding: std::sync::Mutex<HashMap<LessonId, u32>>,
    replayed: AtomicU64,
    stopped: AtomicBool,
    /// Wakes the hub when [`FeedStatus::stop`] is called.
    pub(super) stop: Notify,
}

/// A handle on the running feed.
#[derive(Clone, Debug)]
pub struct FeedStatus(pub(super) Arc<Shared>);

/// The feed's figures at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeedFigures {
    /// Lessons with a feed.
    pub lessons: i64,
    /// Of those, how many have no acknowledged recorder right now.
    pub detached: i64,
    /// Unacknowledged bytes in memory, all lessons.
    pub buffer_bytes: u64,
    /// Unacknowledged bytes spooled to disk, all lessons.
    pub spool_bytes: u64,
    /// Age of the oldest unacknowledged frame (the largest over lessons), µs.
    pub lag_micros: u64,
    /// Frames sent again after a reconnect.
    pub replayed: u64,
}

impl FeedStatus {
    /// True while every lesson's feed is acknowledged by a recorder.
    pub fn attached(&self) -> bool {
        self.0.detached.load(Ordering::Acquire) == 0
    }

    /// The current figures.
    pub fn figures(&self) -> FeedFigures {
        let s = &self.0;
        FeedFigures {
            lessons: s.lessons.load(Ordering::Relaxed),
            detached: s.detached.load(Ordering::Relaxed),
            buffer_bytes: s.buffer_bytes.load(Ordering::Relaxed),
            spool_bytes: s.spool_bytes.load(Ordering::Relaxed),
            lag_micros: s
                .lags
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .copied()
                .max()
                .unwrap_or(0),
            replayed: s.replayed.load(Ordering::Relaxed),
        }
    }

    /// Whether a feed of `lesson` still runs here: for a lesson whose room
    /// has stopped, whether the recorder has yet to acknowledge what this
    /// node holds of it (its lease must not go to another node before).
    pub fn is_feeding(&self, lesson: LessonId) -> bool {
        self.0
            .feeding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&lesson)
    }

    /// Asks the feed to send everything held, wait (bounded) for it to be
    /// acknowledged, and stop. Await the feed's task to know it is done.
    pub fn stop(&self) {
        self.0.stopped.store(true, Ordering::Release);
        self.0.stop.notify_one();
    }
}

/// One lesson's share of the node's figures: it joins the counters as a
/// lesson that is detached, follows what its feed reports, and takes its
/// share out again when dropped.
#[derive(Debug)]
pub(super) struct LessonShare {
    shared: Arc<Shared>,
    lesson: LessonId,
    attached: bool,
    buffer_bytes: u64,
    spool_bytes: u64,
}

impl LessonShare {
    /// Counts `lesson` in, detached until its feed says otherwise.
    pub(super) fn new(shared: Arc<Shared>, lesson: LessonId) -> Self {
        shared.lessons.fetch_add(1, Ordering::AcqRel);
        shared.detached.fetch_add(1, Ordering::AcqRel);
        *shared
            .feeding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(lesson)
            .or_default() += 1;
        Self {
            shared,
            lesson,
            attached: false,
            buffer_bytes: 0,
            spool_bytes: 0,
        }
    }

    /// The lesson's recording gate is now `attached`.
    pub(super) fn gate(&mut self, attached: bool) {
        if self.attached != attached {
            let delta = if attached { -1 } else { 1 };
            self.shared.detached.fetch_add(delta, Ordering::AcqRel);
            self.attached = attached;
        }
    }

    /// The lesson's bytes held and the age of its oldest unacknowledged frame.
    pub(super) fn figures(&mut self, buffer_bytes: u64, spool_bytes: u64, lag_micros: u64) {
        // Wrapping deltas: the counters are sums of every lesson's share.
        self.shared.buffer_bytes.fetch_add(
            buffer_bytes.wrapping_sub(self.buffer_bytes),
            Ordering::AcqRel,
        );
        self.shared
            .spool_bytes
            .fetch_add(spool_bytes.wrapping_sub(self.spool_bytes), Ordering::AcqRel);
        self.buffer_bytes = buffer_bytes;
        self.spool_bytes = spool_bytes;
        self.shared
            .lags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.lesson, lag_micros);
    }

    /// One frame was sent again after a reconnect.
    pub(super) fn replayed(&self) {
        self.shared.replayed.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for LessonShare {
    fn drop(&mut self) {
        let s = &self.shared;
        s.lessons.fetch_sub(1, Ordering::AcqRel);
        if !self.attached {
            s.detached.fetch_sub(1, Ordering::AcqRel);
        }
        s.buffer_bytes
            .fetch_sub(self.buffer_bytes, Ordering::AcqRel);
        s.spool_bytes.fetch_sub(self.spool_bytes, Ordering::AcqRel);
        s.lags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.lesson);
        let mut feeding = s.feeding.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = feeding.get_mut(&self.lesson) {
            *n -= 1;
            if *n == 0 {
                feeding.remove(&self.lesson);
            }
        }
    }
}

/// The feed's Prometheus figures (read from [`FeedStatus`] at each scrape).
#[derive(Clone, Debug)]
pub(crate) struct FeedMetrics {
    lag: prometheus::Gauge,
    buffer: prometheus::IntGauge,
    spool: prometheus::IntGauge,
    detached: prometheus::IntGauge,
    replayed: prometheus::IntCounter,
}

impl FeedMetrics {
    /// Registers the feed's metrics in `registry`.
    pub(crate) fn register(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let lag = prometheus::Gauge::new(
            "feed_lag_seconds",
            "Age of the oldest frame not yet acknowledged by a recorder (largest over lessons)",
        )?;
        let buffer = prometheus::IntGauge::new(
            "feed_buffer_bytes",
            "Unacknowledged feed bytes held in memory",
        )?;
        let spool = prometheus::IntGauge::new(
            "feed_spool_bytes",
            "Unacknowledged feed bytes spooled to local disk",
        )?;
        let detached = prometheus::IntGauge::new(
            "feed_lessons_detached",
            "Lessons whose feed no recorder acknowledges right now",
        )?;
        let replayed = prometheus::IntCounter::new(
            "feed_replayed_frames_total",
            "Frames sent again to a recorder after a reconnect",
        )?;
        registry.register(Box::new(lag.clone()))?;
        registry.register(Box::new(buffer.clone()))?;
        registry.register(Box::new(spool.clone()))?;
        registry.register(Box::new(detached.clone()))?;
        registry.register(Box::new(replayed.clone()))?;
        Ok(Self {
            lag,
            buffer,
            spool,
            detached,
            replayed,
        })
    }

    /// Sets the gauges from `f`.
    pub(crate) fn observe(&self, f: FeedFigures) {
        self.lag.set(f.lag_micros as f64 / 1e6);
        self.buffer
            .set(i64::try_from(f.buffer_bytes).unwrap_or(i64::MAX));
        self.spool
            .set(i64::try_from(f.spool_bytes).unwrap_or(i64::MAX));
        self.detached.set(f.detached);
        self.replayed
            .inc_by(f.replayed.saturating_sub(self.replayed.get()));
    }
}
