//! Holding under abuse (issue 17), against the real `gateway --dev` binary
//! and, where a login flow or a lesson socket is driven, a whole node served
//! by the same listener code over real TCP: silent and header-trickling
//! connections are closed by the header timeout while a signed-in user is
//! served; connections past the per-client and total caps are refused while
//! `/livez` answers; a thousand anonymous refusals become a few summary
//! records and leave every attributed record readable, in the gateway and
//! in the review service; a room token is refused once its session signed
//! out; a review token opens one session; every response carries the
//! security headers; display text with a bidirectional override is refused.
// Black-box tests wait on real processes in real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod web_support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use chaperone_testkit::gateway::Gateway;
use chaperone_testkit::redis::RedisServer;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use web_support::{Browser, Node, open_ws};

/// A connection to `port` from the loopback address `from` (127.0.0.x:
/// every one of them is a different client to the gateway).
async fn connect_from(from: Ipv4Addr, port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .unwrap()
}

/// Reads until the server closes `stream` (or resets it); `None` if it is
/// still open at `deadline`. Returns what was read.
async fn closed_by(stream: &mut TcpStream, deadline: Instant) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// One `GET` on a fresh connection from `from`: (status, whole answer).
async fn raw_get(from: Ipv4Addr, port: u16, path: &str) -> (u16, String) {
    let mut s = connect_from(from, port).await;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let answer = closed_by(&mut s, Instant::now() + Duration::from_secs(5))
        .await
        .expect("an answer within 5 s");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_trickling_connections_are_closed_while_a_signed_in_user_is_served() {
    let gw = Gateway::start_dev(&[("CHAPERONE_HTTP_HEADER_TIMEOUT_SECS", "2")]).unwrap();
    let port = gw.port();
    let mut pupil = Browser::new(gw.base_url());
    pupil.login_ok("pupil-a").await.unwrap();

    let started = Instant::now();
    let deadline = started + Duration::from_secs(10);
    let mut held = Vec::new();
    for i in 0..200u32 {
        let trickle = i % 2 == 1;
        held.push(tokio::spawn(async move {
            let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 2), port).await;
            if !trickle {
                return closed_by(&mut s, deadline).await.map(|_| started.elapsed());
            }
            // One header line every 300 ms: never a whole head.
            if s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.is_err() {
                return Some(started.elapsed());
            }
            loop {
                let step = Instant::now() + Duration::from_millis(300);
                if closed_by(&mut s, step.min(deadline)).await.is_some() {
                    return Some(started.elapsed());
                }
                if Instant::now() >= deadline {
                    return None;
                }
                if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return Some(started.elapsed());
                }
            }
        }));
    }
    // The signed-in pupil is served all along.
    for _ in 0..5 {
        let a = pupil.get("/api/lessons").await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut latest = Duration::ZERO;
    for (i, h) in held.into_iter().enumerate() {
        let closed = h.await.unwrap();
        let at = closed.unwrap_or_else(|| panic!("connection {i} still open after 10 s"));
        latest = latest.max(at);
    }
    assert!(
        latest < Duration::from_millis(4500),
        "every slow connection closed within the 2 s timeout (plus slack), the last at {latest:?}"
    );
    let a = pupil.get("/api/lessons").await.unwrap();
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_caps_are_refused_while_livez_answers() {
    let gw = Gateway::start_dev(&[
        ("CHAPERONE_HTTP_HEADER_TIMEOUT_SECS", "30"),
        ("CHAPERONE_HTTP_MAX_CONNECTIONS", "40"),
        ("CHAPERONE_HTTP_MAX_CONNECTIONS_PER_CLIENT", "20"),
    ])
    .unwrap();
    let port = gw.port();
    let a = Ipv4Addr::new(127, 0, 0, 2);
    let b = Ipv4Addr::new(127, 0, 0, 3);
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(connect_from(a, port).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The 21st from the same address: 429, closed.
    let mut extra = connect_from(a, port).await;
    let answer = closed_by(&mut extra, Instant::now() + Duration::from_secs(3))
        .await
        .expect("refused and closed at once");
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    // Another client fills the node to its cap of 40.
    for _ in 0..20 {
        held.push(connect_from(b, port).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Full: liveness and readiness still answer, anything else is 503.
    let c = Ipv4Addr::new(127, 0, 0, 4);
    let (status, body) = raw_get(c, port, "/livez").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = raw_get(c, port, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = raw_get(c, port, "/").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.to_ascii_lowercase().contains("retry-after"), "{body}");
    // Released, the node serves everyone again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = raw_get(c, port, "/").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = raw_get(a, port, "/livez").await;
    assert_eq!(status, 200);
}

/// The summed count of `action` refusals in `records`, and how many records.
fn summed(records: &[serde_json::Value], action: &str) -> (u64, usize) {
    let mine: Vec<_> = records.iter().filter(|r| r["action"] == action).collect();
    let total = mine
        .iter()
        .map(|r| {
            r["reason"]
                .as_str()
                .and_then(|t| t.strip_prefix("summary: "))
                .and_then(|t| t.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(1)
        })
        .sum();
    (total, mine.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_anonymous_refusals_are_summed_and_attributed_records_stay_readable() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let gw = Gateway::start_dev(&[
        ("CHAPERONE_STORE_KIND", "redis"),
        ("CHAPERONE_STORE_REDIS_URL", &url),
        ("CHAPERONE_HTTP_ANONYMOUS_SUMMARY_SECS", "1"),
    ])
    .unwrap();
    let mut slt = Browser::new(gw.base_url());
    slt.login_ok("slt").await.unwrap();
    let mut teacher = Browser::new(gw.base_url());
    teacher.login_ok("teacher").await.unwrap();
    let lesson = teacher.create_lesson("7A").await.unwrap();

    let anon = reqwest::Client::new();
    for i in 0..1000 {
        let r = anon
            .get(format!("{}/auth/callback?state=s{i}&code=c", gw.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
    // Two summary windows pass.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let newest = slt.get("/api/audit").await.unwrap();
    assert_eq!(newest.status, StatusCode::OK, "{}", newest.body);
    let newest = newest.json().as_array().unwrap().clone();
    let attributed = |records: &[serde_json::Value]| {
        let has = |action: &str, who: &str| {
            records
                .iter()
                .any(|r| r["action"] == action && r["actor"]["subject"] == who)
        };
        assert!(has("login", "slt"), "{records:#?}");
        assert!(has("login", "teacher"), "{records:#?}");
        assert!(
            records
                .iter()
                .any(|r| r["action"] == "lesson_created" && r["lesson"] == lesson.as_str()),
            "{records:#?}"
        );
    };
    attributed(&newest);
    // The whole log, paged from its start: bounded, and every refusal counted.
    let whole = slt.get("/api/audit?from=0").await.unwrap().json();
    let whole = whole.as_array().unwrap().clone();
    attributed(&whole);
    let (refusals, records) = summed(&whole, "login_refused");
    assert_eq!(refusals, 1000, "every refusal is counted: {whole:#?}");
    // Per source, action and outcome and window: the first as it is, the
    // rest as one summary (1 s windows here, 60 s by default).
    assert!(
        records <= 8,
        "{records} login_refused records for 1000 refusals"
    );
    assert!(whole.len() <= 16, "{} records in all", whole.len());
    for (i, r) in whole.iter().enumerate() {
        assert_eq!(r["position"], i as u64, "positions number the whole log");
    }
    // Filters by who and what, with positions for paging on.
    let mine = slt
        .get("/api/audit?who=teacher&action=login")
        .await
        .unwrap()
        .json();
    let mine = mine.as_array().unwrap();
    assert_eq!(mine.len(), 1, "{mine:#?}");
    assert_eq!(mine[0]["actor"]["subject"], "teacher");
    let after = mine[0]["position"].as_u64().unwrap() + 1;
    let rest = slt
        .get(&format!("/api/audit?who=teacher&from={after}"))
        .await
        .unwrap()
        .json();
    assert!(
        rest.as_array()
            .unwrap()
            .iter()
            .all(|r| r["position"].as_u64().unwrap() >= after)
    );
    // Counted in the metrics too.
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", gw.metrics_port()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("chaperone_anonymous_refusals_total{action=\"login_refused\"} 1000"),
        "{metrics}"
    );
}

/// Audit objects of the review service under `dir`.
fn review_audit_objects(dir: &std::path::Path) -> usize {
    fn walk(d: &std::path::Path, n: &mut usize) {
        let Ok(entries) = std::fs::read_dir(d) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, n);
            } else if p.components().any(|c| c.as_os_str() == "audit") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(dir, &mut n);
    n
}

#[tokio::test]
async fn review_refusals_without_a_session_write_no_record_each_and_a_token_opens_one_session() {
    let node = Node::start(|_| {}).await.unwrap();
    let dir = node.recordings.path().to_owned();
    let before = review_audit_objects(&dir);
    let client = reqwest::Client::new();
    for _ in 0..1000 {
        let r = client
            .post(format!("{}/review/session", node.base()))
            .json(&json!({"token": "not-a-token"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let after_flood = review_audit_objects(&dir);
    assert!(
        after_flood - before <= 2,
        "{} review audit objects for 1000 anonymous refusals",
        after_flood - before
    );

    // A pupil's review token opens one session, and only one.
    let mut teacher = node.browser();
    teacher.login_ok("teacher").await.unwrap();
    let lesson = teacher.create_lesson("7A").await.unwrap();
    let mut pupil = node.browser();
    pupil.login_ok("pupil-a").await.unwrap();
    let a = pupil
        .post(
            "/api/review/token",
            json!({"scope": "pupil_copy", "lesson": lesson, "reason": null}),
        )
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let token = a.json()["token"].as_str().unwrap().to_owned();
    let exchange = || {
        client
            .post(format!("{}/review/session", node.base()))
            .json(&json!({ "token": token }))
            .send()
    };
    assert_eq!(exchange().await.unwrap().status(), StatusCode::OK);
    let again = exchange().await.unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert!(again.headers().get("set-cookie").is_none());
    // The attributed exchange and its refused replay are both recorded.
    assert_eq!(review_audit_objects(&dir), after_flood + 2);
}

#[tokio::test]
async fn a_room_token_is_refused_once_its_session_signed_out() {
    let node = Node::start(|_| {}).await.unwrap();
    let mut teacher = node.browser();
    teacher.login_ok("teacher").await.unwrap();
    let lesson = teacher.create_lesson("7A").await.unwrap();
    let mut pupil = node.browser();
    pupil.login_ok("pupil-a").await.unwrap();
    // While signed in, a token joins.
    let t = pupil.room_token(&lesson).await.unwrap();
    assert_eq!(t.status, StatusCode::OK, "{}", t.body);
    let live = t.json()["token"].as_str().unwrap().to_owned();
    assert!(open_ws(&node, &lesson, &live).await.unwrap().is_ok());
    // A token fetched, then the pupil signs out: it no longer joins.
    let t = pupil.room_token(&lesson).await.unwrap();
    let stale = t.json()["token"].as_str().unwrap().to_owned();
    let out = pupil.post_form("/logout", &[]).await.unwrap();
    assert!(out.status.is_redirection(), "{}", out.status);
    match open_ws(&node, &lesson, &stale).await.unwrap() {
        Err(status) => assert_eq!(status, 401),
        Ok(_) => panic!("a room token of a signed-out session joined"),
    }
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let gw = Gateway::start_dev(&[]).unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in [
        "/",
        "/livez",
        "/login",
        "/api/lessons",
        "/no-such-page",
        "/review/api/session",
    ] {
        let r = client
            .get(format!("{}{path}", gw.base_url()))
            .send()
            .await
            .unwrap();
        let h = r.headers();
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["cross-origin-opener-policy"], "same-origin", "{path}");
        let pp = h["permissions-policy"].to_str().unwrap();
        assert!(pp.contains("geolocation=()"), "{path}: {pp}");
        assert!(pp.contains("camera=(self)"), "{path}: {pp}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
    }
}

#[tokio::test]
async fn a_class_or_title_with_a_bidirectional_override_is_refused() {
    let gw = Gateway::start_dev(&[]).unwrap();
    let mut teacher = Browser::new(gw.base_url());
    teacher.login_ok("teacher").await.unwrap();
    let now = chaperone_gateway::clock::unix_millis();
    for (title, class) in [
        ("Fractions", "7A\u{202E}"),
        ("Fractions\u{2066}", "7A"),
        ("Frac\u{7}tions", "7A"),
    ] {
        let a = teacher
            .post(
                "/api/lessons",
                json!({"title": title, "class": class, "starts_at_ms": now, "ends_at_ms": now + 3_600_000}),
            )
            .await
            .unwrap();
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "{title:?} {class:?}: {}",
            a.body
        );
        assert!(
            a.body.contains("bidirectional") || a.body.contains("control character"),
            "{}",
            a.body
        );
    }
    assert!(teacher.create_lesson("7A").await.is_ok());
}

#[tokio::test]
async fn a_ping_flood_is_rate_limited_like_any_message() {
    use futures_util::SinkExt as _;
    use tokio_tungstenite::tungstenite::Message;
    let node = Node::start(|_| {}).await.unwrap();
    let mut teacher = node.browser();
    teacher.login_ok("teacher").await.unwrap();
    let lesson = teacher.create_lesson("7A").await.unwrap();
    let t = teacher.room_token(&lesson).await.unwrap();
    let token = t.json()["token"].as_str().unwrap().to_owned();
    let mut ws = open_ws(&node, &lesson, &token).await.unwrap().unwrap();
    // Far past the bucket (burst 40) and the abuse allowance (40 more).
    for _ in 0..300 {
        if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
            break;
        }
    }
    web_support::ended_within(&mut ws, Duration::from_secs(5))
        .await
        .expect("a client that only pings is closed once past the rate limit");
}

#[tokio::test]
async fn the_identity_providers_error_text_is_logged_not_shown() {
    let node = Node::start(|_| {}).await.unwrap();
    let mut b = node.browser();
    let params = b.start_login().await.unwrap();
    let callback = b.pick(&params, "pupil-a").await.unwrap();
    // The same callback with a code the provider never issued: its token
    // endpoint answers `invalid_grant` with its own words.
    let mut url = reqwest::Url::parse(&callback).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "code" { "forged".into() } else { v };
            (k.into_owned(), v.into_owned())
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let a = b.get(url.as_str()).await.unwrap();
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.page().as_deref(), Some("login-error"), "{}", a.body);
    assert!(a.body.contains("refusal-code"), "{}", a.body);
    for provider_words in [
        "invalid_grant",
        "unknown, used or expired",
        "token exchange",
    ] {
        assert!(
            !a.body.contains(provider_words),
            "{provider_words}: {}",
            a.body
        );
    }
}
