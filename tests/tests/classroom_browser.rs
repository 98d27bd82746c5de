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
//! checks are in `tests/idp/classroom-e2e.mjs`. Every refusal code and
//! farewell the gateway can send has a plain sentence on the page
//! (`tests/idp/words-check.mjs`).
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

/// The snake_case wire names of the variants of `pub enum {name}` in
/// `protocol/src/signal.rs`: read from the source, so a new variant is
/// checked without this list being kept by hand.
fn wire_names(name: &str) -> Vec<String> {
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/src/signal.rs"),
    )
    .unwrap();
    let start = source.find(&format!("pub enum {name} {{")).unwrap();
    let body = &source[start..start + source[start..].find("\n}").unwrap()];
    body.lines()
        .filter_map(|l| l.strip_prefix("    ")?.strip_suffix(','))
        .filter(|v| v.chars().all(char::is_alphanumeric))
        .map(|v| {
            v.chars()
                .enumerate()
                .fold(String::new(), |mut out, (i, c)| {
                    if c.is_uppercase() && i > 0 {
                        out.push('_');
                    }
                    out.push(c.to_ascii_lowercase());
                    out
                })
        })
        .collect()
}

#[test]
fn every_refusal_and_farewell_reads_as_a_plain_sentence() {
    use chaperone_protocol::signal::{ErrorCode, Farewell};
    let codes = wire_names("ErrorCode");
    let farewells = wire_names("Farewell");
    // The names read from the source are the wire names.
    for c in &codes {
        serde_json::from_value::<ErrorCode>(serde_json::json!(c)).unwrap();
    }
    for f in &farewells {
        serde_json::from_value::<Farewell>(serde_json::json!(f)).unwrap();
    }
    assert!(
        codes.len() >= 20 && farewells.len() >= 6,
        "{codes:?} {farewells:?}"
    );
    let out = run_node_script(
        "words-check.mjs",
        &[
            ("CODES", codes.join(",")),
            ("FAREWELLS", farewells.join(",")),
        ],
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(out[0]["bad"], serde_json::json!([]), "{}", out[0]);
    // Only what no page action can cause gets the generic "That did not work".
    let generic: Vec<&str> = out[0]["defaults"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for code in &generic {
        assert!(
            ["malformed", "too_large", "unsupported_version", "internal"].contains(code),
            "{code} has no sentence of its own"
        );
    }
}
