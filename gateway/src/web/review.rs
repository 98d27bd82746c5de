//! Safeguarding review, the gateway's side (issue 6): who may replay which
//! recording, decided here from the session, and said in a short-lived
//! review token (`chaperone-review+jwt`) that the review service verifies
//! with our JWKS. The review service (`recorder review`; in `--dev`
//! in-process under `/review`, same origin) holds the age identity and
//! enforces the token's scope on every response.
//!
//! - SLT and DSL: `safeguarding` (every track, all chat, the events; DSL-only
//!   ranges blanked), for one lesson or, with no lesson, for searching.
//!   Requires a stated reason and an MFA login younger than
//!   `oidc.step_up_max_age_secs`.
//! - DSL only: `dsl_restricted` (DSL-only ranges too, and restrict, hold,
//!   export), same requirements.
//! - Pupils: `pupil_copy` of a lesson of their own class (or a list of
//!   them): staff media, screen share and public chat only.
//!
//! Everyone else (teachers, other classes, visitors, no session) is refused,
//! and every issue and refusal is an audit record. A lesson that is not the
//! pupil's answers exactly as one that does not exist.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chaperone_protocol::LessonId;
use chaperone_tokens::{DEFAULT_REVIEW_AUDIENCE, ReviewScope};
use serde::Deserialize;
use serde_json::json;

use super::audit::{self, AuditRecord};
use super::html::{escape, page_with_bar};
use super::{WebState, current_session, same_origin};
use crate::auth::SchoolRole;
use crate::catalog::{LessonInfo, TABLE};
use crate::clock::unix_millis;
use crate::store::StateStore;

/// Where the review service is reached from the browser (same origin; a
/// reverse proxy routes it to `recorder review` in production).
pub(crate) const REVIEW_BASE: &str = "/review";
/// Lifetime of a review token, seconds: only long enough to be exchanged.
pub(crate) const REVIEW_TOKEN_SECS: u64 = 120;
/// Longest stated reason.
pub(crate) const MAX_REASON_CHARS: usize = chaperone_tokens::MAX_REVIEW_REASON_CHARS;

/// The review routes: pages and the token endpoint.
pub(crate) fn router() -> Router<WebState> {
    Router::new()
        .route("/replay", get(replay_home))
        .route("/replay/{lesson}", get(replay_page))
        .route("/api/review/token", post(review_token))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    /// The lesson, or none for a search/list token.
    lesson: Option<String>,
    scope: ReviewScope,
    reason: Option<String>,
}

/// A refusal: status, code, message.
fn refused(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "message": message})),
    )
        .into_response()
}

async fn review_token(
    State(state): State<WebState>,
    headers: HeaderMap,
    peer: super::Peer,
    axum::Json(req): axum::Json<TokenRequest>,
) -> Response {
    let now_ms = unix_millis();
    let source = super::client_ip(peer);
    let scope_name = req.scope.name();
    let lesson_id = req.lesson.as_deref().map(|l| l.parse::<LessonId>());
    let audit_refusal = |who: Option<chaperone_protocol::UserRef>, code: &str| {
        let mut r = AuditRecord::new(now_ms, "review_token_refused", who)
            .refused(code)
            .reason(format!("scope {scope_name}"));
        if let Some(Ok(l)) = &lesson_id {
            r = r.lesson(*l);
        }
        r
    };
    if !same_origin(&state, &headers) {
        audit::write_or_count(
            &state.store,
            &state.anonymous,
            source,
            audit_refusal(None, "cross_site"),
        )
        .await;
        return refused(
            StatusCode::FORBIDDEN,
            "cross_site",
            "cross-site request refused",
        );
    }
    let who = match current_session(&state, &headers).await {
        Ok(Some((_, s))) => s.identity,
        Ok(None) => {
            audit::write_or_count(
                &state.store,
                &state.anonymous,
                source,
                audit_refusal(None, "unauthenticated"),
            )
            .await;
            return refused(StatusCode::UNAUTHORIZED, "unauthenticated", "sign in first");
        }
        Err(_) => {
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "temporarily unavailable",
            );
        }
    };
    let refuse = |code: &'static str, status: StatusCode, message: &'static str| {
        let state = state.clone();
        let record = audit_refusal(Some(who.user.clone()), code);
        async move {
            audit::write(&state.store, record).await;
            refused(status, code, message)
        }
    };
    let lesson = match lesson_id {
        None => None,
        Some(Ok(l)) => Some(l),
        Some(Err(_)) => return refuse("not_found", StatusCode::NOT_FOUND, "not found").await,
    };
    let reason = req
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned);
    let now = now_ms / 1000;
    let (role, lessons) = match req.scope {
        ReviewScope::Safeguarding | ReviewScope::DslRestricted => {
            let role = if who.has(SchoolRole::Dsl) {
                "dsl"
            } else if who.has(SchoolRole::Slt) && req.scope == ReviewScope::Safeguarding {
                "slt"
            } else {
                return refuse(
                    "forbidden",
                    StatusCode::FORBIDDEN,
                    "only senior leaders and the DSL replay recordings; DSL-only parts are for the DSL",
                )
                .await;
            };
            match &reason {
                Some(r) if r.chars().count() <= MAX_REASON_CHARS => {}
                _ => {
                    return refuse(
                        "reason_required",
                        StatusCode::BAD_REQUEST,
                        "state why you need to see this recording (1 to 500 characters)",
                    )
                    .await;
                }
            }
            if !who.step_up_fresh(now, state.config.step_up_max_age_secs) {
                return refuse(
                    "step_up_required",
                    StatusCode::FORBIDDEN,
                    "replay needs a recent sign-in with multi-factor authentication: sign out and in again",
                )
                .await;
            }
            (role, Vec::new())
        }
        ReviewScope::PupilCopy => {
            if !who.has(SchoolRole::Pupil) {
                return refuse(
                    "forbidden",
                    StatusCode::FORBIDDEN,
                    "review copies are for the pupils of the lesson's class",
                )
                .await;
            }
            let mut own: Vec<LessonInfo> = match state.store.list_records(TABLE).await {
                Ok(rows) => rows
                    .into_iter()
                    .filter_map(|(_, j)| serde_json::from_str::<LessonInfo>(&j).ok())
                    .filter(|l| who.classes.contains(&l.class))
                    .collect(),
                Err(_) => {
                    return refused(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "temporarily unavailable",
                    );
                }
            };
            match lesson {
                Some(l) if !own.iter().any(|x| x.id == l) => {
                    // Not theirs answers exactly like not there.
                    return refuse("not_found", StatusCode::NOT_FOUND, "not found").await;
                }
                Some(_) => ("pupil", Vec::new()),
                None => {
                    own.sort_by_key(|l| std::cmp::Reverse(l.starts_at_ms));
                    own.truncate(chaperone_tokens::MAX_REVIEW_LESSONS);
                    if own.is_empty() {
                        return refuse(
                            "not_found",
                            StatusCode::NOT_FOUND,
                            "no lessons of your class",
                        )
                        .await;
                    }
                    ("pupil", own.into_iter().map(|l| l.id).collect())
                }
            }
        }
    };
    let token = state.tokens.issue_review(
        now,
        REVIEW_TOKEN_SECS,
        crate::auth::session::new_secret(),
        DEFAULT_REVIEW_AUDIENCE,
        who.user.clone(),
        who.name.clone(),
        role,
        req.scope,
        lesson,
        lessons,
        reason.clone(),
    );
    let token = match token {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "review token not issued");
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "temporarily unavailable",
            );
        }
    };
    let mut record = AuditRecord::new(now_ms, "review_token", Some(who.user.clone())).reason(
        format!("scope {scope_name}; {}", reason.unwrap_or_default()),
    );
    if let Some(l) = lesson {
        record = record.lesson(l);
    }
    audit::write(&state.store, record).await;
    axum::Json(json!({
        "token": token,
        "expires_in": REVIEW_TOKEN_SECS,
        "review_base": REVIEW_BASE,
        "scope": req.scope,
        "role": role,
        "lesson": lesson,
    }))
    .into_response()
}

fn shell(kind: &str, lesson: Option<&str>, identity: &crate::auth::identity::Identity) -> Response {
    let lesson_attr = lesson.map_or(String::new(), |l| format!(" data-lesson=\"{}\"", escape(l)));
    Html(page_with_bar(
        if lesson.is_some() { "Replay" } else { "Recordings" },
        kind,
        &super::signed_in_bar(
            identity,
            &format!(" data-review-base=\"{REVIEW_BASE}\"{lesson_attr}"),
            "<nav aria-label=\"Pages\"><a href=\"/\">Lessons</a> <a href=\"/replay\">Recordings</a></nav>",
        ),
        "<div id=\"review\"><p>Loading…</p></div>\
         <script type=\"module\" src=\"/static/replay.js\"></script>",
    ))
    .into_response()
}

async fn replay_home(State(state): State<WebState>, headers: HeaderMap) -> Response {
    match current_session(&state, &headers).await {
        Ok(Some((_, s))) => shell("review", None, &s.identity),
        Ok(None) => Redirect::to("/login").into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn replay_page(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(lesson): Path<String>,
) -> Response {
    let Ok(id) = lesson.parse::<LessonId>() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match current_session(&state, &headers).await {
        Ok(Some((_, s))) => shell("replay", Some(&id.to_string()), &s.identity),
        Ok(None) => Redirect::to("/login").into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
