//! Annotation over a screen share in headless Chromium against the real
//! `gateway --dev` binary: the teacher draws on a pupil's shared screen and
//! the other pupil's page shows the mark (pixels of the overlay at the
//! stroke's position); undo, redo and clear; a pupil revoked in the middle
//! of a stroke, whose page then extends it anyway; no pupil's name on a
//! mark sent to a pupil; the share ending clears the marks. The steps and
//! their checks are in `tests/idp/annotation-e2e.mjs`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chaperone_testkit::gateway::Gateway;
use chaperone_testkit::idp::run_node_script;

#[test]
fn marks_on_a_shared_screen_in_chromium() {
    let gateway = Gateway::start_dev(&[]).unwrap();
    let mut env = vec![("GATEWAY_URL", gateway.base_url())];
    if let Ok(dir) = std::env::var("CHAPERONE_SCREENSHOTS") {
        env.push(("SCREENSHOT_DIR", dir));
    }
    let steps = run_node_script("annotation-e2e.mjs", &env, Duration::from_secs(300)).unwrap();
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(
        names,
        [
            "in_lesson",
            "screen_shared",
            "teacher_mark_seen",
            "undone",
            "cleared",
            "revoked_mid_stroke",
            "no_pupil_names",
            "share_ended_cleared",
        ]
    );
}
