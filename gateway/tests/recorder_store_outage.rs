//! The object store stopped mid-lesson, end to end: a gateway node
//! in-process streams a live lesson (real media through the SFU) to a real
//! `recorder serve` process writing to a real S3 server (`s3s-fs`, which
//! checks signatures); the S3 server is killed for
//! `CHAPERONE_S3_OUTAGE_SECS` (default 60 s, the scenario) while
//! the lesson goes on.
//!
//! What must hold: the recorder spools sealed segments to its disk and keeps
//! acknowledging the feed (they are durable there), so the lesson is never
//! held; `chaperone_recorder_store_up` says 0 and the spool grows; when the
//! store returns the spool drains to it, and the archive in S3 verifies
//! and holds every frame the SFU forwarded, every chat message and event.
#![allow(clippy::unwrap_used)]

mod feed_support;
mod media_support;
mod peer_support;
mod recorder_support;
mod web_support;

use std::time::Duration;

use chaperone_protocol::signal::{ClientMsg, ServerMsg};
use chaperone_testkit::s3::{S3Server, outage_from_env};
use feed_support::{chats, check_archive, end_and_verify, start_lesson, start_pair};
use media_support::wait_for;

#[tokio::test]
async fn the_store_down_mid_lesson_is_spooled_then_backfilled_with_nothing_lost() {
    let outage = outage_from_env(Duration::from_secs(60));
    tokio::time::timeout(outage + Duration::from_secs(120), async {
        let mut s3 = S3Server::start().expect("s3s-fs starts");
        let (node, mut setup) = start_pair(10).await;
        setup.use_s3(s3.config(), s3.bucket_dir());
        let _recorder = setup.start().await;
        let lesson = start_lesson(&node).await;
        chats(&lesson, "public");
        // Segments (one a second) reach the store while it is up.
        wait_for(Duration::from_secs(10), || {
            setup
                .store_dir()
                .join(format!("lessons/{}", lesson.id))
                .exists()
        })
        .await
        .unwrap();

        s3.stop();
        let down_at = tokio::time::Instant::now();
        let mut spooled = 0.0_f64;
        let mut seen_down = false;
        let mut private_sent = false;
        while down_at.elapsed() < outage {
            tokio::time::sleep(Duration::from_secs(1)).await;
            seen_down |= setup.metric("chaperone_recorder_store_up").await == Some(0.0);
            spooled = spooled.max(
                setup
                    .metric("chaperone_recorder_spool_bytes")
                    .await
                    .unwrap_or(0.0),
            );
            // The recording stays attached: spooled is durable.
            assert!(
                node.app.recorder.attached(),
                "the feed was lost {:?} into the outage",
                down_at.elapsed()
            );
            // Private messages in the middle of the outage.
            if !private_sent && down_at.elapsed() > outage / 2 {
                chats(&lesson, "private");
                private_sent = true;
            }
        }
        assert!(seen_down, "the recorder never reported the store down");
        assert!(spooled > 0.0, "nothing was spooled during the outage");
        assert!(
            !lesson
                .pupil
                .seen(|m| matches!(m, ServerMsg::Status(s) if !s.held.is_empty())),
            "pupils were held although the recording was durable"
        );

        s3.restart().expect("s3s-fs restarts");
        // The spool drains into the store.
        let mut drained = false;
        for _ in 0..120 {
            if setup.metric("chaperone_recorder_spool_bytes").await == Some(0.0)
                && setup.metric("chaperone_recorder_store_up").await == Some(1.0)
            {
                drained = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(drained, "the spool did not drain after the store returned");

        lesson.teacher.send(ClientMsg::Chat {
            to: None,
            text: "back to the worksheet".into(),
        });
        let id = end_and_verify(&node, &setup, &lesson).await;
        drop(lesson.clients);
        check_archive(&node, &setup, id).await;
    })
    .await
    .unwrap();
}
