//! Visitor grants end to end through a whole node (`App::build`) and its
//! development identity provider over real HTTP: a visitor observes only
//! the lessons and the window granted, and is granted before their first
//! sign-in by subject or by e-mail (the dev provider verifies its demo
//! people's addresses; an unverified one is refused in
//! `tests/tests/oidc_real_provider.rs`, against `oidc-provider`).
#![allow(clippy::unwrap_used)]

mod web_support;

use chaperone_gateway::auth::SchoolRole;
use chaperone_protocol::signal::ServerMsg;
use reqwest::StatusCode;
use serde_json::json;
use web_support::{Node, open_ws, recv};

fn user(node: &Node, sub: &str) -> serde_json::Value {
    json!({"issuer": node.idp().issuer(), "subject": sub})
}

#[tokio::test]
async fn visitors_observe_only_inside_their_window() {
    let node = Node::start(|_| {}).await.unwrap();
    let mut teacher = node.browser();
    teacher.login_ok("teacher").await.unwrap();
    let lesson = teacher.create_lesson("7A").await.unwrap();
    let mut visitor = node.browser();
    assert_eq!(
        visitor.login_ok("visitor").await.unwrap().page().as_deref(),
        Some("visitor")
    );
    assert_eq!(visitor.get("/api/lessons").await.unwrap().json(), json!([]));
    assert_eq!(
        visitor.room_token(&lesson).await.unwrap().status,
        StatusCode::NOT_FOUND
    );

    let now = chaperone_gateway::clock::unix_millis();
    let grant = json!({"visitor": user(&node, "visitor"), "lessons": [lesson],
        "not_before_ms": now - 1000, "not_after_ms": now + 3_600_000, "reason": "Ofsted inspection"});
    // Teachers and admins cannot grant; SLT can.
    assert_eq!(
        teacher
            .post("/api/visitors", grant.clone())
            .await
            .unwrap()
            .status,
        StatusCode::FORBIDDEN
    );
    let mut slt = node.browser();
    slt.login_ok("slt").await.unwrap();
    let a = slt.post("/api/visitors", grant).await.unwrap();
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let grant_id = a.json()["id"].as_str().unwrap().to_owned();

    assert_eq!(
        visitor
            .get("/api/lessons")
            .await
            .unwrap()
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let token = visitor.room_token(&lesson).await.unwrap().json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = open_ws(&node, &lesson, &token).await.unwrap().unwrap();
    match recv(&mut ws).await.unwrap() {
        ServerMsg::Welcome { role, .. } => assert_eq!(role, chaperone_protocol::Role::Observer),
        other => panic!("expected welcome, got {other:?}"),
    }

    // A window in the past gives nothing.
    let revoke = slt
        .post(
            "/api/visitors/revoke",
            json!({"id": grant_id, "reason": "done"}),
        )
        .await
        .unwrap();
    assert_eq!(revoke.status, StatusCode::OK);
    let past = json!({"visitor": user(&node, "visitor"), "lessons": [lesson],
        "not_before_ms": now - 7_200_000, "not_after_ms": now - 3_600_000, "reason": "last week"});
    assert_eq!(
        slt.post("/api/visitors", past).await.unwrap().status,
        StatusCode::CREATED
    );
    assert_eq!(
        visitor.room_token(&lesson).await.unwrap().status,
        StatusCode::NOT_FOUND
    );
    let me = slt.get("/api/me").await.unwrap().json();
    assert!(
        me["roles"]
            .as_array()
            .unwrap()
            .contains(&json!(SchoolRole::Slt.name()))
    );
}

#[tokio::test]
async fn a_visitor_is_granted_by_subject_or_email_before_their_first_sign_in() {
    let node = Node::start(|_| {}).await.unwrap();
    let mut teacher = node.browser();
    teacher.login_ok("teacher").await.unwrap();
    let lesson = teacher.create_lesson("7A").await.unwrap();
    let mut slt = node.browser();
    slt.login_ok("slt").await.unwrap();
    let now = chaperone_gateway::clock::unix_millis();
    let window = |who: serde_json::Value| {
        let mut g = json!({"lessons": [lesson], "not_before_ms": now - 1000,
            "not_after_ms": now + 3_600_000, "reason": "Ofsted inspection"});
        g.as_object_mut()
            .unwrap()
            .extend(who.as_object().unwrap().clone());
        g
    };
    // Naming nobody, or somebody twice over, is a clear refusal.
    for who in [
        json!({}),
        json!({"visitor_subject": "  "}),
        json!({"visitor": user(&node, "visitor"), "visitor_subject": "visitor"}),
        json!({"visitor_email": "hale@", "visitor_subject": "visitor"}),
        json!({"visitor_email": "not an address"}),
    ] {
        let a = slt.post("/api/visitors", window(who)).await.unwrap();
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
        assert_eq!(a.json()["error"], "invalid");
    }
    // The inspector has never signed in: the grant names their subject.
    let a = slt
        .post(
            "/api/visitors",
            window(json!({"visitor_subject": "visitor"})),
        )
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.json()["visitor"], user(&node, "visitor"));
    // Another lesson, by the address the (dev) provider verifies for them.
    let lesson = teacher.create_lesson("7B").await.unwrap();
    let mut by_mail = window(json!({"visitor_email": "Hale@Inspectorate.example"}));
    by_mail["lessons"] = json!([lesson]);
    assert_eq!(
        slt.post("/api/visitors", by_mail).await.unwrap().status,
        StatusCode::CREATED
    );
    let mut visitor = node.browser();
    visitor.login_ok("visitor").await.unwrap();
    let lessons = visitor.get("/api/lessons").await.unwrap().json();
    assert_eq!(lessons.as_array().unwrap().len(), 2, "{lessons}");
    assert_eq!(
        visitor.room_token(&lesson).await.unwrap().status,
        StatusCode::OK
    );
}
