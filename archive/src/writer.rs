//! The archive writer: puts a lesson's sealed segments and signed manifest
//! checkpoints into an [`ObjectStore`], in the layout of [`crate::layout`].
//!
//! This module owns the write discipline. It must never overwrite an object
//! (every write is put-if-absent where the store supports it), never hold
//! an age identity, and never read a clock.
//!
//! # Resuming
//!
//! A recorder that takes over a lesson (after a crash, or another instance's)
//! continues from the highest *signed* checkpoint ([`LessonWriter::resume`]).
//! A segment stored after that checkpoint, or a checkpoint whose signature
//! never got written, was never acknowledged to the gateway, so its frames
//! are replayed into the segments that follow; the object itself is moved
//! to `orphans/` (never silently deleted, never overwritten) so that the
//! numbering continues without a hole, and `verify` lists it as a notice.

use std::sync::Arc;

use chaperone_protocol::LessonId;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};

use crate::keys::RecorderSigningKey;
use crate::layout::{
    ObjectKind, classify, lesson_prefix, manifest_path, public_key_path, segment_path,
    signature_path,
};
use crate::manifest::{
    self, Entry, GENESIS_PREV, Gap, MANIFEST_FORMAT, MAX_TRACKS, Manifest, ManifestError,
};
use crate::segment::{RecipientSet, SealError, Segment};

/// Why an archive write failed. Nothing already stored is ever changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// An object already exists at the path with different bytes; it was
    /// left as it was.
    #[error("{path} already exists with different contents; not overwritten")]
    AlreadyExists {
        /// The path.
        path: String,
    },
    /// The segment's index is not the next one expected.
    #[error("segment index {got}, expected {expected}")]
    IndexOutOfOrder {
        /// The index expected next.
        expected: u64,
        /// The index given.
        got: u64,
    },
    /// The segment belongs to another lesson.
    #[error("segment of lesson {got} given to the writer of {expected}")]
    WrongLesson {
        /// This writer's lesson.
        expected: LessonId,
        /// The segment's lesson.
        got: LessonId,
    },
    /// The segment's seqs do not follow the previous segment's, and no gap
    /// was recorded for the difference.
    #[error("segment starts at seq {got}; expected {expected} (record a gap first)")]
    SeqDiscontinuity {
        /// The seq expected.
        expected: u64,
        /// The segment's first seq.
        got: u64,
    },
    /// The writer has already written its final checkpoint.
    #[error("lesson already finalised")]
    Finalised,
    /// The stored archive cannot be continued by this recorder.
    #[error("cannot resume the archive: {0}")]
    Unresumable(String),
    /// A track name or gap reason is not valid in a manifest.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Sealing failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
}

/// Whether a put-if-absent stored the object or found it already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// Written now.
    Written,
    /// Already present with identical bytes (a retried write).
    AlreadyPresent,
}

/// Puts `bytes` at `path` only if nothing is there. If the store does not
/// support conditional puts, falls back to check-then-put (which a
/// concurrent writer could race; the archive has one writer per lesson).
pub async fn put_if_absent(
    store: &dyn ObjectStore,
    path: &Path,
    bytes: Vec<u8>,
) -> Result<PutOutcome, ArchiveError> {
    let bytes = bytes::Bytes::from(bytes);
    let payload = PutPayload::from(bytes.clone());
    let opts = PutOptions::from(PutMode::Create);
    match store.put_opts(path, payload.clone(), opts).await {
        Ok(_) => Ok(PutOutcome::Written),
        Err(object_store::Error::AlreadyExists { .. }) => {
            same_or_conflict(store, path, &bytes).await
        }
        Err(
            object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. },
        ) => match store.head(path).await {
            Ok(_) => same_or_conflict(store, path, &bytes).await,
            Err(object_store::Error::NotFound { .. }) => {
                store.put(path, payload).await?;
                Ok(PutOutcome::Written)
            }
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

async fn same_or_conflict(
    store: &dyn ObjectStore,
    path: &Path,
    bytes: &[u8],
) -> Result<PutOutcome, ArchiveError> {
    let existing = store.get(path).await?.bytes().await?;
    if existing.as_ref() == bytes {
        Ok(PutOutcome::AlreadyPresent)
    } else {
        Err(ArchiveError::AlreadyExists {
            path: path.to_string(),
        })
    }
}

/// Writes one lesson: seals each segment to the recipient set, stores it
/// put-if-absent, chains it into the manifest, and writes signed
/// checkpoints. Holds public recipients and the manifest-signing key only:
/// it cannot decrypt what it writes.
#[derive(Debug)]
pub struct LessonWriter {
    store: Arc<dyn ObjectStore>,
    lesson: LessonId,
    recipients: RecipientSet,
    signer: RecorderSigningKey,
    entries: Vec<Entry>,
    gaps: Vec<Gap>,
    next_checkpoint: u64,
    /// The seq the next segment must start at (None before the first).
    next_seq: Option<u64>,
    finalised: bool,
    published_key: bool,
}

impl LessonWriter {
    /// A writer for a new lesson.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        lesson: LessonId,
        recipients: RecipientSet,
        signer: RecorderSigningKey,
    ) -> Self {
        Self {
            store,
            lesson,
            recipients,
            signer,
            entries: Vec::new(),
            gaps: Vec::new(),
            next_checkpoint: 0,
            next_seq: None,
            finalised: false,
            published_key: false,
        }
    }

    /// A writer continuing the lesson's archive from its highest signed
    /// checkpoint, or a new writer if it has none. Objects written after
    /// that checkpoint are moved to `orphans/` (see the module docs). Refuses
    /// a checkpoint signed by another key or sealed to other recipients.
    pub async fn resume(
        store: Arc<dyn ObjectStore>,
        lesson: LessonId,
        recipients: RecipientSet,
        signer: RecorderSigningKey,
        now_unix_micros: u64,
    ) -> Result<Self, ArchiveError> {
        let mut segments = Vec::new();
        let mut manifests = std::collections::BTreeSet::new();
        let mut signatures = std::collections::BTreeSet::new();
        let mut listing = store.list(Some(&lesson_prefix(&lesson)));
        while let Some(meta) = futures_util::StreamExt::next(&mut listing).await {
            let meta = meta?;
            match classify(&lesson, &meta.location) {
                ObjectKind::Segment(i) => segments.push(i),
                ObjectKind::Manifest(n) => {
                    manifests.insert(n);
                }
                ObjectKind::Signature(n) => {
                    signatures.insert(n);
                }
                _ => {}
            }
        }
        drop(listing);
        let mut writer = Self::new(store, lesson, recipients, signer);
        let latest = manifests
            .iter()
            .rev()
            .find(|n| signatures.contains(n))
            .copied();
        if let Some(n) = latest {
            let bytes = writer
                .store
                .get(&manifest_path(&lesson, n))
                .await?
                .bytes()
                .await?;
            let sig = writer
                .store
                .get(&signature_path(&lesson, n))
                .await?
                .bytes()
                .await?;
            if !writer.signer.public().verify(&bytes, &sig) {
                return Err(ArchiveError::Unresumable(format!(
                    "checkpoint {n} is not signed by this recorder's key"
                )));
            }
            let m = Manifest::parse(&bytes)?;
            if m.recipients != writer.recipients.to_strings() {
                return Err(ArchiveError::Unresumable(
                    "the lesson was sealed to other recipients".to_owned(),
                ));
            }
            writer.next_seq = m.entries.last().and_then(|e| e.last_seq.checked_add(1));
            for g in &m.gaps {
                if writer.next_seq == Some(g.first_missing_seq) {
                    writer.next_seq = g.last_missing_seq.checked_add(1);
                }
            }
            writer.entries = m.entries;
            writer.gaps = m.gaps;
            writer.next_checkpoint = n + 1;
            writer.finalised = m.is_final;
            writer.published_key = true;
        }
        let first_orphan_segment = writer.next_index();
        let mut orphans: Vec<Path> = segments
            .into_iter()
            .filter(|&i| i >= first_orphan_segment)
            .map(|i| segment_path(&lesson, i))
            .collect();
        for n in manifests.iter().chain(signatures.iter()) {
            if latest.is_none_or(|l| *n > l) {
                orphans.push(manifest_path(&lesson, *n));
                orphans.push(signature_path(&lesson, *n));
            }
        }
        orphans.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
        orphans.dedup();
        for path in orphans {
            writer.set_aside(&path, now_unix_micros).await?;
        }
        Ok(writer)
    }

    /// Moves one object to `orphans/` (copy put-if-absent, then delete).
    async fn set_aside(&self, path: &Path, now_unix_micros: u64) -> Result<(), ArchiveError> {
        let bytes = match self.store.get(path).await {
            Ok(got) => got.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let name = path.filename().unwrap_or("object");
        let to = Path::from(format!(
            "lessons/{}/orphans/{name}.{now_unix_micros}",
            self.lesson
        ));
        put_if_absent(self.store.as_ref(), &to, bytes.to_vec()).await?;
        self.store.delete(path).await?;
        tracing::warn!(lesson = %self.lesson, from = %path, %to,
            "object written after the last signed checkpoint set aside; its frames are replayed");
        Ok(())
    }

    /// Whether the final checkpoint has been written.
    pub fn is_finalised(&self) -> bool {
        self.finalised
    }

    /// The seq the next segment must start at, once anything was written.
    pub fn next_seq(&self) -> Option<u64> {
        self.next_seq
    }

    /// The highest seq the written checkpoints cover (after [`Self::resume`]).
    pub fn covered_up_to(&self) -> Option<u64> {
        self.next_seq.and_then(|n| n.checked_sub(1))
    }

    /// The lesson written.
    pub fn lesson(&self) -> LessonId {
        self.lesson
    }

    /// The recipients segments are sealed to.
    pub fn recipients(&self) -> &RecipientSet {
        &self.recipients
    }

    /// Entries written so far.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The index the next segment must carry.
    pub fn next_index(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Records a known loss of seqs `first_missing_seq..=last_missing_seq`.
    /// The next segment may then start after it.
    pub fn record_gap(&mut self, gap: Gap) -> Result<(), ArchiveError> {
        if self.finalised {
            return Err(ArchiveError::Finalised);
        }
        manifest::check_reason(&gap.reason)?;
        if let Some(next) = self.next_seq
            && gap.first_missing_seq == next
        {
            self.next_seq = gap.last_missing_seq.checked_add(1);
        }
        self.gaps.push(gap);
        Ok(())
    }

    /// Seals and stores `segment` (which must carry [`Self::next_index`] and
    /// continue the seqs), then appends its manifest entry. On error nothing
    /// is appended.
    pub async fn append(
        &mut self,
        segment: &Segment,
        tracks: Vec<String>,
    ) -> Result<Entry, ArchiveError> {
        if self.finalised {
            return Err(ArchiveError::Finalised);
        }
        let h = segment.header();
        if h.lesson != self.lesson {
            return Err(ArchiveError::WrongLesson {
                expected: self.lesson,
                got: h.lesson,
            });
        }
        if h.index != self.next_index() {
            return Err(ArchiveError::IndexOutOfOrder {
                expected: self.next_index(),
                got: h.index,
            });
        }
        if let Some(next) = self.next_seq
            && h.first_seq != next
        {
            return Err(ArchiveError::SeqDiscontinuity {
                expected: next,
                got: h.first_seq,
            });
        }
        if tracks.len() > MAX_TRACKS {
            return Err(ManifestError::TooManyTracks {
                count: tracks.len(),
            }
            .into());
        }
        for t in &tracks {
            manifest::check_track(t)?;
        }
        let sealed = crate::segment::seal(segment, &self.recipients)?;
        let entry = Entry {
            end: h.end_unix_micros,
            first_seq: h.first_seq,
            index: h.index,
            last_seq: h.last_seq,
            prev: self
                .entries
                .last()
                .map_or_else(|| GENESIS_PREV.to_owned(), Entry::chain_hash),
            sha256: manifest::sha256_hex(&sealed),
            size: sealed.len() as u64,
            start: h.start_unix_micros,
            tracks,
        };
        put_if_absent(
            self.store.as_ref(),
            &segment_path(&self.lesson, h.index),
            sealed,
        )
        .await?;
        self.next_seq = h.last_seq.checked_add(1);
        self.entries.push(entry.clone());
        Ok(entry)
    }

    /// The manifest as it stands, for checkpoint `checkpoint`.
    fn manifest(&self, now_unix_micros: u64, is_final: bool) -> Manifest {
        Manifest {
            checkpoint: self.next_checkpoint,
            created: now_unix_micros,
            entries: self.entries.clone(),
            is_final,
            format: MANIFEST_FORMAT.to_owned(),
            gaps: self.gaps.clone(),
            lesson: self.lesson.to_string(),
            recipients: self.recipients.to_strings(),
        }
    }

    /// Writes a signed checkpoint of the manifest (and, the first time, the
    /// public key). Returns the manifest written.
    ///
    /// Durability rule for the ingest shell: acknowledge seqs to the gateway
    /// only once a checkpoint covering them is written. A segment stored
    /// after the last checkpoint cannot be described by a restarted recorder
    /// (it cannot decrypt it), so its frames must still be replayable.
    pub async fn checkpoint(&mut self, now_unix_micros: u64) -> Result<Manifest, ArchiveError> {
        self.write_checkpoint(now_unix_micros, false).await
    }

    /// Writes the final signed checkpoint; the writer accepts nothing after.
    pub async fn finish(&mut self, now_unix_micros: u64) -> Result<Manifest, ArchiveError> {
        self.write_checkpoint(now_unix_micros, true).await
    }

    async fn write_checkpoint(
        &mut self,
        now_unix_micros: u64,
        is_final: bool,
    ) -> Result<Manifest, ArchiveError> {
        if self.finalised {
            return Err(ArchiveError::Finalised);
        }
        if !self.published_key {
            put_if_absent(
                self.store.as_ref(),
                &public_key_path(&self.lesson),
                self.signer.public().to_pem().into_bytes(),
            )
            .await?;
            self.published_key = true;
        }
        let m = self.manifest(now_unix_micros, is_final);
        let bytes = m.canonical_bytes();
        let sig = self.signer.sign(&bytes);
        // The manifest first, then its signature: a crash between leaves an
        // unsigned checkpoint, which verify reports rather than trusts.
        put_if_absent(
            self.store.as_ref(),
            &manifest_path(&self.lesson, m.checkpoint),
            bytes,
        )
        .await?;
        put_if_absent(
            self.store.as_ref(),
            &signature_path(&self.lesson, m.checkpoint),
            sig.to_vec(),
        )
        .await?;
        self.next_checkpoint += 1;
        self.finalised = is_final;
        Ok(m)
    }
}

/// An object store on the local filesystem under `dir` (created if missing).
pub fn local_store(dir: &std::path::Path) -> Result<Arc<dyn ObjectStore>, ArchiveError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        ArchiveError::Store(object_store::Error::Generic {
            store: "local",
            source: Box::new(e),
        })
    })?;
    Ok(Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(dir)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips_through_classify() {
        let l = LessonId::from_bytes([0xab; 16]);
        assert_eq!(
            segment_path(&l, 42).as_ref(),
            format!("lessons/{}/segments/0000000042.age", "ab".repeat(16))
        );
        assert_eq!(classify(&l, &segment_path(&l, 42)), ObjectKind::Segment(42));
        assert_eq!(classify(&l, &manifest_path(&l, 3)), ObjectKind::Manifest(3));
        assert_eq!(
            classify(&l, &signature_path(&l, 3)),
            ObjectKind::Signature(3)
        );
        assert_eq!(classify(&l, &public_key_path(&l)), ObjectKind::PublicKey);
        let odd = Path::from(format!("lessons/{l}/segments/42.age"));
        assert_eq!(classify(&l, &odd), ObjectKind::Unknown);
    }
}
