//! The signed-in web: OIDC login and logout, sessions, the pages and the
//! JSON API for lessons, room tokens, blocks, visitor grants and the audit
//! log (issue "Identity and access"; SECURITY.md 1–14).
//!
//! Login (`GET /login`) starts an authorization-code flow with PKCE, a
//! `state` and a `nonce`; all three stay server-side in the state store,
//! bound to the browser that started the login by a separate HttpOnly
//! cookie, and can be taken once. The callback (`GET /auth/callback`) takes
//! the pending login by `state` (a replayed or foreign `state` finds
//! nothing), checks the binding, lets the relying party verify the ID token,
//! maps claims to roles (no role: "no access"; staff without MFA: "MFA
//! required"), refuses blocked people, and only then starts a session: a new
//! secret in one HttpOnly, SameSite=Lax cookie (Secure when the public URL is
//! https). Every outcome is audited.
//!
//! Every state-changing request must come from one of our own origins
//! (`Origin` checked), on top of SameSite cookies.

pub mod api;
mod assets;
pub mod audit;
pub mod html;
pub mod incidents;
pub mod lessons;
pub mod review;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use self::audit::AuditRecord;
use self::html::{escape, page};
use crate::auth::identity::{ClaimMapping, Identity, IdentityRefusal, SchoolRole, map_identity};
use crate::auth::oidc::{OidcError, RelyingParty};
use crate::auth::session::{
    self, Session, SessionConfig, is_secret_shaped, new_secret, secret_hash,
};
use crate::auth::tokens::TokenIssuer;
use crate::clock::unix_millis;
use crate::store::{StateStore, Store, UnixMillis};

/// The session cookie.
pub const SESSION_COOKIE: &str = "chaperone_session";
/// The cookie binding a pending login to the browser that started it.
pub const LOGIN_COOKIE: &str = "chaperone_login";
/// How long a started login may take.
pub const LOGIN_TTL_MS: u64 = 10 * 60 * 1000;
/// The callback path (the redirect URI is `<public_url>` + this).
pub const CALLBACK_PATH: &str = "/auth/callback";

/// Settings of the signed-in web.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// The gateway's public URL (no trailing slash).
    pub public_url: String,
    /// Origins whose state-changing requests are accepted.
    pub allowed_origins: Vec<String>,
    /// Session timeouts.
    pub sessions: SessionConfig,
    /// How claims become roles.
    pub mapping: ClaimMapping,
    /// Lifetime of a room token, seconds (≤ 300).
    pub room_token_secs: u64,
    /// Step-up age for recording replay, seconds.
    pub step_up_max_age_secs: u64,
    /// Lesson lookups (open, token) one session may make per minute.
    pub lookups_per_minute: u32,
    /// TURN relays handed out with room tokens (empty: none).
    pub turn: crate::config::TurnSettings,
    /// Development mode (shown on pages).
    pub dev: bool,
}

impl WebConfig {
    fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct WebState {
    /// The state store.
    pub store: Store,
    /// The relying party.
    pub rp: Arc<RelyingParty>,
    /// Our token issuer.
    pub tokens: Arc<TokenIssuer>,
    /// Settings.
    pub config: Arc<WebConfig>,
    limiter: Arc<Mutex<HashMap<String, (u64, u32)>>>,
}

impl std::fmt::Debug for WebState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl WebState {
    /// Shared state for the web routes.
    pub fn new(
        store: Store,
        rp: Arc<RelyingParty>,
        tokens: Arc<TokenIssuer>,
        config: WebConfig,
    ) -> Self {
        Self {
            store,
            rp,
            tokens,
            config: Arc::new(config),
            limiter: Arc::default(),
        }
    }

    /// Counts one lesson lookup for a session; false once over the limit
    /// for this minute.
    fn allow_lookup(&self, session_key: &str, now_ms: u64) -> bool {
        let minute = now_ms / 60_000;
        let mut map = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 10_000 {
            map.retain(|_, (m, _)| *m == minute);
        }
        let entry = map.entry(session_key.to_owned()).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 += 1;
        entry.1 <= self.config.lookups_per_minute
    }
}

/// The routes: pages, login, logout, static files and the API.
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/lessons/{lesson}", get(lesson_page))
        .route("/login", get(login))
        .route(CALLBACK_PATH, get(callback))
        .route("/logout", post(logout))
        .merge(assets::router())
        .merge(api::router())
        .merge(review::router())
        .merge(incidents::router())
        .with_state(state)
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(config: &WebConfig, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let secure = if config.secure_cookies() {
        "; Secure"
    } else {
        ""
    };
    let age = max_age.map_or(String::new(), |s| format!("; Max-Age={s}"));
    let text = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax{secure}{age}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The signed-in session of a request, if any (idle timer restarted).
/// A blocked person's session ends here too.
pub async fn current_session(
    state: &WebState,
    headers: &HeaderMap,
) -> Result<Option<(String, Session)>, crate::store::StoreError> {
    let Some(secret) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let now = UnixMillis(unix_millis());
    let Some(session) = session::load(&state.store, state.config.sessions, secret, now).await?
    else {
        return Ok(None);
    };
    if state.store.blocked(&session.identity.user).await?.is_some() {
        session::end(&state.store, secret).await?;
        return Ok(None);
    }
    Ok(Some((secret_hash(secret), session)))
}

/// Whether a state-changing request comes from one of our origins.
pub fn same_origin(state: &WebState, headers: &HeaderMap) -> bool {
    headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| state.config.allowed_origins.iter().any(|a| a == o))
}

/// The page kind for a person's home: what the browser tests look for.
pub fn home_kind(identity: &Identity) -> &'static str {
    if identity.is_safeguarding_observer() || identity.has(SchoolRole::Admin) {
        "leader"
    } else if identity.is_staff() {
        "teacher"
    } else if identity.has(SchoolRole::Pupil) {
        "pupil"
    } else {
        "visitor"
    }
}

fn dev_banner(state: &WebState) -> &'static str {
    if state.config.dev {
        "<p class=\"warning\">Development mode: the built-in identity provider signs anyone in. Never use <code>--dev</code> with real pupils.</p>"
    } else {
        ""
    }
}

fn unavailable_page() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(page(
            "Unavailable",
            "unavailable",
            "<h1>Temporarily unavailable</h1><p>Chaperone cannot reach its state store. Nobody new can sign in or join until it is back; please try again shortly.</p>",
        )),
    )
        .into_response()
}

async fn home(State(state): State<WebState>, headers: HeaderMap) -> Response {
    match current_session(&state, &headers).await {
        Err(_) => unavailable_page(),
        Ok(None) => Html(page(
            "Sign in",
            "signin",
            &format!(
                "<h1>Chaperone</h1><p>Live lessons for your school. Sign in with your school account to see your lessons.</p>\
                 {}<p><a class=\"button\" id=\"signin\" href=\"/login\">Sign in</a></p>",
                dev_banner(&state)
            ),
        ))
        .into_response(),
        Ok(Some((_, session))) => app_page(&state, &session.identity, None),
    }
}

async fn lesson_page(
    State(state): State<WebState>,
    headers: HeaderMap,
    axum::extract::Path(lesson): axum::extract::Path<String>,
) -> Response {
    match current_session(&state, &headers).await {
        Err(_) => unavailable_page(),
        Ok(None) => {
            // Only a well-formed lesson id is carried through the login.
            match lesson.parse::<chaperone_protocol::LessonId>() {
                Ok(id) => Redirect::to(&format!("/login?return_to=/lessons/{id}")).into_response(),
                Err(_) => Redirect::to("/login").into_response(),
            }
        }
        Ok(Some((_, session))) => app_page(&state, &session.identity, Some(&lesson)),
    }
}

/// The signed-in shell; `app.js` fills it from the API.
fn app_page(state: &WebState, identity: &Identity, lesson: Option<&str>) -> Response {
    let kind = if lesson.is_some() {
        "lesson"
    } else {
        home_kind(identity)
    };
    let roles: Vec<&str> = identity.roles.iter().map(|r| r.name()).collect();
    let lesson_attr = lesson.map_or(String::new(), |l| format!(" data-lesson=\"{}\"", escape(l)));
    Html(page(
        if lesson.is_some() { "Lesson" } else { "Lessons" },
        kind,
        &format!(
            "{}<section id=\"me\" data-roles=\"{}\"{lesson_attr}><p>Signed in as <strong id=\"me-name\">{}</strong> ({})</p>\
             <form method=\"post\" action=\"/logout\"><button id=\"logout\" type=\"submit\">Sign out</button></form></section>\
             <section id=\"app\" aria-live=\"polite\"><p>Loading…</p></section>\
             <script type=\"module\" src=\"/static/app.js\"></script>",
            dev_banner(state),
            escape(&roles.join(" ")),
            escape(&identity.name),
            escape(&roles.join(", ")),
        ),
    ))
    .into_response()
}

/// Where a login may return to: the home page or a lesson page, nothing
/// else (no open redirect).
pub fn safe_return_to(candidate: Option<&str>) -> String {
    match candidate {
        Some(path)
            if path
                .strip_prefix("/lessons/")
                .is_some_and(|id| id.parse::<chaperone_protocol::LessonId>().is_ok()) =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    return_to: Option<String>,
}

/// What is kept server-side between `/login` and the callback.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PendingLogin {
    binding_hash: String,
    nonce: String,
    pkce_verifier: String,
    return_to: String,
}

async fn login(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let now_ms = unix_millis();
    let start = match state.rp.begin(now_ms / 1000).await {
        Ok(s) => s,
        Err(e) => return login_error(&state, None, &e).await,
    };
    // One binding secret per browser, reused so that two tabs can sign in at once.
    let binding = cookie(&headers, LOGIN_COOKIE)
        .filter(|c| is_secret_shaped(c))
        .map_or_else(new_secret, str::to_owned);
    let pending = PendingLogin {
        binding_hash: secret_hash(&binding),
        nonce: start.nonce,
        pkce_verifier: start.pkce_verifier,
        return_to: safe_return_to(q.return_to.as_deref()),
    };
    let Ok(bytes) = serde_json::to_vec(&pending) else {
        return unavailable_page();
    };
    if state
        .store
        .put_temp(
            "login",
            &secret_hash(&start.state),
            bytes,
            UnixMillis(now_ms),
            UnixMillis(now_ms + LOGIN_TTL_MS),
        )
        .await
        .is_err()
    {
        return unavailable_page();
    }
    let mut response = Redirect::to(&start.url).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(
            &state.config,
            LOGIN_COOKIE,
            &binding,
            Some(LOGIN_TTL_MS / 1000),
        ),
    );
    response
}

#[derive(Debug, Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// A refused or failed login: a clear page, an audit record, no session.
async fn refuse(
    state: &WebState,
    status: StatusCode,
    kind: &str,
    title: &str,
    message: &str,
    who: Option<chaperone_protocol::UserRef>,
    code: &str,
) -> Response {
    audit::write(
        &state.store,
        AuditRecord::new(unix_millis(), "login_refused", who).refused(code),
    )
    .await;
    (
        status,
        Html(page(
            title,
            kind,
            &format!(
                "<h1>{}</h1><p>{}</p><p class=\"muted\">Reference: <code id=\"refusal-code\">{}</code></p>\
                 <p><a href=\"/\">Back to the start page</a></p>",
                escape(title),
                escape(message),
                escape(code)
            ),
        )),
    )
        .into_response()
}

async fn login_error(
    state: &WebState,
    who: Option<chaperone_protocol::UserRef>,
    e: &OidcError,
) -> Response {
    tracing::warn!(error = %e, code = e.code(), "login failed at the relying party");
    refuse(
        state,
        StatusCode::BAD_REQUEST,
        "login-error",
        "Sign-in failed",
        &format!("Your school's sign-in could not be completed: {e}. Please try again; if it keeps happening, tell your school's IT team."),
        who,
        e.code(),
    )
    .await
}

async fn callback(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let bad = |code: &'static str, message: &'static str| {
        let state = state.clone();
        async move {
            refuse(
                &state,
                StatusCode::BAD_REQUEST,
                "login-error",
                "Sign-in failed",
                message,
                None,
                code,
            )
            .await
        }
    };
    if let Some(error) = q.error.as_deref() {
        tracing::info!(error, description = ?q.error_description, "identity provider returned an error");
        return bad(
            "provider_error",
            "Your school's identity provider did not sign you in.",
        )
        .await;
    }
    let (Some(code), Some(login_state)) = (q.code.as_deref(), q.state.as_deref()) else {
        return bad("missing_parameters", "The sign-in response was incomplete.").await;
    };
    let now_ms = unix_millis();
    // Taken once: a replayed or invented state finds nothing.
    let pending = match state
        .store
        .take_temp("login", &secret_hash(login_state), UnixMillis(now_ms))
        .await
    {
        Err(_) => return unavailable_page(),
        Ok(None) => {
            return bad(
                "unknown_state",
                "This sign-in has expired, was already used, or was not started here. Please sign in again.",
            )
            .await;
        }
        Ok(Some(bytes)) => match serde_json::from_slice::<PendingLogin>(&bytes) {
            Ok(p) => p,
            Err(_) => return bad("unknown_state", "This sign-in cannot be completed.").await,
        },
    };
    let binding_ok = cookie(&headers, LOGIN_COOKIE).is_some_and(|c| {
        bool::from(
            secret_hash(c)
                .as_bytes()
                .ct_eq(pending.binding_hash.as_bytes()),
        )
    });
    if !binding_ok {
        return bad(
            "browser_mismatch",
            "This sign-in was started in another browser. Please sign in again here.",
        )
        .await;
    }
    let verified = match state
        .rp
        .finish(now_ms / 1000, code, &pending.pkce_verifier, &pending.nonce)
        .await
    {
        Ok(v) => v,
        Err(e) => return login_error(&state, None, &e).await,
    };
    let identity = match map_identity(
        &state.config.mapping,
        &verified.issuer,
        &verified.subject,
        &verified.claims,
        verified.auth_time,
    ) {
        Ok(i) => i,
        Err(refusal) => {
            let who = chaperone_protocol::UserRef::new(&verified.issuer, &verified.subject).ok();
            return match refusal {
                IdentityRefusal::MfaRequired => {
                    refuse(
                        &state,
                        StatusCode::FORBIDDEN,
                        "mfa-required",
                        "Multi-factor authentication required",
                        "Staff, senior leaders, safeguarding leads and administrators must sign in with multi-factor authentication. Please sign in again using your second factor, or ask your school's IT team to set it up.",
                        who,
                        "mfa_required",
                    )
                    .await
                }
                IdentityRefusal::NoRole => {
                    refuse(
                        &state,
                        StatusCode::FORBIDDEN,
                        "no-access",
                        "No access",
                        "Your account is not set up for Chaperone. If you think it should be, ask your school's IT team.",
                        who,
                        "no_role",
                    )
                    .await
                }
                _ => {
                    refuse(
                        &state,
                        StatusCode::FORBIDDEN,
                        "no-access",
                        "No access",
                        "Your school's identity provider sent an account Chaperone cannot use.",
                        who,
                        "bad_subject",
                    )
                    .await
                }
            };
        }
    };
    match state.store.blocked(&identity.user).await {
        Err(_) => return unavailable_page(),
        Ok(Some(_)) => {
            return refuse(
                &state,
                StatusCode::FORBIDDEN,
                "blocked",
                "Access blocked",
                "Your access to Chaperone has been blocked by your school. Please speak to a member of staff.",
                Some(identity.user.clone()),
                "blocked",
            )
            .await;
        }
        Ok(None) => {}
    }
    let Ok(secret) = session::create(
        &state.store,
        state.config.sessions,
        identity.clone(),
        UnixMillis(now_ms),
    )
    .await
    else {
        return unavailable_page();
    };
    api::remember_person(&state, &identity, now_ms).await;
    audit::write(
        &state.store,
        AuditRecord::new(now_ms, "login", Some(identity.user.clone())).reason(format!(
            "roles: {}; mfa: {}",
            identity
                .roles
                .iter()
                .map(|r| r.name())
                .collect::<Vec<_>>()
                .join(" "),
            identity.mfa
        )),
    )
    .await;
    let mut response = Redirect::to(&pending.return_to).into_response();
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(&state.config, SESSION_COOKIE, &secret, None),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(&state.config, LOGIN_COOKIE, "", Some(0)),
    );
    response
}

async fn logout(State(state): State<WebState>, headers: HeaderMap) -> Response {
    if !same_origin(&state, &headers) {
        return (StatusCode::FORBIDDEN, "cross-site request refused").into_response();
    }
    if let Some(secret) = cookie(&headers, SESSION_COOKIE) {
        let who = session::load(
            &state.store,
            state.config.sessions,
            secret,
            UnixMillis(unix_millis()),
        )
        .await
        .ok()
        .flatten()
        .map(|s| s.identity.user);
        if session::end(&state.store, secret).await.is_err() {
            return unavailable_page();
        }
        if who.is_some() {
            audit::write(&state.store, AuditRecord::new(unix_millis(), "logout", who)).await;
        }
    }
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&state.config, SESSION_COOKIE, "", Some(0)),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_paths_are_allowlisted() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            safe_return_to(Some(&format!("/lessons/{id}"))),
            format!("/lessons/{id}")
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/lessons/../admin",
            "/lessons/xyz",
            "/\\evil.example",
            "",
        ] {
            assert_eq!(safe_return_to(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_return_to(None), "/");
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; chaperone_session_x=2; chaperone_session=3"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("3"));
        assert_eq!(cookie(&h, "b"), None);
    }
}
