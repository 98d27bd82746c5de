//! The `recorder` command line: help and version, exit codes, and
//! `verify` on a lesson written by the real writer.

use chaperone_testkit::archive::write_lesson;

fn recorder(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_recorder"))
        .args(args)
        .output()
        .expect("the recorder binary runs")
}

/// `--help` on the binary and on each subcommand prints help and exits 0;
/// `--version` prints the version; an unknown option exits 2 with a
/// one-line error.
#[test]
fn help_version_and_usage_errors() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["verify", "--help"],
        &["keygen", "--help"],
        &["review", "--help"],
    ] {
        let out = recorder(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: recorder"), "{args:?}: {text}");
        assert!(text.contains("Exit status"), "{args:?}: {text}");
    }
    let version = recorder(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("recorder "));
    for args in [
        &["--frobnicate"][..],
        &["verify", "--frobnicate"],
        &["nonsense"],
    ] {
        let out = recorder(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.lines().next().is_some_and(|l| l.starts_with("error: ")),
            "{args:?}: {err}"
        );
    }
}

/// The binary: exit 0 on a good lesson, 1 with the problem named on a bad
/// one, and parseable JSON with `--json`.
#[tokio::test]
async fn cli_verify_exit_codes_and_json() {
    let f = write_lesson(3).await;
    let key = f.dir.path().join("recorder.pub");
    std::fs::write(&key, f.signing_public.to_pem()).unwrap();
    let run = |json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_recorder"));
        cmd.arg("verify")
            .arg(f.lesson.to_string())
            .arg("--store")
            .arg(f.dir.path())
            .arg("--key")
            .arg(&key);
        if json {
            cmd.arg("--json");
        }
        cmd.output().unwrap()
    };
    let ok = run(false);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("RESULT: OK"));

    std::fs::remove_file(f.segment_file(1)).unwrap();
    let bad = run(false);
    assert_eq!(bad.status.code(), Some(1));
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(text.contains("segment 1: MISSING"), "{text}");
    let bad_json = run(true);
    assert_eq!(bad_json.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&bad_json.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["findings"][0]["kind"], "segment_missing");
    assert_eq!(v["findings"][0]["index"], 1);

    let usage = recorder(&["verify"]);
    assert_eq!(usage.status.code(), Some(2));
}
