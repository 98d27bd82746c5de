//! `recorder review` as its own process, with a token for the real clock.
#![allow(clippy::unwrap_used)]
// The process test issues a token for the real clock the binary reads.
#![allow(clippy::disallowed_methods)]

mod support;

#[allow(unused_imports)]
use support::*;

/// `recorder review` as its own process: the gateway's JWKS from a file,
/// the review identity and the recorder key from files, on a free port.
#[tokio::test]
async fn recorder_review_runs_as_its_own_process() {
    let env = env().await;
    let jwks = env.dir.path().join("jwks.json");
    std::fs::write(&jwks, env.tokens.keys.jwks().to_string()).unwrap();
    let port = chaperone_testkit::process::free_port().unwrap();
    let child = Command::new(chaperone_testkit::process::binary("recorder").unwrap())
        .args([
            "review",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--store",
        ])
        .arg(env.dir.path().join("store"))
        .arg("--identity")
        .arg(&env.identity_file)
        .arg("--recorder-key")
        .arg(&env.key_file)
        .args(["--issuer", ISSUER, "--jwks"])
        .arg(&jwks)
        .args(["--header-timeout-secs", "1"])
        .env("CHAPERONE_LOG", "warn")
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(child);
    let base = format!("http://127.0.0.1:{port}/review");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "recorder review did not listen");
    // The clock is the real one here: a token issued now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = env
        .tokens
        .issue_review(
            now,
            60,
            "p1".into(),
            AUD,
            user("dsl"),
            "Mrs Chen".into(),
            "dsl",
            ReviewScope::DslRestricted,
            Some(env.lesson),
            vec![],
            Some("process test".into()),
        )
        .unwrap();
    let r = http
        .post(format!("{base}/session"))
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let r = http
        .get(format!("{base}/api/recordings/{}", env.lesson))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let detail: Value = r.json().await.unwrap();
    assert!(detail.to_string().contains("SECRET private question"));
    let r = http
        .get(format!(
            "{base}/api/recordings/{}/media/p1-av.webm",
            env.lesson
        ))
        .header("cookie", &cookie)
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-type"], "video/webm");
    let r = http
        .get(format!("{base}/api/recordings/{}", env.lesson))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Every response carries the security headers (issue 17).
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert_eq!(r.headers()["cross-origin-opener-policy"], "same-origin");
    assert!(r.headers().contains_key("permissions-policy"));
    // A connection that never sends a request head is closed after the
    // header timeout (1 s here).
    use tokio::io::AsyncReadExt as _;
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(4), silent.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "a silent connection is closed by the header timeout: {closed:?}"
    );
    // A review token opens one session. (A new client: the pooled
    // connection has been idle past the 1 s header timeout by now, and the
    // server closes such a connection, as it should.)
    let again = reqwest::Client::new()
        .post(format!("{base}/session"))
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
}
