//! Visitor grants: SLT and the DSL give a visitor (an inspector, say)
//! observer access to named lessons for a time window, and revoke it.
//! `POST /api/visitors`, `POST /api/visitors/revoke`; every grant, revocation
//! and claim is an audit record.
//!
//! A grant names its visitor in one of three ways: a person who signed in
//! before (as the people list names them), the subject the school's identity
//! provider gives someone who has not signed in yet, or — what most SLT know
//! — their e-mail address. A person is `(iss, sub)` (docs/security.md §4),
//! so a grant by e-mail is filed under a placeholder
//! ([`email_invitation`]) until someone signs in whose ID token carries
//! that address *verified by the provider* (`email_verified: true`); the
//! sign-in then moves the grant to their `(iss, sub)` ([`claim_by_email`]),
//! once: the address never lets anyone else in afterwards. An address the
//! provider does not vouch for claims nothing.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use chaperone_protocol::{LessonId, UserRef};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::WebState;
use super::api::{ApiError, changing, reason};
use super::audit::{self, AuditRecord};
use crate::auth::SchoolRole;
use crate::auth::identity::{Identity, email_invitation, verified_email};
use crate::catalog::TABLE;
use crate::clock::unix_millis;
use crate::store::{StateStore, UnixMillis, VisitorGrant};

/// Longest visitor window.
pub(crate) const MAX_GRANT_MS: u64 = 31 * 24 * 3600 * 1000;

/// The visitor routes.
pub(crate) fn router() -> Router<WebState> {
    Router::new()
        .route("/api/visitors", post(grant_visitor))
        .route("/api/visitors/revoke", post(revoke_visitor))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantRequest {
    /// A person who has signed in before, as the people list names them.
    #[serde(default)]
    visitor: Option<UserRef>,
    /// Or the visitor's subject at the school's identity provider, for
    /// someone who has not signed in yet (an inspector's visit prepared
    /// ahead): the grant is for (our issuer, this subject).
    #[serde(default)]
    visitor_subject: Option<String>,
    /// Or their e-mail address: claimed at their first sign-in with that
    /// address verified by the identity provider.
    #[serde(default)]
    visitor_email: Option<String>,
    lessons: Vec<LessonId>,
    not_before_ms: u64,
    not_after_ms: u64,
    reason: String,
}

/// The one way the request names its visitor, as the grant files it.
fn visitor_of(state: &WebState, req: &GrantRequest) -> Result<UserRef, ApiError> {
    let given = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    };
    let (subject, email) = (given(&req.visitor_subject), given(&req.visitor_email));
    match (&req.visitor, subject, email) {
        (Some(v), None, None) => Ok(v.clone()),
        (None, Some(sub), None) => UserRef::new(state.rp.issuer(), sub)
            .map_err(|e| ApiError::Invalid(format!("that subject cannot be used: {e}"))),
        (None, None, Some(email)) => email_invitation(&email).ok_or_else(|| {
            ApiError::Invalid(format!(
                "“{email}” is not an e-mail address; check it and try again"
            ))
        }),
        _ => Err(ApiError::Invalid(
            "name the visitor once: a person from the list, their e-mail address, or their identity provider subject"
                .to_owned(),
        )),
    }
}

async fn grant_visitor(
    State(state): State<WebState>,
    headers: HeaderMap,
    Json(req): Json<GrantRequest>,
) -> Result<(StatusCode, Json<VisitorGrant>), ApiError> {
    let (_, who) = changing(&state, &headers).await?;
    if !who.may_grant_visitors() {
        audit::write(
            &state.store,
            AuditRecord::new(unix_millis(), "visitor_grant", Some(who.user.clone()))
                .refused("forbidden"),
        )
        .await;
        return Err(ApiError::Forbidden);
    }
    let why = reason(&req.reason)?;
    let visitor = visitor_of(&state, &req)?;
    if req.not_after_ms <= req.not_before_ms || req.not_after_ms - req.not_before_ms > MAX_GRANT_MS
    {
        return Err(ApiError::Invalid(
            "the window must end after it starts and last at most 31 days".to_owned(),
        ));
    }
    if req.lessons.is_empty() || req.lessons.len() > 50 {
        return Err(ApiError::Invalid("name 1 to 50 lessons".to_owned()));
    }
    for l in &req.lessons {
        if state
            .store
            .get_record(TABLE, &l.to_string())
            .await?
            .is_none()
        {
            return Err(ApiError::Invalid(format!("no lesson {l}")));
        }
    }
    let grant = VisitorGrant {
        id: crate::auth::session::new_secret(),
        visitor: visitor.clone(),
        lessons: req.lessons,
        not_before: UnixMillis(req.not_before_ms),
        not_after: UnixMillis(req.not_after_ms),
        granted_by: who.user.clone(),
        reason: why.clone(),
    };
    state.store.put_grant(grant.clone()).await?;
    for l in &grant.lessons {
        audit::write(
            &state.store,
            AuditRecord::new(unix_millis(), "visitor_grant", Some(who.user.clone()))
                .target(visitor.clone())
                .lesson(*l)
                .reason(why.clone()),
        )
        .await;
    }
    Ok((StatusCode::CREATED, Json(grant)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    id: String,
    reason: String,
}

async fn revoke_visitor(
    State(state): State<WebState>,
    headers: HeaderMap,
    Json(req): Json<RevokeRequest>,
) -> Result<Json<Value>, ApiError> {
    let (_, who) = changing(&state, &headers).await?;
    if !who.may_grant_visitors() {
        return Err(ApiError::Forbidden);
    }
    let why = reason(&req.reason)?;
    if !state.store.revoke_grant(&req.id).await? {
        return Err(ApiError::NotFound);
    }
    audit::write(
        &state.store,
        AuditRecord::new(unix_millis(), "visitor_revoke", Some(who.user.clone())).reason(why),
    )
    .await;
    Ok(Json(json!({"revoked": req.id})))
}

/// At a visitor's sign-in: the grants made to the e-mail address their
/// identity provider verified (`claims` of the ID token just checked) become
/// theirs, each audited as `visitor_grant_claimed`. Anyone without the
/// visitor role, or without a verified address, claims nothing. Best
/// effort: if the store fails, the grants wait for the next sign-in.
pub(crate) async fn claim_by_email(
    state: &WebState,
    identity: &Identity,
    claims: &Map<String, Value>,
    now_ms: u64,
) {
    if !identity.has(SchoolRole::Visitor) {
        return;
    }
    let Some(invitation) = verified_email(claims).and_then(|e| email_invitation(&e)) else {
        return;
    };
    let grants = match state.store.grants_for(&invitation).await {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(error = %e, "grants by e-mail not looked up at sign-in");
            return;
        }
    };
    for grant in grants {
        match state.store.move_grant(&grant, &identity.user).await {
            Ok(true) => {
                for l in &grant.lessons {
                    audit::write(
                        &state.store,
                        AuditRecord::new(
                            now_ms,
                            "visitor_grant_claimed",
                            Some(identity.user.clone()),
                        )
                        .target(invitation.clone())
                        .lesson(*l)
                        .reason("e-mail address verified by the identity provider"),
                    )
                    .await;
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "a grant by e-mail not claimed at sign-in"),
        }
    }
}
