//! [`Verifier`]: our tokens checked with public keys only (every node, the
//! recorder, the review service): one algorithm, our own keys, every claim
//! against an injected `now`.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::DeserializeOwned;

use crate::claims::Registered;
use crate::*;

/// A public key we accept signatures from.
#[derive(Clone)]
pub(crate) struct PublicKey {
    pub(crate) x: [u8; 32],
    pub(crate) decoding: DecodingKey,
}

impl PublicKey {
    pub(crate) fn new(x: [u8; 32]) -> Self {
        Self {
            x,
            decoding: DecodingKey::from_ed_der(&x),
        }
    }
}

/// Verifies our tokens with public keys only (other nodes, the recorder).
#[derive(Clone)]
pub struct Verifier {
    pub(crate) keys: BTreeMap<String, PublicKey>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Verifier {
    /// Builds a verifier from a JWKS document (as served at `/.well-known/jwks.json`),
    /// keeping only Ed25519 keys.
    pub fn from_jwks(jwks: &serde_json::Value) -> Result<Self, TokenError> {
        let keys = jwks["keys"]
            .as_array()
            .ok_or(TokenError::Key("no keys in JWKS".into()))?;
        let mut out = BTreeMap::new();
        for k in keys {
            if k["kty"] != "OKP" || k["crv"] != "Ed25519" {
                continue;
            }
            let (Some(kid), Some(x)) = (k["kid"].as_str(), k["x"].as_str()) else {
                return Err(TokenError::Key("JWKS key without kid or x".into()));
            };
            let bytes = URL_SAFE_NO_PAD
                .decode(x)
                .map_err(|e| TokenError::Key(e.to_string()))?;
            let x: [u8; 32] = bytes
                .try_into()
                .map_err(|_| TokenError::Key("Ed25519 key is not 32 bytes".into()))?;
            out.insert(kid.to_owned(), PublicKey::new(x));
        }
        if out.is_empty() {
            return Err(TokenError::Key("no Ed25519 keys in JWKS".into()));
        }
        Ok(Self { keys: out })
    }

    pub(crate) fn verify<C: DeserializeOwned + Registered>(
        &self,
        token: &str,
        typ: &str,
        issuer: &str,
        audience: &str,
        now: u64,
    ) -> Result<C, TokenError> {
        if token.len() > MAX_TOKEN_BYTES || token.split('.').count() != 3 {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // `none` and unknown algorithms fail to parse as a header.
            jsonwebtoken::errors::ErrorKind::Json(_) if header_alg(token).is_some() => {
                TokenError::UnsupportedAlgorithm
            }
            _ => TokenError::Malformed,
        })?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        if header.jku.is_some()
            || header.x5u.is_some()
            || header.jwk.is_some()
            || header.x5c.is_some()
        {
            return Err(TokenError::ForbiddenHeader);
        }
        if header.typ.as_deref() != Some(typ) {
            return Err(TokenError::WrongType);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Time and audience are checked below against the injected `now`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data =
            jsonwebtoken::decode::<C>(token, &key.decoding, &validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
                    _ => TokenError::Malformed,
                }
            })?;
        let claims = data.claims;
        if claims.typ() != typ {
            return Err(TokenError::WrongType);
        }
        if claims.iss() != issuer {
            return Err(TokenError::WrongIssuer);
        }
        if claims.aud() != audience {
            return Err(TokenError::WrongAudience);
        }
        if claims.sub().is_empty() || claims.jti().is_empty() {
            return Err(TokenError::Malformed);
        }
        let (iat, nbf, exp) = claims.times();
        if exp.saturating_add(LEEWAY_SECS) <= now {
            return Err(TokenError::Expired);
        }
        if nbf > now.saturating_add(LEEWAY_SECS) {
            return Err(TokenError::NotYetValid);
        }
        if iat > now.saturating_add(LEEWAY_SECS) {
            return Err(TokenError::IssuedInFuture);
        }
        if exp.saturating_sub(iat.min(nbf)) > MAX_LIFETIME_SECS || exp < iat {
            return Err(TokenError::LifetimeTooLong);
        }
        Ok(claims)
    }
}

/// The `alg` of a header that does not parse as a JWS header (e.g. `none`).
fn header_alg(token: &str) -> Option<String> {
    let head = token.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(head).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["alg"].as_str().map(str::to_owned)
}

impl Verifier {
    /// Verifies a service token with public keys only (the recorder's side).
    pub fn verify_service(
        &self,
        now: u64,
        token: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<ServiceClaims, TokenError> {
        self.verify(token, SERVICE_TOKEN_TYPE, issuer, audience, now)
    }

    /// Verifies a review token with public keys only (the review
    /// service's side). Checks, besides the registered claims, that the
    /// safeguarding scopes carry a reason and a plausible role.
    pub fn verify_review(
        &self,
        now: u64,
        token: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<ReviewClaims, TokenError> {
        let claims: ReviewClaims = self.verify(token, REVIEW_TOKEN_TYPE, issuer, audience, now)?;
        let reason_ok = claims
            .reason
            .as_deref()
            .is_some_and(|r| !r.trim().is_empty() && r.chars().count() <= MAX_REVIEW_REASON_CHARS);
        let consistent = match claims.scope {
            ReviewScope::Safeguarding => {
                matches!(claims.role.as_str(), "slt" | "dsl")
                    && reason_ok
                    && claims.lessons.is_empty()
            }
            ReviewScope::DslRestricted => {
                claims.role == "dsl" && reason_ok && claims.lessons.is_empty()
            }
            ReviewScope::PupilCopy => {
                claims.role == "pupil"
                    && claims.lessons.len() <= MAX_REVIEW_LESSONS
                    && (claims.lesson.is_some() || !claims.lessons.is_empty())
            }
        };
        if !consistent || claims.viewer.to_string() != claims.sub {
            return Err(TokenError::Malformed);
        }
        Ok(claims)
    }
}
