//! The OpenID Connect relying party (docs/security.md §1–3, §7): discovery with
//! the issuer pinned, authorization code + PKCE (S256) + `state` + `nonce`,
//! the exact redirect URI, and every ID-token check, on `openidconnect`.
//!
//! Its HTTP client never follows redirects (a provider endpoint that
//! redirects is an error, not a hop to wherever it points) and has a timeout.
//! Time is passed in, never read: the ID token's `exp` and `iat` are checked
//! against the caller's `now`. Provider metadata and keys are fetched lazily
//! and cached; when an ID token names a key we do not have, the key set is
//! fetched again once (the provider rotated its keys), at most once a second.
//! Only asymmetric signature algorithms are accepted: never `none`, never
//! HS* (which would make the client secret a signing key).

use std::time::Duration;

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret,
    CsrfToken, DiscoveryError, IdToken, IdTokenVerifier, IssuerUrl, JsonWebKeySet, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, SignatureVerificationError,
    TokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

/// Claims beyond the standard ones (groups, classes, roles...), kept as JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExtraClaims(Map<String, Value>);
impl AdditionalClaims for ExtraClaims {}

type SchoolIdToken = IdToken<
    ExtraClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// How long fetched provider metadata is used before it is fetched again.
const METADATA_TTL_SECS: u64 = 3600;
/// Least time between two key-set fetches caused by unknown `kid`s.
const JWKS_REFETCH_SECS: u64 = 1;

/// Relying-party settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpConfig {
    /// The provider's issuer, exactly as its discovery document must state it.
    pub issuer: String,
    /// Our client id at the provider.
    pub client_id: String,
    /// Our client secret.
    pub client_secret: String,
    /// Our exact redirect URI (`<public_url>/auth/callback`).
    pub redirect_url: String,
    /// Scopes beyond `openid`.
    pub scopes: Vec<String>,
    /// How far an ID token's `iat` may be from our clock.
    pub max_iat_skew_secs: u64,
    /// Timeout of one request to the provider.
    pub http_timeout: Duration,
}

/// Why a login failed at the relying party. Each is shown to the person as
/// a clear error page and audited; none leads to a further provider call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    /// The relying party is misconfigured (a URL does not parse).
    #[error("identity provider configuration: {0}")]
    Config(String),
    /// Discovery or the key set failed (unreachable, a redirect, bad JSON, another issuer).
    #[error("identity provider discovery failed: {0}")]
    Discovery(String),
    /// The code could not be exchanged for tokens.
    #[error("token exchange failed: {0}")]
    TokenExchange(String),
    /// The token response had no ID token.
    #[error("the identity provider returned no ID token")]
    NoIdToken,
    /// The ID token's issuer is not the configured one.
    #[error("ID token from the wrong issuer")]
    WrongIssuer,
    /// The ID token is not for this client.
    #[error("ID token for another audience")]
    WrongAudience,
    /// The signature does not verify, or uses a refused algorithm.
    #[error("ID token signature invalid")]
    BadSignature,
    /// No key of the provider matches the token (even after fetching keys again).
    #[error("ID token signed with an unknown key")]
    UnknownKey,
    /// The token names no key and several could match.
    #[error("ID token names no key and several match")]
    AmbiguousKey,
    /// The ID token has expired.
    #[error("ID token expired")]
    Expired,
    /// The ID token's `iat` is too far from our clock.
    #[error("ID token issue time out of range")]
    IssuedAtOutOfRange,
    /// The `nonce` is missing or not the one this login sent.
    #[error("ID token nonce mismatch")]
    NonceMismatch,
    /// Anything else wrong with the ID token.
    #[error("ID token invalid: {0}")]
    InvalidIdToken(String),
}

impl OidcError {
    /// A short stable code for audit records and error pages.
    pub fn code(&self) -> &'static str {
        match self {
            OidcError::Config(_) => "config",
            OidcError::Discovery(_) => "discovery",
            OidcError::TokenExchange(_) => "token_exchange",
            OidcError::NoIdToken => "no_id_token",
            OidcError::WrongIssuer => "wrong_issuer",
            OidcError::WrongAudience => "wrong_audience",
            OidcError::BadSignature => "bad_signature",
            OidcError::UnknownKey => "unknown_key",
            OidcError::AmbiguousKey => "ambiguous_key",
            OidcError::Expired => "expired",
            OidcError::IssuedAtOutOfRange => "iat_out_of_range",
            OidcError::NonceMismatch => "nonce_mismatch",
            OidcError::InvalidIdToken(_) => "invalid_id_token",
        }
    }
}

/// A login begun: send the browser to `url`; keep the rest server-side.
#[derive(Clone, Debug)]
pub struct LoginStart {
    /// The provider's authorization URL.
    pub url: String,
    /// The `state` sent.
    pub state: String,
    /// The `nonce` sent.
    pub nonce: String,
    /// The PKCE verifier (its S256 challenge was sent).
    pub pkce_verifier: String,
}

/// A login the provider vouched for, every ID-token check passed.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedLogin {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// Every claim of the ID token.
    pub claims: Map<String, Value>,
    /// `auth_time`, or `iat` when absent, Unix seconds.
    pub auth_time: u64,
}

#[derive(Clone, Debug)]
struct Provider {
    metadata: CoreProviderMetadata,
    fetched_at: u64,
    jwks_fetched_at: u64,
}

/// The relying party. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct RelyingParty {
    config: RpConfig,
    issuer: IssuerUrl,
    redirect: RedirectUrl,
    http: reqwest::Client,
    provider: Mutex<Option<Provider>>,
}

impl RelyingParty {
    /// A relying party for `config`. Nothing is fetched yet.
    pub fn new(config: RpConfig) -> Result<Self, OidcError> {
        let issuer =
            IssuerUrl::new(config.issuer.clone()).map_err(|e| OidcError::Config(e.to_string()))?;
        let redirect = RedirectUrl::new(config.redirect_url.clone())
            .map_err(|e| OidcError::Config(e.to_string()))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.http_timeout)
            .build()
            .map_err(|e| OidcError::Config(e.to_string()))?;
        Ok(Self {
            config,
            issuer,
            redirect,
            http,
            provider: Mutex::new(None),
        })
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// The provider's metadata, fetched when missing or stale. A stale copy
    /// is kept if the provider cannot be reached.
    async fn provider(&self, now: u64) -> Result<Provider, OidcError> {
        let mut cached = self.provider.lock().await;
        if let Some(p) = cached.as_ref()
            && now.saturating_sub(p.fetched_at) < METADATA_TTL_SECS
        {
            return Ok(p.clone());
        }
        match CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http).await {
            Ok(metadata) => {
                let p = Provider {
                    metadata,
                    fetched_at: now,
                    jwks_fetched_at: now,
                };
                *cached = Some(p.clone());
                Ok(p)
            }
            Err(e) => match cached.as_ref() {
                Some(p) => {
                    tracing::warn!(error = %discovery_message(&e), "identity provider metadata refresh failed; using the cached copy");
                    Ok(p.clone())
                }
                None => Err(OidcError::Discovery(discovery_message(&e))),
            },
        }
    }

    /// Fetches the provider's keys again (after an unknown `kid`).
    async fn refresh_keys(&self, now: u64) -> Result<Option<Provider>, OidcError> {
        let mut cached = self.provider.lock().await;
        let Some(p) = cached.as_mut() else {
            return Ok(None);
        };
        if now.saturating_sub(p.jwks_fetched_at) < JWKS_REFETCH_SECS {
            return Ok(None);
        }
        let jwks = JsonWebKeySet::fetch_async(p.metadata.jwks_uri(), &self.http)
            .await
            .map_err(|e| OidcError::Discovery(discovery_message(&e)))?;
        p.metadata = p.metadata.clone().set_jwks(jwks);
        p.jwks_fetched_at = now;
        Ok(Some(p.clone()))
    }

    /// Readiness: the provider's metadata can be had (cached or fetched).
    pub async fn probe(&self, now: u64) -> Result<(), String> {
        self.provider(now)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn client(
        &self,
        p: &Provider,
    ) -> CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    > {
        CoreClient::from_provider_metadata(
            p.metadata.clone(),
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(self.config.client_secret.clone())),
        )
        .set_redirect_uri(self.redirect.clone())
    }

    /// Begins a login: fresh `state`, `nonce` and PKCE verifier.
    pub async fn begin(&self, now: u64) -> Result<LoginStart, OidcError> {
        let p = self.provider(now).await?;
        let client = self.client(&p);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scopes(
                self.config
                    .scopes
                    .iter()
                    .filter(|s| s.as_str() != "openid")
                    .map(|s| Scope::new(s.clone())),
            )
            .set_pkce_challenge(challenge)
            .url();
        Ok(LoginStart {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Finishes a login: exchanges `code` (with the PKCE verifier) and
    /// checks the ID token against `nonce` at `now` (Unix seconds).
    pub async fn finish(
        &self,
        now: u64,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<VerifiedLogin, OidcError> {
        let p = self.provider(now).await?;
        let client = self.client(&p);
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::TokenExchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::TokenExchange(token_error_message(&e)))?;
        let raw = response.id_token().ok_or(OidcError::NoIdToken)?.to_string();
        let token: SchoolIdToken = raw
            .parse()
            .map_err(|e: serde_json::Error| OidcError::InvalidIdToken(e.to_string()))?;
        let nonce = Nonce::new(nonce.to_owned());
        match self.verify(&p, &token, &nonce, now) {
            Err(OidcError::UnknownKey) => match self.refresh_keys(now).await? {
                Some(fresh) => self.verify(&fresh, &token, &nonce, now),
                None => Err(OidcError::UnknownKey),
            },
            other => other,
        }
    }

    fn verify(
        &self,
        p: &Provider,
        token: &SchoolIdToken,
        nonce: &Nonce,
        now: u64,
    ) -> Result<VerifiedLogin, OidcError> {
        let skew = self.config.max_iat_skew_secs;
        let now_i = i64::try_from(now).unwrap_or(i64::MAX);
        let now_dt = chrono::DateTime::from_timestamp(now_i, 0).unwrap_or_default();
        let verifier: IdTokenVerifier<'_, _> = IdTokenVerifier::new_confidential_client(
            ClientId::new(self.config.client_id.clone()),
            ClientSecret::new(self.config.client_secret.clone()),
            self.issuer.clone(),
            p.metadata.jwks().clone(),
        )
        .set_allowed_algs([
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
            CoreJwsSigningAlgorithm::RsaSsaPssSha256,
            CoreJwsSigningAlgorithm::RsaSsaPssSha384,
            CoreJwsSigningAlgorithm::RsaSsaPssSha512,
            CoreJwsSigningAlgorithm::EcdsaP256Sha256,
            CoreJwsSigningAlgorithm::EcdsaP384Sha384,
            CoreJwsSigningAlgorithm::EdDsa,
        ])
        .set_time_fn(move || now_dt)
        .set_issue_time_verifier_fn(move |iat| {
            let iat = iat.timestamp();
            if iat.abs_diff(now_i) <= skew {
                Ok(())
            } else {
                Err(format!("iat {iat} is more than {skew} s from now"))
            }
        });
        let claims = token.claims(&verifier, nonce).map_err(claims_error)?;
        let issuer = claims.issuer().to_string();
        let subject = claims.subject().to_string();
        let auth_time = claims
            .auth_time()
            .unwrap_or_else(|| claims.issue_time())
            .timestamp();
        let value =
            serde_json::to_value(claims).map_err(|e| OidcError::InvalidIdToken(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(OidcError::InvalidIdToken(
                "claims are not an object".to_owned(),
            ));
        };
        Ok(VerifiedLogin {
            issuer,
            subject,
            claims: map,
            auth_time: u64::try_from(auth_time).unwrap_or(0),
        })
    }
}

fn claims_error(e: ClaimsVerificationError) -> OidcError {
    match e {
        ClaimsVerificationError::InvalidIssuer(_) => OidcError::WrongIssuer,
        ClaimsVerificationError::InvalidAudience(_) => OidcError::WrongAudience,
        // The library reports our `iat` check as `Expired`; its message is ours.
        ClaimsVerificationError::Expired(m) if m.starts_with("iat ") => {
            OidcError::IssuedAtOutOfRange
        }
        ClaimsVerificationError::Expired(_) => OidcError::Expired,
        ClaimsVerificationError::InvalidNonce(_) => OidcError::NonceMismatch,
        ClaimsVerificationError::SignatureVerification(s) => match s {
            SignatureVerificationError::NoMatchingKey => OidcError::UnknownKey,
            SignatureVerificationError::AmbiguousKeyId(_) => OidcError::AmbiguousKey,
            _ => OidcError::BadSignature,
        },
        other => OidcError::InvalidIdToken(other.to_string()),
    }
}

fn discovery_message<E: std::error::Error>(e: &DiscoveryError<E>) -> String {
    match e {
        DiscoveryError::Request(inner) => format!("request failed: {inner}"),
        DiscoveryError::Response(status, _, _) => format!("provider answered HTTP {status}"),
        DiscoveryError::Parse(inner) => format!("unparseable document: {inner}"),
        DiscoveryError::Validation(m) => m.clone(),
        other => other.to_string(),
    }
}

fn token_error_message<E: std::error::Error>(e: &E) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}
