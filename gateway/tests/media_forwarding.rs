//! The SFU enforces the core's forwarding decisions against real WebRTC
//! clients over loopback UDP, clients that keep sending whatever they are
//! told (docs/security.md §15, §16, §19).

mod media_support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use chaperone_gateway::media::{MediaDriverConfig, MediaHandle, driver};
use chaperone_protocol::{LessonId, MediaSource, ParticipantId, TrackId};
use media_support::{Client, TEST_TIMEOUT, route_offers, wait_for};
use tokio::net::UdpSocket;

const LESSON: LessonId = LessonId::from_bytes([7; 16]);
const A: ParticipantId = ParticipantId(1);
const B: ParticipantId = ParticipantId(2);

fn mic(p: ParticipantId) -> TrackId {
    TrackId::new(p, MediaSource::Microphone)
}

/// A driver and two connected clients, publisher A and subscriber B.
async fn two_clients() -> anyhow::Result<(MediaHandle, Client, Client)> {
    let (media, events) = driver::start(MediaDriverConfig::default()).await?;
    let a = Client::connect(&media, LESSON, A).await?;
    let b = Client::connect(&media, LESSON, B).await?;
    route_offers(events, vec![a.offer_sink(), b.offer_sink()]);
    a.wait_connected().await?;
    b.wait_connected().await?;
    Ok((media, a, b))
}

/// Lets frames already on the wire arrive, then returns B's audio count.
async fn settled_audio(b: &Client) -> u64 {
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.counters.audio_rx()
}

async fn bounded(test: impl Future<Output = anyhow::Result<()>>) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test finished within its bound")
        .expect("test passed");
}

#[tokio::test]
async fn forwarded_mic_reaches_receiving_subscriber_and_stops_when_muted() {
    bounded(async {
        let (media, a, b) = two_clients().await?;
        media.set_forward(LESSON, mic(A), true).await?;
        media.set_receive(LESSON, B, true).await?;
        wait_for(Duration::from_secs(10), || b.counters.audio_rx() > 5).await?;

        // Teacher mutes A; A's client ignores it and keeps sending.
        media.set_forward(LESSON, mic(A), false).await?;
        let before = settled_audio(&b).await;
        let sent_before = a.counters.audio_tx();
        let dropped_before = media.stats().await?.dropped_not_forwarded;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            a.counters.audio_tx() >= sent_before + 25,
            "A kept sending while muted"
        );
        assert!(
            media.stats().await?.dropped_not_forwarded > dropped_before,
            "the SFU dropped (and counted) A's muted audio"
        );
        assert_eq!(
            b.counters.audio_rx(),
            before,
            "B received nothing of A's mic after the mute"
        );

        // Unmuted again it flows again.
        media.set_forward(LESSON, mic(A), true).await?;
        wait_for(Duration::from_secs(5), || {
            b.counters.audio_rx() > before + 5
        })
        .await?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn subscriber_not_receiving_gets_nothing() {
    bounded(async {
        let (media, a, b) = two_clients().await?;
        media.set_forward(LESSON, mic(A), true).await?;
        media.set_receive(LESSON, B, true).await?;
        wait_for(Duration::from_secs(10), || b.counters.audio_rx() > 5).await?;

        media.set_receive(LESSON, B, false).await?;
        let before = settled_audio(&b).await;
        let sent_before = a.counters.audio_tx();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(a.counters.audio_tx() >= sent_before + 25, "A kept sending");
        assert_eq!(b.counters.audio_rx(), before, "B receives nothing");
        assert_eq!(b.counters.video_rx(), 0, "A's camera was never forwarded");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn nothing_is_forwarded_by_default() {
    bounded(async {
        let (media, a, b) = two_clients().await?;
        // Half the switches on is still off.
        media.set_receive(LESSON, B, true).await?;
        wait_for(Duration::from_secs(5), || a.counters.audio_tx() > 50).await?;
        assert_eq!(b.counters.audio_rx(), 0);
        assert_eq!(b.counters.video_rx(), 0);
        // A never receives its own track, even with everything on.
        media.set_forward(LESSON, mic(A), true).await?;
        media.set_receive(LESSON, A, true).await?;
        wait_for(Duration::from_secs(10), || b.counters.audio_rx() > 5).await?;
        assert_eq!(a.counters.audio_rx(), 0, "A never hears itself");
        let stats = media.stats().await?;
        assert!(stats.dropped_not_forwarded > 0);
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn another_lesson_never_receives() {
    bounded(async {
        let other = LessonId::from_bytes([9; 16]);
        let (media, events) = driver::start(MediaDriverConfig::default()).await?;
        let a = Client::connect(&media, LESSON, A).await?;
        // Same participant number, other lesson.
        let c = Client::connect(&media, other, B).await?;
        let b = Client::connect(&media, LESSON, B).await?;
        route_offers(events, vec![a.offer_sink(), c.offer_sink()]);
        for client in [&a, &b, &c] {
            client.wait_connected().await?;
        }
        media.set_forward(LESSON, mic(A), true).await?;
        media.set_receive(other, B, true).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(a.counters.audio_tx() > 25);
        assert_eq!(c.counters.audio_rx(), 0);
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn answer_names_only_the_server_address() {
    bounded(async {
        let (media, _events) = driver::start(MediaDriverConfig::default()).await?;
        let server = media.advertised();
        let a = Client::connect(&media, LESSON, A).await?;
        let candidates: Vec<&str> = a
            .answer
            .lines()
            .filter(|l| l.starts_with("a=candidate"))
            .collect();
        assert!(!candidates.is_empty(), "the answer has a candidate");
        for c in &candidates {
            // a=candidate:<foundation> <component> <proto> <prio> <ip> <port> typ <type> ...
            let f: Vec<&str> = c.split_whitespace().collect();
            let ip: IpAddr = f[4].parse()?;
            let port: u16 = f[5].parse()?;
            assert_eq!(SocketAddr::new(ip, port), server, "{c}");
            assert_eq!(f[7], "host", "{c}");
        }
        assert!(a.answer.contains("a=ice-lite"), "the server is ICE-lite");
        // And no other address at all: connection lines carry no peer address.
        for line in a.answer.lines().filter(|l| l.starts_with("c=")) {
            assert!(
                line.ends_with("0.0.0.0") || line.ends_with(&server.ip().to_string()),
                "{line}"
            );
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn garbage_and_strangers_are_dropped_and_service_goes_on() {
    bounded(async {
        let (media, _a, b) = two_clients().await?;
        let stranger = UdpSocket::bind("127.0.0.1:0").await?;
        let to = media.local_addr();
        // Empty, random, a fake STUN header, a fake DTLS record, a fake RTP header, oversized.
        let junk: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xff; 7],
            [0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42]
                .into_iter()
                .chain([0u8; 20])
                .collect(),
            vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff],
            [0x80, 0x6f, 0, 1, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef]
                .into_iter()
                .chain([0u8; 100])
                .collect(),
            vec![0x80; 4000],
        ];
        for j in &junk {
            stranger.send_to(j, to).await?;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stats = media.stats().await?;
        assert!(
            stats.dropped_datagrams >= 5,
            "junk counted as dropped: {stats:?}"
        );

        media.set_forward(LESSON, mic(A), true).await?;
        media.set_receive(LESSON, B, true).await?;
        wait_for(Duration::from_secs(10), || b.counters.audio_rx() > 5).await?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn bad_sdp_is_a_typed_error() {
    bounded(async {
        let (media, _events) = driver::start(MediaDriverConfig::default()).await?;
        media.add_participant(LESSON, A).await?;
        assert!(media.offer(LESSON, A, "not sdp".into()).await.is_err());
        assert!(
            media
                .offer(LESSON, A, "v=0\r\n".repeat(20_000))
                .await
                .is_err()
        );
        assert!(media.answer(LESSON, A, "v=0\r\n".into()).await.is_err());
        assert!(media.offer(LESSON, B, "v=0\r\n".into()).await.is_err());
        assert!(media.add_participant(LESSON, A).await.is_err());
        // Still serving.
        media.add_participant(LESSON, B).await?;
        Ok(())
    })
    .await;
}
