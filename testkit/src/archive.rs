//! Archive fixtures: a lesson written by the real [`LessonWriter`] into any
//! store with deterministic segments (round trips against the filesystem
//! and S3, outage tests), and a whole lesson written into a temporary
//! directory with the files at hand for tampering ([`write_lesson`]).
#![allow(clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use chaperone_archive::ObjectStore;
use chaperone_archive::keys::{RecorderPublicKey, RecorderSigningKey};
use chaperone_archive::layout;
use chaperone_archive::manifest::{Entry, Manifest};
use chaperone_archive::segment::{RecipientSet, Record, Segment};
use chaperone_archive::verify::{Finding, Report, verify_lesson};
use chaperone_archive::writer::{ArchiveError, LessonWriter};
use chaperone_protocol::LessonId;
use object_store::local::LocalFileSystem;

/// 2026-01-05 09:00:00 UTC in unix microseconds.
pub const T0: u64 = 1_767_603_600_000_000;
/// Segment interval, microseconds.
pub const INTERVAL: u64 = 10_000_000;
/// Records per segment.
pub const RECORDS: u64 = 10;

/// One lesson being written.
#[derive(Debug)]
pub struct TestLesson {
    /// The lesson.
    pub lesson: LessonId,
    /// The review identity segments are sealed to.
    pub review_recipient: age::x25519::Recipient,
    /// The manifest-signing key's public half.
    pub public: RecorderPublicKey,
    /// The writer.
    pub writer: LessonWriter,
    /// Segments appended so far, by index.
    pub segments: Vec<Segment>,
    /// Bytes in each record's frame.
    pub frame_bytes: usize,
}

impl TestLesson {
    /// A lesson writing into `store`, sealed to `review`, signed by
    /// `signer`, with frames of `frame_bytes` bytes.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        lesson: LessonId,
        review: age::x25519::Recipient,
        signer: RecorderSigningKey,
        frame_bytes: usize,
    ) -> Self {
        let recipients =
            RecipientSet::new(vec![review.clone()]).expect("one recipient is a valid set");
        let public = signer.public();
        Self {
            lesson,
            review_recipient: review,
            public,
            writer: LessonWriter::new(store, lesson, recipients, signer),
            segments: Vec::new(),
            frame_bytes,
        }
    }

    /// Segment `index` of this lesson (deterministic contents).
    pub fn segment(&self, index: u64) -> Segment {
        padded_segment(self.lesson, index, index * RECORDS, self.frame_bytes)
    }

    /// Appends the next segment.
    pub async fn append_next(&mut self) -> Result<Entry, ArchiveError> {
        let index = self.writer.next_index();
        let s = self.segment(index);
        let e = self
            .writer
            .append(
                &s,
                vec!["events".into(), "chat".into(), format!("t{index}")],
            )
            .await?;
        self.segments.push(s);
        Ok(e)
    }

    /// Writes a checkpoint.
    pub async fn checkpoint(&mut self) -> Result<Manifest, ArchiveError> {
        let now = T0 + self.writer.next_index() * INTERVAL + 1;
        self.writer.checkpoint(now).await
    }

    /// Writes the final checkpoint.
    pub async fn finish(&mut self) -> Result<Manifest, ArchiveError> {
        let now = T0 + self.writer.next_index() * INTERVAL + 5;
        self.writer.finish(now).await
    }

    /// Verifies the lesson in `store`.
    pub async fn verify(&self, store: &dyn ObjectStore) -> Report {
        verify_lesson(store, &self.lesson, &self.public).await
    }
}

/// The lesson id [`write_lesson`] uses.
pub fn lesson_id() -> LessonId {
    LessonId::from_bytes([0x5a; 16])
}

/// Segment `index` of `lesson`, its records numbered from `first_seq`.
pub fn segment(lesson: LessonId, index: u64, first_seq: u64) -> Segment {
    padded_segment(lesson, index, first_seq, 0)
}

/// [`segment`] with each frame padded to at least `frame_bytes` bytes.
pub fn padded_segment(lesson: LessonId, index: u64, first_seq: u64, frame_bytes: usize) -> Segment {
    let start = T0 + index * INTERVAL;
    let records = (0..RECORDS)
        .map(|k| {
            let seq = first_seq + k;
            let mut frame = format!("frame {seq} of segment {index}").into_bytes();
            frame.resize(frame_bytes.max(frame.len()), b'.');
            Record {
                seq,
                arrival_unix_micros: start + k * 1000,
                frame,
            }
        })
        .collect();
    Segment::new(lesson, index, start, start + INTERVAL, records)
        .expect("fixture segments are valid")
}

/// A filesystem store rooted at `dir`.
pub fn store_in(dir: &tempfile::TempDir) -> Arc<dyn ObjectStore> {
    Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local store"))
}

/// A lesson written into a temporary directory by [`write_lesson`].
#[allow(missing_debug_implementations)] // an age identity has no Debug, by design
pub struct Fixture {
    /// The directory the store is rooted at.
    pub dir: tempfile::TempDir,
    /// The store, on that directory.
    pub store: Arc<dyn ObjectStore>,
    /// The lesson written.
    pub lesson: LessonId,
    /// The review identity its segments are sealed to.
    pub review: age::x25519::Identity,
    /// The public half of the key its manifests are signed with.
    pub signing_public: RecorderPublicKey,
    /// The segments written, in order.
    pub segments: Vec<Segment>,
    /// Checkpoint numbers written, the last one final.
    pub checkpoints: Vec<u64>,
}

/// Writes `n` segments, a checkpoint after every second one, and a final
/// checkpoint.
pub async fn write_lesson(n: u64) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_in(&dir);
    let lesson = lesson_id();
    let review = age::x25519::Identity::generate();
    let recipients = RecipientSet::new(vec![review.to_public()]).expect("one recipient");
    let signer = RecorderSigningKey::generate().expect("key");
    let signing_public = signer.public();
    let mut writer = LessonWriter::new(store.clone(), lesson, recipients, signer);
    let mut segments = Vec::new();
    let mut checkpoints = Vec::new();
    for i in 0..n {
        let s = segment(lesson, i, i * RECORDS);
        writer
            .append(&s, vec!["events".into(), "chat".into(), format!("t{i}")])
            .await
            .expect("append");
        segments.push(s);
        if i % 2 == 1 {
            let m = writer
                .checkpoint(T0 + (i + 1) * INTERVAL + 1)
                .await
                .expect("checkpoint");
            checkpoints.push(m.checkpoint);
        }
    }
    let m = writer.finish(T0 + n * INTERVAL + 5).await.expect("finish");
    checkpoints.push(m.checkpoint);
    Fixture {
        dir,
        store,
        lesson,
        review,
        signing_public,
        segments,
        checkpoints,
    }
}

impl Fixture {
    /// The lesson's verify report.
    pub async fn verify(&self) -> Report {
        verify_lesson(self.store.as_ref(), &self.lesson, &self.signing_public).await
    }

    /// The file an object of the store is kept in.
    pub fn fs_path(&self, p: &object_store::path::Path) -> PathBuf {
        self.dir.path().join(p.as_ref())
    }

    /// Segment `index`'s file.
    pub fn segment_file(&self, index: u64) -> PathBuf {
        self.fs_path(&layout::segment_path(&self.lesson, index))
    }

    /// Checkpoint `checkpoint`'s manifest file.
    pub fn manifest_file(&self, checkpoint: u64) -> PathBuf {
        self.fs_path(&layout::manifest_path(&self.lesson, checkpoint))
    }

    /// Checkpoint `checkpoint`'s signature file.
    pub fn signature_file(&self, checkpoint: u64) -> PathBuf {
        self.fs_path(&layout::signature_path(&self.lesson, checkpoint))
    }

    /// The final checkpoint's number.
    pub fn final_checkpoint(&self) -> u64 {
        *self
            .checkpoints
            .last()
            .expect("at least the final checkpoint")
    }

    /// Checkpoint `checkpoint`'s manifest, parsed.
    pub fn read_manifest(&self, checkpoint: u64) -> Manifest {
        Manifest::parse(&std::fs::read(self.manifest_file(checkpoint)).expect("read manifest"))
            .expect("parse manifest")
    }

    /// Rewrites a stored checkpoint in canonical form after `edit`, without
    /// re-signing: what an attacker without the signing key can do.
    pub fn edit_manifest(&self, checkpoint: u64, edit: impl FnOnce(&mut Manifest)) {
        let mut m = self.read_manifest(checkpoint);
        edit(&mut m);
        std::fs::write(self.manifest_file(checkpoint), m.canonical_bytes()).expect("write");
    }
}

/// The findings that are problems.
pub fn problems(r: &Report) -> Vec<Finding> {
    r.findings
        .iter()
        .filter(|f| f.is_problem())
        .cloned()
        .collect()
}
