//! Turning a lesson's stream of feed frames into sealed segments: frames
//! are collected for a configured interval (default 10 s), then sealed,
//! stored and covered by a signed manifest checkpoint. Only after that
//! checkpoint is a frame durable (see [`LessonWriter::checkpoint`]); the
//! caller acknowledges up to the seq [`LessonSink::flush`] returns.
//!
//! A failed store keeps the frames pending: nothing is dropped, and the
//! next flush tries again with the same segment index.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::archive::{ArchiveError, LessonWriter};
use crate::manifest::Manifest;
use crate::segment::{Record, Segment, SegmentError};

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

/// One lesson's frames on their way into the archive.
#[derive(Debug)]
pub struct LessonSink {
    writer: LessonWriter,
    pending: Vec<Record>,
    tracks: BTreeSet<String>,
    segment_micros: u64,
    /// Highest seq stored in a segment but not yet covered by a checkpoint.
    stored_up_to: Option<u64>,
    durable_up_to: Option<u64>,
}

impl LessonSink {
    /// A sink writing through `writer`, sealing a segment every `segment`.
    pub fn new(writer: LessonWriter, segment: Duration) -> Self {
        Self {
            writer,
            pending: Vec::new(),
            tracks: BTreeSet::new(),
            segment_micros: u64::try_from(segment.as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
            stored_up_to: None,
            durable_up_to: None,
        }
    }

    /// Frames waiting for the next segment.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The highest seq covered by a written checkpoint.
    pub fn durable_up_to(&self) -> Option<u64> {
        self.durable_up_to
    }

    /// Takes a frame (seqs must increase) naming `track` if it is media.
    pub fn push(&mut self, record: Record, track: Option<String>) -> Result<(), IngestError> {
        if let Some(last) = self
            .pending
            .last()
            .map(|r| r.seq)
            .or(self.stored_up_to)
            .or(self.durable_up_to)
            && record.seq <= last
        {
            return Err(SegmentError::SeqNotIncreasing {
                prev: last,
                seq: record.seq,
            }
            .into());
        }
        if let Some(t) = track {
            self.tracks.insert(t);
        }
        self.pending.push(record);
        Ok(())
    }

    /// Whether the pending frames span a whole segment interval at `now`.
    pub fn due(&self, now_unix_micros: u64) -> bool {
        self.pending.first().is_some_and(|f| {
            now_unix_micros.saturating_sub(f.arrival_unix_micros) >= self.segment_micros
        })
    }

    /// Seals the pending frames into the next segment, stores it and writes
    /// a checkpoint. Returns the highest durable seq. On error the frames
    /// stay pending.
    pub async fn flush(&mut self, now_unix_micros: u64) -> Result<Option<u64>, IngestError> {
        if let (Some(first), Some(last)) = (self.pending.first(), self.pending.last()) {
            let start = first.arrival_unix_micros;
            let end = now_unix_micros.max(last.arrival_unix_micros).max(start);
            let last_seq = last.seq;
            let segment = Segment::new(
                self.writer.lesson(),
                self.writer.next_index(),
                start,
                end,
                self.pending.clone(),
            )?;
            self.writer
                .append(&segment, self.tracks.iter().cloned().collect())
                .await?;
            self.pending.clear();
            self.tracks.clear();
            self.stored_up_to = Some(last_seq);
        }
        // A checkpoint that failed is retried even with nothing new pending.
        if let Some(stored) = self.stored_up_to {
            self.writer.checkpoint(now_unix_micros).await?;
            self.stored_up_to = None;
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
