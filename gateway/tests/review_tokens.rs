//! Who gets a review token, through a whole node (`App::build`, `--dev`,
//! the review service mounted under `/review`) and its development
//! identity provider over real HTTP: SLT and DSL with a reason and a fresh
//! MFA login, pupils for their own class only; a teacher, a pupil of
//! another class, a leader whose MFA login is too old and an
//! unauthenticated request are refused, and every refusal is audited.
#![allow(clippy::unwrap_used)]

mod web_support;

use std::time::Duration;

use chaperone_gateway::auth::tokens::{DEFAULT_REVIEW_AUDIENCE, ReviewScope};
use reqwest::StatusCode;
use serde_json::json;
use web_support::Node;

#[tokio::test]
async fn review_tokens_go_to_leaders_with_a_reason_and_to_the_class_only() {
    let node = Node::start(|c| c.oidc.step_up_max_age_secs = 2)
        .await
        .unwrap();
    let mut teacher = node.browser();
    teacher.login_ok("teacher").await.unwrap();
    let lesson = teacher.create_lesson("7A").await.unwrap();
    let ask = |scope: &str, reason: Option<&str>| json!({"scope": scope, "lesson": lesson, "reason": reason});

    // Unauthenticated.
    let mut anon = node.browser();
    let a = anon
        .post("/api/review/token", ask("safeguarding", Some("x")))
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // A teacher, for any scope.
    for scope in ["safeguarding", "dsl_restricted", "pupil_copy"] {
        let a = teacher
            .post("/api/review/token", ask(scope, Some("curious")))
            .await
            .unwrap();
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{scope}: {}", a.body);
    }
    // A pupil of another class: as if the lesson did not exist.
    let mut other = node.browser();
    other.login_ok("pupil-7b").await.unwrap();
    let a = other
        .post("/api/review/token", ask("pupil_copy", None))
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // SLT: a reason is required; DSL-only parts are not for SLT.
    let mut slt = node.browser();
    slt.login_ok("slt").await.unwrap();
    let a = slt
        .post("/api/review/token", ask("safeguarding", Some("  ")))
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json()["error"], "reason_required");
    let a = slt
        .post("/api/review/token", ask("dsl_restricted", Some("why")))
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // A cross-site request.
    let a = slt
        .post_from(
            Some("https://evil.example"),
            "/api/review/token",
            ask("safeguarding", Some("why")),
        )
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::FORBIDDEN);

    // Granted: SLT with a reason, the DSL restricted, a pupil of 7A.
    let a = slt
        .post(
            "/api/review/token",
            ask("safeguarding", Some("a concern in 7A")),
        )
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let token = a.json()["token"].as_str().unwrap().to_owned();
    let jwks: serde_json::Value = reqwest::get(format!("{}/.well-known/jwks.json", node.base()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let claims = chaperone_gateway::auth::tokens::Verifier::from_jwks(&jwks)
        .unwrap()
        .verify_review(
            chaperone_gateway::clock::unix_millis() / 1000,
            &token,
            &node.base(),
            DEFAULT_REVIEW_AUDIENCE,
        )
        .unwrap();
    assert_eq!(claims.scope, ReviewScope::Safeguarding);
    assert_eq!(claims.role, "slt");
    assert_eq!(claims.reason.as_deref(), Some("a concern in 7A"));
    assert_eq!(claims.lesson.unwrap().to_string(), lesson);
    assert!(claims.exp - claims.iat <= 300);
    let mut dsl = node.browser();
    dsl.login_ok("dsl").await.unwrap();
    let a = dsl
        .post("/api/review/token", ask("dsl_restricted", Some("review")))
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK);
    let mut pupil = node.browser();
    pupil.login_ok("pupil-a").await.unwrap();
    let a = pupil
        .post("/api/review/token", ask("pupil_copy", None))
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let pupil_token = a.json()["token"].as_str().unwrap().to_owned();
    // A pupil asking for the safeguarding scope is refused.
    let a = pupil
        .post("/api/review/token", ask("safeguarding", Some("x")))
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::FORBIDDEN);

    // The embedded review service takes the token once for its cookie; the
    // lesson has no recording yet.
    let r = reqwest::Client::new()
        .post(format!("{}/review/session", node.base()))
        .json(&json!({"token": pupil_token}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let r = reqwest::Client::new()
        .get(format!("{}/review/api/recordings/{lesson}", node.base()))
        .header("cookie", cookie.split(';').next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // A leader whose MFA login is older than the step-up age is refused.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let a = slt
        .post(
            "/api/review/token",
            ask("safeguarding", Some("a concern in 7A")),
        )
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json()["error"], "step_up_required");
    let me = slt.get("/api/me").await.unwrap().json();
    assert_eq!(me["step_up_fresh"], false);

    // Every refusal is in the audit log.
    let audit = dsl.get("/api/audit").await.unwrap().json();
    let refusals: Vec<(String, Option<String>)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "review_token_refused")
        .map(|r| {
            (
                r["outcome"].as_str().unwrap().to_owned(),
                r["actor"]["subject"].as_str().map(str::to_owned),
            )
        })
        .collect();
    for (code, who) in [
        ("unauthenticated", None),
        ("forbidden", Some("teacher")),
        ("not_found", Some("pupil-7b")),
        ("reason_required", Some("slt")),
        ("forbidden", Some("slt")),
        ("cross_site", None),
        ("step_up_required", Some("slt")),
        ("forbidden", Some("pupil-a")),
    ] {
        assert!(
            refusals.contains(&(code.to_owned(), who.map(str::to_owned))),
            "{code} {who:?} not audited: {refusals:?}"
        );
    }
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "review_token" && r["actor"]["subject"] == "slt")
    );
}
