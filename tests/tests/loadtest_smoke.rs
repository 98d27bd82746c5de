//! The load generator cannot rot: a short `lesson31` run (one lesson, a
//! few seconds) of the real `loadtest` binary against the real `gateway`
//! binary, both from this build. The class is five pupils rather than 30:
//! a debug-build gateway forwards only a few thousand packets a second
//! (SRTP in unoptimised Rust), and a full class would queue up behind it.
//! It asserts what the benchmarks rely on: every participant joined and received media, packets were forwarded
//! and counted at the receivers, and one-way latency was measured from the
//! origin timestamp the SFU carries through. Figures from a debug build
//! mean nothing and are not checked, loss included (a debug gateway on a
//! busy machine falls behind): BENCHMARKS.md has the real ones. A second
//! run records with a `recorder serve` process of its own, as the
//! recording-cost benchmark does.
// Black-box tests wait on a real process in real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::process::Command;

use chaperone_testkit::process::binary;

/// Runs `loadtest lesson31` (one lesson of five pupils, 3 s) with `extra`
/// arguments; its JSON result and its printed summary.
fn smoke(extra: &[&str]) -> (serde_json::Value, String) {
    let out = std::env::temp_dir().join(format!(
        "chaperone-loadtest-smoke-{}-{}",
        std::process::id(),
        extra.len()
    ));
    let run = Command::new(binary("loadtest").unwrap())
        .args([
            "lesson31",
            "--lessons",
            "1",
            "--pupils",
            "5",
            "--duration",
            "3",
            "--warmup",
            "1",
            "--out",
        ])
        .arg(&out)
        .arg("--gateway")
        .arg(binary("gateway").unwrap())
        .arg("--recorder")
        .arg(binary("recorder").unwrap())
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "loadtest failed:\n{stdout}\n{stderr}");
    let text = std::fs::read_to_string(out.join("lesson31-chaperone.json")).unwrap();
    let _ = std::fs::remove_dir_all(&out);
    (serde_json::from_str(&text).unwrap(), stdout)
}

#[test]
fn lesson31_smoke() {
    let (r, stdout) = smoke(&[]);
    let text = r.to_string();
    let n = |k: &str| {
        r[k].as_f64()
            .unwrap_or_else(|| panic!("{k} missing in {text}"))
    };
    assert_eq!(n("participants"), 6.0, "{stdout}");
    assert_eq!(
        n("failed_joins"),
        0.0,
        "every participant joins and gets media:\n{stdout}"
    );
    assert_eq!(r["join_ms"]["count"], 6, "{stdout}");
    // The embedded recorder's cost is inside the gateway's: none apart.
    assert!(r["recorder"].is_null(), "{stdout}");
    assert!(
        n("packets_received") > 1000.0,
        "packets were forwarded:\n{stdout}"
    );
    assert!(
        n("frames_received") > 0.0 && n("frames_expected") > 0.0,
        "{stdout}"
    );
    // Latency comes from the origin time carried through the SFU: audio
    // from the three speakers and the teacher, video from the teacher.
    assert!(
        r["latency_audio_us"]["count"].as_u64().unwrap() > 10,
        "{stdout}"
    );
    assert!(
        r["latency_video_us"]["count"].as_u64().unwrap() > 0,
        "{stdout}"
    );
    assert!(
        r["latency_audio_us"]["p50"].as_f64().unwrap() > 0.0,
        "{stdout}"
    );
    // Fan-out: each frame reaches many receivers.
    assert!(
        r["fanout_skew_us"]["count"].as_u64().unwrap() > 0,
        "{stdout}"
    );
    assert!(
        n("server_cpu_cores") > 0.0 && n("server_rss_kib") > 0.0,
        "{stdout}"
    );
}

/// With the recorder in a process of its own, pupils are still admitted
/// (the gateway's feed to it is acknowledged) and its CPU is reported.
#[test]
fn lesson31_smoke_with_a_recorder_process() {
    let (r, stdout) = smoke(&["--recorder-process"]);
    assert_eq!(r["failed_joins"], 0, "{stdout}");
    assert!(r["packets_received"].as_f64().unwrap() > 1000.0, "{stdout}");
    let rec = &r["recorder"];
    assert!(
        rec["cpu_cores_per_lesson"].as_f64().is_some(),
        "the recorder's CPU is measured apart: {stdout}"
    );
    // It recorded what the lesson sent: the teacher's three tracks and the
    // speakers' audio, sealed into segments.
    assert!(rec["tracks"].as_u64().unwrap() >= 4, "{stdout}");
    assert!(rec["frames_per_sec"].as_f64().unwrap() > 50.0, "{stdout}");
    assert!(rec["mb_per_sec"].as_f64().unwrap() > 0.0, "{stdout}");
    assert!(stdout.contains("recorder process CPU"), "{stdout}");
}
