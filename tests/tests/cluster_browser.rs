//! A lesson in headless Chromium across three real `gateway --dev` nodes
//! (a private Redis, `recorder serve`): the teacher's and a pupil's pages
//! are served by the two nodes that do not own the lesson; after the owner
//! is killed (`kill -9`) both pages rejoin by themselves through their own
//! node, the pupil straight back in with the revoked microphone still
//! revoked, and video flows again. The steps are in
//! `tests/idp/cluster-e2e.mjs`. The lesson's one recording verifies, with
//! the time the kill cost listed as its one gap.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chaperone_loadtest::cluster::Cluster;
use chaperone_protocol::LessonId;
use chaperone_testkit::idp::run_node_script;

#[test]
fn pages_on_a_cluster_rejoin_after_the_owner_is_killed_with_controls_kept() {
    let cluster = Cluster::start(3, "browser").unwrap();
    let list = |f: &dyn Fn(usize) -> String| (0..3).map(f).collect::<Vec<_>>().join(",");
    let env = [
        ("GATEWAY_URLS", list(&|i| cluster.url(i))),
        ("METRICS_URLS", list(&|i| cluster.metrics_url(i))),
        (
            "GATEWAY_PIDS",
            list(&|i| cluster.pid(i).unwrap().to_string()),
        ),
    ];
    let steps = run_node_script("cluster-e2e.mjs", &env, Duration::from_secs(240)).unwrap();
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(
        names,
        ["lesson_across_nodes", "back_after_kill", "ended"],
        "{steps:#?}"
    );
    eprintln!("{steps:#?}");
    let back = steps[1]["back_secs"].as_f64().unwrap();
    // The lease (4 s) plus the pages' rejoin backoff and a new media session.
    assert!(back < 20.0, "back after {back} s");

    let lesson: LessonId = steps[0]["lesson"].as_str().unwrap().parse().unwrap();
    let report = cluster.verify(lesson).unwrap();
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["is_final"], true, "{report:#}");
    let gaps: Vec<_> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "recorded_gap")
        .collect();
    assert_eq!(gaps.len(), 1, "{report:#}");
}
