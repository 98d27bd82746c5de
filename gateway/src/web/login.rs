//! The OIDC login flow: `GET /login`, `GET /auth/callback`, `POST /logout`.
//!
//! Login starts an authorization-code flow with PKCE, a `state` and a
//! `nonce`; all three stay server-side in the state store, bound to the
//! browser that started the login by a separate HttpOnly cookie, and can be
//! taken once. The callback takes the pending login by `state` (a replayed
//! or foreign `state` finds nothing), checks the binding, lets the relying
//! party verify the ID token, maps claims to roles (no role: "no access";
//! staff without MFA: "MFA required"), refuses blocked people, and only then
//! starts a session: a new secret in one HttpOnly, SameSite=Lax cookie
//! (Secure when the public URL is https). Every outcome is audited.
//!
//! It must never start a session before every check has passed, redirect
//! anywhere but an allowlisted relative path, or keep a token in the
//! browser.

use std::net::IpAddr;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::audit::{self, AuditRecord};
use super::html::{escape, page};
use super::session::{SESSION_COOKIE, cookie, set_cookie};
use super::{Peer, WebState, api, client_ip, same_origin, unavailable_page};
use crate::auth::identity::{IdentityRefusal, map_identity};
use crate::auth::oidc::OidcError;
use crate::auth::session::{self, is_secret_shaped, new_secret, secret_hash};
use crate::clock::unix_millis;
use crate::store::{StateStore, UnixMillis};

/// The cookie binding a pending login to the browser that started it.
pub(crate) const LOGIN_COOKIE: &str = "chaperone_login";
/// How long a started login may take.
pub(crate) const LOGIN_TTL_MS: u64 = 10 * 60 * 1000;
/// The callback path (the redirect URI is `<public_url>` + this).
pub(crate) const CALLBACK_PATH: &str = "/auth/callback";

/// `GET /login`, `GET /auth/callback`, `POST /logout`.
pub(super) fn router() -> Router<WebState> {
    Router::new()
        .route("/login", get(login))
        .route(CALLBACK_PATH, get(callback))
        .route("/logout", post(logout))
}

/// Where a login may return to: the home page or a lesson page, nothing
/// else (no open redirect).
pub(crate) fn safe_return_to(candidate: Option<&str>) -> String {
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
    peer: Peer,
    Query(q): Query<LoginQuery>,
) -> Response {
    let source = client_ip(peer);
    let now_ms = unix_millis();
    let start = match state.rp.begin(now_ms / 1000).await {
        Ok(s) => s,
        Err(e) => return login_error(&state, None, &e, source).await,
    };
    // One binding secret per browser, reused so that two tabs can sign in at once.
    let binding = cookie(&headers, LOGIN_COOKIE)
        .filter(|c| is_secret_shaped(c))
        .unwrap_or_else(new_secret);
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

/// A refused or failed login: a clear page, an audit record (or, when
/// nobody can be named, a count for `source`), no session.
// The page's texts, who it was and where it came from: a builder would only
// move these eight names elsewhere.
#[allow(clippy::too_many_arguments)]
async fn refuse(
    state: &WebState,
    status: StatusCode,
    kind: &str,
    title: &str,
    message: &str,
    who: Option<chaperone_protocol::UserRef>,
    code: &str,
    source: Option<IpAddr>,
) -> Response {
    audit::write_or_count(
        &state.store,
        &state.anonymous,
        source,
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
    source: Option<IpAddr>,
) -> Response {
    // The provider's own words go to the log, never onto the page.
    tracing::warn!(error = %e, code = e.code(), "login failed at the relying party");
    refuse(
        state,
        StatusCode::BAD_REQUEST,
        "login-error",
        "Sign-in failed",
        "Your school's sign-in could not be completed. Please try again; if it keeps happening, tell your school's IT team and give them the reference below.",
        who,
        e.code(),
        source,
    )
    .await
}

async fn callback(
    State(state): State<WebState>,
    headers: HeaderMap,
    peer: Peer,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let source = client_ip(peer);
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
                source,
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
            secret_hash(&c)
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
        Err(e) => return login_error(&state, None, &e, source).await,
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
                        source,
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
                        source,
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
                        source,
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
                source,
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
    super::visitors::claim_by_email(&state, &identity, &verified.claims, now_ms).await;
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
        let secret = secret.as_str();
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
}
