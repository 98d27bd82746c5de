//! A live lesson in headless Chromium (fake camera and microphone) against
//! the real `gateway --dev` binary: sign-in, waiting room, admission, video
//! decoded, controls enforced at the SFU (bytes stop at the receivers),
//! screen share, chat rules, rejoining after a lost connection, end of
//! lesson. The steps and their checks are in `tests/idp/lesson-e2e.mjs`.
//! Then the lesson's recording is checked: it verifies with `recorder
//! verify`, and the standard `age` tool opens it with the development review
//! identity, showing the public and the private chat and the forwarded media
//! (camera, microphone, screen share) of the lesson.
#![allow(clippy::unwrap_used)]
// Waiting for a real process to finish writing is a wall-clock matter.
#![allow(clippy::disallowed_methods)]

use std::process::Command;
use std::time::Duration;

use chaperone_archive::segment::Segment;
use chaperone_protocol::feed::{FeedFrame, MediaCodec};
use chaperone_protocol::{MediaSource, ParticipantId, TrackId};
use chaperone_testkit::gateway::Gateway;
use chaperone_testkit::idp::run_node_script;
use chaperone_testkit::process::binary;

#[test]
fn a_lesson_in_chromium_is_enforced_and_recorded() {
    let gateway = Gateway::start_dev(&[]).unwrap();
    let mut env = vec![("GATEWAY_URL", gateway.base_url())];
    if let Ok(dir) = std::env::var("CHAPERONE_SCREENSHOTS") {
        env.push(("SCREENSHOT_DIR", dir));
    }
    let steps = run_node_script("lesson-e2e.mjs", &env, Duration::from_secs(300)).unwrap();
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(
        names,
        [
            "teacher_in",
            "pupils_waiting",
            "admitted",
            "teacher_video_decoded",
            "pupils_publishing",
            "mic_off_enforced",
            "all_mics_off_enforced",
            "all_cameras_off_enforced",
            "screen_share_seen",
            "screen_share_revoked",
            "chat_rules_enforced",
            "rejoined",
            "media_failure_rejoined",
            "ended",
        ]
    );
    let lesson = steps[0]["lesson"].as_str().unwrap().to_owned();

    // The final manifest is written a few seconds after the lesson ends.
    let store = gateway.recordings_dir().join("recordings");
    let key = store.join(format!("lessons/{lesson}/recorder.pub"));
    let verify = || {
        Command::new(binary("recorder").unwrap())
            .args(["verify", &lesson, "--store"])
            .arg(&store)
            .arg("--key")
            .arg(&key)
            .output()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let report = loop {
        let out = verify();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if (out.status.success() && text.contains("(final)"))
            || std::time::Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        report.contains("RESULT: OK") && report.contains("(final)"),
        "{report}"
    );

    // Any segment opens with the standard age tool and the review identity;
    // inside are the feed frames: events, chat, and every forwarded media frame.
    let identity = gateway.recordings_dir().join("review-identity.txt");
    let mut frames = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(store.join(format!("lessons/{lesson}/segments")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    for path in paths {
        let out = Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&identity)
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let segment = Segment::decode(&out.stdout).unwrap();
        for record in segment.records() {
            frames.push(FeedFrame::parse(&record.frame).unwrap());
        }
    }
    let chat: Vec<(&str, bool)> = frames
        .iter()
        .filter_map(|f| match f {
            FeedFrame::Chat { text, to, .. } => Some((text.as_str(), to.is_some())),
            _ => None,
        })
        .collect();
    assert!(
        chat.contains(&("hello everyone", false)),
        "public chat recorded: {chat:?}"
    );
    assert!(
        chat.contains(&("a private question", true)),
        "private chat recorded: {chat:?}"
    );
    let teacher = ParticipantId(steps[0]["teacherId"].as_u64().unwrap());
    let pupil_a = ParticipantId(steps[1]["idA"].as_u64().unwrap());
    let media = |track: TrackId| {
        frames
            .iter()
            .filter_map(|f| match f {
                FeedFrame::Media {
                    track: t,
                    codec,
                    media_time,
                    ..
                } if *t == track => Some((*codec, *media_time)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let camera = media(TrackId::new(teacher, MediaSource::Camera));
    let mic = media(TrackId::new(teacher, MediaSource::Microphone));
    let screen = media(TrackId::new(pupil_a, MediaSource::ScreenShare));
    assert!(
        camera.len() > 50,
        "the teacher's camera is recorded: {} frames",
        camera.len()
    );
    assert!(
        camera
            .iter()
            .all(|(c, _)| matches!(c, MediaCodec::Vp8 | MediaCodec::Vp9 | MediaCodec::H264))
    );
    assert!(
        mic.len() > 100 && mic.iter().all(|(c, _)| *c == MediaCodec::Opus),
        "the teacher's microphone is recorded: {} frames",
        mic.len()
    );
    assert!(!screen.is_empty(), "the permitted screen share is recorded");
    assert!(
        camera.windows(2).all(|w| w[0].1 <= w[1].1),
        "media time runs forward"
    );
    // Sequence numbers have no gaps: nothing was lost on the way in.
    let seqs: Vec<u64> = frames.iter().filter_map(FeedFrame::seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seqs are contiguous"
    );
}
