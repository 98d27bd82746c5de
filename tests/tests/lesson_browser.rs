//! A live lesson in headless Chromium (fake camera and microphone) against
//! the real `gateway --dev` binary: sign-in, waiting room, admission, video
//! decoded, controls enforced at the SFU (bytes stop at the receivers),
//! screen share, chat rules, end of lesson. The steps and their checks are in
//! `tests/idp/lesson-e2e.mjs`. Then the lesson's recording is checked: it
//! verifies with `recorder verify`, and the standard `age` tool opens it with
//! the development review identity, showing the public and the private chat.
#![allow(clippy::unwrap_used)]
// Waiting for a real process to finish writing is a wall-clock matter.
#![allow(clippy::disallowed_methods)]

use std::process::Command;
use std::time::Duration;

use chaperone_tests::gateway::{Gateway, binary};
use chaperone_tests::idp::run_node_script;

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
            "all_cameras_off_enforced",
            "screen_share_seen",
            "screen_share_revoked",
            "chat_rules_enforced",
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

    // Any segment opens with the standard age tool and the review identity.
    let identity = gateway.recordings_dir().join("review-identity.txt");
    let mut plaintext = Vec::new();
    for entry in std::fs::read_dir(store.join(format!("lessons/{lesson}/segments"))).unwrap() {
        let out = Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&identity)
            .arg(entry.unwrap().path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        plaintext.extend(out.stdout);
    }
    let text = String::from_utf8_lossy(&plaintext);
    assert!(text.contains("hello everyone"), "public chat recorded");
    assert!(text.contains("a private question"), "private chat recorded");
}
