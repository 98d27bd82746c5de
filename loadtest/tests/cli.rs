//! The `loadtest` command line: help and version exit 0, a usage error
//! exits 2 with one line on stderr, and the help documents the exit codes
//! and every scenario `scripts/bench.sh` and the smoke test rely on.

use std::process::{Command, Output};

fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .output()
        .expect("loadtest runs")
}

#[test]
fn help_exits_0_and_documents_the_scenarios_and_exit_codes() {
    for flag in ["--help", "-h"] {
        let out = loadtest(&[flag]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        for scenario in [
            "lesson31",
            "lesson31-cams",
            "join-storm",
            "mute-all",
            "capacity",
            "all",
            "median",
        ] {
            assert!(
                help.contains(scenario),
                "{flag}: {scenario} missing:\n{help}"
            );
        }
        assert!(help.contains("Exit status"), "{help}");
        assert!(help.contains("2  usage"), "{help}");
    }
}

#[test]
fn version_exits_0() {
    let out = loadtest(&["--version"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("loadtest {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    for args in [
        &["lesson31", "--no-such-option"][..],
        &["--no-such-option"],
        &[],
        &["no-such-scenario"],
        &["lesson31", "--lessons", "many"],
        &["lesson31", "--duration", "0"],
        &["median"],
        &["lesson31", "some-dir"],
    ] {
        let out = loadtest(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn a_later_option_wins() {
    // scripts/bench.sh appends its own --out and --server-cpu to the
    // arguments it is given; an option given twice is not a usage error.
    // An empty median run (no result files) exercises the parse only.
    let dir = std::env::temp_dir().join(format!("chaperone-loadtest-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let d = dir.to_str().expect("utf-8 temp dir");
    let out = loadtest(&["median", d, "--out", "x", "--out", "y"]);
    std::fs::remove_dir_all(&dir).expect("removed");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}
