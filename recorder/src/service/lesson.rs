//! One lesson being recorded: a task owning its [`LessonSink`], fed by
//! whichever feed connection is current, acknowledging through a watch
//! channel every seq that is durable.
//!
//! Rules, in order of importance:
//! - a frame is acknowledged only once a signed checkpoint covers it;
//! - a seq already taken is dropped (a replay never doubles anything);
//! - a seq that skips ahead is a loss written into the manifest, never hidden;
//! - a store failure keeps the frames pending and is retried with backoff;
//! - the lesson outlives its connection: a gateway that reconnects (to this
//!   or, after a crash, to another recorder) continues where the archive
//!   stands. After `idle_close` without a connection its frames are
//!   written and the task ends;
//! - a feed whose owner epoch is below the highest this lesson has seen is
//!   refused, and the current feed is closed as superseded when one with a
//!   higher epoch attaches: a gateway node that lost the lesson's lease
//!   never writes beside the node that took it over (their seqs would
//!   collide, and whichever came first would win).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chaperone_protocol::LessonId;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use super::Archive;
use super::metrics::IngestMetrics;
use crate::ingest::LessonSink;
use chaperone_archive::manifest::Gap;
use chaperone_archive::segment::Record;
use chaperone_archive::writer::LessonWriter;

/// Frames queued to a lesson before its connection waits (backpressure).
const FRAME_QUEUE: usize = 1024;
/// How often a lesson checks whether a segment is due.
const TICK: Duration = Duration::from_millis(250);
/// Longest pause between retries of a failed write.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Pending bytes past which the lesson stops taking frames until its store
/// recovers (its feed then waits, and the gateway keeps the frames).
const MAX_PENDING_BYTES: usize = 256 * 1024 * 1024;

/// What the current connection learns from the lesson.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckState {
    /// Every seq up to this is durable (0: none yet).
    pub durable: u64,
    /// The connection the lesson listens to; any other should close.
    pub current: u64,
    /// The lesson's final checkpoint is written.
    pub finished: bool,
    /// The owner epoch of the current connection's gateway: a connection
    /// with a lower one was superseded by a newer owner.
    pub epoch: u64,
}

/// Why a connection was not attached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// A feed with a newer owner epoch holds (or held) the lesson.
    #[error("the lesson has a newer owner (epoch {newest}, this feed {offered})")]
    Superseded {
        /// The highest epoch seen for the lesson.
        newest: u64,
        /// The epoch this feed offered.
        offered: u64,
    },
    /// The lesson's archive could not be opened.
    #[error("lesson not recordable: {0}")]
    Archive(String),
}

/// What a connection hands its lesson, in order.
#[derive(Debug)]
pub enum Incoming {
    /// A frame.
    Frame(Frame),
    /// Write everything taken now (the gateway is going away).
    Flush {
        /// Which connection asked.
        conn: u64,
    },
}

/// One frame from a connection.
#[derive(Debug)]
pub struct Frame {
    /// Which connection sent it.
    pub conn: u64,
    /// Its seq.
    pub seq: u64,
    /// Its time (arrival at the gateway, unix micros).
    pub at: u64,
    /// The encoded feed frame.
    pub bytes: Vec<u8>,
    /// The manifest track it belongs to.
    pub track: String,
    /// The lesson's last frame.
    pub end: bool,
    /// A gap frame: nothing was recorded before `at` since the last frame
    /// held, for this reason (its seq stands for the lost interval).
    pub gap: Option<String>,
}

enum Control {
    Attach {
        conn: u64,
        fresh: bool,
        epoch: u64,
        reply: oneshot::Sender<Result<Attached, AttachError>>,
    },
    Detach {
        conn: u64,
    },
}

/// What a connection gets when it attaches.
#[derive(Debug)]
pub struct Attached {
    /// The lesson's acknowledgement state.
    pub acks: watch::Receiver<AckState>,
    /// The `Ack` answering `Hello`: what is durable, or for a gateway with
    /// no state of its own (`resume_from: 0`), every seq already taken, so
    /// that its frames are numbered after them.
    pub initial: u64,
}

/// A handle to a lesson's task.
#[derive(Clone, Debug)]
pub struct LessonHandle {
    id: u64,
    control: mpsc::UnboundedSender<Control>,
    frames: mpsc::Sender<Incoming>,
}

impl LessonHandle {
    /// Makes `conn`, from a gateway holding the lesson's lease at owner
    /// `epoch`, the lesson's connection; the previous one is told to close.
    /// Refused if a newer owner's feed has attached.
    pub async fn attach(
        &self,
        conn: u64,
        fresh: bool,
        epoch: u64,
    ) -> Option<Result<Attached, AttachError>> {
        let (reply, rx) = oneshot::channel();
        self.control
            .send(Control::Attach {
                conn,
                fresh,
                epoch,
                reply,
            })
            .ok()?;
        rx.await.ok()
    }

    /// Hands a frame to the lesson, waiting while it is full. False if the
    /// lesson has stopped.
    pub async fn frame(&self, frame: Incoming) -> bool {
        self.frames.send(frame).await.is_ok()
    }

    /// `conn` went away.
    pub fn detach(&self, conn: u64) {
        let _ = self.control.send(Control::Detach { conn });
    }

    fn is_closed(&self) -> bool {
        self.control.is_closed()
    }
}

/// The lessons being recorded by this process.
#[derive(Clone, Debug, Default)]
pub struct Lessons {
    map: Arc<Mutex<HashMap<LessonId, LessonHandle>>>,
}

impl Lessons {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LessonId, LessonHandle>> {
        // Every update is one insert or remove: a poisoned map is still valid.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lesson's task, started (resuming its archive) if not running.
    pub fn get_or_start(&self, lesson: LessonId, archive: &Arc<Archive>) -> LessonHandle {
        let mut map = self.lock();
        if let Some(h) = map.get(&lesson).filter(|h| !h.is_closed()) {
            return h.clone();
        }
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (frames_tx, frames_rx) = mpsc::channel(FRAME_QUEUE);
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let handle = LessonHandle {
            id,
            control: control_tx,
            frames: frames_tx,
        };
        map.insert(lesson, handle.clone());
        tokio::spawn(run(
            lesson,
            id,
            archive.clone(),
            self.clone(),
            control_rx,
            frames_rx,
        ));
        handle
    }

    /// How many lessons are being recorded.
    pub fn len(&self) -> usize {
        self.lock().values().filter(|h| !h.is_closed()).count()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remove(&self, lesson: LessonId, id: u64) {
        let mut map = self.lock();
        if map.get(&lesson).is_some_and(|h| h.id == id) {
            map.remove(&lesson);
        }
    }

    /// Every running lesson's handle (for shutdown).
    fn all(&self) -> Vec<LessonHandle> {
        self.lock().values().cloned().collect()
    }

    /// Asks every lesson to write what it holds and stop; waits for them
    /// (at most `limit`).
    pub async fn shutdown(&self, limit: Duration) {
        for h in self.all() {
            let _ = h.control.send(Control::Detach { conn: u64::MAX });
        }
        let deadline = crate::clock::now() + limit;
        while !self.is_empty() && crate::clock::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.lock().clear();
    }
}

struct Task {
    lesson: LessonId,
    archive: Arc<Archive>,
    metrics: IngestMetrics,
    sink: LessonSink,
    ack: watch::Sender<AckState>,
    pending_bytes: usize,
    /// When the last connection went away (None while one is attached).
    idle_since: Option<Instant>,
    /// The last frame's time, for gap spans.
    last_at: u64,
    /// Retry state after a failed write.
    retry_at: Option<Instant>,
    backoff: backon::ExponentialBackoff,
    /// The End frame has been taken; finish once written.
    ending: bool,
    /// Frames refused because the lesson had already ended.
    after_end: u64,
}

async fn run(
    lesson: LessonId,
    id: u64,
    archive: Arc<Archive>,
    lessons: Lessons,
    mut control: mpsc::UnboundedReceiver<Control>,
    mut frames: mpsc::Receiver<Incoming>,
) {
    let writer = match LessonWriter::resume(
        archive.store.clone(),
        lesson,
        archive.recipients.clone(),
        archive.signer.clone(),
        crate::clock::unix_micros(),
    )
    .await
    {
        Ok(w) => w,
        Err(e) => {
            // Refuse every waiting connection; a later one starts afresh.
            error!(%lesson, error = %e, "cannot open the lesson's archive");
            lessons.remove(lesson, id);
            control.close();
            while let Some(c) = control.recv().await {
                if let Control::Attach { reply, .. } = c {
                    let _ = reply.send(Err(AttachError::Archive(e.to_string())));
                }
            }
            return;
        }
    };
    let sink = LessonSink::new(writer, archive.segment);
    let finished = sink.is_finished();
    let (ack, _) = watch::channel(AckState {
        durable: sink.durable_up_to().unwrap_or(0),
        current: 0,
        finished,
        epoch: 0,
    });
    let mut task = Task {
        lesson,
        metrics: archive.metrics.clone(),
        archive,
        sink,
        ack,
        pending_bytes: 0,
        idle_since: Some(crate::clock::now()),
        last_at: crate::clock::unix_micros(),
        retry_at: None,
        backoff: write_backoff(),
        ending: false,
        after_end: 0,
    };
    task.metrics.lessons_active.inc();
    info!(%lesson, durable = task.ack.borrow().durable, finished, "lesson recording opened");
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let room = task.pending_bytes < MAX_PENDING_BYTES;
        tokio::select! {
            c = control.recv() => match c {
                Some(Control::Attach { conn, fresh, epoch, reply }) => {
                    let newest = task.ack.borrow().epoch;
                    if epoch < newest {
                        warn!(%lesson, conn, epoch, newest, "feed from a superseded owner refused");
                        task.metrics.feeds_refused.inc();
                        let _ = reply.send(Err(AttachError::Superseded { newest, offered: epoch }));
                        continue;
                    }
                    if epoch > newest && newest != 0 {
                        info!(%lesson, conn, epoch, previous = newest, "a newer owner's feed attached");
                    }
                    task.ack.send_modify(|a| {
                        a.current = conn;
                        a.epoch = epoch;
                    });
                    task.idle_since = None;
                    let initial = if fresh {
                        task.sink.last_taken().unwrap_or(0)
                    } else {
                        task.ack.borrow().durable
                    };
                    let _ = reply.send(Ok(Attached { acks: task.ack.subscribe(), initial }));
                }
                Some(Control::Detach { conn }) => {
                    let current = task.ack.borrow().current;
                    if conn == current || conn == u64::MAX {
                        task.ack.send_modify(|a| a.current = 0);
                        task.idle_since = Some(crate::clock::now());
                        if conn == u64::MAX {
                            // Shutdown: write what is held, then stop.
                            task.write(true).await;
                            break;
                        }
                    }
                }
                None => break,
            },
            f = frames.recv(), if room => match f {
                Some(Incoming::Frame(f)) => task.take(f).await,
                Some(Incoming::Flush { conn }) => {
                    if conn == task.ack.borrow().current && task.sink.pending() > 0 {
                        task.write(false).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if !task.on_tick().await {
                    break;
                }
            }
        }
    }
    lessons.remove(lesson, id);
    task.metrics.lessons_active.dec();
    info!(%lesson, durable = task.ack.borrow().durable, "lesson recording closed");
}

impl Task {
    async fn take(&mut self, f: Frame) {
        if f.conn != self.ack.borrow().current {
            // A replaced connection's late frame; the current one sends it too.
            return;
        }
        let expected = self.sink.last_taken().map_or(1, |l| l + 1);
        if f.seq < expected {
            self.metrics.duplicate_frames.inc();
            return;
        }
        if self.sink.is_finished() || self.ending {
            self.after_end += 1;
            if self.after_end == 1 {
                error!(lesson = %self.lesson, seq = f.seq, "frame after the lesson's end; not recorded");
            }
            return;
        }
        if let Some(reason) = &f.gap {
            self.take_gap(&f, expected, reason);
            return;
        }
        if f.seq > expected {
            let gap = Gap {
                first_missing_seq: expected,
                from: self.last_at.min(f.at),
                last_missing_seq: f.seq - 1,
                reason: "frames never received from the gateway".to_owned(),
                to: f.at,
            };
            warn!(lesson = %self.lesson, first = expected, last = f.seq - 1, "feed skipped seqs; recording the gap");
            if let Err(e) = self.sink.push_gap(gap) {
                error!(lesson = %self.lesson, error = %e, "gap refused by the sink");
            } else {
                self.metrics.gaps.inc();
            }
        }
        let len = f.bytes.len();
        let record = Record {
            seq: f.seq,
            arrival_unix_micros: f.at,
            frame: f.bytes,
        };
        match self.sink.push(record, Some(f.track)) {
            Ok(()) => {
                self.pending_bytes += len;
                self.last_at = self.last_at.max(f.at);
                self.metrics.frames.inc();
                self.metrics.frame_bytes.inc_by(len as u64);
                if f.end {
                    self.ending = true;
                    self.write(true).await;
                }
            }
            Err(e) => {
                error!(lesson = %self.lesson, seq = f.seq, error = %e, "frame refused by the sink")
            }
        }
    }

    /// A gap the gateway reports (a lesson taken over from a node that
    /// stopped without handing it over): listed in the manifest, from the
    /// last frame held to the frame's time. Seqs skipped before it are a
    /// gap of their own.
    fn take_gap(&mut self, f: &Frame, expected: u64, reason: &str) {
        let reason = if chaperone_archive::manifest::check_reason(reason).is_ok() {
            reason.to_owned()
        } else {
            warn!(lesson = %self.lesson, seq = f.seq, "gap reason not recordable; replaced");
            "the gateway reported a gap".to_owned()
        };
        let from = if self.last_at == 0 {
            f.at
        } else {
            self.last_at.min(f.at)
        };
        let mut gaps = Vec::new();
        if f.seq > expected {
            gaps.push(Gap {
                first_missing_seq: expected,
                from,
                last_missing_seq: f.seq - 1,
                reason: "frames never received from the gateway".to_owned(),
                to: f.at,
            });
        }
        gaps.push(Gap {
            first_missing_seq: f.seq,
            from,
            last_missing_seq: f.seq,
            reason,
            to: f.at,
        });
        for gap in gaps {
            warn!(lesson = %self.lesson, first = gap.first_missing_seq, last = gap.last_missing_seq,
                from = gap.from, to = gap.to, reason = %gap.reason, "recording a gap");
            if let Err(e) = self.sink.push_gap(gap) {
                error!(lesson = %self.lesson, error = %e, "gap refused by the sink");
                return;
            }
            self.metrics.gaps.inc();
        }
        self.last_at = self.last_at.max(f.at);
    }

    /// Returns false when the task should stop.
    async fn on_tick(&mut self) -> bool {
        let now = crate::clock::now();
        if self.retry_at.is_some_and(|t| now >= t) {
            self.write(self.ending).await;
        } else if self.retry_at.is_none() && self.sink.due(crate::clock::unix_micros()) {
            self.write(false).await;
        }
        if self.sink.is_finished() && self.sink.pending() == 0 {
            // Give the connection a moment to send the last ack.
            return self
                .idle_since
                .is_none_or(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
                || self.ack.borrow().current != 0;
        }
        if let Some(since) = self.idle_since
            && now.saturating_duration_since(since) >= self.archive.idle_close
        {
            // Nobody is coming back for now: write what is held. A later
            // feed resumes from the archive.
            self.write(false).await;
            if self.retry_at.is_none() {
                return false;
            }
        }
        true
    }

    /// Writes what is pending (and, with `finish`, the final checkpoint).
    async fn write(&mut self, finish: bool) {
        let started = crate::clock::now();
        let at = crate::clock::unix_micros();
        let result = if finish && self.ending {
            self.sink
                .finish(at)
                .await
                .map(|_| self.sink.durable_up_to())
        } else {
            self.sink.flush(at).await
        };
        match result {
            Ok(durable) => {
                self.metrics.segment_durable_seconds.observe(
                    crate::clock::now()
                        .saturating_duration_since(started)
                        .as_secs_f64(),
                );
                self.retry_at = None;
                self.backoff = write_backoff();
                self.pending_bytes = 0;
                let finished = self.sink.is_finished();
                self.ack.send_modify(|a| {
                    a.durable = durable.unwrap_or(0);
                    a.finished = finished;
                });
                if finished {
                    info!(lesson = %self.lesson, durable = ?durable, "recording finished");
                    let report = chaperone_archive::verify::verify_lesson(
                        self.archive.store.as_ref(),
                        &self.lesson,
                        &self.archive.signer.public(),
                    )
                    .await;
                    if !report.ok {
                        self.metrics.verify_failures.inc();
                        error!(lesson = %self.lesson, report = %report.to_human(), "finished recording does not verify");
                    }
                }
            }
            Err(e) => {
                self.metrics.write_errors.inc();
                let retry_in = self.backoff.next().unwrap_or(MAX_BACKOFF);
                error!(lesson = %self.lesson, error = %e, pending = self.sink.pending(), ?retry_in,
                    "recording write failed; frames kept");
                self.retry_at = Some(crate::clock::now() + retry_in);
            }
        }
    }
}

/// The backoff between a lesson's write retries: from 250 ms up to
/// [`MAX_BACKOFF`].
fn write_backoff() -> backon::ExponentialBackoff {
    chaperone_archive::store::backoff(Duration::from_millis(250), MAX_BACKOFF)
}
