//! Shared fixtures: a lesson archive written by the real writer into a
//! `LocalFileSystem` store in a temporary directory.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use chaperone_protocol::LessonId;
use chaperone_recorder::archive::{self, LessonWriter};
use chaperone_recorder::keys::{RecorderPublicKey, RecorderSigningKey};
use chaperone_recorder::manifest::Manifest;
use chaperone_recorder::segment::{RecipientSet, Record, Segment};
use chaperone_recorder::verify::{Finding, Report, verify_lesson};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;

/// 2026-01-05 09:00:00 UTC in unix microseconds.
pub const T0: u64 = 1_767_603_600_000_000;
/// Segment interval.
pub const INTERVAL: u64 = 10_000_000;
/// Records per segment.
pub const RECORDS: u64 = 10;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn ObjectStore>,
    pub lesson: LessonId,
    pub review: age::x25519::Identity,
    pub signing_public: RecorderPublicKey,
    pub segments: Vec<Segment>,
    /// Checkpoint numbers written, the last one final.
    pub checkpoints: Vec<u64>,
}

pub fn lesson_id() -> LessonId {
    LessonId::from_bytes([0x5a; 16])
}

pub fn segment(lesson: LessonId, index: u64, first_seq: u64) -> Segment {
    let start = T0 + index * INTERVAL;
    let records = (0..RECORDS)
        .map(|k| Record {
            seq: first_seq + k,
            arrival_unix_micros: start + k * 1000,
            frame: format!("frame {} of segment {index}", first_seq + k).into_bytes(),
        })
        .collect();
    Segment::new(lesson, index, start, start + INTERVAL, records).expect("valid segment")
}

pub fn store_in(dir: &tempfile::TempDir) -> Arc<dyn ObjectStore> {
    Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local store"))
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
    pub async fn verify(&self) -> Report {
        verify_lesson(self.store.as_ref(), &self.lesson, &self.signing_public).await
    }

    pub fn fs_path(&self, p: &object_store::path::Path) -> PathBuf {
        self.dir.path().join(p.as_ref())
    }

    pub fn segment_file(&self, index: u64) -> PathBuf {
        self.fs_path(&archive::segment_path(&self.lesson, index))
    }

    pub fn manifest_file(&self, checkpoint: u64) -> PathBuf {
        self.fs_path(&archive::manifest_path(&self.lesson, checkpoint))
    }

    pub fn signature_file(&self, checkpoint: u64) -> PathBuf {
        self.fs_path(&archive::signature_path(&self.lesson, checkpoint))
    }

    pub fn final_checkpoint(&self) -> u64 {
        *self
            .checkpoints
            .last()
            .expect("at least the final checkpoint")
    }

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
