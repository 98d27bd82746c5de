//! Login, roles, MFA, sessions, lessons, room tokens, blocks and
//! audit, end to end through a whole node (`App::build`) and its
//! development identity provider over real HTTP. The provider misbehaves
//! on request ([`Faults`]) so that each bad ID token is shown to stop the
//! login with a clear error and no further provider calls.
#![allow(clippy::unwrap_used)]

mod web_support;

use std::time::Duration;

use chaperone_gateway::dev::idp::Faults;
use chaperone_protocol::signal::ServerMsg;
use reqwest::StatusCode;
use serde_json::json;
use web_support::{Node, ended_within, open_ws, recv};

fn user(node: &Node, sub: &str) -> serde_json::Value {
    json!({"issuer": node.idp().issuer(), "subject": sub})
}

#[tokio::test]
async fn every_demo_person_lands_on_their_page() {
    let node = Node::start(|_| {}).await.unwrap();
    for (person, page) in [
        ("teacher", "teacher"),
        ("pupil-a", "pupil"),
        ("pupil-7b", "pupil"),
        ("slt", "leader"),
        ("dsl", "leader"),
        ("admin", "leader"),
        ("visitor", "visitor"),
    ] {
        let mut b = node.browser();
        let cb = b.login(person).await.unwrap();
        assert_eq!(cb.status, StatusCode::SEE_OTHER, "{person}: {}", cb.body);
        assert_eq!(cb.location().as_deref(), Some("/"));
        let session = cb
            .set_cookies()
            .into_iter()
            .find(|c| c.starts_with("chaperone_session="))
            .unwrap();
        assert!(
            session.contains("HttpOnly") && session.contains("SameSite=Lax"),
            "{session}"
        );
        assert!(!session.contains("Secure"), "plain-http loopback dev only");
        let home = b.get("/").await.unwrap();
        assert_eq!(home.page().as_deref(), Some(page), "{person}");
        let me = b.get("/api/me").await.unwrap().json();
        assert_eq!(me["user"]["subject"], person);
    }
}

#[tokio::test]
async fn each_bad_id_token_stops_the_login_with_no_further_calls() {
    let node = Node::start(|_| {}).await.unwrap();
    // First, while the relying party has not fetched the provider's keys:
    // two keys are published, and a token naming none is ambiguous.
    let cases: Vec<(&str, Faults)> = vec![
        (
            "ambiguous_key",
            Faults {
                omit_kid: true,
                ..Faults::default()
            },
        ),
        (
            "wrong_issuer",
            Faults {
                token_issuer: Some("http://127.0.0.1:1/evil".into()),
                ..Faults::default()
            },
        ),
        (
            "wrong_audience",
            Faults {
                audience: Some("someone-else".into()),
                ..Faults::default()
            },
        ),
        (
            "bad_signature",
            Faults {
                bad_signature: true,
                ..Faults::default()
            },
        ),
        (
            "iat_out_of_range",
            Faults {
                iat_offset_secs: -3600,
                ..Faults::default()
            },
        ),
        (
            "iat_out_of_range",
            Faults {
                iat_offset_secs: 3600,
                ..Faults::default()
            },
        ),
        (
            "nonce_mismatch",
            Faults {
                nonce: Some("not-the-nonce".into()),
                ..Faults::default()
            },
        ),
    ];
    for (code, faults) in cases {
        node.idp().set_faults(faults.clone());
        let mut b = node.browser();
        let params = b.start_login().await.unwrap();
        let callback = b.pick(&params, "teacher").await.unwrap();
        let before = node.idp().calls();
        let answer = b.get(&callback).await.unwrap();
        let after = node.idp().calls();
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{faults:?}");
        assert_eq!(answer.page().as_deref(), Some("login-error"));
        assert!(answer.body.contains(code), "{faults:?}: {}", answer.body);
        assert!(
            !b.cookies.contains_key("chaperone_session"),
            "no session after {code}"
        );
        // One token request; no key refetch, no userinfo, nothing else.
        assert_eq!(after.token, before.token + 1, "{code}");
        assert_eq!(
            (after.jwks, after.discovery, after.authorize),
            (before.jwks, before.discovery, before.authorize),
            "{code}"
        );
        assert_eq!(
            b.get("/api/me").await.unwrap().status,
            StatusCode::UNAUTHORIZED
        );
    }
    node.idp().set_faults(Faults::default());
    node.browser().login_ok("teacher").await.unwrap();
}

#[tokio::test]
async fn wrong_state_replay_and_another_browser_are_refused() {
    let node = Node::start(|_| {}).await.unwrap();
    let mut b = node.browser();
    let params = b.start_login().await.unwrap();
    let callback = b.pick(&params, "pupil-a").await.unwrap();

    // A forged state finds no pending login.
    let forged = callback.replace("state=", "state=x");
    let a = b.get(&forged).await.unwrap();
    assert_eq!(a.page().as_deref(), Some("login-error"));
    assert!(a.body.contains("unknown_state"));

    // The callback in another browser (no binding cookie) is refused, and
    // that used the pending login up: it cannot be replayed afterwards either.
    let mut other = node.browser();
    let a = other.get(&callback).await.unwrap();
    assert!(a.body.contains("browser_mismatch"), "{}", a.body);
    let a = b.get(&callback).await.unwrap();
    assert!(a.body.contains("unknown_state"));

    // A fresh login works; replaying its callback afterwards does not.
    let params = b.start_login().await.unwrap();
    let callback = b.pick(&params, "pupil-a").await.unwrap();
    assert_eq!(
        b.get(&callback).await.unwrap().status,
        StatusCode::SEE_OTHER
    );
    let replay = b.get(&callback).await.unwrap();
    assert!(replay.body.contains("unknown_state"));
}

#[tokio::test]
async fn discovery_with_another_issuer_is_refused() {
    let node = Node::start(|_| {}).await.unwrap();
    node.idp().set_faults(Faults {
        metadata_issuer: Some("http://127.0.0.1:1/not-our-idp".into()),
        ..Faults::default()
    });
    let a = node.browser().get("/login").await.unwrap();
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.page().as_deref(), Some("login-error"));
    assert!(a.body.contains("discovery"), "{}", a.body);
}

#[tokio::test]
async fn provider_key_rotation_is_followed() {
    let node = Node::start(|_| {}).await.unwrap();
    node.browser().login_ok("teacher").await.unwrap();
    node.idp().rotate_keys().unwrap();
    // Let the one-per-second refetch limit pass.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let jwks_before = node.idp().calls().jwks;
    let home = node.browser().login_ok("teacher").await.unwrap();
    assert_eq!(home.page().as_deref(), Some("teacher"));
    assert_eq!(
        node.idp().calls().jwks,
        jwks_before + 1,
        "keys fetched again once"
    );
}

#[tokio::test]
async fn no_mapped_role_and_staff_without_mfa_are_refused() {
    let node = Node::start(|c| {
        c.oidc.claims.roles.remove("visitors");
        c.oidc.claims.mfa_amr = vec!["hwk".into()];
    })
    .await
    .unwrap();
    let a = node.browser().login("visitor").await.unwrap();
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.page().as_deref(), Some("no-access"));
    for staff in ["teacher", "slt", "dsl", "admin"] {
        let mut b = node.browser();
        let a = b.login(staff).await.unwrap();
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{staff}");
        assert_eq!(a.page().as_deref(), Some("mfa-required"), "{staff}");
        assert!(a.body.contains("multi-factor"));
        assert!(!b.cookies.contains_key("chaperone_session"));
    }
    // Pupils need no MFA.
    node.browser().login_ok("pupil-a").await.unwrap();
}

#[tokio::test]
async fn lessons_are_seen_only_by_their_people() {
    let node = Node::start(|_| {}).await.unwrap();
    let mut teacher = node.browser();
    teacher.login_ok("teacher").await.unwrap();
    let lesson = teacher.create_lesson("7A").await.unwrap();
    assert_eq!(lesson.len(), 32, "128-bit id");

    let mut pupil = node.browser();
    pupil.login_ok("pupil-a").await.unwrap();
    let list = pupil.get("/api/lessons").await.unwrap().json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        pupil
            .get(&format!("/api/lessons/{lesson}"))
            .await
            .unwrap()
            .status,
        StatusCode::OK
    );
    assert_eq!(
        pupil.room_token(&lesson).await.unwrap().status,
        StatusCode::OK
    );

    // Another class: nothing listed, and the lesson answers exactly as one
    // that does not exist.
    let mut other = node.browser();
    other.login_ok("pupil-7b").await.unwrap();
    assert_eq!(other.get("/api/lessons").await.unwrap().json(), json!([]));
    let theirs = other.get(&format!("/api/lessons/{lesson}")).await.unwrap();
    let none = other
        .get("/api/lessons/00000000000000000000000000000000")
        .await
        .unwrap();
    assert_eq!((theirs.status, &theirs.body), (none.status, &none.body));
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    let token = other.room_token(&lesson).await.unwrap();
    assert_eq!((token.status, &token.body), (none.status, &none.body));

    // Pupils never create lessons.
    let now = chaperone_gateway::clock::unix_millis();
    let a = pupil
        .post("/api/lessons", json!({"title": "Mine", "class": "7A", "starts_at_ms": now, "ends_at_ms": now + 60_000}))
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::FORBIDDEN);

    // Cross-site requests are refused even with the teacher's cookie.
    let a = teacher
        .post_from(
            Some("https://evil.example"),
            "/api/lessons",
            json!({"title": "X", "class": "7A", "starts_at_ms": now, "ends_at_ms": now + 60_000}),
        )
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json()["error"], "cross_site");
    assert_eq!(
        teacher
            .post_from(None, &format!("/api/lessons/{lesson}/token"), json!({}))
            .await
            .unwrap()
            .status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn lesson_id_guessing_is_rate_limited_with_identical_answers() {
    let node = Node::start(|c| c.session.lesson_lookups_per_minute = 20)
        .await
        .unwrap();
    let mut b = node.browser();
    b.login_ok("pupil-a").await.unwrap();
    let mut bodies = std::collections::BTreeSet::new();
    let mut limited = 0;
    for n in 0..40u32 {
        let a = b.get(&format!("/api/lessons/{n:032x}")).await.unwrap();
        match a.status {
            StatusCode::NOT_FOUND => {
                bodies.insert(a.body);
            }
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(bodies.len(), 1, "every miss answers the same");
    assert_eq!(limited, 20);
}

#[tokio::test]
async fn a_blocked_pupil_is_cut_off_and_refused_everywhere() {
    let node = Node::start(|_| {}).await.unwrap();
    let mut teacher = node.browser();
    teacher.login_ok("teacher").await.unwrap();
    let lesson = teacher.create_lesson("7A").await.unwrap();

    let mut pupil = node.browser();
    pupil.login_ok("pupil-a").await.unwrap();
    let mut second_device = node.browser();
    second_device.login_ok("pupil-a").await.unwrap();
    let old_token = pupil.room_token(&lesson).await.unwrap().json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let live_token = pupil.room_token(&lesson).await.unwrap().json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = open_ws(&node, &lesson, &live_token).await.unwrap().unwrap();
    assert!(matches!(
        recv(&mut ws).await.unwrap(),
        ServerMsg::Welcome { .. }
    ));

    let mut admin = node.browser();
    admin.login_ok("admin").await.unwrap();
    // A reason is required.
    let a = admin
        .post(
            "/api/blocks",
            json!({"user": user(&node, "pupil-a"), "reason": " "}),
        )
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    // Teachers cannot block.
    let a = teacher
        .post(
            "/api/blocks",
            json!({"user": user(&node, "pupil-a"), "reason": "x"}),
        )
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::FORBIDDEN);

    let blocked_at = tokio::time::Instant::now();
    let a = admin
        .post(
            "/api/blocks",
            json!({"user": user(&node, "pupil-a"), "reason": "safeguarding concern"}),
        )
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json()["sessions_ended"], 2);
    ended_within(&mut ws, Duration::from_secs(1)).await.unwrap();
    assert!(blocked_at.elapsed() < Duration::from_secs(1));

    // Both sessions are gone; the old token is refused; a fresh login is refused.
    assert_eq!(
        pupil.get("/api/me").await.unwrap().status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        second_device.get("/api/me").await.unwrap().status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        open_ws(&node, &lesson, &old_token).await.unwrap().err(),
        Some(403)
    );
    let again = node.browser().login("pupil-a").await.unwrap();
    assert_eq!(again.status, StatusCode::FORBIDDEN);
    assert_eq!(again.page().as_deref(), Some("blocked"));

    // Unblocked, they may sign in again; both are audited.
    let a = admin
        .post(
            "/api/unblock",
            json!({"user": user(&node, "pupil-a"), "reason": "resolved"}),
        )
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK);
    node.browser().login_ok("pupil-a").await.unwrap();
    let audit = admin.get("/api/audit").await.unwrap().json();
    let actions: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("block", "ok"),
        ("unblock", "ok"),
        ("login_refused", "blocked"),
        ("room_token", "ok"),
        ("login", "ok"),
        ("block", "forbidden"),
    ] {
        assert!(
            actions.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} in {actions:?}"
        );
    }
    let block = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "block" && r["outcome"] == "ok")
        .unwrap();
    assert_eq!(block["reason"], "safeguarding concern");
    assert_eq!(block["target"]["subject"], "pupil-a");
    assert_eq!(block["actor"]["subject"], "admin");
    // Pupils cannot read the audit log.
    assert_eq!(
        pupil.get("/api/audit").await.unwrap().status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn room_tokens_are_single_use_and_for_one_lesson() {
    let node = Node::start(|_| {}).await.unwrap();
    let mut teacher = node.browser();
    teacher.login_ok("teacher").await.unwrap();
    let a = teacher.create_lesson("7A").await.unwrap();
    let b = teacher.create_lesson("7A").await.unwrap();
    let mut pupil = node.browser();
    pupil.login_ok("pupil-a").await.unwrap();
    let t = pupil.room_token(&a).await.unwrap().json();
    assert!(t["expires_in"].as_u64().unwrap() <= 300);
    let token = t["token"].as_str().unwrap().to_owned();
    // For another lesson: not found (and the token is spent).
    assert_eq!(open_ws(&node, &b, &token).await.unwrap().err(), Some(404));
    assert_eq!(open_ws(&node, &a, &token).await.unwrap().err(), Some(401));
    let token = pupil.room_token(&a).await.unwrap().json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = open_ws(&node, &a, &token).await.unwrap().unwrap();
    assert!(matches!(
        recv(&mut ws).await.unwrap(),
        ServerMsg::Welcome { .. }
    ));
    // Reused join jti.
    assert_eq!(open_ws(&node, &a, &token).await.unwrap().err(), Some(401));
}

#[tokio::test]
async fn logout_ends_the_session_and_step_up_is_exposed() {
    let node = Node::start(|_| {}).await.unwrap();
    let mut dsl = node.browser();
    dsl.login_ok("dsl").await.unwrap();
    let me = dsl.get("/api/me").await.unwrap().json();
    assert_eq!(me["step_up_fresh"], true);
    assert_eq!(me["may_block"], true);
    let cookie = dsl.cookies["chaperone_session"].clone();
    // Logout from another site is refused.
    assert_eq!(
        dsl.post_from(Some("https://evil.example"), "/logout", json!({}))
            .await
            .unwrap()
            .status,
        StatusCode::FORBIDDEN
    );
    let out = dsl.post_form("/logout", &[]).await.unwrap();
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(!dsl.cookies.contains_key("chaperone_session"));
    // The old cookie opens nothing.
    dsl.cookies.insert("chaperone_session".into(), cookie);
    assert_eq!(
        dsl.get("/api/me").await.unwrap().status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        dsl.get("/").await.unwrap().page().as_deref(),
        Some("signin")
    );
}

#[tokio::test]
async fn room_tokens_come_with_turn_credentials_when_configured() {
    let node = Node::start(|c| {
        c.turn.urls = vec!["turn:127.0.0.1:3478?transport=udp".into()];
        c.turn.shared_secret = "a-long-shared-secret".into();
        c.turn.ttl_secs = 600;
    })
    .await
    .unwrap();
    let mut teacher = node.browser();
    teacher.login_ok("teacher").await.unwrap();
    let lesson = teacher.create_lesson("7A").await.unwrap();
    let t = teacher.room_token(&lesson).await.unwrap().json();
    let server = &t["ice_servers"][0];
    assert_eq!(server["urls"][0], "turn:127.0.0.1:3478?transport=udp");
    let username = server["username"].as_str().unwrap();
    let (expiry, label) = username.split_once(':').unwrap();
    let expiry: u64 = expiry.parse().unwrap();
    let now = chaperone_gateway::clock::unix_millis() / 1000;
    assert!(expiry > now && expiry <= now + 600);
    assert!(
        !label.contains("teacher"),
        "the TURN username names no one: {label}"
    );
    let expected = chaperone_gateway::auth::turn::credentials(
        &["x".into()],
        "a-long-shared-secret",
        label,
        expiry - 600,
        600,
    );
    assert_eq!(server["credential"], expected.credential);
    // Without TURN configured, none are handed out.
    let plain = Node::start(|_| {}).await.unwrap();
    let mut t2 = plain.browser();
    t2.login_ok("teacher").await.unwrap();
    let l2 = t2.create_lesson("7A").await.unwrap();
    assert_eq!(
        t2.room_token(&l2).await.unwrap().json()["ice_servers"],
        json!([])
    );
}

#[tokio::test]
async fn lessons_have_a_state_a_known_class_and_a_register_for_staff() {
    let node = Node::start(|_| {}).await.unwrap();
    let mut teacher = node.browser();
    teacher.login_ok("teacher").await.unwrap();
    let now = chaperone_gateway::clock::unix_millis();
    let new = |class: &str, start: u64| json!({"title": "Fractions", "class": class, "starts_at_ms": start, "ends_at_ms": start + 3_600_000});
    for (body, words) in [
        (new("7a", now), "Did you mean 7A?"),
        (new("Year 7", now), "no class called"),
        (new("7A", now - 86_400_000), "in the past"),
    ] {
        let a = teacher.post("/api/lessons", body).await.unwrap();
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
        assert!(
            a.json()["message"].as_str().unwrap().contains(words),
            "{}",
            a.body
        );
    }
    let classes = teacher.get("/api/classes").await.unwrap().json();
    assert_eq!(classes, json!(["7A", "7B"]));
    let live = teacher.create_lesson("7A").await.unwrap();
    let later = teacher
        .post("/api/lessons", new("7B", now + 86_400_000))
        .await
        .unwrap();
    assert_eq!(later.status, StatusCode::CREATED, "{}", later.body);
    let list = teacher.get("/api/lessons").await.unwrap().json();
    let state = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|l| l["id"] == id)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(state(&live), "live");
    assert_eq!(state(later.json()["id"].as_str().unwrap()), "upcoming");
    // The register: the lesson's teacher, SLT and the DSL; never a pupil.
    let path = format!("/api/lessons/{live}/register.csv");
    let csv = teacher.get(&path).await.unwrap();
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.body.starts_with("lesson,class,name,role,"),
        "{}",
        csv.body
    );
    let mut pupil = node.browser();
    pupil.login_ok("pupil-a").await.unwrap();
    assert_eq!(
        pupil.get(&path).await.unwrap().status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        pupil.get("/api/classes").await.unwrap().status,
        StatusCode::FORBIDDEN
    );
    let mut dsl = node.browser();
    dsl.login_ok("dsl").await.unwrap();
    assert_eq!(dsl.get(&path).await.unwrap().status, StatusCode::OK);
}

/// Issue 19, "ended lessons": a lesson its teacher ended (well inside its
/// window) issues no more room tokens, to anyone; its register lists the
/// rostered pupil who signed in but never came. A pupil of the class who
/// has never signed in is not listed: the gateway learns who is in a class
/// only from sign-ins (README, "The register").
#[tokio::test]
async fn an_ended_lesson_issues_no_token_and_its_register_lists_who_never_came() {
    use futures_util::SinkExt;
    let node = Node::start(|_| {}).await.unwrap();
    let mut teacher = node.browser();
    teacher.login_ok("teacher").await.unwrap();
    let lesson = teacher.create_lesson("7A").await.unwrap();
    let mut stayed_away = node.browser();
    stayed_away.login_ok("pupil-b").await.unwrap();
    let token = teacher.room_token(&lesson).await.unwrap().json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = open_ws(&node, &lesson, &token).await.unwrap().unwrap();
    assert!(matches!(
        recv(&mut ws).await.unwrap(),
        ServerMsg::Welcome { .. }
    ));
    let end = serde_json::to_string(&chaperone_protocol::signal::ClientMsg::EndLesson).unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text(end))
        .await
        .unwrap();
    ended_within(&mut ws, Duration::from_secs(5)).await.unwrap();
    // The register (written by its own task) marks the end.
    let view = format!("/api/lessons/{lesson}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while teacher.get(&view).await.unwrap().json()["state"] != "ended" {
        assert!(tokio::time::Instant::now() < deadline, "never marked ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for b in [&mut teacher, &mut stayed_away] {
        let a = b.room_token(&lesson).await.unwrap();
        assert_eq!(a.status, StatusCode::GONE, "{}", a.body);
        assert_eq!(a.json()["message"], "This lesson has closed.");
    }
    let csv = teacher
        .get(&format!("/api/lessons/{lesson}/register.csv"))
        .await
        .unwrap()
        .body;
    assert!(csv.contains(",Ms Rivera,teacher,yes,attended,"), "{csv}");
    assert!(
        csv.contains(",Bea (7A),pupil,yes,absent,,,,0.0\r\n"),
        "{csv}"
    );
    assert!(!csv.contains("Cal (7A)"), "never signed in: {csv}");
}
