//! The signed-in web: the pages and the JSON API for lessons, room tokens,
//! blocks, visitor grants and the audit log (docs/security.md §1–14).
//!
//! - [`login`]: the OIDC login flow (`/login`, `/auth/callback`, `/logout`);
//! - [`session`]: the session cookie and the signed-in session of a request;
//! - [`api`], [`incidents`], [`review`]: the JSON API and the pages behind it;
//!   `lessons` (a lesson's state, class and start checks), [`register`]
//!   (attendance), [`visitors`] (grants, by person, subject or e-mail);
//! - [`audit`]: the gateway's audit log;
//! - [`html`], `assets`: page shells and the embedded static files.
//!
//! Every state-changing request must come from one of our own origins
//! (`Origin` checked), on top of SameSite cookies. Nothing here decides a
//! lesson rule: pages and API answers are built from what the catalogue,
//! the state store and the lesson core say.

pub(crate) mod api;
mod assets;
pub(crate) mod audit;
pub(crate) mod html;
pub(crate) mod incidents;
mod lessons;
pub(crate) mod login;
pub(crate) mod register;
pub(crate) mod review;
pub(crate) mod session;
pub(crate) mod visitors;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;

use self::html::{escape, page, page_with_bar};
use crate::auth::identity::{ClaimMapping, Identity, SchoolRole};
use crate::auth::oidc::RelyingParty;
use crate::auth::session::SessionConfig;
use crate::auth::tokens::TokenIssuer;
use crate::store::Store;

pub(crate) use login::CALLBACK_PATH;
pub(crate) use session::current_session;

/// Settings of the signed-in web.
#[derive(Clone, Debug)]
pub(crate) struct WebConfig {
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
    /// Classes lessons may be created for, besides those of people who
    /// signed in (`lesson.classes`; in `--dev`, the demo school's too).
    pub classes: Vec<String>,
    /// Development mode (shown on pages).
    pub dev: bool,
    /// When lessons open for joining and close.
    pub window: crate::catalog::WindowSettings,
    /// The school's class lists (`lesson.roster_file`; empty without one).
    pub roster: Arc<crate::roster::Roster>,
}

impl WebConfig {
    pub(crate) fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct WebState {
    /// The state store.
    pub store: Store,
    /// The relying party.
    pub rp: Arc<RelyingParty>,
    /// Our token issuer.
    pub tokens: Arc<TokenIssuer>,
    /// Settings.
    pub config: Arc<WebConfig>,
    limiter: Arc<Mutex<HashMap<String, (u64, u32)>>>,
    /// Refusals nobody can be named for, summed per source and window.
    pub anonymous: Arc<audit::AnonymousTally>,
}

impl std::fmt::Debug for WebState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The client's address, when the listener recorded it (`chaperone_serve`
/// does; a router driven directly in a test does not).
pub(crate) type Peer = Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>;

/// The address of `peer`.
pub(crate) fn client_ip(peer: Peer) -> Option<std::net::IpAddr> {
    peer.map(|axum::Extension(axum::extract::ConnectInfo(a))| a.ip())
}

impl WebState {
    /// Shared state for the web routes.
    pub(crate) fn new(
        store: Store,
        rp: Arc<RelyingParty>,
        tokens: Arc<TokenIssuer>,
        config: WebConfig,
        anonymous: Arc<audit::AnonymousTally>,
    ) -> Self {
        Self {
            store,
            rp,
            tokens,
            config: Arc::new(config),
            limiter: Arc::default(),
            anonymous,
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
pub(crate) fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/lessons/{lesson}", get(lesson_page))
        .merge(login::router())
        .merge(assets::router())
        .merge(api::router())
        .merge(review::router())
        .merge(incidents::router())
        .merge(register::router())
        .merge(visitors::router())
        .with_state(state)
}

/// Whether a state-changing request comes from one of our origins.
pub(crate) fn same_origin(state: &WebState, headers: &HeaderMap) -> bool {
    headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| state.config.allowed_origins.iter().any(|a| a == o))
}

/// The page kind for a person's home: what the browser tests look for.
pub(crate) fn home_kind(identity: &Identity) -> &'static str {
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

pub(crate) fn dev_banner(state: &WebState) -> &'static str {
    if state.config.dev {
        "<p class=\"warning\">Development mode: the built-in identity provider signs anyone in. Never use <code>--dev</code> with real pupils.</p>"
    } else {
        ""
    }
}

pub(crate) fn unavailable_page() -> Response {
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

/// Who is signed in, for the header bar of the signed-in pages: name,
/// roles, sign out. `data-roles` (and `data_attrs`) are read by the pages.
pub(crate) fn signed_in_bar(identity: &Identity, data_attrs: &str, links: &str) -> String {
    let roles: Vec<&str> = identity.roles.iter().map(|r| r.name()).collect();
    format!(
        "<div id=\"me\" class=\"me\" data-roles=\"{}\"{data_attrs}>{links}<span>Signed in as <strong id=\"me-name\">{}</strong> <span class=\"muted\">({})</span></span>\
         <form method=\"post\" action=\"/logout\"><button id=\"logout\" class=\"secondary\" type=\"submit\">Sign out</button></form></div>",
        escape(&roles.join(" ")),
        escape(&identity.name),
        escape(&roles.join(", ")),
    )
}

/// The signed-in shell; `app.js` fills it from the API.
fn app_page(state: &WebState, identity: &Identity, lesson: Option<&str>) -> Response {
    let kind = if lesson.is_some() {
        "lesson"
    } else {
        home_kind(identity)
    };
    let lesson_attr = lesson.map_or(String::new(), |l| format!(" data-lesson=\"{}\"", escape(l)));
    Html(page_with_bar(
        if lesson.is_some() {
            "Lesson"
        } else {
            "Lessons"
        },
        kind,
        &signed_in_bar(identity, &lesson_attr, ""),
        &format!(
            "{}<div id=\"app\"><p>Loading…</p></div>\
             <script type=\"module\" src=\"/static/app.js\"></script>",
            dev_banner(state),
        ),
    ))
    .into_response()
}
