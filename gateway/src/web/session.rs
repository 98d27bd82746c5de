//! The session cookie: reading cookies (axum-extra's jar, not a
//! hand-written parser), writing them with the attributes every Chaperone
//! cookie carries (HttpOnly, SameSite=Lax, Path=/, Secure outside
//! loopback development), and the signed-in session of a request.
//!
//! The browser holds only an opaque secret; the session itself stays in the
//! state store (docs/security.md §5). A blocked person's session ends the next
//! time it is used (docs/security.md §8).

use axum::http::{HeaderMap, HeaderValue};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};

use super::{WebConfig, WebState};
use crate::auth::session::{self, Session, secret_hash};
use crate::clock::unix_millis;
use crate::store::{StateStore, UnixMillis};

/// The session cookie.
pub(crate) const SESSION_COOKIE: &str = "chaperone_session";

/// The value of cookie `name`, if the request carries it.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    CookieJar::from_headers(headers)
        .get(name)
        .map(|c| c.value().to_owned())
}

/// A `Set-Cookie` value for `name`: HttpOnly, SameSite=Lax, Path=/, Secure
/// when the public URL is https, and `Max-Age` when given (0 removes it).
pub(crate) fn set_cookie(
    config: &WebConfig,
    name: &str,
    value: &str,
    max_age: Option<u64>,
) -> HeaderValue {
    let mut c = Cookie::build((name.to_owned(), value.to_owned()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(config.secure_cookies())
        .build();
    if let Some(secs) = max_age {
        c.set_max_age(time::Duration::seconds(
            i64::try_from(secs).unwrap_or(i64::MAX),
        ));
    }
    // Names and values are ours (constants, hex secrets): always a valid header.
    HeaderValue::from_str(&c.encoded().to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The signed-in session of a request, if any (idle timer restarted).
/// A blocked person's session ends here too.
pub(crate) async fn current_session(
    state: &WebState,
    headers: &HeaderMap,
) -> Result<Option<(String, Session)>, crate::store::StoreError> {
    let Some(secret) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let secret = secret.as_str();
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, header};

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; chaperone_session_x=2; chaperone_session=3"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("3"));
        assert_eq!(cookie(&h, "b"), None);
    }
}
