//! Camera and screen share are separate tracks, forwarded (or not) on their
//! own, and a subscriber that starts receiving video gets a keyframe request
//! sent to the publisher.

mod media_support;

use std::time::Duration;

use chaperone_gateway::media::{MediaDriverConfig, driver};
use chaperone_protocol::{LessonId, MediaSource, ParticipantId, TrackId};
use media_support::{Client, TEST_TIMEOUT, route_offers, wait_for};

const LESSON: LessonId = LessonId::from_bytes([3; 16]);
const TEACHER: ParticipantId = ParticipantId(1);
const PUPIL: ParticipantId = ParticipantId(2);

#[tokio::test]
async fn camera_and_screen_share_are_forwarded_separately() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (media, events) = driver::start(MediaDriverConfig::default()).await?;
        let teacher = Client::connect_with(&media, LESSON, TEACHER, true).await?;
        let pupil = Client::connect(&media, LESSON, PUPIL).await?;
        route_offers(events, vec![teacher.offer_sink(), pupil.offer_sink()]);
        teacher.wait_connected().await?;
        pupil.wait_connected().await?;

        // Only the screen share is allowed.
        let camera = TrackId::new(TEACHER, MediaSource::Camera);
        let screen = TrackId::new(TEACHER, MediaSource::ScreenShare);
        media.set_receive(LESSON, PUPIL, true).await?;
        media.set_forward(LESSON, screen, true).await?;
        wait_for(Duration::from_secs(10), || pupil.counters.screen_rx() > 3).await?;
        assert_eq!(pupil.counters.camera_rx(), 0, "camera never forwarded");
        assert!(
            teacher.counters.keyframe_requests() > 0,
            "the SFU asked the publisher for a keyframe"
        );

        // Swap: camera on, screen off.
        media.set_forward(LESSON, screen, false).await?;
        media.set_forward(LESSON, camera, true).await?;
        wait_for(Duration::from_secs(10), || pupil.counters.camera_rx() > 3).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let screens = pupil.counters.screen_rx();
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(
            pupil.counters.screen_rx(),
            screens,
            "no screen after revoke"
        );
        Ok::<_, anyhow::Error>(())
    })
    .await
    .expect("bounded")
    .expect("passed");
}
