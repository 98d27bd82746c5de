//! Safeguarding review in headless Chromium against the real `gateway --dev`
//! binary, for a lesson recorded in the same run (the steps and their checks
//! are in `tests/idp/review-e2e.mjs`): SLT states a reason before anything
//! plays, the WebM plays and seeks, private chat is shown; a pupil's copy
//! holds the teacher and public chat only; a DSL-only range is blanked for
//! SLT and shown to the DSL; the DSL's incident list links to the replay;
//! a teacher, a pupil of another class and an unauthenticated request are
//! refused. Then the review audit log in the object store is checked with
//! `recorder verify` (its hash chain holds, and it holds the views, seeks
//! and refusals).
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use chaperone_testkit::gateway::Gateway;
use chaperone_testkit::idp::run_node_script;
use chaperone_testkit::process::binary;

#[test]
fn review_in_chromium_is_gated_scoped_and_audited() {
    let gateway = Gateway::start_dev(&[]).unwrap();
    let mut env = vec![("GATEWAY_URL", gateway.base_url())];
    if let Ok(dir) = std::env::var("CHAPERONE_SCREENSHOTS") {
        env.push(("SCREENSHOT_DIR", dir));
    }
    let steps = run_node_script("review-e2e.mjs", &env, Duration::from_secs(300)).unwrap();
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(
        names,
        [
            "recorded",
            "refused",
            "slt_replay",
            "replay_marks",
            "pupil_copy",
            "dsl"
        ]
    );
    let lesson = steps[0]["lesson"].as_str().unwrap().to_owned();
    let slt = &steps[2];
    let marks = &steps[3];
    assert!(marks["before"][3].as_u64().unwrap() > 0 && marks["after"][3] == 0);
    assert!(slt["played"]["w"].as_u64().unwrap() > 0);
    assert!(slt["played"]["t"].as_f64().unwrap() > 1.5);

    // The recording and the review audit log both verify.
    let store = gateway.recordings_dir().join("recordings");
    let out = Command::new(binary("recorder").unwrap())
        .args(["verify", &lesson, "--json", "--store"])
        .arg(&store)
        .arg("--key")
        .arg(store.join(format!("lessons/{lesson}/recorder.pub")))
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{report:#}");
    assert_eq!(report["audit"]["ok"], true, "{report:#}");
    assert!(report["audit"]["records"].as_u64().unwrap() > 5);

    // Every access is in it: views and seeks with the stated reason, and the
    // refusals (no session, another pupil's file).
    let mut actions = Vec::new();
    // (A record on its own is `<n>.json`; records written together are one
    // `<n>-<m>.jsonl`, a record a line.)
    for entry in std::fs::read_dir(store.join("audit")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let r: serde_json::Value = serde_json::from_str(line).unwrap();
            actions.push((
                r["action"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
                r["reason"].as_str().unwrap_or("").to_owned(),
                r["role"].as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    let has = |a: &str, o: &str, role: &str| {
        actions
            .iter()
            .any(|x| x.0 == a && x.1 == o && (role.is_empty() || x.3 == role))
    };
    assert!(
        actions
            .iter()
            .any(|x| x.0 == "view" && x.2 == "Concern raised by a pupil in 7A" && x.3 == "slt"),
        "{actions:?}"
    );
    assert!(has("seek", "ok", "slt"), "{actions:?}");
    assert!(has("view", "ok", "pupil"), "{actions:?}");
    assert!(has("restrict", "ok", "dsl"), "{actions:?}");
    assert!(has("refused", "unauthenticated", ""), "{actions:?}");
    assert!(has("refused", "not_found", "pupil"), "{actions:?}");
    assert!(has("refused", "forbidden", "pupil"), "{actions:?}");
}
