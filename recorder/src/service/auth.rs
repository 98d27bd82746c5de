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

use chaperone_tokens::{ServiceClaims, TokenError, Verifier};
use tracing::{info, warn};

/// Least time between two JWKS fetches caused by unknown keys.
const REFRESH_INTERVAL: Duration = Duration::from_secs(5);

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
    Url {
        url: String,
        client: reqwest::Client,
    },
}

/// Verifies service tokens.
pub struct ServiceAuth {
    issuers: Vec<String>,
    audience: String,
    source: Source,
    keys: tokio::sync::RwLock<Option<Verifier>>,
    last_fetch: Mutex<Option<Instant>>,
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
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| AuthError::Keys(e.to_string()))?;
        Ok(Self {
            issuers,
            audience,
            source: Source::Url { url, client },
            keys: tokio::sync::RwLock::new(None),
            last_fetch: Mutex::new(None),
            seen: Mutex::new(HashMap::new()),
        })
    }

    /// Fetches the gateway's keys now (start-up, and after an unknown `kid`).
    pub async fn refresh(&self) -> Result<(), AuthError> {
        let Source::Url { url, client } = &self.source else {
            return Ok(());
        };
        *self.last_fetch.lock().unwrap_or_else(|p| p.into_inner()) = Some(crate::clock::now());
        let jwks: serde_json::Value = client
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| AuthError::Keys(e.to_string()))?
            .json()
            .await
            .map_err(|e| AuthError::Keys(e.to_string()))?;
        let verifier = Verifier::from_jwks(&jwks).map_err(|e| AuthError::Keys(e.to_string()))?;
        info!(?verifier, "gateway keys loaded");
        *self.keys.write().await = Some(verifier);
        Ok(())
    }

    fn may_refresh(&self) -> bool {
        matches!(self.source, Source::Url { .. })
            && self
                .last_fetch
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none_or(|t| {
                    crate::clock::now().saturating_duration_since(t) >= REFRESH_INTERVAL
                })
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
