//! The classroom in headless Chromium (fake camera and microphone) against
//! the real `gateway --dev` binary, as its people use it: the lesson form
//! refuses an unknown class and a start in the past; the device check;
//! keyboard focus kept in the people panel while pupils join and leave;
//! hands raised, hidden from other pupils until shown, lowered; no stale
//! tile after a reload; a camera-off placeholder; a concern in the page's
//! own dialog; leaving; the register against who actually joined and who
//! may read it; the end, after which the lesson is marked ended and its
//! page never tries to rejoin. axe-core finds no serious or critical
//! violation on any page at 1280×800 or 390×844. The steps and their
//! checks are in `tests/idp/classroom-e2e.mjs`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chaperone_testkit::gateway::Gateway;
use chaperone_testkit::idp::run_node_script;

#[test]
fn the_classroom_works_for_its_people_and_passes_axe() {
    let gateway = Gateway::start_dev(&[]).unwrap();
    let mut env = vec![("GATEWAY_URL", gateway.base_url())];
    if let Ok(dir) = std::env::var("CHAPERONE_SCREENSHOTS") {
        env.push(("SCREENSHOT_DIR", dir));
    }
    let steps = run_node_script("classroom-e2e.mjs", &env, Duration::from_secs(300)).unwrap();
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(
        names,
        [
            "lesson_form",
            "teacher_in",
            "admitted",
            "focus_kept",
            "hands",
            "tiles",
            "pupil_page",
            "register_live",
            "ended",
        ]
    );
    // Every page of the lesson's life was checked with axe-core.
    let checked: Vec<&str> = steps[8]["checked"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for page in [
        "teacher-home",
        "pupil-home",
        "leader-home",
        "prejoin",
        "pupil-waiting",
        "teacher-lesson",
        "pupil-lesson",
        "pupil-ended",
    ] {
        assert!(checked.contains(&page), "{page} not checked: {checked:?}");
    }
}
