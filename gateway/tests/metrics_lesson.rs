//! `/metrics` during a real lesson: a whole node (`App::build`, its SFU and
//! recorder), lesson WebSockets, and str0m WebRTC clients sending real
//! audio and video over loopback UDP. The join-time, waiting-room,
//! forwarding-latency, control-latency and RTCP histograms get
//! observations, the safeguarding counters follow the lesson, and the
//! number of series a node exports is the same after 5 participants came
//! and went as after 50: no label grows with people or lessons.
//!
//! With `CHAPERONE_METRICS_SERIES=dir` the test also writes every scrape it
//! makes (one file per scrape, named by milliseconds since its start) for
//! `deploy/tools/plot_lesson_quality.py`, which draws the "Lesson quality"
//! figures from them.
#![allow(clippy::unwrap_used)]

mod media_support;
mod peer_support;
mod web_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chaperone_protocol::signal::{ClientMsg, ServerMsg, Target};
use chaperone_protocol::{Engagement, MediaSource};
use media_support::wait_for;
use peer_support::{Peer, join};
use web_support::Node;

/// One scrape, parsed: series (name with labels) → value.
struct Scrape {
    text: String,
    series: BTreeMap<String, f64>,
}

impl Scrape {
    async fn of(node: &Node, log: &SeriesLog) -> Scrape {
        let text = node.scrape().await.unwrap();
        log.write(&text);
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect();
        Scrape { text, series }
    }

    fn value(&self, series: &str) -> f64 {
        self.series.get(series).copied().unwrap_or(0.0)
    }

    /// Every label value in the scrape.
    fn label_values(&self) -> BTreeSet<String> {
        self.series
            .keys()
            .filter_map(|s| s.split_once('{'))
            .flat_map(|(_, labels)| {
                labels
                    .trim_end_matches('}')
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(_, v)| v.trim_matches('"').to_owned())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// Where scrapes are kept for the plot, if asked.
#[derive(Clone)]
struct SeriesLog {
    dir: Option<std::path::PathBuf>,
    start: std::time::Instant,
}

impl SeriesLog {
    fn new() -> SeriesLog {
        let dir = std::env::var_os("CHAPERONE_METRICS_SERIES").map(std::path::PathBuf::from);
        if let Some(d) = &dir {
            std::fs::create_dir_all(d).unwrap();
        }
        SeriesLog {
            dir,
            start: media_support::now(),
        }
    }

    fn write(&self, text: &str) {
        if let Some(d) = &self.dir {
            let ms = media_support::now().duration_since(self.start).as_millis();
            std::fs::write(d.join(format!("scrape-{ms:08}.prom")), text).unwrap();
        }
    }
}

/// `n` pupils join, wait, are admitted, take part with media for a moment
/// and leave again, two at a time: the development provider's pupils
/// `pupil-a` and `pupil-b` over and over (every join is a new participant,
/// and with no reconnect grace every one waits again).
async fn pupils_come_and_go(node: &Node, teacher: &Peer, lesson: &str, n: usize) {
    const NAMES: [&str; 2] = ["pupil-a", "pupil-b"];
    for batch in (0..n).collect::<Vec<_>>().chunks(NAMES.len()) {
        let mut pupils = Vec::new();
        for name in NAMES.iter().take(batch.len()) {
            pupils.push(join(node, name, lesson).await);
        }
        for p in &pupils {
            p.wait("waiting", |m| matches!(m, ServerMsg::Waiting { .. }))
                .await;
        }
        // Some time in the waiting room, as in a real lesson.
        tokio::time::sleep(Duration::from_millis(100)).await;
        teacher.send(ClientMsg::AdmitAll);
        for p in &pupils {
            p.wait("admitted", |m| matches!(m, ServerMsg::Admitted))
                .await;
        }
        let clients = futures_util::future::join_all(pupils.iter().map(|p| p.media(false))).await;
        // Each pupil receives the teacher's audio: their join is complete.
        for c in &clients {
            let rx = c.counters.clone();
            wait_for(Duration::from_secs(10), || rx.audio_rx() > 3)
                .await
                .unwrap();
        }
        drop(clients);
        drop(pupils);
        // Their sockets close; the lesson sees them leave.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lesson_fills_the_histograms_and_the_series_stay_bounded() {
    tokio::time::timeout(Duration::from_secs(170), async {
        let log = SeriesLog::new();
        let node = Node::start(|c| c.lesson.reconnect_grace_secs = 0)
            .await
            .unwrap();
        let before = Scrape::of(&node, &log).await;
        // Before any lesson: every family already there, at zero.
        for name in [
            "chaperone_join_seconds_count",
            "chaperone_waiting_room_seconds_count",
            "chaperone_forwarding_latency_seconds_count",
            "chaperone_control_enforcement_seconds_count",
            "chaperone_media_loss_ratio_count{path=\"uplink\"}",
            "chaperone_lessons_held{reason=\"unsupervised\"}",
            "chaperone_tokio_workers",
        ] {
            assert!(before.series.contains_key(name), "{name} missing");
        }
        assert_eq!(before.value("chaperone_join_seconds_count"), 0.0);
        assert_eq!(before.value("chaperone_tokio_workers"), 2.0);

        let mut teacher_b = node.browser();
        teacher_b.login_ok("teacher").await.unwrap();
        let lesson = teacher_b.create_lesson("7A").await.unwrap();
        let teacher = join(&node, "teacher", &lesson).await;
        teacher
            .wait("teacher admitted", |m| matches!(m, ServerMsg::Admitted))
            .await;
        for source in [MediaSource::Microphone, MediaSource::Camera] {
            teacher.send(ClientMsg::SetSource { source, on: true });
        }
        let teacher_media = teacher.media(false).await;

        // Scrapes every half second while the lesson runs, for the plot.
        let sampler = log.dir.is_some().then(|| {
            let (url, log) = (format!("http://{}/metrics", node.metrics_addr), log.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if let Ok(r) = reqwest::get(&url).await
                        && let Ok(text) = r.text().await
                    {
                        log.write(&text);
                    }
                }
            })
        });

        // A pupil who stays: admitted, on voice and camera, muted by the
        // teacher (a control), reports a concern; the teacher flags an incident.
        let a = join(&node, "pupil-c", &lesson).await;
        a.wait("A waiting", |m| matches!(m, ServerMsg::Waiting { .. }))
            .await;
        teacher.send(ClientMsg::AdmitAll);
        a.wait("A admitted", |m| matches!(m, ServerMsg::Admitted))
            .await;
        a.send(ClientMsg::SetEngagement {
            engagement: Engagement::VoiceChatCamera,
        });
        let ca = a.media(false).await;
        let rx = teacher_media.counters.clone();
        wait_for(Duration::from_secs(10), || rx.audio_rx() > 10)
            .await
            .unwrap();
        teacher.send(ClientMsg::TurnOff {
            target: Target::One(a.you()),
            source: MediaSource::Microphone,
        });
        a.wait("A told its mic is off", |m| {
            matches!(m, ServerMsg::ControlChanged { granted: false, .. })
        })
        .await;
        a.send(ClientMsg::ReportConcern {
            text: "someone said something unkind".into(),
        });
        a.wait("concern received", |m| {
            matches!(m, ServerMsg::ConcernReceived)
        })
        .await;
        teacher.send(ClientMsg::FlagIncident {
            note: "follow up with A".into(),
        });

        // Five pupils come and go; then the figures, and the series count.
        pupils_come_and_go(&node, &teacher, &lesson, 5).await;
        // RTCP figures come at the statistics interval (1 s) once receiver
        // reports have gone both ways: wait for every series checked below.
        let rtcp = [
            "chaperone_media_loss_ratio_count{path=\"uplink\"}",
            "chaperone_media_loss_ratio_count{path=\"downlink\"}",
            "chaperone_media_jitter_seconds_count{path=\"uplink\"}",
            "chaperone_media_rtt_seconds_count{path=\"downlink\"}",
        ];
        let mut s5 = Scrape::of(&node, &log).await;
        for _ in 0..40 {
            if rtcp.iter().all(|series| s5.value(series) > 0.0)
                && s5.value("chaperone_incidents_total") > 0.0
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            s5 = Scrape::of(&node, &log).await;
        }
        let text = &s5.text;
        // Join time: the teacher's A, and five more, each once.
        let joins = s5.value("chaperone_join_seconds_count");
        assert!(joins >= 6.0, "join_seconds observed {joins} joins:\n{text}");
        assert!(
            s5.value("chaperone_waiting_room_seconds_count") >= 6.0,
            "{text}"
        );
        // The waiting room lasted at least the 100 ms the teacher took.
        assert!(s5.value("chaperone_waiting_room_seconds_sum") >= 5.0 * 0.1);
        assert!(
            s5.value("chaperone_forwarding_latency_seconds_count") > 100.0,
            "{text}"
        );
        // Forwarding latency inside the SFU: frames leave within 100 ms.
        assert!(
            s5.value("chaperone_forwarding_latency_seconds_bucket{le=\"0.1\"}")
                >= s5.value("chaperone_forwarding_latency_seconds_count") * 0.99,
            "{text}"
        );
        assert!(
            s5.value("chaperone_control_enforcement_seconds_count") >= 1.0,
            "{text}"
        );
        assert!(
            s5.value("chaperone_controls_total{kind=\"turn_off\"}") >= 1.0,
            "{text}"
        );
        for series in rtcp {
            assert!(
                s5.value(series) > 0.0,
                "{series} has no observation:\n{text}"
            );
        }
        // Loopback loses nothing and answers within a second.
        assert_eq!(
            s5.value("chaperone_media_loss_ratio_bucket{path=\"uplink\",le=\"0.01\"}"),
            s5.value("chaperone_media_loss_ratio_count{path=\"uplink\"}"),
        );
        assert!(s5.value("chaperone_media_packets_forwarded_total") > 0.0);
        assert!(s5.value("chaperone_media_bytes_forwarded_total") > 0.0);
        assert!(s5.value("chaperone_media_tracks_active") >= 2.0, "{text}");
        assert_eq!(s5.value("chaperone_concerns_total"), 1.0);
        assert_eq!(s5.value("chaperone_incidents_total"), 1.0);
        assert_eq!(s5.value("chaperone_lessons_live"), 1.0);
        assert_eq!(
            s5.value("chaperone_lessons_held{reason=\"unsupervised\"}"),
            0.0
        );
        assert!(s5.value("chaperone_tokio_alive_tasks") > 0.0);

        // 45 more come and go: 50 in all.
        pupils_come_and_go(&node, &teacher, &lesson, 45).await;
        let s50 = Scrape::of(&node, &log).await;
        assert!(
            s50.value("chaperone_join_seconds_count") >= joins + 45.0,
            "{}",
            s50.text
        );
        let names = |s: &Scrape| s.series.keys().cloned().collect::<BTreeSet<_>>();
        let (n5, n50) = (names(&s5), names(&s50));
        assert_eq!(
            n5.len(),
            n50.len(),
            "series after 5 participants: {}, after 50: {}; new: {:?}, gone: {:?}",
            n5.len(),
            n50.len(),
            n50.difference(&n5).collect::<Vec<_>>(),
            n5.difference(&n50).collect::<Vec<_>>(),
        );
        // No label carries an id: every value is from a short fixed list.
        let values = s50.label_values();
        assert!(!s50.text.contains(&lesson), "a lesson id in the metrics");
        // (Fixed lists: causes, results, buckets; about 90 with the cluster and
        // simulcast figures. An id per lesson or person would be hundreds.)
        assert!(values.len() < 120, "{values:?}");
        for v in &values {
            assert!(
                v.parse::<f64>().is_ok()
                    || v == "+Inf"
                    || v.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "label value {v:?} looks like an id"
            );
        }
        // Everyone who left is forgotten by the join clock.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            node.app.metrics.joins.pending() <= 2,
            "join clock keeps leavers"
        );

        if let Some(s) = sampler {
            s.abort();
        }
        drop((ca, a, teacher_media, teacher));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_lesson_without_staff_is_counted_as_held_and_released() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let log = SeriesLog {
            dir: None,
            start: media_support::now(),
        };
        let node = Node::start(|c| c.lesson.supervision_grace_secs = 1)
            .await
            .unwrap();
        let mut teacher_b = node.browser();
        teacher_b.login_ok("teacher").await.unwrap();
        let lesson = teacher_b.create_lesson("7A").await.unwrap();
        let teacher = join(&node, "teacher", &lesson).await;
        teacher
            .wait("teacher admitted", |m| matches!(m, ServerMsg::Admitted))
            .await;
        let a = join(&node, "pupil-a", &lesson).await;
        a.wait("A waiting", |m| matches!(m, ServerMsg::Waiting { .. }))
            .await;
        teacher.send(ClientMsg::AdmitAll);
        a.wait("A admitted", |m| matches!(m, ServerMsg::Admitted))
            .await;
        // The teacher's connection drops: after the grace, A is held.
        drop(teacher);
        let held = "chaperone_lessons_held{reason=\"unsupervised\"}";
        let mut s = Scrape::of(&node, &log).await;
        for _ in 0..60 {
            if s.value(held) == 1.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            s = Scrape::of(&node, &log).await;
        }
        assert_eq!(s.value(held), 1.0, "{}", s.text);
        // A teacher comes back: released.
        let again = join(&node, "teacher", &lesson).await;
        again
            .wait("teacher back", |m| matches!(m, ServerMsg::Admitted))
            .await;
        for _ in 0..60 {
            s = Scrape::of(&node, &log).await;
            if s.value(held) == 0.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(s.value(held), 0.0, "{}", s.text);
    })
    .await
    .unwrap();
}
