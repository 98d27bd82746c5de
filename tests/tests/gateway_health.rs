//! The gateway binary starts on embedded defaults, reports liveness and
//! readiness truthfully, and refuses bad configuration with a clear message.
// Black-box tests wait on a real process in real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::process::Command;
use std::time::Duration;

use chaperone_testkit::gateway::{Gateway, http_get};
use chaperone_testkit::process::binary;
use chaperone_testkit::redis::RedisServer;

#[test]
fn dev_gateway_is_live_and_ready() {
    let gw = Gateway::start_dev(&[]).unwrap();
    assert_eq!(
        http_get(gw.port(), "/livez").unwrap(),
        (200, "ok".to_owned())
    );
    let (status, body) = http_get(gw.port(), "/readyz").unwrap();
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["checks"]["store"], "ok");
    assert_eq!(json["checks"]["recorder"], "ok");
    let (status, page) = http_get(gw.port(), "/").unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("Development mode"));
    // The token keys' public halves, usable by a verifier holding nothing else.
    let (status, body) = http_get(gw.port(), "/.well-known/jwks.json").unwrap();
    assert_eq!(status, 200);
    let jwks: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    assert!(jwks["keys"][0].get("d").is_none(), "never the private key");
    chaperone_gateway::auth::Verifier::from_jwks(&jwks).unwrap();
}

#[test]
fn readiness_follows_redis_while_liveness_stays_up() {
    let mut redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut gw = Gateway::start_dev(&[
        ("CHAPERONE_STORE_KIND", "redis"),
        ("CHAPERONE_STORE_REDIS_URL", &url),
        ("CHAPERONE_STORE_TIMEOUT_MS", "300"),
    ])
    .unwrap();
    let ready = |gw: &Gateway| http_get(gw.port(), "/readyz").unwrap().0;
    // Liveness is checked at every step: it never follows Redis.
    let live = |gw: &Gateway| {
        assert_eq!(
            http_get(gw.port(), "/livez").unwrap().0,
            200,
            "liveness does not follow Redis"
        );
    };
    let wait_for = |gw: &Gateway, want: u16| {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while ready(gw) != want {
            live(gw);
            assert!(
                std::time::Instant::now() < deadline,
                "/readyz never became {want}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(&gw, 200);

    redis.stop();
    wait_for(&gw, 503);
    let (_, body) = http_get(gw.port(), "/readyz").unwrap();
    assert!(body.contains("store"), "names the failed check: {body}");
    assert_eq!(
        http_get(gw.port(), "/livez").unwrap().0,
        200,
        "liveness does not follow Redis"
    );

    redis.restart().unwrap();
    wait_for(&gw, 200);
    live(&gw);
    gw.check_running().unwrap();
}

fn gateway(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(binary("gateway").unwrap());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn bad_configuration_is_refused_with_a_clear_message() {
    let dir = std::env::temp_dir().join(format!("chaperone-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[http]\nlsiten = \"127.0.0.1:1\"\n").unwrap();
    let out = gateway(&["--config", file.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lsiten"), "names the unknown key: {err}");

    // Production settings without an https public URL are refused.
    std::fs::write(&file, "[store]\nkind = \"memory\"\n").unwrap();
    let out = gateway(&["--config", file.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("public_url"));

    // Neither --dev nor --config: refuse rather than guess.
    let out = gateway(&[], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dev"));

    // A bad environment override names the variable.
    let out = gateway(
        &["--dev", "--print-config"],
        &[("CHAPERONE_LESSON_CHAT_RATE", "many")],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CHAPERONE_LESSON_CHAT_RATE"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn help_and_print_config_work() {
    let out = gateway(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--dev") && help.contains("Exit status"),
        "{help}"
    );
    let out = gateway(&["--version"], &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("gateway "));
    // An unknown option: exit 2, one line saying what is wrong first.
    let out = gateway(&["--dev", "--frobnicate"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .next()
            .is_some_and(|l| l.starts_with("error: ") && l.contains("--frobnicate")),
        "{err}"
    );
    let out = gateway(&["--dev", "--print-config"], &[]);
    assert!(out.status.success());
    let toml = String::from_utf8_lossy(&out.stdout);
    for key in [
        "[http]",
        "listen",
        "[store]",
        "kind",
        "[lesson]",
        "supervision_grace_secs",
        "[log]",
    ] {
        assert!(toml.contains(key), "{key} missing from:\n{toml}");
    }
}
