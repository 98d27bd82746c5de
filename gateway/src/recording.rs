//! The embedded recorder: in `gateway --dev` and single-node deployments
//! the recorder runs in-process. Every lesson's records (events, public and
//! private chat) and every media frame the SFU forwarded (each participant's
//! microphone, camera and screen share, as allowed) become feed frames with
//! per-lesson sequence numbers and go
//! through the recorder crate's [`LessonSink`]: segments sealed with age to
//! the configured recipients (this process never holds an identity),
//! stored through `object_store` with signed, hash-chained manifests that
//! `recorder verify` checks.
//!
//! The lesson core's recording gate follows this recorder's health: while a
//! lesson's segments are being written it is told the recorder is attached;
//! when a write fails it is told the recording is lost (pupils are held) and
//! the frames stay pending until a write succeeds again. A lesson's final
//! manifest is written a few seconds after it ends, once the participants'
//! last events (leaving) are in. Records arrive on
//! a bounded channel and a full channel makes the lesson wait, so nothing is
//! dropped on the way in. (The remote recorder and its acknowledged,
//! replayed feed are the recorder issue's.)

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chaperone_protocol::LessonId;
use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::feed::FeedFrame;
use chaperone_recorder::archive::LessonWriter;
use chaperone_recorder::ingest::LessonSink;
use chaperone_recorder::keys::RecorderSigningKey;
use chaperone_recorder::segment::{RecipientSet, Record as SegmentRecord};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::clock::{now, unix_millis};
use crate::lesson::Record;
use crate::media::RecordedFrame;
use crate::room::{RoomRecord, Rooms};

/// Whether the embedded recorder is writing (the recording gate's input),
/// and the way to stop it.
#[derive(Clone, Debug, Default)]
pub struct RecorderStatus(Arc<AtomicBool>, Arc<tokio::sync::Notify>);

impl RecorderStatus {
    /// True while segments are being written.
    pub fn attached(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, attached: bool) -> bool {
        self.0.swap(attached, Ordering::AcqRel) != attached
    }

    /// Asks the recorder to write everything pending and stop (at shutdown,
    /// after the lessons have stopped). Await its task to know it is done.
    pub fn stop(&self) {
        self.1.notify_one();
    }
}

/// Settings of the embedded recorder.
pub struct EmbeddedRecorder {
    /// Where recordings go.
    pub store: Arc<dyn chaperone_recorder::ObjectStore>,
    /// Who can open them.
    pub recipients: RecipientSet,
    /// The manifest-signing key, as PEM (each lesson's writer gets its own copy).
    pub signing_key_pem: String,
    /// Segment length.
    pub segment: Duration,
}

impl std::fmt::Debug for EmbeddedRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedRecorder")
            .field("recipients", &self.recipients.to_strings())
            .field("segment", &self.segment)
            .finish_non_exhaustive()
    }
}

struct LessonState {
    sink: LessonSink,
    next_seq: u64,
    /// Whether the last write for this lesson succeeded (its room is told when this changes).
    healthy: bool,
    /// When the lesson ended (unix micros): it is finalised once the
    /// participants' last events have arrived.
    ended_at: Option<u64>,
}

/// How long after a lesson ends its last records (people leaving) may still arrive.
const FINAL_AFTER_END_MICROS: u64 = 5_000_000;

fn unix_micros_at(at: std::time::Instant) -> u64 {
    let age = now().saturating_duration_since(at);
    (unix_millis() * 1000).saturating_sub(u64::try_from(age.as_micros()).unwrap_or(u64::MAX))
}

impl EmbeddedRecorder {
    /// Starts the recorder on `records`; it tells `rooms` when it is
    /// attached or lost. Returns its task and its status.
    pub fn spawn(
        self,
        mut records: mpsc::Receiver<RoomRecord>,
        mut frames: mpsc::Receiver<RecordedFrame>,
        rooms: Rooms,
    ) -> (JoinHandle<()>, RecorderStatus) {
        let status = RecorderStatus(
            Arc::new(AtomicBool::new(true)),
            Arc::new(tokio::sync::Notify::new()),
        );
        let shared = status.clone();
        let stop = status.1.clone();
        let task = tokio::spawn(async move {
            let mut lessons: HashMap<LessonId, LessonState> = HashMap::new();
            let mut finished = std::collections::HashSet::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    record = records.recv() => match record {
                        Some(r) => self.take(&mut lessons, &finished, r, &rooms).await,
                        None => {
                            for (lesson, mut state) in lessons.drain() {
                                if let Err(e) = state.sink.finish(unix_millis() * 1000).await {
                                    error!(%lesson, error = %e, pending = state.sink.pending(), "recording not finished at shutdown");
                                }
                            }
                            return;
                        }
                    },
                    Some(frame) = frames.recv() => self.take_media(&mut lessons, &finished, frame, &rooms).await,
                    _ = tick.tick() => self.tick(&mut lessons, &mut finished, &shared, &rooms).await,
                    () = stop.notified() => {
                        // Take what the lessons and the SFU already queued, then
                        // write it all down. Lessons that did not end get a
                        // checkpoint, not a final manifest.
                        while let Ok(r) = records.try_recv() {
                            self.take(&mut lessons, &finished, r, &rooms).await;
                        }
                        while let Ok(f) = frames.try_recv() {
                            self.take_media(&mut lessons, &finished, f, &rooms).await;
                        }
                        let at = unix_millis() * 1000;
                        for (lesson, state) in &mut lessons {
                            let result = if state.ended_at.is_some() {
                                state.sink.finish(at).await.map(|_| ())
                            } else {
                                state.sink.flush(at).await.map(|_| ())
                            };
                            match result {
                                Ok(()) => info!(%lesson, "recording written at shutdown"),
                                Err(e) => error!(%lesson, error = %e, pending = state.sink.pending(), "recording not written at shutdown"),
                            }
                        }
                        return;
                    }
                }
            }
        });
        (task, status)
    }

    /// Seals what is due, retries what failed, finalises ended lessons, and
    /// tells each lesson's room when its recording is lost or back.
    async fn tick(
        &self,
        lessons: &mut HashMap<LessonId, LessonState>,
        finished: &mut std::collections::HashSet<LessonId>,
        status: &RecorderStatus,
        rooms: &Rooms,
    ) {
        let at = unix_millis() * 1000;
        let mut done = Vec::new();
        for (lesson, state) in lessons.iter_mut() {
            let retry = !state.healthy && state.sink.pending() > 0;
            let ending = state
                .ended_at
                .is_some_and(|e| at.saturating_sub(e) >= FINAL_AFTER_END_MICROS);
            let result = if ending {
                state.sink.finish(at).await.map(|_| ())
            } else if state.sink.due(at) || retry {
                state.sink.flush(at).await.map(|_| ())
            } else {
                continue;
            };
            let ok = match result {
                Ok(()) => {
                    if ending {
                        info!(%lesson, frames = state.next_seq, "recording finished");
                        done.push(*lesson);
                    }
                    true
                }
                Err(e) => {
                    error!(%lesson, error = %e, pending = state.sink.pending(), "recording write failed; frames kept");
                    false
                }
            };
            if ok != state.healthy {
                state.healthy = ok;
                if let Some(room) = rooms.get(*lesson) {
                    room.recorder(ok).await;
                }
            }
        }
        for lesson in done {
            lessons.remove(&lesson);
            finished.insert(lesson);
        }
        let all_ok = lessons.values().all(|s| s.healthy);
        if status.set(all_ok) {
            if all_ok {
                info!("recorder: writing again");
            } else {
                warn!("recorder: writes failing; affected lessons hold pupils until it recovers");
            }
        }
    }

    fn writer(&self, lesson: LessonId) -> Option<LessonWriter> {
        match RecorderSigningKey::from_pem(&self.signing_key_pem) {
            Ok(signer) => Some(LessonWriter::new(
                self.store.clone(),
                lesson,
                self.recipients.clone(),
                signer,
            )),
            Err(e) => {
                error!(%lesson, error = %e, "recorder signing key unusable");
                None
            }
        }
    }

    /// The lesson's recording state, started on its first record.
    async fn state<'a>(
        &self,
        lessons: &'a mut HashMap<LessonId, LessonState>,
        lesson: LessonId,
        rooms: &Rooms,
    ) -> Option<&'a mut LessonState> {
        match lessons.entry(lesson) {
            std::collections::hash_map::Entry::Occupied(o) => Some(o.into_mut()),
            std::collections::hash_map::Entry::Vacant(v) => {
                let Some(writer) = self.writer(lesson) else {
                    if let Some(room) = rooms.get(lesson) {
                        room.recorder(false).await;
                    }
                    return None;
                };
                Some(v.insert(LessonState {
                    sink: LessonSink::new(writer, self.segment),
                    next_seq: 0,
                    healthy: true,
                    ended_at: None,
                }))
            }
        }
    }

    /// Appends one forwarded media frame to its lesson's recording.
    async fn take_media(
        &self,
        lessons: &mut HashMap<LessonId, LessonState>,
        finished: &std::collections::HashSet<LessonId>,
        frame: RecordedFrame,
        rooms: &Rooms,
    ) {
        let lesson = frame.lesson;
        if finished.contains(&lesson) {
            return;
        }
        let Some(state) = self.state(lessons, lesson, rooms).await else {
            return;
        };
        let seq = state.next_seq;
        let arrival_micros = unix_micros_at(frame.at);
        let track = frame.track;
        let feed = FeedFrame::Media {
            seq,
            track,
            arrival_micros,
            media_time: frame.media_time,
            clock_rate: frame.clock_rate,
            codec: frame.codec,
            discontinuity: frame.discontinuity,
            data: frame.data.to_vec(),
        };
        let bytes = match feed.to_bytes() {
            Ok(b) => b,
            Err(e) => {
                error!(%lesson, %track, error = %e, "media frame not encodable; not recorded");
                return;
            }
        };
        match state.sink.push(
            SegmentRecord {
                seq,
                arrival_unix_micros: arrival_micros,
                frame: bytes,
            },
            Some(track.to_string()),
        ) {
            Ok(()) => state.next_seq += 1,
            Err(e) => error!(%lesson, %track, error = %e, "media frame refused by the segmenter"),
        }
    }

    async fn take(
        &self,
        lessons: &mut HashMap<LessonId, LessonState>,
        finished: &std::collections::HashSet<LessonId>,
        record: RoomRecord,
        rooms: &Rooms,
    ) {
        let (lesson, at, record) = match record {
            RoomRecord::Record { lesson, at, record } => (lesson, at, record),
            RoomRecord::Alert { lesson, event, .. } => {
                // Also recorded as a Record; this is the safeguarding team's signal.
                // The kind only: a concern's words are for the DSL, not the log.
                let kind = match &event {
                    LessonEvent::Concern { participant, .. } => {
                        format!("concern from {participant}")
                    }
                    LessonEvent::Incident { .. } => "incident flagged".to_owned(),
                    _ => "alert".to_owned(),
                };
                warn!(target: "safeguarding", %lesson, %kind, "concern or incident raised");
                return;
            }
        };
        if finished.contains(&lesson) {
            // Its final manifest is written; nothing may follow it.
            let kind = match &record {
                Record::Event(_) => "event",
                Record::Chat { .. } => "chat",
            };
            error!(%lesson, kind, "record after the lesson's final manifest; not recorded");
            return;
        }
        let Some(state) = self.state(lessons, lesson, rooms).await else {
            return;
        };
        let seq = state.next_seq;
        let at_micros = unix_micros_at(at);
        let ended = matches!(record, Record::Event(LessonEvent::Ended { .. }));
        let (frame, track) = match record {
            Record::Event(event) => (
                FeedFrame::Event {
                    seq,
                    at_micros,
                    event,
                },
                "events",
            ),
            Record::Chat { from, to, text } => (
                FeedFrame::Chat {
                    seq,
                    at_micros,
                    from,
                    to,
                    text,
                },
                "chat",
            ),
        };
        let bytes = match frame.to_bytes() {
            Ok(b) => b,
            Err(e) => {
                error!(%lesson, seq, error = %e, "record not encodable; recorded as a gap is impossible, so it is logged");
                return;
            }
        };
        if let Err(e) = state.sink.push(
            SegmentRecord {
                seq,
                arrival_unix_micros: at_micros,
                frame: bytes,
            },
            Some(track.to_owned()),
        ) {
            error!(%lesson, seq, error = %e, "record refused by the segmenter");
            return;
        }
        state.next_seq += 1;
        if ended {
            state.ended_at = Some(at_micros);
        }
    }
}
