//! Review sessions: a review token exchanged once (`POST /session`) for an
//! HttpOnly, SameSite=Strict cookie, the session behind each later request,
//! and which lessons a session's scope covers.
//!
//! A token is verified once, here, and never accepted anywhere else: it
//! must never travel in a URL, and a session must never outlive its
//! `expires_micros` or cover a lesson its claims do not name. Every refusal
//! here is audited before it is answered.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use chaperone_protocol::LessonId;
use chaperone_tokens::{ReviewClaims, ReviewScope};
use serde::Deserialize;
use serde_json::json;

use super::refusal::Refusal;
use super::{REVIEW_COOKIE, ReviewService, ReviewSettings};

/// A viewer's session: the review token's claims, until it expires.
#[derive(Clone, Debug)]
pub(super) struct ReviewSession {
    pub(super) claims: ReviewClaims,
    pub(super) expires_micros: u64,
}

impl ReviewService {
    /// The request's live session, or an audited refusal.
    pub(super) async fn session(
        &self,
        jar: &CookieJar,
        lesson: Option<LessonId>,
        what: &str,
    ) -> Result<(String, ReviewSession), Refusal> {
        let now = self.now();
        let found = jar.get(REVIEW_COOKIE).and_then(|c| {
            let id = c.value();
            let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            let before = map.len();
            map.retain(|_, s| s.expires_micros > now);
            if map.len() != before {
                self.reading
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|(sid, _), _| map.contains_key(sid));
            }
            map.get(id).cloned().map(|s| (id.to_owned(), s))
        });
        match found {
            Some(s) => Ok(s),
            None => Err(self
                .refuse(Refusal::Unauthenticated, None, lesson, what)
                .await),
        }
    }

    /// Whether the session covers `lesson`.
    pub(super) fn covers(s: &ReviewSession, lesson: LessonId) -> bool {
        let c = &s.claims;
        match c.scope {
            ReviewScope::Safeguarding | ReviewScope::DslRestricted => {
                c.lesson.is_none_or(|l| l == lesson)
            }
            ReviewScope::PupilCopy => c.lesson == Some(lesson) || c.lessons.contains(&lesson),
        }
    }
}

/// The session and lesson of a per-lesson request, or an audited refusal.
pub(super) async fn lesson_access(
    svc: &ReviewService,
    jar: &CookieJar,
    lesson: &str,
    what: &str,
) -> Result<(String, ReviewSession, LessonId), Refusal> {
    let id = lesson.parse::<LessonId>().ok();
    let (sid, s) = svc.session(jar, id, what).await?;
    match id {
        Some(l) if ReviewService::covers(&s, l) => Ok((sid, s, l)),
        _ => Err(svc.refuse(Refusal::NotFound, Some(&s), id, what).await),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SessionRequest {
    token: String,
}

/// The review cookie carrying session `id` for `max_age_secs`: HttpOnly (no
/// script reads it), SameSite=Strict (no other site's page sends it),
/// scoped to the mount, `Secure` when configured, and lasting as long as the
/// session, no longer.
fn session_cookie(id: String, settings: &ReviewSettings, max_age_secs: u64) -> Cookie<'static> {
    Cookie::build((REVIEW_COOKIE, id))
        .path(settings.cookie_path.clone())
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(settings.secure_cookies)
        .max_age(time::Duration::seconds(
            i64::try_from(max_age_secs).unwrap_or(i64::MAX),
        ))
        .build()
}

pub(super) async fn open_session(
    State(svc): State<Arc<ReviewService>>,
    jar: CookieJar,
    Json(req): Json<SessionRequest>,
) -> Response {
    let now = svc.now();
    let verified = svc
        .verifier
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .verify_review(
            now / 1_000_000,
            &req.token,
            &svc.settings.issuer,
            &svc.settings.audience,
        );
    let claims = match verified {
        Ok(c) => c,
        Err(e) => {
            return svc
                .refuse(
                    Refusal::Unauthenticated,
                    None,
                    None,
                    &format!("review token refused: {}", e.code()),
                )
                .await
                .into_response();
        }
    };
    let expires = now + svc.settings.session_secs.max(60) * 1_000_000;
    let session = ReviewSession {
        claims,
        expires_micros: expires,
    };
    if !svc.exchange_once(&session.claims.jti, session.claims.exp) {
        return svc
            .refuse(
                Refusal::Unauthenticated,
                Some(&session),
                session.claims.lesson,
                "review token already exchanged for a session",
            )
            .await
            .into_response();
    }
    if let Err(r) = svc
        .record(svc.entry("open", Some(&session), session.claims.lesson))
        .await
    {
        return r.into_response();
    }
    let id = hex::encode(rand::random::<[u8; 32]>());
    let body = json!({
        "scope": session.claims.scope,
        "role": session.claims.role,
        "name": session.claims.name,
        "lesson": session.claims.lesson,
        "expires_in": (expires - now) / 1_000_000,
    });
    let max_age = (expires - now) / 1_000_000;
    svc.sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone(), session);
    let cookie = session_cookie(id, &svc.settings, max_age);
    (jar.add(cookie), Json(body)).into_response()
}

pub(super) async fn session_info(
    State(svc): State<Arc<ReviewService>>,
    jar: CookieJar,
) -> Response {
    match svc.session(&jar, None, "session").await {
        Ok((_, s)) => Json(json!({
            "scope": s.claims.scope,
            "role": s.claims.role,
            "name": s.claims.name,
            "lesson": s.claims.lesson,
            "lessons": s.claims.lessons,
            "reason": s.claims.reason,
        }))
        .into_response(),
        Err(r) => r.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::{ReviewSettings, session_cookie};

    #[test]
    fn the_review_cookie_is_http_only_strict_on_the_mount_for_the_session() {
        let settings = ReviewSettings::default();
        let c = session_cookie("ab12".to_owned(), &settings, 1800).to_string();
        assert_eq!(
            c,
            "chaperone_review=ab12; HttpOnly; SameSite=Strict; Path=/review; Max-Age=1800"
        );
        let secure = ReviewSettings {
            cookie_path: "/replay".to_owned(),
            secure_cookies: true,
            ..ReviewSettings::default()
        };
        let c = session_cookie("ab12".to_owned(), &secure, 60).to_string();
        assert_eq!(
            c,
            "chaperone_review=ab12; HttpOnly; SameSite=Strict; Secure; Path=/replay; Max-Age=60"
        );
    }
}
