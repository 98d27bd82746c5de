//! The dashboards and alert rules in `deploy/` are valid and use only
//! metrics a running gateway and recorder export (live scrapes of the real
//! binaries); the rules pass `promtool` (syntax and unit tests).
// Waiting for a real server to answer is a wall-clock matter.
#![allow(clippy::disallowed_methods)]

mod deploy_support;

use deploy_support::*;

#[test]
fn dashboards_and_rules_use_only_metrics_a_live_gateway_exports() {
    let gw = Gateway::start_dev(&[]).unwrap();
    // The metrics listener opens just after the HTTP one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (status, scrape) = loop {
        match http_get(gw.metrics_port(), "/metrics") {
            Ok(answer) => break answer,
            Err(e) if std::time::Instant::now() > deadline => panic!("no /metrics: {e}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    };
    assert_eq!(status, 200);
    let mut names = exported(&scrape);
    assert!(names.contains("chaperone_join_seconds_bucket"), "{scrape}");
    // The recorder service's own metrics (with a spool, as deployed).
    let rec = Recorder::start(&gw.base_url(), &[]).unwrap();
    let (status, scrape) = http_get(rec.metrics_port(), "/metrics").unwrap();
    assert_eq!(status, 200);
    let from_recorder = exported(&scrape);
    assert!(
        from_recorder.contains("chaperone_recorder_store_up"),
        "{scrape}"
    );
    names.extend(from_recorder);
    let exported = names;

    let mut used = BTreeSet::new();
    let mut used_jobs = BTreeSet::new();
    let exprs: Vec<_> = dashboard_exprs().into_iter().chain(rule_exprs()).collect();
    for (where_, expr) in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{where_}: no metric in {expr}");
        for n in names {
            assert!(
                exported.contains(&n) || EXTERNAL_METRICS.contains(&n.as_str()),
                "{where_}: {n} is exported by neither the gateway nor the recorder (nor external)"
            );
            used.insert(n);
        }
        used_jobs.extend(jobs(expr));
    }
    // The figures the lesson-quality dashboard is for.
    let lesson_quality: String = exprs
        .iter()
        .filter(|(w, _)| w.contains("Lesson quality"))
        .map(|(_, e)| e.as_str())
        .collect();
    for figure in [
        "chaperone_join_seconds_bucket",
        "chaperone_forwarding_latency_seconds_bucket",
        "chaperone_media_loss_ratio_bucket",
        "chaperone_media_jitter_seconds_bucket",
        "chaperone_media_rtt_seconds_bucket",
        "chaperone_control_enforcement_seconds_bucket",
        // What each subscriber's link carries (issue 18).
        "chaperone_media_estimate_bps_bucket",
        "chaperone_media_layer_switches_total",
        "chaperone_media_video_paused_subscribers",
        "chaperone_media_video_paused_total",
        "chaperone_media_nacks_total",
        "chaperone_media_keyframe_requests_damped_total",
    ] {
        assert!(
            lesson_quality.contains(figure),
            "Lesson quality lacks {figure}"
        );
    }
    for q in ["0.5", "0.95", "0.99"] {
        assert!(lesson_quality.contains(&format!(
            "histogram_quantile({q}, sum by (le) (rate(chaperone_join_seconds_bucket"
        )));
    }

    // Jobs the rules name are the jobs Prometheus scrapes.
    let prom = yaml(&deploy("prometheus/prometheus.yml"));
    let scraped: BTreeSet<String> = prom["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| str_of(&j["job_name"], "job_name").to_owned())
        .collect();
    assert!(
        used_jobs.is_subset(&scraped),
        "{used_jobs:?} vs {scraped:?}"
    );

    // Real Prometheus tooling: the rules parse, their unit tests pass, the
    // scrape configuration is valid.
    promtool(
        &["check", "rules", "chaperone.yml"],
        &deploy("prometheus/rules"),
    );
    promtool(
        &["test", "rules", "chaperone.test.yml"],
        &deploy("prometheus/rules"),
    );
    promtool(
        &["check", "config", "prometheus.yml"],
        &deploy("prometheus"),
    );
}
