//! The JSON API of the signed-in web. Every handler authorises on the
//! server from the session's identity; errors are typed JSON
//! (`{"error": code, "message": ...}`) with their HTTP status mapped in one
//! place ([`ApiError`]). A lesson that exists but is not the caller's is
//! answered exactly as one that does not exist.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chaperone_protocol::{LessonId, UserRef};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::audit::{self, AuditRecord};
use super::lessons::{self, LessonView};
use super::{WebState, current_session, same_origin};
use crate::auth::identity::Identity;
use crate::auth::tokens::AccountClaims;
use crate::catalog::{InWindow, LessonInfo, TABLE};
use crate::clock::unix_millis;
use crate::store::{Block, StateStore, StoreEvent, UnixMillis, VisitorGrant};

/// The people directory table (who has signed in, for the block and grant forms).
pub(crate) const PEOPLE: &str = "people";
/// Longest stated reason.
pub(crate) const MAX_REASON_CHARS: usize = 500;

/// Why an API request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ApiError {
    /// No live session.
    #[error("sign in first")]
    Unauthenticated,
    /// Signed in, but the role does not allow this.
    #[error("your role does not allow this")]
    Forbidden,
    /// Not found, or not yours (the same answer).
    #[error("not found")]
    NotFound,
    /// A state-changing request from another site.
    #[error("cross-site request refused")]
    CrossSite,
    /// The request body is invalid.
    #[error("{0}")]
    Invalid(String),
    /// Too many lookups.
    #[error("too many requests; slow down")]
    RateLimited,
    /// The state store or signing failed: nothing was changed.
    #[error("temporarily unavailable")]
    Unavailable,
    /// The lesson is not open for joining yet: it opens at this moment
    /// (Unix ms; the page shows it in the reader's time).
    #[error("This lesson opens at {} UTC.", super::lessons::hh_mm_utc(*.0))]
    NotOpen(u64),
    /// The lesson's window has closed (its end and grace are past).
    #[error("This lesson has closed.")]
    Closed,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden | ApiError::CrossSite => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotOpen(_) => StatusCode::FORBIDDEN,
            ApiError::Closed => StatusCode::GONE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::CrossSite => "cross_site",
            ApiError::Invalid(_) => "invalid",
            ApiError::RateLimited => "rate_limited",
            ApiError::Unavailable => "unavailable",
            ApiError::NotOpen(_) => "not_open",
            ApiError::Closed => "closed",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.code(), "message": self.to_string()});
        if let ApiError::NotOpen(at) = self {
            body["opens_at_ms"] = json!(at);
        }
        (self.status(), Json(body)).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "state store failed during an API request");
        ApiError::Unavailable
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The API routes.
pub(crate) fn router() -> Router<WebState> {
    Router::new()
        .route("/api/me", get(me))
        .route("/api/lessons", get(list_lessons).post(create_lesson))
        .route("/api/classes", get(classes))
        .route("/api/lessons/{lesson}", get(get_lesson))
        .route("/api/lessons/{lesson}/token", post(room_token))
        .route("/api/lessons/{lesson}/extend", post(lessons::extend_lesson))
        .route("/api/people", get(people))
        .route("/api/blocks", get(list_blocks).post(block))
        .route("/api/unblock", post(unblock))
        .route("/api/audit", get(audit_log))
}

/// The caller's session: (session key, identity).
pub(crate) async fn signed_in(
    state: &WebState,
    headers: &HeaderMap,
) -> Result<(String, Identity), ApiError> {
    match current_session(state, headers).await? {
        Some((key, session)) => Ok((key, session.identity)),
        None => Err(ApiError::Unauthenticated),
    }
}

/// A state-changing call: same origin and signed in.
pub(crate) async fn changing(
    state: &WebState,
    headers: &HeaderMap,
) -> Result<(String, Identity), ApiError> {
    if !same_origin(state, headers) {
        return Err(ApiError::CrossSite);
    }
    signed_in(state, headers).await
}

pub(crate) fn reason(text: &str) -> Result<String, ApiError> {
    let t = text.trim();
    if t.is_empty() || t.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::Invalid(format!(
            "a reason of 1 to {MAX_REASON_CHARS} characters is required"
        )));
    }
    Ok(t.to_owned())
}

/// Records a signed-in person in the directory (best effort).
pub(crate) async fn remember_person(state: &WebState, identity: &Identity, now_ms: u64) {
    let entry = json!({
        "user": identity.user,
        "name": identity.name,
        "roles": identity.roles,
        "classes": identity.classes,
        "last_login_ms": now_ms,
    });
    if let Err(e) = state
        .store
        .put_record(PEOPLE, &identity.user.to_string(), entry.to_string())
        .await
    {
        tracing::warn!(error = %e, "people directory not updated");
    }
}

async fn me(State(state): State<WebState>, headers: HeaderMap) -> ApiResult<serde_json::Value> {
    let (_, who) = signed_in(&state, &headers).await?;
    let now = unix_millis() / 1000;
    Ok(Json(json!({
        "user": who.user,
        "name": who.name,
        "roles": who.roles,
        "classes": who.classes,
        "mfa": who.mfa,
        "home": super::home_kind(&who),
        "may_create_lessons": who.is_staff(),
        "may_block": who.may_block(),
        "may_grant_visitors": who.may_grant_visitors(),
        "step_up_fresh": who.step_up_fresh(now, state.config.step_up_max_age_secs),
    })))
}

async fn grants_of(state: &WebState, who: &Identity) -> Result<Vec<VisitorGrant>, ApiError> {
    if who.has(crate::auth::SchoolRole::Visitor) {
        Ok(state.store.grants_for(&who.user).await?)
    } else {
        Ok(Vec::new())
    }
}

async fn all_lessons(state: &WebState) -> Result<Vec<LessonInfo>, ApiError> {
    let mut out = Vec::new();
    for (id, json) in state.store.list_records(TABLE).await? {
        match serde_json::from_str::<LessonInfo>(&json) {
            Ok(l) => out.push(l),
            Err(e) => tracing::error!(%id, error = %e, "unreadable lesson record skipped"),
        }
    }
    out.sort_by_key(|l| (l.starts_at_ms, l.id));
    Ok(out)
}

async fn list_lessons(
    State(state): State<WebState>,
    headers: HeaderMap,
) -> ApiResult<Vec<LessonView>> {
    let (_, who) = signed_in(&state, &headers).await?;
    let grants = grants_of(&state, &who).await?;
    let now = unix_millis();
    let ended = lessons::ended_times(&state).await?;
    Ok(Json(
        all_lessons(&state)
            .await?
            .into_iter()
            .filter(|l| l.visible_to(&who, &grants, now))
            .map(|l| {
                let at = ended.get(&l.id).copied();
                LessonView::new(l, at, now, &state.config.window)
            })
            .collect(),
    ))
}

/// The classes a lesson may be created for (staff).
async fn classes(State(state): State<WebState>, headers: HeaderMap) -> ApiResult<Vec<String>> {
    let (_, who) = signed_in(&state, &headers).await?;
    if !who.is_staff() {
        return Err(ApiError::Forbidden);
    }
    Ok(Json(lessons::known_classes(&state).await?))
}

/// A lesson the caller may see, counted against their lookup budget;
/// everything else is `NotFound`.
pub(crate) async fn visible_lesson(
    state: &WebState,
    key: &str,
    who: &Identity,
    lesson: &str,
) -> Result<LessonInfo, ApiError> {
    let now = unix_millis();
    if !state.allow_lookup(key, now) {
        return Err(ApiError::RateLimited);
    }
    let Ok(id) = lesson.parse::<LessonId>() else {
        return Err(ApiError::NotFound);
    };
    let Some(json) = state.store.get_record(TABLE, &id.to_string()).await? else {
        return Err(ApiError::NotFound);
    };
    let info: LessonInfo = serde_json::from_str(&json).map_err(|e| {
        tracing::error!(lesson = %id, error = %e, "unreadable lesson record");
        ApiError::NotFound
    })?;
    let grants = grants_of(state, who).await?;
    if info.visible_to(who, &grants, now) {
        Ok(info)
    } else {
        Err(ApiError::NotFound)
    }
}

async fn get_lesson(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(lesson): Path<String>,
) -> ApiResult<LessonView> {
    let (key, who) = signed_in(&state, &headers).await?;
    let info = visible_lesson(&state, &key, &who, &lesson).await?;
    Ok(Json(lessons::view(&state, info, unix_millis()).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewLesson {
    title: String,
    class: String,
    starts_at_ms: u64,
    ends_at_ms: u64,
    #[serde(default)]
    teachers: Vec<UserRef>,
    #[serde(default)]
    assistants: Vec<UserRef>,
}

async fn create_lesson(
    State(state): State<WebState>,
    headers: HeaderMap,
    Json(req): Json<NewLesson>,
) -> Result<(StatusCode, Json<LessonInfo>), ApiError> {
    let (_, who) = changing(&state, &headers).await?;
    if !who.is_staff() {
        audit::write(
            &state.store,
            AuditRecord::new(unix_millis(), "lesson_created", Some(who.user.clone()))
                .refused("forbidden"),
        )
        .await;
        return Err(ApiError::Forbidden);
    }
    let mut teachers = vec![who.user.clone()];
    for t in req.teachers {
        if !teachers.contains(&t) {
            teachers.push(t);
        }
    }
    let info = LessonInfo {
        id: LessonId::from_bytes(rand::random::<[u8; 16]>()),
        title: req.title.trim().to_owned(),
        class: req.class.trim().to_owned(),
        teachers,
        assistants: req.assistants,
        starts_at_ms: req.starts_at_ms,
        ends_at_ms: req.ends_at_ms,
        created_by: who.user.clone(),
        extended_until_ms: None,
    };
    info.validate()
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    let known = lessons::known_classes(&state).await?;
    lessons::check_new(&info.class, info.starts_at_ms, &known, unix_millis())?;
    let json = serde_json::to_string(&info).map_err(|_| ApiError::Unavailable)?;
    state
        .store
        .put_record(TABLE, &info.id.to_string(), json)
        .await?;
    audit::write(
        &state.store,
        AuditRecord::new(unix_millis(), "lesson_created", Some(who.user.clone()))
            .lesson(info.id)
            .reason(format!("class {}", info.class)),
    )
    .await;
    Ok((StatusCode::CREATED, Json(info)))
}

#[derive(Debug, Serialize)]
struct RoomToken {
    token: String,
    expires_in: u64,
    lesson: LessonId,
    ws_path: String,
    /// TURN relays with time-limited credentials, when configured.
    ice_servers: Vec<crate::auth::turn::IceServer>,
}

async fn room_token(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(lesson): Path<String>,
) -> ApiResult<RoomToken> {
    let (key, who) = changing(&state, &headers).await?;
    let refused = |code: &str| {
        AuditRecord::new(unix_millis(), "room_token_refused", Some(who.user.clone())).refused(code)
    };
    let info = match visible_lesson(&state, &key, &who, &lesson).await {
        Ok(i) => i,
        Err(e) => {
            audit::write(&state.store, refused(e.code())).await;
            return Err(e);
        }
    };
    // `current_session` already refused blocked people; checked again
    // here against a block that raced the request.
    if state.store.blocked(&who.user).await?.is_some() {
        audit::write(&state.store, refused("blocked").lesson(info.id)).await;
        return Err(ApiError::Forbidden);
    }
    let now_ms = unix_millis();
    // Outside its window a lesson issues no room token (the join checks
    // the window again, for a token issued just before it closed); nor
    // does one its staff ended (its register says when, on every node).
    let ended = lessons::view(&state, info.clone(), now_ms)
        .await?
        .ended_at_ms;
    let window = match state.config.window.at(&info, now_ms) {
        _ if ended.is_some() => Err(ApiError::Closed),
        InWindow::Open => Ok(()),
        InWindow::Before(at) => Err(ApiError::NotOpen(at)),
        InWindow::After(_) => Err(ApiError::Closed),
    };
    if let Err(e) = window {
        audit::write(&state.store, refused(e.code()).lesson(info.id)).await;
        return Err(e);
    }
    let mut account = who.account();
    let visitor_until = if !account.staff && !account.safeguarding_observer {
        grants_of(&state, &who)
            .await?
            .iter()
            .filter(|g| g.covers(info.id, UnixMillis(now_ms)))
            .map(|g| g.not_after.0 / 1000)
            .max()
    } else {
        None
    };
    account.visitor_until = None;
    let claims = AccountClaims {
        staff: account.staff,
        pupil_classes: account.pupil_classes,
        safeguarding_observer: account.safeguarding_observer,
        visitor_until,
    };
    let lifetime = state.config.room_token_secs;
    let jti = crate::auth::session::new_secret();
    // The join looks the session up again: a token whose session has
    // ended (sign-out, block) no longer joins (issue 17).
    state
        .store
        .put_temp(
            crate::auth::ROOM_TOKEN_SESSION,
            &jti,
            key.clone().into_bytes(),
            UnixMillis(now_ms),
            UnixMillis(
                (now_ms / 1000 + lifetime + crate::auth::LEEWAY_SECS + 1).saturating_mul(1000),
            ),
        )
        .await?;
    let token = state
        .tokens
        .issue_room(
            now_ms / 1000,
            lifetime,
            jti,
            info.id,
            who.user.clone(),
            who.name.clone(),
            claims,
        )
        .map_err(|e| {
            tracing::error!(error = %e, "room token not issued");
            ApiError::Unavailable
        })?;
    audit::write(
        &state.store,
        AuditRecord::new(now_ms, "room_token", Some(who.user.clone())).lesson(info.id),
    )
    .await;
    let turn = &state.config.turn;
    let ice_servers = if turn.urls.is_empty() {
        Vec::new()
    } else {
        // The TURN username names no one: a hash of the session, not the person.
        let label = &key[..16.min(key.len())];
        vec![crate::auth::turn::credentials(
            &turn.urls,
            &turn.shared_secret,
            label,
            now_ms / 1000,
            turn.ttl_secs,
        )]
    };
    Ok(Json(RoomToken {
        token,
        expires_in: lifetime,
        lesson: info.id,
        ws_path: format!("/ws/lessons/{}", info.id),
        ice_servers,
    }))
}

async fn people(
    State(state): State<WebState>,
    headers: HeaderMap,
) -> ApiResult<Vec<serde_json::Value>> {
    let (_, who) = signed_in(&state, &headers).await?;
    if !(who.may_block() || who.may_grant_visitors() || who.is_staff()) {
        return Err(ApiError::Forbidden);
    }
    let mut out: Vec<serde_json::Value> = state
        .store
        .list_records(PEOPLE)
        .await?
        .into_iter()
        .filter_map(|(_, j)| serde_json::from_str(&j).ok())
        .collect();
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockRequest {
    user: UserRef,
    reason: String,
}

async fn list_blocks(
    State(state): State<WebState>,
    headers: HeaderMap,
) -> ApiResult<Vec<serde_json::Value>> {
    let (_, who) = signed_in(&state, &headers).await?;
    if !who.may_block() {
        return Err(ApiError::Forbidden);
    }
    Ok(Json(
        state
            .store
            .list_blocks()
            .await?
            .into_iter()
            .map(|(user, b)| json!({"user": user, "reason": b.reason, "by": b.by, "at_ms": b.at.0}))
            .collect(),
    ))
}

async fn block(
    State(state): State<WebState>,
    headers: HeaderMap,
    Json(req): Json<BlockRequest>,
) -> ApiResult<serde_json::Value> {
    let (_, who) = changing(&state, &headers).await?;
    if !who.may_block() {
        audit::write(
            &state.store,
            AuditRecord::new(unix_millis(), "block", Some(who.user.clone()))
                .target(req.user)
                .refused("forbidden"),
        )
        .await;
        return Err(ApiError::Forbidden);
    }
    let why = reason(&req.reason)?;
    if req.user == who.user {
        return Err(ApiError::Invalid("you cannot block yourself".to_owned()));
    }
    let now = UnixMillis(unix_millis());
    state
        .store
        .block(
            &req.user,
            Block {
                reason: why.clone(),
                by: who.user.clone(),
                at: now,
            },
        )
        .await?;
    // Sessions end everywhere; live connections on every node close
    // through the published event (and the lesson tasks' own block lists).
    let ended = state.store.delete_sessions_of(&req.user, now).await?;
    state
        .store
        .publish(StoreEvent::Blocked {
            user: req.user.clone(),
        })
        .await?;
    audit::write(
        &state.store,
        AuditRecord::new(now.0, "block", Some(who.user.clone()))
            .target(req.user.clone())
            .reason(why),
    )
    .await;
    Ok(Json(json!({"blocked": req.user, "sessions_ended": ended})))
}

async fn unblock(
    State(state): State<WebState>,
    headers: HeaderMap,
    Json(req): Json<BlockRequest>,
) -> ApiResult<serde_json::Value> {
    let (_, who) = changing(&state, &headers).await?;
    if !who.may_block() {
        return Err(ApiError::Forbidden);
    }
    let why = reason(&req.reason)?;
    let was = state.store.unblock(&req.user).await?;
    if !was {
        return Err(ApiError::NotFound);
    }
    state
        .store
        .publish(StoreEvent::Unblocked {
            user: req.user.clone(),
        })
        .await?;
    audit::write(
        &state.store,
        AuditRecord::new(unix_millis(), "unblock", Some(who.user.clone()))
            .target(req.user.clone())
            .reason(why),
    )
    .await;
    Ok(Json(json!({"unblocked": req.user})))
}

/// `/api/audit` query: no `from` gives the newest `limit` records that
/// match; `from` pages forward from that position. `who` matches the
/// subject of the actor or the target, `action` the action. Each record
/// carries its `position` in the whole log, so nothing can be pushed out of
/// reach by later records.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    from: Option<u64>,
    limit: Option<usize>,
    who: Option<String>,
    action: Option<String>,
}

/// Records read from the store per round while scanning.
const AUDIT_SCAN: usize = 1000;
/// Most records one answer carries.
const AUDIT_PAGE: usize = 500;

impl AuditQuery {
    fn matches(&self, record: &serde_json::Value) -> bool {
        let subject = |k: &str| record[k]["subject"].as_str();
        self.action
            .as_deref()
            .is_none_or(|a| record["action"].as_str() == Some(a))
            && self
                .who
                .as_deref()
                .is_none_or(|w| subject("actor") == Some(w) || subject("target") == Some(w))
    }

    /// Parses, filters and numbers the records of one page starting at `start`.
    fn keep(&self, start: u64, page: Vec<String>) -> Vec<serde_json::Value> {
        page.into_iter()
            .zip(start..)
            .filter_map(|(j, position)| {
                let mut v: serde_json::Value = serde_json::from_str(&j).ok()?;
                if !self.matches(&v) {
                    return None;
                }
                v.as_object_mut()?
                    .insert("position".to_owned(), json!(position));
                Some(v)
            })
            .collect()
    }
}

async fn audit_log(
    State(state): State<WebState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> ApiResult<Vec<serde_json::Value>> {
    let (_, who) = signed_in(&state, &headers).await?;
    if !who.may_block() {
        return Err(ApiError::Forbidden);
    }
    let limit = q.limit.unwrap_or(AUDIT_PAGE).clamp(1, AUDIT_PAGE);
    let mut out = Vec::new();
    if let Some(from) = q.from {
        let mut at = from;
        loop {
            let (_, page) = state.store.audit_page(at, AUDIT_SCAN).await?;
            if page.is_empty() {
                break;
            }
            let n = page.len() as u64;
            out.extend(q.keep(at, page));
            at += n;
            if out.len() >= limit {
                out.truncate(limit);
                break;
            }
        }
    } else {
        let (mut end, _) = state.store.audit_page(0, 0).await?;
        while end > 0 && out.len() < limit {
            let start = end.saturating_sub(AUDIT_SCAN as u64);
            let count = usize::try_from(end - start).unwrap_or(AUDIT_SCAN);
            let (_, page) = state.store.audit_page(start, count).await?;
            let mut kept = q.keep(start, page);
            kept.reverse();
            out.extend(kept);
            end = start;
        }
        out.truncate(limit);
        out.reverse();
    }
    Ok(Json(out))
}
