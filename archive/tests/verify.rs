//! Round trip and tamper tests of the archive on a real filesystem store:
//! every kind of tampering is named precisely by `verify`.

use chaperone_archive::keys::RecorderSigningKey;
use chaperone_archive::layout;
use chaperone_archive::manifest::Gap;
use chaperone_archive::segment::RecipientSet;
use chaperone_archive::verify::Finding;
use chaperone_archive::writer::{ArchiveError, LessonWriter, put_if_absent};
use chaperone_review::open::open_segment;
use chaperone_testkit::archive::*;

const N: u64 = 5;

#[tokio::test]
async fn round_trip_verifies_and_opens() {
    let f = write_lesson(N).await;
    let r = f.verify().await;
    assert!(r.ok, "{}", r.to_human());
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert_eq!(r.checkpoint, Some(f.final_checkpoint()));
    assert!(r.is_final);
    assert_eq!(r.segments_listed, N);
    assert_eq!(r.segments_ok, N);
    for (i, s) in f.segments.iter().enumerate() {
        let sealed = std::fs::read(f.segment_file(i as u64)).unwrap();
        assert_eq!(&open_segment(&sealed, &f.review).unwrap(), s);
    }
    // Chain and metadata as written.
    let m = f.read_manifest(f.final_checkpoint());
    assert_eq!(m.entries.len() as u64, N);
    assert_eq!(m.recipients, vec![f.review.to_public().to_string()]);
    assert_eq!(m.entries[1].prev, m.entries[0].chain_hash());
    assert_eq!(m.entries[3].tracks, vec!["events", "chat", "t3"]);
    // The published public key is the signer's.
    let published =
        std::fs::read_to_string(f.fs_path(&layout::public_key_path(&f.lesson))).unwrap();
    assert_eq!(published, f.signing_public.to_pem());
}

#[tokio::test]
async fn flipped_byte_is_named() {
    let f = write_lesson(N).await;
    let path = f.segment_file(2);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let r = f.verify().await;
    assert!(!r.ok);
    let p = problems(&r);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        matches!(&p[0], Finding::HashMismatch { index: 2, expected_size, found_size, .. } if expected_size == found_size),
        "{p:?}"
    );
    assert_eq!(r.segments_ok, N - 1);
}

#[tokio::test]
async fn missing_segment_is_named() {
    let f = write_lesson(N).await;
    std::fs::remove_file(f.segment_file(3)).unwrap();
    let r = f.verify().await;
    assert_eq!(problems(&r), vec![Finding::SegmentMissing { index: 3 }]);
}

#[tokio::test]
async fn swapped_segments_are_named() {
    let f = write_lesson(N).await;
    let (a, b) = (f.segment_file(1), f.segment_file(3));
    let tmp = f.dir.path().join("swap");
    std::fs::rename(&a, &tmp).unwrap();
    std::fs::rename(&b, &a).unwrap();
    std::fs::rename(&tmp, &b).unwrap();
    let r = f.verify().await;
    assert_eq!(
        problems(&r),
        vec![
            Finding::SegmentSwapped { index: 1, holds: 3 },
            Finding::SegmentSwapped { index: 3, holds: 1 },
        ]
    );
}

#[tokio::test]
async fn extra_segment_is_named() {
    let f = write_lesson(N).await;
    std::fs::copy(f.segment_file(0), f.segment_file(N)).unwrap();
    let r = f.verify().await;
    assert_eq!(problems(&r), vec![Finding::ExtraSegment { index: N }]);
}

#[tokio::test]
async fn stray_object_is_named() {
    let f = write_lesson(N).await;
    let stray = f
        .dir
        .path()
        .join(format!("lessons/{}/segments/notes.txt", f.lesson));
    std::fs::write(&stray, b"x").unwrap();
    let r = f.verify().await;
    assert!(matches!(
        problems(&r).as_slice(),
        [Finding::UnknownObject { path }] if path.ends_with("segments/notes.txt")
    ));
}

#[tokio::test]
async fn edited_hash_in_manifest_is_named() {
    let f = write_lesson(N).await;
    let last = f.final_checkpoint();
    f.edit_manifest(last, |m| {
        m.entries[1].sha256 = "ab".repeat(32);
    });
    let r = f.verify().await;
    let p = problems(&r);
    assert!(
        p.contains(&Finding::SignatureInvalid { checkpoint: last }),
        "{p:?}"
    );
    assert!(
        p.iter().any(|x| matches!(x, Finding::HashMismatch { index: 1, expected_sha256, .. } if *expected_sha256 == "ab".repeat(32))),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|x| matches!(x, Finding::ChainBroken { index: 2, .. })),
        "{p:?}"
    );
    // Both earlier checkpoints recorded entry 1 differently.
    assert!(p.contains(&Finding::CheckpointDiverges {
        checkpoint: 0,
        position: 1,
        part: "entries"
    }));
    // Nothing else is blamed: the other segments still verify.
    assert_eq!(r.segments_ok, N - 1);
}

#[tokio::test]
async fn edited_time_in_manifest_is_named() {
    let f = write_lesson(N).await;
    let last = f.final_checkpoint();
    f.edit_manifest(last, |m| {
        m.entries[0].start += 1_000_000;
    });
    let r = f.verify().await;
    let p = problems(&r);
    assert!(
        p.contains(&Finding::SignatureInvalid { checkpoint: last }),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|x| matches!(x, Finding::ChainBroken { index: 1, .. })),
        "{p:?}"
    );
    assert!(!p.iter().any(|x| matches!(x, Finding::HashMismatch { .. })));
}

#[tokio::test]
async fn edit_of_the_last_entry_is_caught_by_the_signature() {
    let f = write_lesson(N).await;
    let last = f.final_checkpoint();
    f.edit_manifest(last, |m| {
        m.entries[(N - 1) as usize].end += 1;
    });
    let r = f.verify().await;
    assert_eq!(
        problems(&r),
        vec![Finding::SignatureInvalid { checkpoint: last }]
    );
}

#[tokio::test]
async fn removing_the_final_checkpoint_is_named() {
    let f = write_lesson(N).await;
    let last = f.final_checkpoint();
    std::fs::remove_file(f.manifest_file(last)).unwrap();
    std::fs::remove_file(f.signature_file(last)).unwrap();
    let r = f.verify().await;
    // Checkpoint 1 covered segments 0..=3; segment 4 is unaccounted for.
    assert_eq!(
        problems(&r),
        vec![
            Finding::NotFinal {
                checkpoint: last - 1
            },
            Finding::ExtraSegment { index: N - 1 },
        ]
    );
}

#[tokio::test]
async fn truncated_chain_in_manifest_is_named() {
    let f = write_lesson(N).await;
    let last = f.final_checkpoint();
    f.edit_manifest(last, |m| {
        m.entries.truncate(3);
    });
    let r = f.verify().await;
    assert_eq!(
        problems(&r),
        vec![
            Finding::SignatureInvalid { checkpoint: last },
            Finding::CheckpointDiverges {
                checkpoint: 1,
                position: 3,
                part: "entries"
            },
            Finding::ExtraSegment { index: 3 },
            Finding::ExtraSegment { index: 4 },
        ]
    );
}

#[tokio::test]
async fn entry_cut_from_the_middle_is_named() {
    let f = write_lesson(N).await;
    let last = f.final_checkpoint();
    f.edit_manifest(last, |m| {
        m.entries.remove(2);
    });
    let r = f.verify().await;
    let p = problems(&r);
    assert!(p.contains(&Finding::SignatureInvalid { checkpoint: last }));
    assert!(p.contains(&Finding::EntryOutOfPlace {
        position: 2,
        index: 3
    }));
    assert!(
        p.iter()
            .any(|x| matches!(x, Finding::ChainBroken { index: 3, .. }))
    );
    assert!(p.contains(&Finding::UnexplainedSeqGap {
        index: 3,
        first_missing_seq: 2 * RECORDS,
        last_missing_seq: 3 * RECORDS - 1
    }));
    assert!(p.contains(&Finding::ExtraSegment { index: 2 }));
}

#[tokio::test]
async fn reordered_manifest_entries_are_named() {
    let f = write_lesson(N).await;
    let last = f.final_checkpoint();
    f.edit_manifest(last, |m| m.entries.swap(1, 2));
    let r = f.verify().await;
    let p = problems(&r);
    assert!(p.contains(&Finding::EntryOutOfPlace {
        position: 1,
        index: 2
    }));
    assert!(p.contains(&Finding::EntryOutOfPlace {
        position: 2,
        index: 1
    }));
    assert!(p.contains(&Finding::SignatureInvalid { checkpoint: last }));
}

#[tokio::test]
async fn manifest_signed_by_another_key_fails() {
    let f = write_lesson(N).await;
    let other = RecorderSigningKey::generate().unwrap();
    let last = f.final_checkpoint();
    let bytes = std::fs::read(f.manifest_file(last)).unwrap();
    std::fs::write(f.signature_file(last), other.sign(&bytes)).unwrap();
    std::fs::remove_file(f.signature_file(0)).unwrap();
    let r = f.verify().await;
    assert_eq!(
        problems(&r),
        vec![
            Finding::SignatureMissing { checkpoint: 0 },
            Finding::SignatureInvalid { checkpoint: last },
        ]
    );
}

#[tokio::test]
async fn every_problem_is_reported_at_once() {
    let f = write_lesson(N).await;
    let mut b = std::fs::read(f.segment_file(0)).unwrap();
    b[0] ^= 0xff;
    std::fs::write(f.segment_file(0), b).unwrap();
    std::fs::remove_file(f.segment_file(2)).unwrap();
    std::fs::copy(f.segment_file(1), f.segment_file(7)).unwrap();
    let r = f.verify().await;
    let p = problems(&r);
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(matches!(p[0], Finding::HashMismatch { index: 0, .. }));
    assert_eq!(p[1], Finding::SegmentMissing { index: 2 });
    assert_eq!(p[2], Finding::ExtraSegment { index: 7 });
}

#[tokio::test]
async fn recorded_gap_is_reported_but_passes_and_unrecorded_jump_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir);
    let lesson = lesson_id();
    let review = age::x25519::Identity::generate();
    let signer = RecorderSigningKey::generate().unwrap();
    let public = signer.public();
    let mut w = LessonWriter::new(
        store.clone(),
        lesson,
        RecipientSet::new(vec![review.to_public()]).unwrap(),
        signer,
    );
    w.append(&segment(lesson, 0, 0), vec!["t".into()])
        .await
        .unwrap();
    // Seqs 10..=24 lost: the writer refuses to hide it...
    let err = w
        .append(&segment(lesson, 1, 25), vec!["t".into()])
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        ArchiveError::SeqDiscontinuity {
            expected: 10,
            got: 25
        }
    ));
    // ...until it is written down.
    let gap = Gap {
        first_missing_seq: 10,
        from: T0 + INTERVAL,
        last_missing_seq: 24,
        reason: "recorder lost beyond replay buffer".into(),
        to: T0 + 2 * INTERVAL,
    };
    w.record_gap(gap.clone()).unwrap();
    w.append(&segment(lesson, 1, 25), vec!["t".into()])
        .await
        .unwrap();
    w.finish(T0 + 3 * INTERVAL).await.unwrap();
    let r = chaperone_archive::verify::verify_lesson(store.as_ref(), &lesson, &public).await;
    assert!(r.ok, "{}", r.to_human());
    assert_eq!(
        r.findings,
        vec![Finding::RecordedGap {
            first_missing_seq: 10,
            last_missing_seq: 24,
            from: gap.from,
            to: gap.to,
            reason: gap.reason.clone(),
        }]
    );
    assert!(r.to_human().contains("NOTICE: recorded gap: seqs 10..=24"));
    // After the final checkpoint the writer accepts nothing.
    assert!(matches!(
        w.append(&segment(lesson, 2, 35), vec![]).await.unwrap_err(),
        ArchiveError::Finalised
    ));
}

#[tokio::test]
async fn segments_are_never_overwritten() {
    let f = write_lesson(2).await;
    let path = layout::segment_path(&f.lesson, 0);
    let before = std::fs::read(f.segment_file(0)).unwrap();
    let err = put_if_absent(f.store.as_ref(), &path, b"other".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, ArchiveError::AlreadyExists { .. }));
    assert_eq!(std::fs::read(f.segment_file(0)).unwrap(), before);
    // A retried identical write is accepted as already present.
    assert_eq!(
        put_if_absent(f.store.as_ref(), &path, before.clone())
            .await
            .unwrap(),
        chaperone_archive::writer::PutOutcome::AlreadyPresent
    );
}

#[tokio::test]
async fn writer_refuses_out_of_order_index() {
    let dir = tempfile::tempdir().unwrap();
    let lesson = lesson_id();
    let mut w = LessonWriter::new(
        store_in(&dir),
        lesson,
        RecipientSet::new(vec![age::x25519::Identity::generate().to_public()]).unwrap(),
        RecorderSigningKey::generate().unwrap(),
    );
    let err = w.append(&segment(lesson, 1, 0), vec![]).await.unwrap_err();
    assert!(matches!(
        err,
        ArchiveError::IndexOutOfOrder {
            expected: 0,
            got: 1
        }
    ));
    assert!(w.entries().is_empty());
}
