//! Who may open a feed: the gateway, proven by a short-lived service token
//! (`chaperone-service+jwt`, EdDSA) that this service verifies with the
//! gateway's public keys only. Keys come from the gateway's JWKS endpoint,
//! fetched again (at most every few seconds) when a token names a key we do
//! not know, so a key rotation at the gateway is followed; or, when the
//! recorder runs inside the gateway, from the gateway's key set directly.
//!
//! A token is used once: its `jti` is remembered until it expires, so a
//! captured token cannot open a second feed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chaperone_tokens::fetch::{JwksFetcher, JwksSource};
use chaperone_tokens::{ServiceClaims, TokenError, Verifier};
use tracing::{info, warn};

/// Least time between two JWKS fetches caused by unknown keys, after one
/// that succeeded (a token naming a key nobody has cannot make us hammer
/// the gateway).
const REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// The same after a fetch that failed (the gateway not up yet, say: a
/// recorder started first must not refuse feeds for long after it is).
const RETRY_INTERVAL: Duration = Duration::from_millis(250);

/// Why a feed was refused at the handshake.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Bearer` token.
    #[error("no service token")]
    Missing,
    /// The token was refused.
    #[error("service token refused: {}", .0.code())]
    Token(TokenError),
    /// The token was already used.
    #[error("service token already used")]
    Replayed,
    /// The gateway's keys could not be fetched.
    #[error("gateway keys unavailable: {0}")]
    Keys(String),
}

enum Source {
    Fixed,
    Jwks(JwksFetcher),
}

/// Verifies service tokens.
pub struct ServiceAuth {
    issuers: Vec<String>,
    audience: String,
    source: Source,
    keys: tokio::sync::RwLock<Option<Verifier>>,
    /// The last fetch's start, and how long after it the next may be.
    last_fetch: Mutex<Option<(Instant, Duration)>>,
    seen: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for ServiceAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAuth")
            .field("issuers", &self.issuers)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl ServiceAuth {
    /// Keys given directly (the recorder inside the gateway).
    pub fn with_keys(issuer: String, audience: String, keys: Verifier) -> Self {
        Self {
            issuers: vec![issuer],
            audience,
            source: Source::Fixed,
            keys: tokio::sync::RwLock::new(Some(keys)),
            last_fetch: Mutex::new(None),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Keys fetched from the gateway's JWKS at `url` (never following redirects).
    pub fn from_jwks_url(
        issuers: Vec<String>,
        audience: String,
        url: String,
    ) -> Result<Self, AuthError> {
        let fetcher =
            JwksFetcher::new(JwksSource::Url(url)).map_err(|e| AuthError::Keys(e.to_string()))?;
        Ok(Self {
            issuers,
            audience,
            source: Source::Jwks(fetcher),
            keys: tokio::sync::RwLock::new(None),
            last_fetch: Mutex::new(None),
            seen: Mutex::new(HashMap::new()),
        })
    }

    /// Fetches the gateway's keys now (start-up, and after an unknown `kid`).
    pub async fn refresh(&self) -> Result<(), AuthError> {
        let Source::Jwks(fetcher) = &self.source else {
            return Ok(());
        };
        let set_next = |wait: Duration| {
            *self.last_fetch.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((crate::clock::now(), wait));
        };
        // Counted from the start, so that fetches do not pile up meanwhile.
        set_next(REFRESH_INTERVAL);
        let fetched = fetcher
            .fetch()
            .await
            .map_err(|e| AuthError::Keys(e.to_string()));
        match fetched {
            Ok(verifier) => {
                info!(?verifier, "gateway keys loaded");
                *self.keys.write().await = Some(verifier);
                set_next(REFRESH_INTERVAL);
                Ok(())
            }
            Err(e) => {
                set_next(RETRY_INTERVAL);
                Err(e)
            }
        }
    }

    fn may_refresh(&self) -> bool {
        matches!(self.source, Source::Jwks(_))
            && self
                .last_fetch
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none_or(|(t, wait)| crate::clock::now().saturating_duration_since(t) >= wait)
    }

    async fn check(&self, token: &str, now: u64) -> Result<ServiceClaims, AuthError> {
        let keys = self.keys.read().await;
        let Some(keys) = keys.as_ref() else {
            return Err(AuthError::Token(TokenError::UnknownKey));
        };
        let mut result = Err(TokenError::WrongIssuer);
        for issuer in &self.issuers {
            result = keys.verify_service(now, token, issuer, &self.audience);
            if !matches!(result, Err(TokenError::WrongIssuer)) {
                break;
            }
        }
        result.map_err(AuthError::Token)
    }

    /// Verifies `token` at `now` (Unix seconds) and uses up its `jti`.
    pub async fn verify(&self, token: &str, now: u64) -> Result<ServiceClaims, AuthError> {
        let claims = match self.check(token, now).await {
            Err(AuthError::Token(TokenError::UnknownKey)) if self.may_refresh() => {
                if let Err(e) = self.refresh().await {
                    warn!(error = %e, "cannot refresh the gateway's keys");
                }
                self.check(token, now).await?
            }
            other => other?,
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, exp| *exp + chaperone_tokens::LEEWAY_SECS >= now);
        if seen.insert(claims.jti.clone(), claims.exp).is_some() {
            return Err(AuthError::Replayed);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use chaperone_protocol::LessonId;
    use chaperone_tokens::{KeySet, TokenIssuer};

    use super::*;

    const ISSUER: &str = "http://gateway.test";
    const AUDIENCE: &str = "chaperone-recorder";

    fn gateway(kid: &str, seed: u8) -> TokenIssuer {
        TokenIssuer {
            issuer: ISSUER.to_owned(),
            room_audience: ISSUER.to_owned(),
            service_audience: AUDIENCE.to_owned(),
            keys: KeySet::from_seed(kid, [seed; 32]).unwrap(),
        }
    }

    fn token(gw: &TokenIssuer, jti: &str) -> String {
        gw.issue_service(
            crate::clock::unix_secs(),
            60,
            jti.to_owned(),
            LessonId::from_bytes([1; 16]),
        )
        .unwrap()
    }

    /// Serves `jwks` at `/jwks` on `listener`, counting requests.
    fn serve(listener: tokio::net::TcpListener, jwks: serde_json::Value) -> Arc<AtomicUsize> {
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        hits
    }

    fn auth_for(port: u16) -> ServiceAuth {
        ServiceAuth::from_jwks_url(
            vec![ISSUER.to_owned()],
            AUDIENCE.to_owned(),
            format!("http://127.0.0.1:{port}/jwks"),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_recorder_started_before_its_gateway_accepts_feeds_soon_after() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let auth = auth_for(port);
        let gw = gateway("gateway-1", 7);
        assert!(auth.refresh().await.is_err(), "no gateway yet");
        assert!(matches!(
            auth.verify(&token(&gw, "a"), crate::clock::unix_secs())
                .await,
            Err(AuthError::Token(TokenError::UnknownKey))
        ));
        // The gateway comes up: a failed fetch waits only RETRY_INTERVAL,
        // not the REFRESH_INTERVAL meant for keys nobody has.
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let hits = serve(listener, gw.keys.jwks());
        tokio::time::sleep(RETRY_INTERVAL + Duration::from_millis(50)).await;
        let claims = auth
            .verify(&token(&gw, "b"), crate::clock::unix_secs())
            .await
            .unwrap();
        assert_eq!(claims.jti, "b");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_key_nobody_has_does_not_make_us_fetch_again_and_again() {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let gw = gateway("gateway-1", 7);
        let hits = serve(listener, gw.keys.jwks());
        let auth = auth_for(port);
        auth.refresh().await.unwrap();
        let forger = gateway("gateway-2", 9);
        for n in 0..5 {
            let refused = auth
                .verify(&token(&forger, &format!("f{n}")), crate::clock::unix_secs())
                .await;
            assert!(matches!(
                refused,
                Err(AuthError::Token(TokenError::UnknownKey))
            ));
        }
        assert_eq!(hits.load(Ordering::SeqCst), 1, "fetched once, at start");
        // Our own keys still work, and a token is good once.
        let t = token(&gw, "ok");
        auth.verify(&t, crate::clock::unix_secs()).await.unwrap();
        assert!(matches!(
            auth.verify(&t, crate::clock::unix_secs()).await,
            Err(AuthError::Replayed)
        ));
    }
}
