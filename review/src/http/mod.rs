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
//! response is filtered through `crate::policy` for the session's scope.
//! An access whose audit record cannot be stored is refused (fail closed).
//!
//! Sessions live in this process's memory: run one review instance (or pin
//! a viewer to one instance); a restart signs viewers out of replay, never
//! into it.
//!
//! This module owns the service type, its settings, the router and the
//! audit helpers every route uses; the rest is by concern:
//!
//! - `session`: a review token exchanged once for a cookie session, the
//!   session lookup and which lessons a session covers;
//! - `cache`: recordings and remuxed files held in memory (bounded LRU);
//! - `refusal`: why a request is refused, mapped to HTTP in one place;
//! - `recordings`: list, detail, media (with `range`) and seek reports;
//! - `dsl`: the lesson's audit view and the DSL's restrict, hold, export.
//!
//! No route may answer before its audit record is stored, and none may
//! serve what `crate::policy` withholds from the session's scope.

mod cache;
mod dsl;
mod range;
mod recordings;
mod refusal;
mod session;

/// Parses a `Range: bytes=...` header against a file of `len` bytes, as the
/// media route does: the first and last byte served, or `None` (416). For
/// the fuzz target and its corpus (`crate::fuzzing`).
#[cfg(any(test, feature = "fuzzing"))]
pub fn parse_range(h: &str, len: u64) -> Option<(u64, u64)> {
    range::parse_range(h, len)
}

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::routing::{get, post};
use chaperone_archive::keys::RecorderPublicKey;
use chaperone_protocol::LessonId;
use chaperone_tokens::Verifier;
use object_store::ObjectStore;

use crate::audit::{AuditEntry, AuditLog};
use crate::marks::{self, Restriction};
use crate::retention::{self, RetentionPolicy, SweepOutcome};
use cache::Cache;
use refusal::Refusal;
use session::ReviewSession;

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
    cache: Cache,
    /// (session, file) -> end of the last range served, to tell a seek from
    /// a player reading on.
    reading: Mutex<HashMap<(String, String), u64>>,
    /// Review tokens already exchanged for a session: `jti` -> `exp`
    /// (Unix seconds), kept until they expire. A token opens one session.
    exchanged: Mutex<HashMap<String, u64>>,
    /// Refusals of requests without a session in the current window:
    /// (window start, (outcome, what) -> count after the first). The first
    /// of each kind is written, the rest as one summary record per window,
    /// never one record per request.
    anonymous: Mutex<(u64, AnonymousCounts)>,
}

/// (outcome, what) -> how many refusals.
type AnonymousCounts = std::collections::BTreeMap<(String, String), u64>;

/// The window over which refusals without a session are summed, micros.
const ANONYMOUS_WINDOW_MICROS: u64 = 60_000_000;

impl std::fmt::Debug for ReviewService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReviewService")
            .field("settings", &self.settings)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
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
            cache: Cache::new(bound),
            reading: Mutex::default(),
            exchanged: Mutex::default(),
            anonymous: Mutex::default(),
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
            .route("/session", post(session::open_session))
            .route("/api/session", get(session::session_info))
            .route("/api/recordings", get(recordings::list))
            .route("/api/recordings/{lesson}", get(recordings::detail))
            .route(
                "/api/recordings/{lesson}/media/{file}",
                get(recordings::media),
            )
            .route("/api/recordings/{lesson}/audit", get(dsl::lesson_audit))
            .route(
                "/api/recordings/{lesson}/seek",
                post(recordings::seek_report),
            )
            .route("/api/recordings/{lesson}/restrict", post(dsl::restrict))
            .route("/api/recordings/{lesson}/hold", post(dsl::hold))
            .route("/api/recordings/{lesson}/export", get(dsl::export))
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
        self.cache.forget(&deleted);
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
        if s.is_none() {
            // Nobody to name: the first of its kind in a window is written,
            // the rest counted and summed into the log later.
            let first = match lesson {
                Some(l) => self.count_anonymous(refusal.code(), &format!("{what}, lesson {l}")),
                None => self.count_anonymous(refusal.code(), what),
            };
            self.flush_anonymous(false).await;
            if !first {
                return refusal;
            }
        }
        let mut e = self.entry("refused", s, lesson);
        e.outcome = refusal.code().to_owned();
        e.reason = Some(what.to_owned());
        match self.record(e).await {
            Ok(()) => refusal,
            Err(u) => u,
        }
    }

    /// Counts a refusal without a session; true for the first of its kind
    /// in the window.
    fn count_anonymous(&self, outcome: &str, what: &str) -> bool {
        let now = self.now();
        let mut a = self.anonymous.lock().unwrap_or_else(|p| p.into_inner());
        if a.1.is_empty() {
            a.0 = now;
        }
        // The reasons are a small fixed set (token error codes); bounded anyway.
        let what = if a.1.len() >= 32 && !a.1.contains_key(&(outcome.to_owned(), what.to_owned())) {
            "other"
        } else {
            what
        };
        match a.1.get_mut(&(outcome.to_owned(), what.to_owned())) {
            Some(n) => {
                *n += 1;
                false
            }
            None => {
                a.1.insert((outcome.to_owned(), what.to_owned()), 0);
                true
            }
        }
    }

    /// Writes the summary of refusals without a session once their window
    /// has passed (or now, with `force`). The binary calls it every minute;
    /// a refusal calls it too.
    pub async fn flush_anonymous(&self, force: bool) {
        let now = self.now();
        let drained = {
            let mut a = self.anonymous.lock().unwrap_or_else(|p| p.into_inner());
            if a.1.is_empty() || (!force && now.saturating_sub(a.0) < ANONYMOUS_WINDOW_MICROS) {
                return;
            }
            let since = a.0;
            (since, std::mem::take(&mut a.1))
        };
        let (since, counts) = drained;
        for ((outcome, what), n) in counts {
            if n == 0 {
                continue;
            }
            let mut e = self.entry("refused", None, None);
            e.outcome = outcome;
            e.reason = Some(format!(
                "summary: {n} more requests without a session refused ({what}) in {} s",
                now.saturating_sub(since).div_ceil(1_000_000)
            ));
            // Logged by `record` on failure; nothing is being served here.
            let _ = self.record(e).await;
        }
    }

    /// Marks the token `jti` (valid until `exp`, Unix seconds) as exchanged;
    /// false if it already was.
    fn exchange_once(&self, jti: &str, exp: u64) -> bool {
        let now_secs = self.now() / 1_000_000;
        let mut used = self.exchanged.lock().unwrap_or_else(|p| p.into_inner());
        used.retain(|_, e| *e + chaperone_tokens::LEEWAY_SECS >= now_secs);
        if used.contains_key(jti) {
            return false;
        }
        used.insert(jti.to_owned(), exp);
        true
    }

    /// The lesson's DSL-only ranges; unreadable is unavailable, never none.
    async fn restrictions(&self, lesson: LessonId) -> Result<Vec<Restriction>, Refusal> {
        marks::restrictions(self.store.as_ref(), &lesson)
            .await
            .map_err(|e| {
                tracing::error!(%lesson, error = %e, "restrictions unreadable; nothing served");
                Refusal::Unavailable
            })
    }
}
