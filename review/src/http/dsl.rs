//! A lesson's audit view (`GET .../audit`, staff scopes) and what only the
//! DSL may do, in the `dsl_restricted` scope: mark a DSL-only range
//! (`POST .../restrict`), place or lift a legal hold (`POST .../hold`), and
//! export the lesson for an external agency (`GET .../export`).
//!
//! Each action states a reason and is audited before it is carried out; a
//! mark is written to the store ([`crate::marks`]) and never deleted. No
//! other scope or role may reach these actions.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use chaperone_protocol::LessonId;
use chaperone_tokens::ReviewScope;
use serde::Deserialize;

use super::refusal::Refusal;
use super::session::{ReviewSession, lesson_access};
use super::{MAX_REASON_CHARS, ReviewService};
use crate::audit::AuditEntry;
use crate::marks::{self, HoldRecord, Restriction};

/// The stated reason for a DSL action, trimmed: 1 to [`MAX_REASON_CHARS`]
/// characters.
fn reason_of(text: &str) -> Result<String, Refusal> {
    let t = text.trim();
    if t.is_empty() || t.chars().count() > MAX_REASON_CHARS {
        return Err(Refusal::Invalid(format!(
            "a reason of 1 to {MAX_REASON_CHARS} characters is required"
        )));
    }
    Ok(t.to_owned())
}

pub(super) async fn lesson_audit(
    State(svc): State<Arc<ReviewService>>,
    jar: CookieJar,
    Path(lesson): Path<String>,
) -> Response {
    let (_, s, id) = match lesson_access(&svc, &jar, &lesson, "audit").await {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    if s.claims.scope == ReviewScope::PupilCopy {
        return svc
            .refuse(Refusal::Forbidden, Some(&s), Some(id), "audit")
            .await
            .into_response();
    }
    let entries = match svc.audit.entries().await {
        Ok(e) => e,
        Err(_) => return Refusal::Unavailable.into_response(),
    };
    let lesson_s = id.to_string();
    let mine: Vec<AuditEntry> = entries
        .into_iter()
        .filter(|e| e.lesson.as_deref() == Some(lesson_s.as_str()))
        .collect();
    if let Err(r) = svc
        .record(svc.entry("audit_view", Some(&s), Some(id)))
        .await
    {
        return r.into_response();
    }
    Json(mine).into_response()
}

/// The session must be the DSL's `dsl_restricted` one.
async fn dsl_only(
    svc: &ReviewService,
    jar: &CookieJar,
    lesson: &str,
    what: &str,
) -> Result<(ReviewSession, LessonId), Refusal> {
    let (_, s, id) = lesson_access(svc, jar, lesson, what).await?;
    if s.claims.scope != ReviewScope::DslRestricted || s.claims.role != "dsl" {
        return Err(svc
            .refuse(Refusal::Forbidden, Some(&s), Some(id), what)
            .await);
    }
    Ok((s, id))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RestrictRequest {
    from_ms: u64,
    to_ms: u64,
    reason: String,
}

pub(super) async fn restrict(
    State(svc): State<Arc<ReviewService>>,
    jar: CookieJar,
    Path(lesson): Path<String>,
    Json(req): Json<RestrictRequest>,
) -> Response {
    let (s, id) = match dsl_only(&svc, &jar, &lesson, "restrict").await {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let reason = match reason_of(&req.reason) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    if req.to_ms <= req.from_ms {
        return Refusal::Invalid("the range must end after it starts".to_owned()).into_response();
    }
    let mut e = svc.entry("restrict", Some(&s), Some(id));
    e.from_ms = Some(req.from_ms);
    e.to_ms = Some(req.to_ms);
    e.reason = Some(reason.clone());
    if let Err(r) = svc.record(e).await {
        return r.into_response();
    }
    let r = Restriction {
        at: svc.now(),
        by: s.claims.viewer.to_string(),
        from_ms: req.from_ms,
        reason,
        to_ms: req.to_ms,
    };
    match marks::restrict(svc.store.as_ref(), &id, &r).await {
        Ok(()) => (StatusCode::CREATED, Json(r)).into_response(),
        Err(_) => Refusal::Unavailable.into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HoldRequest {
    held: bool,
    reason: String,
}

pub(super) async fn hold(
    State(svc): State<Arc<ReviewService>>,
    jar: CookieJar,
    Path(lesson): Path<String>,
    Json(req): Json<HoldRequest>,
) -> Response {
    let (s, id) = match dsl_only(&svc, &jar, &lesson, "hold").await {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let reason = match reason_of(&req.reason) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let mut e = svc.entry(
        if req.held { "hold" } else { "release" },
        Some(&s),
        Some(id),
    );
    e.reason = Some(reason.clone());
    if let Err(r) = svc.record(e).await {
        return r.into_response();
    }
    let h = HoldRecord {
        at: svc.now(),
        by: s.claims.viewer.to_string(),
        held: req.held,
        reason,
    };
    match marks::set_hold(svc.store.as_ref(), &id, &h).await {
        Ok(()) => (StatusCode::CREATED, Json(h)).into_response(),
        Err(_) => Refusal::Unavailable.into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExportQuery {
    from_ms: Option<u64>,
    to_ms: Option<u64>,
}

pub(super) async fn export(
    State(svc): State<Arc<ReviewService>>,
    jar: CookieJar,
    Path(lesson): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Response {
    let (s, id) = match dsl_only(&svc, &jar, &lesson, "export").await {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let rec = match svc.recording(id).await {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let range = match (q.from_ms, q.to_ms) {
        (None, None) => None,
        (f, t) => {
            let from = f.unwrap_or(0);
            let to = t.unwrap_or(rec.duration_micros / 1000);
            let base = rec.start_unix_micros;
            Some((base + from * 1000, base + to * 1000))
        }
    };
    let mut e = svc.entry("export", Some(&s), Some(id));
    e.from_ms = q.from_ms;
    e.to_ms = q.to_ms;
    if let Err(r) = svc.record(e).await {
        return r.into_response();
    }
    match crate::export::bundle(svc.store.as_ref(), &id, &svc.key, range).await {
        Ok(b) => {
            let mut response = Response::new(Body::from(b.tar));
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-tar"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!(
                "attachment; filename=\"chaperone-export-{id}.tar\""
            )) {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            if let Some((a, b)) = b.segments
                && let Ok(v) = HeaderValue::from_str(&format!("{a}-{b}"))
            {
                h.insert("x-chaperone-segments", v);
            }
            response
        }
        Err(crate::export::ExportError::NotFound) => Refusal::NotFound.into_response(),
        Err(e) => {
            tracing::error!(lesson = %id, error = %e, "export failed");
            Refusal::Unavailable.into_response()
        }
    }
}
