//! The review service (`recorder review`, or mounted in-process under
//! `/review` by `gateway --dev`): the only process holding the review age
//! identity. It lists recordings, serves a lesson's timeline (events, chat)
//! and its media remuxed to WebM with HTTP range requests, and carries out
//! the DSL's restrictions, holds and exports, each access an audit record
//! in the hash-chained log ([`crate::audit`]).
//!
//! It trusts the gateway's login through review tokens
//! (`chaperone-review+jwt`, EdDSA, at most five minutes) verified with the
//! gateway's JWKS. A page exchanges its token once (`POST /session`) for an
//! HttpOnly, SameSite=Strict cookie bound to that token's scope, because a
//! `<video>` element cannot send headers and tokens never go in URLs. Every
//! response is filtered through [`crate::policy`] for the session's scope.
//! An access whose audit record cannot be stored is refused (fail closed).
//!
//! Sessions live in this process's memory: run one review instance (or pin
//! a viewer to one instance); a restart signs viewers out of replay, never
//! into it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chaperone_protocol::LessonId;
use chaperone_tokens::{ReviewClaims, ReviewScope, Verifier};
use object_store::ObjectStore;
use serde::Deserialize;
use serde_json::json;

use crate::audit::{AuditEntry, AuditLog};
use crate::library::{self, LibraryError, Recording, Summary};
use crate::marks::{self, HoldRecord, Restriction};
use crate::policy::{self, Access};
use crate::retention::{self, RetentionPolicy, SweepOutcome};
use crate::webm::{self, MuxInput, Span, VideoCodec, WebmFile};
use chaperone_archive::keys::RecorderPublicKey;

/// The review cookie.
pub const REVIEW_COOKIE: &str = "chaperone_review";
/// Longest stated reason for a DSL action.
pub const MAX_REASON_CHARS: usize = 500;

/// Wall-clock time in unix microseconds, injected by the binary's shell.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Settings of the review service.
#[derive(Clone, Debug)]
pub struct ReviewSettings {
    /// The gateway's issuer name (its public URL).
    pub issuer: String,
    /// Our audience in review tokens.
    pub audience: String,
    /// Where the service is mounted (`/review`), the review cookie's path.
    pub cookie_path: String,
    /// Mark the cookie `Secure` (any https deployment).
    pub secure_cookies: bool,
    /// How long a review session lasts, seconds.
    pub session_secs: u64,
    /// Bound on recordings and remuxed files held in memory, bytes.
    pub cache_bytes: usize,
    /// Retention periods.
    pub retention: RetentionPolicy,
}

impl Default for ReviewSettings {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audience: chaperone_tokens::DEFAULT_REVIEW_AUDIENCE.to_owned(),
            cookie_path: "/review".to_owned(),
            secure_cookies: false,
            session_secs: 1800,
            cache_bytes: 512 * 1024 * 1024,
            retention: RetentionPolicy::default(),
        }
    }
}

#[derive(Clone, Debug)]
struct ReviewSession {
    claims: ReviewClaims,
    expires_micros: u64,
}

/// A bounded cache of shared values by key, least recently used out first.
struct Lru<K, V> {
    items: Vec<(K, Arc<V>, usize)>,
    bytes: usize,
    bound: usize,
}

impl<K: PartialEq, V> Lru<K, V> {
    fn new(bound: usize) -> Self {
        Self {
            items: Vec::new(),
            bytes: 0,
            bound,
        }
    }
    fn get(&mut self, k: &K) -> Option<Arc<V>> {
        let i = self.items.iter().position(|(x, ..)| x == k)?;
        let item = self.items.remove(i);
        let v = item.1.clone();
        self.items.push(item);
        Some(v)
    }
    fn put(&mut self, k: K, v: Arc<V>, size: usize) {
        self.items.retain(|(x, ..)| x != &k);
        self.items.push((k, v, size));
        self.bytes = self.items.iter().map(|i| i.2).sum();
        while self.bytes > self.bound && self.items.len() > 1 {
            let (_, _, s) = self.items.remove(0);
            self.bytes -= s;
        }
    }
    fn retain(&mut self, f: impl Fn(&K) -> bool) {
        self.items.retain(|(k, ..)| f(k));
        self.bytes = self.items.iter().map(|i| i.2).sum();
    }
}

type FileKey = (LessonId, u64, String, Vec<Span>);

/// The review service.
pub struct ReviewService {
    store: Arc<dyn ObjectStore>,
    identity: age::x25519::Identity,
    key: RecorderPublicKey,
    verifier: RwLock<Verifier>,
    settings: ReviewSettings,
    clock: Clock,
    audit: AuditLog,
    sessions: Mutex<HashMap<String, ReviewSession>>,
    recordings: Mutex<Lru<LessonId, Recording>>,
    files: Mutex<Lru<FileKey, WebmFile>>,
    summaries: Mutex<HashMap<LessonId, (u64, Summary)>>,
    /// (session, file) -> end of the last range served, to tell a seek from
    /// a player reading on.
    reading: Mutex<HashMap<(String, String), u64>>,
}

impl std::fmt::Debug for ReviewService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReviewService")
            .field("settings", &self.settings)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// A refused request. Mapped to a status and a JSON body in one place.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No (live) review session, or a bad token.
    #[error("no review session: ask the gateway for access again")]
    Unauthenticated,
    /// The session's scope does not allow this.
    #[error("your review access does not allow this")]
    Forbidden,
    /// No such recording or file, or not in the session's scope (the same answer).
    #[error("not found")]
    NotFound,
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The range cannot be served.
    #[error("range not satisfiable")]
    Range,
    /// The store or the audit log failed: nothing was served.
    #[error("temporarily unavailable")]
    Unavailable,
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Unauthenticated => StatusCode::UNAUTHORIZED,
            Refusal::Forbidden => StatusCode::FORBIDDEN,
            Refusal::NotFound => StatusCode::NOT_FOUND,
            Refusal::Invalid(_) => StatusCode::BAD_REQUEST,
            Refusal::Range => StatusCode::RANGE_NOT_SATISFIABLE,
            Refusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The machine code.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::Forbidden => "forbidden",
            Refusal::NotFound => "not_found",
            Refusal::Invalid(_) => "invalid",
            Refusal::Range => "range",
            Refusal::Unavailable => "unavailable",
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status(),
            Json(json!({"error": self.code(), "message": self.to_string()})),
        )
            .into_response()
    }
}

fn reason_of(text: &str) -> Result<String, Refusal> {
    let t = text.trim();
    if t.is_empty() || t.chars().count() > MAX_REASON_CHARS {
        return Err(Refusal::Invalid(format!(
            "a reason of 1 to {MAX_REASON_CHARS} characters is required"
        )));
    }
    Ok(t.to_owned())
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl ReviewService {
    /// A service reading `store`, opening segments with `identity`,
    /// trusting manifests signed by `key` and review tokens that `verifier`
    /// accepts.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        identity: age::x25519::Identity,
        key: RecorderPublicKey,
        verifier: Verifier,
        settings: ReviewSettings,
        clock: Clock,
    ) -> Arc<Self> {
        let bound = settings.cache_bytes;
        Arc::new(Self {
            audit: AuditLog::new(store.clone()),
            store,
            identity,
            key,
            verifier: RwLock::new(verifier),
            settings,
            clock,
            sessions: Mutex::default(),
            recordings: Mutex::new(Lru::new(bound / 2)),
            files: Mutex::new(Lru::new(bound / 2)),
            summaries: Mutex::default(),
            reading: Mutex::default(),
        })
    }

    /// Replaces the token verifier (the gateway's JWKS was fetched again).
    pub fn set_verifier(&self, verifier: Verifier) {
        *self.verifier.write().unwrap_or_else(|p| p.into_inner()) = verifier;
    }

    /// The audit log.
    pub fn audit_log(&self) -> &AuditLog {
        &self.audit
    }

    /// The routes, relative to the mount point.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/session", post(open_session))
            .route("/api/session", get(session_info))
            .route("/api/recordings", get(list))
            .route("/api/recordings/{lesson}", get(detail))
            .route("/api/recordings/{lesson}/media/{file}", get(media))
            .route("/api/recordings/{lesson}/audit", get(lesson_audit))
            .route("/api/recordings/{lesson}/seek", post(seek_report))
            .route("/api/recordings/{lesson}/restrict", post(restrict))
            .route("/api/recordings/{lesson}/hold", post(hold))
            .route("/api/recordings/{lesson}/export", get(export))
            .with_state(self.clone())
    }

    /// Runs the retention sweep now (the binary calls it periodically).
    pub async fn sweep(&self) -> Result<Vec<SweepOutcome>, retention::RetentionError> {
        let out = retention::sweep(
            self.store.as_ref(),
            &self.key,
            &self.identity,
            &self.audit,
            self.settings.retention,
            (self.clock)(),
        )
        .await?;
        let deleted: Vec<LessonId> = out
            .iter()
            .filter(|o| o.action == "deleted")
            .map(|o| o.lesson)
            .collect();
        self.recordings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|l| !deleted.contains(l));
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k| !deleted.contains(&k.0));
        self.summaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|l, _| !deleted.contains(l));
        Ok(out)
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    /// Writes an audit record; the caller refuses to serve if it fails.
    async fn record(&self, entry: AuditEntry) -> Result<(), Refusal> {
        self.audit.append(entry).await.map(|_| ()).map_err(|e| {
            tracing::error!(error = %e, "review audit record not stored; request refused");
            Refusal::Unavailable
        })
    }

    fn entry(
        &self,
        action: &str,
        s: Option<&ReviewSession>,
        lesson: Option<LessonId>,
    ) -> AuditEntry {
        AuditEntry {
            action: action.to_owned(),
            actor: s.map(|s| s.claims.viewer.to_string()),
            actor_name: s.map(|s| s.claims.name.clone()),
            at: self.now(),
            lesson: lesson.map(|l| l.to_string()),
            outcome: "ok".to_owned(),
            reason: s.and_then(|s| s.claims.reason.clone()),
            role: s.map(|s| s.claims.role.clone()),
            scope: s.map(|s| s.claims.scope.name().to_owned()),
            ..AuditEntry::default()
        }
    }

    /// Audits a refusal and returns it.
    async fn refuse(
        &self,
        refusal: Refusal,
        s: Option<&ReviewSession>,
        lesson: Option<LessonId>,
        what: &str,
    ) -> Refusal {
        let mut e = self.entry("refused", s, lesson);
        e.outcome = refusal.code().to_owned();
        e.reason = Some(what.to_owned());
        match self.record(e).await {
            Ok(()) => refusal,
            Err(u) => u,
        }
    }

    /// The request's live session, or an audited refusal.
    async fn session(
        &self,
        headers: &HeaderMap,
        lesson: Option<LessonId>,
        what: &str,
    ) -> Result<(String, ReviewSession), Refusal> {
        let now = self.now();
        let found = cookie(headers, REVIEW_COOKIE).and_then(|id| {
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
    fn covers(s: &ReviewSession, lesson: LessonId) -> bool {
        let c = &s.claims;
        match c.scope {
            ReviewScope::Safeguarding | ReviewScope::DslRestricted => {
                c.lesson.is_none_or(|l| l == lesson)
            }
            ReviewScope::PupilCopy => c.lesson == Some(lesson) || c.lessons.contains(&lesson),
        }
    }

    /// The lesson's recording, opened (or from the cache; reopened when a
    /// newer checkpoint of an unfinished lesson exists).
    async fn recording(&self, lesson: LessonId) -> Result<Arc<Recording>, Refusal> {
        let cached = self
            .recordings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&lesson);
        if let Some(r) = &cached
            && r.is_final
        {
            return Ok(r.clone());
        }
        let manifest =
            match library::trusted_manifest(self.store.as_ref(), &lesson, &self.key).await {
                Ok(m) => m,
                Err(LibraryError::NotFound) => return Err(Refusal::NotFound),
                Err(e) => {
                    tracing::error!(%lesson, error = %e, "recording unreadable");
                    return Err(Refusal::Unavailable);
                }
            };
        if let Some(r) = cached
            && r.checkpoint == manifest.checkpoint
        {
            return Ok(r);
        }
        let rec = match library::open(self.store.as_ref(), &lesson, &self.key, &self.identity).await
        {
            Ok(r) => Arc::new(r),
            Err(LibraryError::NotFound) => return Err(Refusal::NotFound),
            Err(e) => {
                tracing::error!(%lesson, error = %e, "recording cannot be replayed");
                return Err(Refusal::Unavailable);
            }
        };
        self.summaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(lesson, (rec.checkpoint, rec.summary()));
        self.recordings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(lesson, rec.clone(), rec.bytes);
        Ok(rec)
    }

    async fn summary(&self, lesson: LessonId) -> Result<Summary, Refusal> {
        if let Some((_, s)) = self
            .summaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&lesson)
            .filter(|(_, s)| s.is_final)
        {
            return Ok(s.clone());
        }
        Ok(self.recording(lesson).await?.summary())
    }

    async fn restrictions(&self, lesson: LessonId) -> Result<Vec<Restriction>, Refusal> {
        marks::restrictions(self.store.as_ref(), &lesson)
            .await
            .map_err(|e| {
                tracing::error!(%lesson, error = %e, "restrictions unreadable; nothing served");
                Refusal::Unavailable
            })
    }

    /// One remuxed file for `access` (from the cache when made before).
    async fn file(
        &self,
        rec: &Arc<Recording>,
        name: &str,
        access: Access,
    ) -> Result<Arc<WebmFile>, Refusal> {
        let allowed = policy::files(rec, access);
        let Some(info) = allowed.iter().find(|f| f.name == name) else {
            return Err(Refusal::NotFound);
        };
        let restrictions = self.restrictions(rec.lesson).await?;
        let omit = policy::withheld(access, &restrictions);
        let key = (rec.lesson, rec.checkpoint, info.name.clone(), omit.clone());
        if let Some(f) = self
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(f);
        }
        let (video, audio) = library::file_tracks(info.participant, info.screen);
        let rec2 = rec.clone();
        let made = tokio::task::spawn_blocking(move || {
            let v = rec2.tracks.get(&video).and_then(|t| {
                t.codec
                    .and_then(VideoCodec::of)
                    .map(|c| (c, t.frames.as_slice()))
            });
            let a = audio
                .and_then(|a| rec2.tracks.get(&a))
                .map(|t| t.frames.as_slice());
            webm::mux(&MuxInput {
                video: v,
                audio: a,
                omit: &omit,
                duration_micros: rec2.duration_micros,
            })
        })
        .await
        .map_err(|_| Refusal::Unavailable)?;
        let file = match made {
            Ok(f) => Arc::new(f),
            Err(webm::WebmError::Empty) => return Err(Refusal::NotFound),
            Err(e) => {
                tracing::error!(lesson = %rec.lesson, file = name, error = %e, "remux failed");
                return Err(Refusal::Unavailable);
            }
        };
        let size = file.bytes.len();
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(key, file.clone(), size);
        Ok(file)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionRequest {
    token: String,
}

async fn open_session(
    State(svc): State<Arc<ReviewService>>,
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
    let secure = if svc.settings.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{REVIEW_COOKIE}={id}; Path={}; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}",
        svc.settings.cookie_path
    );
    let mut response = Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

async fn session_info(State(svc): State<Arc<ReviewService>>, headers: HeaderMap) -> Response {
    match svc.session(&headers, None, "session").await {
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    teacher: Option<String>,
    pupil: Option<String>,
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    flagged: Option<bool>,
}

fn matches(people: &[library::Participant], needle: &Option<String>) -> bool {
    let Some(n) = needle.as_deref().map(str::trim).filter(|n| !n.is_empty()) else {
        return true;
    };
    let n = n.to_lowercase();
    people
        .iter()
        .any(|p| p.name.to_lowercase().contains(&n) || p.user.subject.to_lowercase() == n)
}

async fn list(
    State(svc): State<Arc<ReviewService>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let (_, s) = match svc.session(&headers, None, "list recordings").await {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let lessons = match library::list_lessons(svc.store.as_ref()).await {
        Ok(l) => l,
        Err(_) => return Refusal::Unavailable.into_response(),
    };
    let mut out = Vec::new();
    for lesson in lessons
        .into_iter()
        .filter(|l| ReviewService::covers(&s, *l))
    {
        let Ok(sum) = svc.summary(lesson).await else {
            continue;
        };
        let pupil_view = s.claims.scope == ReviewScope::PupilCopy;
        if !matches(&sum.staff, &q.teacher)
            || (!pupil_view && !matches(&sum.pupils, &q.pupil))
            || q.from_ms
                .is_some_and(|f| sum.start_ms + sum.duration_ms < f)
            || q.to_ms.is_some_and(|t| sum.start_ms > t)
            || (q.flagged == Some(true) && sum.concerns + sum.incidents == 0)
        {
            continue;
        }
        let held = marks::holds(svc.store.as_ref(), &lesson)
            .await
            .map(|h| marks::is_held(&h, sum.concerns + sum.incidents > 0))
            .unwrap_or(true);
        out.push(if pupil_view {
            json!({"lesson": sum.lesson, "start_ms": sum.start_ms, "duration_ms": sum.duration_ms,
                   "staff": sum.staff.iter().map(|p| &p.name).collect::<Vec<_>>()})
        } else {
            json!({"lesson": sum.lesson, "start_ms": sum.start_ms, "duration_ms": sum.duration_ms,
                   "final": sum.is_final, "staff": sum.staff, "pupils": sum.pupils,
                   "concerns": sum.concerns, "incidents": sum.incidents,
                   "first_flag_ms": sum.first_flag_ms, "held": held})
        });
    }
    let mut e = svc.entry("list", Some(&s), None);
    e.file = Some(format!(
        "teacher={} pupil={} from={} to={} flagged={}",
        q.teacher.unwrap_or_default(),
        q.pupil.unwrap_or_default(),
        q.from_ms.map_or(String::new(), |v| v.to_string()),
        q.to_ms.map_or(String::new(), |v| v.to_string()),
        q.flagged.unwrap_or(false)
    ));
    if let Err(r) = svc.record(e).await {
        return r.into_response();
    }
    Json(out).into_response()
}

/// The session and recording for a per-lesson request, or an audited refusal.
async fn lesson_access(
    svc: &ReviewService,
    headers: &HeaderMap,
    lesson: &str,
    what: &str,
) -> Result<(String, ReviewSession, LessonId), Refusal> {
    let id = lesson.parse::<LessonId>().ok();
    let (sid, s) = svc.session(headers, id, what).await?;
    match id {
        Some(l) if ReviewService::covers(&s, l) => Ok((sid, s, l)),
        _ => Err(svc.refuse(Refusal::NotFound, Some(&s), id, what).await),
    }
}

async fn detail(
    State(svc): State<Arc<ReviewService>>,
    headers: HeaderMap,
    Path(lesson): Path<String>,
) -> Response {
    let (_, s, id) = match lesson_access(&svc, &headers, &lesson, "view").await {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let rec = match svc.recording(id).await {
        Ok(r) => r,
        Err(r) => {
            return svc
                .refuse(r, Some(&s), Some(id), "view")
                .await
                .into_response();
        }
    };
    let access = Access::of(s.claims.scope);
    let restrictions = match svc.restrictions(id).await {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let withheld = policy::withheld(access, &restrictions);
    let files = policy::files(&rec, access);
    let summary = rec.summary();
    let holds = marks::holds(svc.store.as_ref(), &id)
        .await
        .unwrap_or_default();
    let flagged = summary.concerns + summary.incidents > 0;
    let mut body = json!({
        "lesson": id,
        "start_ms": rec.start_unix_micros / 1000,
        "duration_ms": rec.duration_micros / 1000,
        "final": rec.is_final,
        "scope": s.claims.scope,
        "files": files.iter().map(|f| json!({
            "name": f.name, "label": f.label, "role": f.role, "screen": f.screen,
            "video": f.video, "audio": f.audio,
            "url": format!("{}/api/recordings/{id}/media/{}", svc.settings.cookie_path, f.name),
        })).collect::<Vec<_>>(),
        "chat": policy::chat(&rec, access, &withheld),
        "events": policy::events(&rec, access, &withheld),
        "restricted": match access {
            Access::Pupil => json!([]),
            Access::Blanked => json!(withheld.iter().map(|w| json!({"from_ms": w.from_micros / 1000, "to_ms": w.to_micros / 1000})).collect::<Vec<_>>()),
            Access::Full => json!(restrictions),
        },
    });
    if access != Access::Pupil {
        body["participants"] = json!(rec.participants.values().collect::<Vec<_>>());
        body["gaps"] = json!(rec.gaps);
        body["held"] = json!(marks::is_held(&holds, flagged));
        body["holds"] = json!(holds);
        body["concerns"] = json!(summary.concerns);
        body["incidents"] = json!(summary.incidents);
    } else {
        body["withheld_parts"] = json!(!withheld.is_empty());
    }
    if let Err(r) = svc.record(svc.entry("view", Some(&s), Some(id))).await {
        return r.into_response();
    }
    Json(body).into_response()
}

/// A parsed `Range: bytes=...` (one range).
fn parse_range(h: &str, len: u64) -> Option<(u64, u64)> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        (len.saturating_sub(n), len - 1)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            len - 1
        } else {
            b.parse::<u64>().ok()?.min(len - 1)
        };
        (start, end)
    };
    (start <= end && start < len).then_some((start, end))
}

async fn media(
    State(svc): State<Arc<ReviewService>>,
    headers: HeaderMap,
    Path((lesson, file)): Path<(String, String)>,
) -> Response {
    let (sid, s, id) = match lesson_access(&svc, &headers, &lesson, "media").await {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let access = Access::of(s.claims.scope);
    let rec = match svc.recording(id).await {
        Ok(r) => r,
        Err(r) => {
            return svc
                .refuse(r, Some(&s), Some(id), "media")
                .await
                .into_response();
        }
    };
    let webm = match svc.file(&rec, &file, access).await {
        Ok(f) => f,
        Err(r) => {
            return svc
                .refuse(r, Some(&s), Some(id), &format!("media {file}"))
                .await
                .into_response();
        }
    };
    let len = webm.bytes.len() as u64;
    if len == 0 {
        return Refusal::NotFound.into_response();
    }
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (start, end, partial) = match range {
        None => (0, len.saturating_sub(1), false),
        Some(r) => match parse_range(r, len) {
            Some((a, b)) => (a, b, true),
            None => {
                return (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{len}"))],
                )
                    .into_response();
            }
        },
    };
    // Audit: the first read of a file is "play", a jump elsewhere a "seek";
    // a player reading on, or reading the index after the last cluster, is
    // neither.
    let media_end = webm.clusters.last().map_or(len, |(o, _)| {
        webm::element_at(&webm.bytes, *o as usize)
            .and_then(|(_, s, sz)| sz.map(|sz| s as u64 + sz))
            .unwrap_or(len)
    });
    let key = (sid, file.clone());
    let previous = svc
        .reading
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, end + 1);
    let action = match previous {
        None => Some("play"),
        Some(_) if start >= media_end => None,
        Some(p) if start >= p && start - p < 64 * 1024 => None,
        Some(_) => Some("seek"),
    };
    if let Some(action) = action {
        let mut e = svc.entry(action, Some(&s), Some(id));
        e.file = Some(file.clone());
        e.from_ms = Some(webm.time_at(start) / 1000);
        e.to_ms = Some(webm.time_at(end.min(media_end)) / 1000);
        if let Err(r) = svc.record(e).await {
            return r.into_response();
        }
    }
    let body = webm.bytes[start as usize..=end as usize].to_vec();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/webm"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&(end + 1 - start).to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if partial && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
        h.insert(header::CONTENT_RANGE, v);
    }
    response
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeekReport {
    t_ms: u64,
}

/// The page reports a seek inside what the player has already buffered
/// (which makes no range request): audited like one.
async fn seek_report(
    State(svc): State<Arc<ReviewService>>,
    headers: HeaderMap,
    Path(lesson): Path<String>,
    Json(req): Json<SeekReport>,
) -> Response {
    let (_, s, id) = match lesson_access(&svc, &headers, &lesson, "seek").await {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let mut e = svc.entry("seek", Some(&s), Some(id));
    e.from_ms = Some(req.t_ms);
    e.to_ms = Some(req.t_ms);
    match svc.record(e).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r.into_response(),
    }
}

async fn lesson_audit(
    State(svc): State<Arc<ReviewService>>,
    headers: HeaderMap,
    Path(lesson): Path<String>,
) -> Response {
    let (_, s, id) = match lesson_access(&svc, &headers, &lesson, "audit").await {
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
    headers: &HeaderMap,
    lesson: &str,
    what: &str,
) -> Result<(ReviewSession, LessonId), Refusal> {
    let (_, s, id) = lesson_access(svc, headers, lesson, what).await?;
    if s.claims.scope != ReviewScope::DslRestricted || s.claims.role != "dsl" {
        return Err(svc
            .refuse(Refusal::Forbidden, Some(&s), Some(id), what)
            .await);
    }
    Ok((s, id))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestrictRequest {
    from_ms: u64,
    to_ms: u64,
    reason: String,
}

async fn restrict(
    State(svc): State<Arc<ReviewService>>,
    headers: HeaderMap,
    Path(lesson): Path<String>,
    Json(req): Json<RestrictRequest>,
) -> Response {
    let (s, id) = match dsl_only(&svc, &headers, &lesson, "restrict").await {
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
struct HoldRequest {
    held: bool,
    reason: String,
}

async fn hold(
    State(svc): State<Arc<ReviewService>>,
    headers: HeaderMap,
    Path(lesson): Path<String>,
    Json(req): Json<HoldRequest>,
) -> Response {
    let (s, id) = match dsl_only(&svc, &headers, &lesson, "hold").await {
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
struct ExportQuery {
    from_ms: Option<u64>,
    to_ms: Option<u64>,
}

async fn export(
    State(svc): State<Arc<ReviewService>>,
    headers: HeaderMap,
    Path(lesson): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Response {
    let (s, id) = match dsl_only(&svc, &headers, &lesson, "export").await {
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
