//! Turning a lesson's stream of feed frames into sealed segments: frames
//! are collected for a configured interval (default 10 s), then sealed,
//! stored and covered by a signed manifest checkpoint. Only after that
//! checkpoint is a frame durable (see [`LessonWriter::checkpoint`]); the
//! caller acknowledges up to the seq [`LessonSink::flush`] returns.
//!
//! A failed store keeps the frames pending: nothing is dropped, and the
//! next flush tries again with the same segment index. A known loss
//! ([`LessonSink::push_gap`]) ends the segment before it and is written into
//! the manifest, never hidden.

use std::collections::BTreeSet;
use std::time::Duration;

use chaperone_archive::manifest::{Gap, Manifest};
use chaperone_archive::segment::{Record, Segment, SegmentError};
use chaperone_archive::writer::{ArchiveError, LessonWriter};

/// Why a sink could not take or store frames.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The archive refused or the store failed; the frames are still pending.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// A frame breaks a segment limit (too large, seq not increasing).
    #[error(transparent)]
    Segment(#[from] SegmentError),
}

#[derive(Debug)]
enum Pending {
    Record(Record, Option<String>),
    Gap(Gap),
}

/// One lesson's frames on their way into the archive.
#[derive(Debug)]
pub struct LessonSink {
    writer: LessonWriter,
    pending: Vec<Pending>,
    segment_micros: u64,
    /// Highest seq taken (pending or stored), for ordering checks.
    last_taken: Option<u64>,
    /// Whether a segment was stored that no checkpoint covers yet.
    uncheckpointed: Option<u64>,
    durable_up_to: Option<u64>,
}

impl LessonSink {
    /// A sink writing through `writer`, sealing a segment every `segment`.
    /// A resumed writer's covered seqs count as durable.
    pub fn new(writer: LessonWriter, segment: Duration) -> Self {
        let covered = writer.covered_up_to();
        Self {
            writer,
            pending: Vec::new(),
            segment_micros: u64::try_from(segment.as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
            last_taken: covered,
            uncheckpointed: None,
            durable_up_to: covered,
        }
    }

    /// Frames waiting for the next segment.
    pub fn pending(&self) -> usize {
        self.pending
            .iter()
            .filter(|p| matches!(p, Pending::Record(..)))
            .count()
    }

    /// The highest seq covered by a written checkpoint.
    pub fn durable_up_to(&self) -> Option<u64> {
        self.durable_up_to
    }

    /// The highest seq taken so far (pending or stored).
    pub fn last_taken(&self) -> Option<u64> {
        self.last_taken
    }

    /// Whether the lesson's final checkpoint is written.
    pub fn is_finished(&self) -> bool {
        self.writer.is_finalised()
    }

    /// Takes a frame (seqs must increase) naming `track`.
    pub fn push(&mut self, record: Record, track: Option<String>) -> Result<(), IngestError> {
        if let Some(last) = self.last_taken
            && record.seq <= last
        {
            return Err(SegmentError::SeqNotIncreasing {
                prev: last,
                seq: record.seq,
            }
            .into());
        }
        self.last_taken = Some(record.seq);
        self.pending.push(Pending::Record(record, track));
        Ok(())
    }

    /// Notes that seqs `gap.first_missing_seq..=gap.last_missing_seq` will
    /// never arrive. They must follow everything taken so far.
    pub fn push_gap(&mut self, gap: Gap) -> Result<(), IngestError> {
        if let Some(last) = self.last_taken
            && gap.first_missing_seq <= last
        {
            return Err(SegmentError::SeqNotIncreasing {
                prev: last,
                seq: gap.first_missing_seq,
            }
            .into());
        }
        self.last_taken = Some(gap.last_missing_seq);
        self.pending.push(Pending::Gap(gap));
        Ok(())
    }

    /// Whether the pending frames span a whole segment interval at `now`.
    pub fn due(&self, now_unix_micros: u64) -> bool {
        let first = self.pending.iter().find_map(|p| match p {
            Pending::Record(r, _) => Some(r.arrival_unix_micros),
            Pending::Gap(_) => None,
        });
        first.is_some_and(|at| now_unix_micros.saturating_sub(at) >= self.segment_micros)
            || self.pending.iter().any(|p| matches!(p, Pending::Gap(_)))
    }

    /// Seals the pending frames into segments (split at recorded gaps),
    /// stores them and writes a checkpoint. Returns the highest durable seq.
    /// On error whatever was not stored stays pending.
    pub async fn flush(&mut self, now_unix_micros: u64) -> Result<Option<u64>, IngestError> {
        while !self.pending.is_empty() {
            if let Some(Pending::Gap(gap)) = self.pending.first() {
                let last = gap.last_missing_seq;
                self.writer.record_gap(gap.clone())?;
                self.pending.remove(0);
                self.uncheckpointed = Some(last);
                continue;
            }
            let run = self
                .pending
                .iter()
                .position(|p| matches!(p, Pending::Gap(_)))
                .unwrap_or(self.pending.len());
            let mut records = Vec::with_capacity(run);
            let mut tracks = BTreeSet::new();
            for p in &self.pending[..run] {
                if let Pending::Record(r, t) = p {
                    records.push(r.clone());
                    if let Some(t) = t {
                        tracks.insert(t.clone());
                    }
                }
            }
            let (Some(first), Some(last)) = (records.first(), records.last()) else {
                break;
            };
            let start = first.arrival_unix_micros;
            let end = now_unix_micros.max(last.arrival_unix_micros).max(start);
            let last_seq = last.seq;
            let segment = Segment::new(
                self.writer.lesson(),
                self.writer.next_index(),
                start,
                end,
                records,
            )?;
            self.writer
                .append(&segment, tracks.into_iter().collect())
                .await?;
            self.pending.drain(..run);
            self.uncheckpointed = Some(last_seq);
        }
        // A checkpoint that failed is retried even with nothing new pending.
        if let Some(stored) = self.uncheckpointed {
            self.writer.checkpoint(now_unix_micros).await?;
            self.uncheckpointed = None;
            self.durable_up_to = Some(stored);
        }
        Ok(self.durable_up_to)
    }

    /// Flushes what is pending and writes the final manifest.
    pub async fn finish(&mut self, now_unix_micros: u64) -> Result<Manifest, IngestError> {
        self.flush(now_unix_micros).await?;
        Ok(self.writer.finish(now_unix_micros).await?)
    }
}
