//! A lesson being recorded takes frames only from its newest owner: a feed
//! whose gateway presents an older lease epoch than one already seen is
//! refused, and a newer owner's feed supersedes the current one; the gap
//! the new owner reports is recorded and the archive verifies.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use chaperone_archive::keys::RecorderSigningKey;
use chaperone_archive::segment::RecipientSet;
use chaperone_archive::verify::verify_lesson;
use chaperone_protocol::feed::FeedFrame;
use chaperone_recorder::service::Archive;
use chaperone_recorder::service::lesson::{AttachError, Frame, Incoming, Lessons};
use chaperone_recorder::service::metrics::IngestMetrics;
use chaperone_testkit::archive::{T0, lesson_id, store_in};

fn chat(conn: u64, seq: u64) -> Incoming {
    let at = T0 + seq * 1000;
    let bytes = FeedFrame::Chat {
        seq,
        at_micros: at,
        from: chaperone_protocol::ParticipantId(1),
        to: None,
        text: format!("message {seq}"),
    }
    .to_bytes()
    .unwrap();
    Incoming::Frame(Frame {
        conn,
        seq,
        at,
        bytes,
        track: "chat".to_owned(),
        end: false,
        gap: None,
    })
}

fn gap(conn: u64, seq: u64) -> Incoming {
    Incoming::Frame(Frame {
        conn,
        seq,
        at: T0 + seq * 1000,
        bytes: Vec::new(),
        track: "events".to_owned(),
        end: false,
        gap: Some("the lesson's last owner stopped without handing the lesson over".to_owned()),
    })
}

#[tokio::test]
async fn a_stale_owner_is_refused_and_a_newer_one_supersedes_the_current_feed() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir);
    let review = age::x25519::Identity::generate();
    let signer = RecorderSigningKey::generate().unwrap();
    let public = signer.public();
    let (_registry, metrics) = IngestMetrics::new_registry().unwrap();
    let archive = Arc::new(Archive {
        store: store.clone(),
        recipients: RecipientSet::new(vec![review.to_public()]).unwrap(),
        signer,
        segment: Duration::from_secs(3600),
        idle_close: Duration::from_secs(3600),
        metrics: metrics.clone(),
    });
    let lessons = Lessons::default();
    let lesson = lessons.get_or_start(lesson_id(), &archive);

    // The first owner (epoch 1) records three frames.
    let mut first = lesson.attach(1, true, 1).await.unwrap().unwrap();
    assert_eq!(first.initial, 0);
    for seq in 1..=3 {
        assert!(lesson.frame(chat(1, seq)).await);
    }
    // Written and acknowledged (frames and attachments travel on separate
    // queues; a connection attaches after its predecessor's frames are in).
    assert!(lesson.frame(Incoming::Flush { conn: 1 }).await);
    tokio::time::timeout(
        Duration::from_secs(10),
        first.acks.wait_for(|a| a.durable == 3),
    )
    .await
    .unwrap()
    .unwrap();

    // Its lease lapsed; the node that took the lesson (epoch 2) attaches
    // with no state of its own and numbers after what is taken.
    let second = lesson.attach(2, true, 2).await.unwrap().unwrap();
    assert_eq!(second.initial, 3);
    let state = *second.acks.borrow();
    assert_eq!((state.current, state.epoch), (2, 2));
    // The first owner's open connection learns it was superseded.
    let told = *first.acks.borrow();
    assert!(told.current != 1 && told.epoch > 1);

    // The first owner resumes and reconnects to replay what it holds: refused.
    let refused = lesson.attach(3, false, 1).await.unwrap();
    assert!(
        matches!(
            refused,
            Err(AttachError::Superseded {
                newest: 2,
                offered: 1
            })
        ),
        "{refused:?}"
    );
    assert_eq!(metrics.feeds_refused.get(), 1);
    // Its late frames, under the seqs the new owner uses, change nothing.
    assert!(lesson.frame(chat(1, 4)).await);
    assert!(lesson.frame(chat(3, 4)).await);

    // The new owner's gap and frames are what the lesson holds.
    assert!(lesson.frame(gap(2, 4)).await);
    assert!(lesson.frame(chat(2, 5)).await);
    // The same owner reconnecting (same epoch) is taken as before.
    assert!(lesson.frame(Incoming::Flush { conn: 2 }).await);
    let mut second = second;
    tokio::time::timeout(
        Duration::from_secs(10),
        second.acks.wait_for(|a| a.durable == 5),
    )
    .await
    .unwrap()
    .unwrap();
    let mut again = lesson.attach(4, false, 2).await.unwrap().unwrap();
    assert_eq!(again.initial, 5);
    assert!(lesson.frame(chat(4, 6)).await);
    let end = FeedFrame::End {
        seq: 7,
        at_micros: T0 + 7000,
    };
    assert!(
        lesson
            .frame(Incoming::Frame(Frame {
                conn: 4,
                seq: 7,
                at: T0 + 7000,
                bytes: end.to_bytes().unwrap(),
                track: "events".to_owned(),
                end: true,
                gap: None,
            }))
            .await
    );
    tokio::time::timeout(Duration::from_secs(10), again.acks.wait_for(|a| a.finished))
        .await
        .unwrap()
        .unwrap();
    lessons.shutdown(Duration::from_secs(10)).await;

    let report = verify_lesson(store.as_ref(), &lesson_id(), &public).await;
    assert!(report.ok, "{}", report.to_human());
    let gaps: Vec<_> = report
        .findings
        .iter()
        .filter(|f| format!("{f:?}").contains("without handing the lesson over"))
        .collect();
    assert_eq!(gaps.len(), 1, "{}", report.to_human());
    assert_eq!(metrics.duplicate_frames.get(), 0, "nothing collided");
}
