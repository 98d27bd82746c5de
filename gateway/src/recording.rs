//! The embedded recorder: in `gateway --dev` and single-node deployments
//! the recorder runs in-process. Every lesson's records (events, public and
//! private chat) become feed frames with per-lesson sequence numbers and go
//! through the recorder crate's [`LessonSink`]: segments sealed with age to
//! the configured recipients (this process never holds an identity),
//! stored through `object_store` with signed, hash-chained manifests that
//! `recorder verify` checks.
//!
//! The lesson core's recording gate follows this recorder's health: while
//! segments are being written, lessons are told the recorder is attached;
//! when a write fails every lesson is told it is lost (pupils are held) and
//! the frames stay pending until a write succeeds again. Records arrive on
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
use crate::room::{RoomRecord, Rooms};

/// Whether the embedded recorder is writing (the recording gate's input).
#[derive(Clone, Debug, Default)]
pub struct RecorderStatus(Arc<AtomicBool>);

impl RecorderStatus {
    /// True while segments are being written.
    pub fn attached(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, attached: bool) -> bool {
        self.0.swap(attached, Ordering::AcqRel) != attached
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
}

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
        rooms: Rooms,
    ) -> (JoinHandle<()>, RecorderStatus) {
        let status = RecorderStatus(Arc::new(AtomicBool::new(true)));
        let shared = status.clone();
        let task = tokio::spawn(async move {
            let mut lessons: HashMap<LessonId, LessonState> = HashMap::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    record = records.recv() => match record {
                        Some(r) => self.take(&mut lessons, r, &shared, &rooms).await,
                        None => {
                            for (lesson, mut state) in lessons.drain() {
                                if let Err(e) = state.sink.finish(unix_millis() * 1000).await {
                                    error!(%lesson, error = %e, pending = state.sink.pending(), "recording not finished at shutdown");
                                }
                            }
                            return;
                        }
                    },
                    _ = tick.tick() => {
                        let at = unix_millis() * 1000;
                        let mut failed = false;
                        for (lesson, state) in &mut lessons {
                            let retry = !shared.attached() && state.sink.pending() > 0;
                            if (state.sink.due(at) || retry)
                                && let Err(e) = state.sink.flush(at).await
                            {
                                error!(%lesson, error = %e, pending = state.sink.pending(), "recording write failed; frames kept");
                                failed = true;
                            }
                        }
                        Self::health(&shared, &rooms, !failed).await;
                    }
                }
            }
        });
        (task, status)
    }

    async fn health(status: &RecorderStatus, rooms: &Rooms, ok: bool) {
        if status.set(ok) {
            if ok {
                info!("recorder: writing again; lessons resume");
            } else {
                warn!("recorder: writes failing; lessons hold pupils until it recovers");
            }
            for room in rooms.all() {
                room.recorder(ok).await;
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

    async fn take(
        &self,
        lessons: &mut HashMap<LessonId, LessonState>,
        record: RoomRecord,
        status: &RecorderStatus,
        rooms: &Rooms,
    ) {
        let (lesson, at, record) = match record {
            RoomRecord::Record { lesson, at, record } => (lesson, at, record),
            RoomRecord::Alert { lesson, event, .. } => {
                // Also recorded as a Record; this is the safeguarding team's signal.
                warn!(target: "safeguarding", %lesson, ?event, "concern or incident raised");
                return;
            }
        };
        let state = match lessons.entry(lesson) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let Some(writer) = self.writer(lesson) else {
                    Self::health(status, rooms, false).await;
                    return;
                };
                v.insert(LessonState {
                    sink: LessonSink::new(writer, self.segment),
                    next_seq: 0,
                })
            }
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
            match state.sink.finish(unix_millis() * 1000).await {
                Ok(_) => {
                    info!(%lesson, frames = state.next_seq, "recording finished");
                    lessons.remove(&lesson);
                }
                Err(e) => {
                    error!(%lesson, error = %e, "final manifest not written; retried on the next tick")
                }
            }
        }
    }
}
