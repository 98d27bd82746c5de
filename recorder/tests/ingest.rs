//! The ingest sink: frames collected into segments, sealed, stored and
//! covered by checkpoints; a store failure keeps them pending, and a later
//! flush stores them with nothing lost; the result verifies.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chaperone_archive::keys::RecorderSigningKey;
use chaperone_archive::segment::{RecipientSet, Record};
use chaperone_archive::verify::verify_lesson;
use chaperone_archive::writer::LessonWriter;
use chaperone_recorder::ingest::LessonSink;
use chaperone_review::open::open_segment;
use chaperone_testkit::archive::{T0, lesson_id, store_in};

fn record(seq: u64, at: u64) -> Record {
    Record {
        seq,
        arrival_unix_micros: at,
        frame: format!("frame {seq}").into_bytes(),
    }
}

#[tokio::test]
async fn frames_become_segments_and_a_verified_final_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir);
    let review = age::x25519::Identity::generate();
    let recipients = RecipientSet::new(vec![review.to_public()]).unwrap();
    let signer = RecorderSigningKey::generate().unwrap();
    let public = signer.public();
    let writer = LessonWriter::new(store.clone(), lesson_id(), recipients, signer);
    let mut sink = LessonSink::new(writer, Duration::from_secs(10));

    assert!(!sink.due(T0));
    for seq in 0..5 {
        sink.push(record(seq, T0 + seq * 1_000_000), Some("events".into()))
            .unwrap();
    }
    assert!(!sink.due(T0 + 9_000_000));
    assert!(sink.due(T0 + 10_000_000));
    // Seqs must increase.
    assert!(sink.push(record(4, T0 + 5_000_000), None).is_err());
    assert_eq!(sink.flush(T0 + 10_000_000).await.unwrap(), Some(4));
    assert_eq!(sink.pending(), 0);
    // Nothing pending: flush is a no-op that reports what is durable.
    assert_eq!(sink.flush(T0 + 11_000_000).await.unwrap(), Some(4));
    for seq in 5..8 {
        sink.push(record(seq, T0 + 12_000_000 + seq), Some("chat".into()))
            .unwrap();
    }
    let manifest = sink.finish(T0 + 20_000_000).await.unwrap();
    assert!(manifest.is_final);
    assert_eq!(manifest.entries.len(), 2);
    assert_eq!(sink.durable_up_to(), Some(7));

    let report = verify_lesson(store.as_ref(), &lesson_id(), &public).await;
    assert!(report.findings.is_empty(), "{report:?}");
    assert_eq!(report.segments_ok, 2);
    // The frames are there, readable with the review identity only.
    let sealed = std::fs::read(
        dir.path()
            .join(format!("lessons/{}/segments/0000000001.age", lesson_id())),
    )
    .unwrap();
    let seg = open_segment(&sealed, &review).unwrap();
    assert_eq!(
        seg.records().iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
}

#[tokio::test]
async fn a_failed_store_keeps_frames_pending_until_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir(&root).unwrap();
    let store: std::sync::Arc<dyn object_store::ObjectStore> =
        std::sync::Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&root).unwrap());
    let review = age::x25519::Identity::generate();
    let recipients = RecipientSet::new(vec![review.to_public()]).unwrap();
    let signer = RecorderSigningKey::generate().unwrap();
    let public = signer.public();
    let mut sink = LessonSink::new(
        LessonWriter::new(store.clone(), lesson_id(), recipients, signer),
        Duration::from_secs(10),
    );
    for seq in 0..3 {
        sink.push(record(seq, T0 + seq), None).unwrap();
    }
    // A file sits where the store needs a directory: every write fails
    // (even for root), and nothing is lost.
    let blocker = root.join("lessons");
    std::fs::write(&blocker, b"not a directory").unwrap();
    assert!(sink.flush(T0 + 10_000_000).await.is_err());
    assert!(sink.flush(T0 + 10_500_000).await.is_err());
    std::fs::remove_file(&blocker).unwrap();
    assert_eq!(sink.pending(), 3);
    assert_eq!(sink.durable_up_to(), None);
    assert_eq!(sink.flush(T0 + 11_000_000).await.unwrap(), Some(2));
    sink.finish(T0 + 12_000_000).await.unwrap();
    let report = verify_lesson(store.as_ref(), &lesson_id(), &public).await;
    assert!(report.findings.is_empty(), "{report:?}");
}
