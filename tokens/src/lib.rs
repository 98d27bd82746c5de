//! Room and service tokens: short-lived JWTs the gateway signs with Ed25519
//! (EdDSA) and verifies with its own key set (SECURITY.md 10–11).
//!
//! Verification accepts exactly one algorithm (EdDSA): never `none`, never
//! HS*, RS* or ES*. The header's `kid` only selects among our own keys, and
//! a token carrying `jku`, `x5u`, `jwk` or `x5c` is refused outright (we
//! never issue one). `iss`, `aud`, `sub`, `exp`, `nbf`, `iat`, `jti` and our
//! `typ` are all required and checked against an injected `now`: the
//! library's own time checks read the system clock, so they are switched off
//! and done here. Lifetimes are capped at five minutes. A room token's `jti`
//! is single-use for a join (checked by the gateway against its state store's
//! `claim_once`).
//!
//! This crate is the one implementation of our tokens, shared by everything
//! that issues or verifies them: the gateway signs and verifies; the
//! recorder and the review service verify with public keys from the
//! gateway's JWKS. It never reads the clock, and does no I/O but the JWKS
//! fetch of [`fetch`] (feature `fetch`).
#![forbid(unsafe_code)]

#[cfg(feature = "fetch")]
pub mod fetch;

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chaperone_protocol::{LessonId, UserRef};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// JOSE `typ` (and our `typ` claim) of a room token.
pub const ROOM_TOKEN_TYPE: &str = "chaperone-room+jwt";
/// JOSE `typ` (and our `typ` claim) of a gateway→recorder service token.
pub const SERVICE_TOKEN_TYPE: &str = "chaperone-service+jwt";
/// JOSE `typ` (and our `typ` claim) of a review token (gateway → browser →
/// review service).
pub const REVIEW_TOKEN_TYPE: &str = "chaperone-review+jwt";
/// Default audience of review tokens (the review service).
pub const DEFAULT_REVIEW_AUDIENCE: &str = "chaperone-review";
/// Longest stated reason a review token carries, in characters.
pub const MAX_REVIEW_REASON_CHARS: usize = 500;
/// Most lessons a list-scoped review token may name.
pub const MAX_REVIEW_LESSONS: usize = 50;
/// Longest lifetime of any token we issue or accept.
pub const MAX_LIFETIME_SECS: u64 = 300;
/// Longest token accepted, in bytes (checked before anything is decoded).
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Clock skew tolerated between nodes.
pub const LEEWAY_SECS: u64 = 30;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a well-formed JWT of our shape (bad base64 or JSON, unknown or mistyped claims).
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm other than EdDSA (including `none` and HS*).
    #[error("unsupported token algorithm")]
    UnsupportedAlgorithm,
    /// The header carries `jku`, `x5u`, `jwk` or `x5c`, which we never issue.
    #[error("forbidden token header")]
    ForbiddenHeader,
    /// The header has no `kid`, or one that is not among our keys.
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad token signature")]
    BadSignature,
    /// The token is of another kind (an ID token, or a service token where a room token was expected).
    #[error("wrong token type")]
    WrongType,
    /// The issuer is not this gateway.
    #[error("wrong token issuer")]
    WrongIssuer,
    /// The audience is not the expected one.
    #[error("wrong token audience")]
    WrongAudience,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// The token is not valid yet (`nbf` in the future).
    #[error("token not yet valid")]
    NotYetValid,
    /// The token claims to be issued in the future.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// The token lives longer than five minutes.
    #[error("token lifetime too long")]
    LifetimeTooLong,
    /// The join token was already used.
    #[error("token already used")]
    Replayed,
    /// A key could not be loaded or generated.
    #[error("key error: {0}")]
    Key(String),
    /// The state store could not record the token's use; nobody is let in
    /// on an unchecked token (fail closed).
    #[error("cannot check token use: {0}")]
    Unavailable(String),
}

impl TokenError {
    /// A stable machine code for the wire and the logs.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::UnsupportedAlgorithm => "unsupported_algorithm",
            TokenError::ForbiddenHeader => "forbidden_header",
            TokenError::UnknownKey => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::WrongType => "wrong_type",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::IssuedInFuture => "issued_in_future",
            TokenError::LifetimeTooLong => "lifetime_too_long",
            TokenError::Replayed => "replayed",
            TokenError::Key(_) => "key_error",
            TokenError::Unavailable(_) => "unavailable",
        }
    }
}

/// Claims of a room token: who may join which lesson, as what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomClaims {
    /// The gateway that issued it.
    pub iss: String,
    /// The gateway audience.
    pub aud: String,
    /// The person, as `issuer#subject`.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not before, Unix seconds.
    pub nbf: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Unique id, single-use for a join.
    pub jti: String,
    /// [`ROOM_TOKEN_TYPE`].
    pub typ: String,
    /// The lesson.
    pub lesson: LessonId,
    /// The person.
    pub user: UserRef,
    /// Their display name.
    pub name: String,
    /// What the identity layer vouches for; the lesson core decides the role.
    pub account: AccountClaims,
}

/// The identity facts a room token carries to the lesson core (see
/// the gateway's `lesson::Account`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountClaims {
    /// Teaching staff (teacher or assistant).
    pub staff: bool,
    /// Classes they belong to as a pupil.
    pub pupil_classes: Vec<String>,
    /// SLT or DSL.
    pub safeguarding_observer: bool,
    /// End of a visitor grant covering this lesson, Unix seconds.
    pub visitor_until: Option<u64>,
}

/// Claims of a service token (gateway → recorder feed).
///
/// The registered claims are repeated here rather than shared through
/// `#[serde(flatten)]`: serde cannot combine `flatten` with
/// `deny_unknown_fields`, and refusing unknown claims matters more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceClaims {
    /// The gateway that issued it.
    pub iss: String,
    /// The recorder audience.
    pub aud: String,
    /// The calling service.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not before, Unix seconds.
    pub nbf: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Unique id.
    pub jti: String,
    /// [`SERVICE_TOKEN_TYPE`].
    pub typ: String,
    /// The lesson whose feed it authorises.
    pub lesson: LessonId,
}

/// What a review token lets its bearer see at the review service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewScope {
    /// SLT or DSL replay: every track, all chat, every event; DSL-only
    /// ranges blanked. Requires a stated reason and a fresh MFA login.
    Safeguarding,
    /// DSL replay including DSL-only ranges, and the DSL's actions
    /// (restrict, hold, export). Requires the DSL role, a reason and a fresh
    /// MFA login.
    DslRestricted,
    /// A pupil's copy of their own class's lesson: staff camera and
    /// microphone, screen shares and public chat only; never another
    /// pupil's media, never private chat, never DSL-only ranges.
    PupilCopy,
}

impl ReviewScope {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            ReviewScope::Safeguarding => "safeguarding",
            ReviewScope::DslRestricted => "dsl_restricted",
            ReviewScope::PupilCopy => "pupil_copy",
        }
    }
}

/// Claims of a review token: who may see which recording(s), how, and why.
/// Issued by the gateway only to SLT/DSL (with a reason, after a fresh MFA
/// login) or to a pupil of the lesson's class; verified by the review
/// service with the gateway's JWKS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewClaims {
    /// The gateway that issued it.
    pub iss: String,
    /// The review service audience.
    pub aud: String,
    /// The viewer, as `issuer#subject`.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not before, Unix seconds.
    pub nbf: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Unique id.
    pub jti: String,
    /// [`REVIEW_TOKEN_TYPE`].
    pub typ: String,
    /// The viewer.
    pub viewer: UserRef,
    /// Their display name (for the audit log).
    pub name: String,
    /// The role the token was issued for: `slt`, `dsl` or `pupil`.
    pub role: String,
    /// What they may see.
    pub scope: ReviewScope,
    /// The lesson, or `None` for a list/search token (SLT/DSL only).
    pub lesson: Option<LessonId>,
    /// For a pupil's list token: the lessons of their classes (at most
    /// [`MAX_REVIEW_LESSONS`]); empty otherwise.
    pub lessons: Vec<LessonId>,
    /// The stated reason (required for safeguarding scopes).
    pub reason: Option<String>,
}

/// The registered claims every token of ours has, checked the same way.
trait Registered {
    fn iss(&self) -> &str;
    fn aud(&self) -> &str;
    fn sub(&self) -> &str;
    fn times(&self) -> (u64, u64, u64);
    fn jti(&self) -> &str;
    fn typ(&self) -> &str;
}

macro_rules! registered {
    ($t:ty) => {
        impl Registered for $t {
            fn iss(&self) -> &str {
                &self.iss
            }
            fn aud(&self) -> &str {
                &self.aud
            }
            fn sub(&self) -> &str {
                &self.sub
            }
            fn times(&self) -> (u64, u64, u64) {
                (self.iat, self.nbf, self.exp)
            }
            fn jti(&self) -> &str {
                &self.jti
            }
            fn typ(&self) -> &str {
                &self.typ
            }
        }
    };
}
registered!(RoomClaims);
registered!(ServiceClaims);
registered!(ReviewClaims);

/// A public key we accept signatures from.
#[derive(Clone)]
struct PublicKey {
    x: [u8; 32],
    decoding: DecodingKey,
}

impl PublicKey {
    fn new(x: [u8; 32]) -> Self {
        Self {
            x,
            decoding: DecodingKey::from_ed_der(&x),
        }
    }
}

/// Verifies our tokens with public keys only (other nodes, the recorder).
#[derive(Clone)]
pub struct Verifier {
    keys: BTreeMap<String, PublicKey>,
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

    fn verify<C: DeserializeOwned + Registered>(
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

/// The gateway's signing keys: one active key and any number of older keys
/// still accepted during a rollover.
#[derive(Clone)]
pub struct KeySet {
    active_kid: String,
    active: SigningKey,
    encoding: EncodingKey,
    verifier: Verifier,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("active_kid", &self.active_kid)
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl KeySet {
    /// A key set with one fresh key (dev mode, tests), from 32 random bytes
    /// the caller draws from a CSPRNG.
    pub fn from_seed(kid: &str, seed: [u8; 32]) -> Result<Self, TokenError> {
        Self::with_key(kid, SigningKey::from_bytes(&seed))
    }

    /// A key set from a PKCS#8 PEM private key (production).
    pub fn from_pkcs8_pem(kid: &str, pem: &str) -> Result<Self, TokenError> {
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|e| TokenError::Key(e.to_string()))?;
        Self::with_key(kid, key)
    }

    fn with_key(kid: &str, key: SigningKey) -> Result<Self, TokenError> {
        if kid.is_empty() {
            return Err(TokenError::Key("empty kid".into()));
        }
        let der = key
            .to_pkcs8_der()
            .map_err(|e| TokenError::Key(e.to_string()))?;
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        let mut keys = BTreeMap::new();
        keys.insert(
            kid.to_owned(),
            PublicKey::new(key.verifying_key().to_bytes()),
        );
        Ok(Self {
            active_kid: kid.to_owned(),
            active: key,
            encoding,
            verifier: Verifier { keys },
        })
    }

    /// Starts signing with a new key; the old one stays valid for verification
    /// until [`KeySet::retire`].
    pub fn rotate(&mut self, kid: &str, seed: [u8; 32]) -> Result<(), TokenError> {
        let old = std::mem::take(&mut self.verifier.keys);
        *self = Self::with_key(kid, SigningKey::from_bytes(&seed))?;
        for (k, v) in old {
            self.verifier.keys.entry(k).or_insert(v);
        }
        Ok(())
    }

    /// Also accepts signatures by the key in `pem` (PKCS#8 Ed25519, private
    /// or public), named `kid`, without signing with it: the previous key
    /// during a rollover across nodes.
    pub fn accept_also(&mut self, kid: &str, pem: &str) -> Result<(), TokenError> {
        if kid.is_empty() || kid == self.active_kid {
            return Err(TokenError::Key(format!(
                "kid {kid:?} is empty or the active key's"
            )));
        }
        let public = match SigningKey::from_pkcs8_pem(pem) {
            Ok(key) => key.verifying_key(),
            Err(_) => {
                use ed25519_dalek::pkcs8::DecodePublicKey;
                ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
                    .map_err(|e| TokenError::Key(e.to_string()))?
            }
        };
        self.verifier
            .keys
            .insert(kid.to_owned(), PublicKey::new(public.to_bytes()));
        Ok(())
    }

    /// Stops accepting an old key (never the active one).
    pub fn retire(&mut self, kid: &str) {
        if kid != self.active_kid {
            self.verifier.keys.remove(kid);
        }
    }

    /// The JWKS document of every accepted key, for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .verifier
            .keys
            .iter()
            .map(|(kid, k)| {
                serde_json::json!({
                    "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                    "kid": kid, "x": URL_SAFE_NO_PAD.encode(k.x),
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// A verifier holding only the public keys.
    pub fn verifier(&self) -> Verifier {
        self.verifier.clone()
    }

    /// The active signing key's public half (for tests and pinning).
    pub fn active_public_key(&self) -> [u8; 32] {
        self.active.verifying_key().to_bytes()
    }

    fn sign<C: Serialize>(&self, typ: &str, claims: &C) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(typ.to_owned());
        header.kid = Some(self.active_kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| TokenError::Key(e.to_string()))
    }
}

/// Issues and verifies this gateway's tokens.
#[derive(Clone, Debug)]
pub struct TokenIssuer {
    /// Our issuer name (the gateway's public URL).
    pub issuer: String,
    /// The audience of room tokens (this gateway).
    pub room_audience: String,
    /// The audience of service tokens (the recorder).
    pub service_audience: String,
    /// Our keys.
    pub keys: KeySet,
}

impl TokenIssuer {
    /// A room token for `user` (called `name`) to join `lesson` with what
    /// `account` vouches for, valid `lifetime` seconds (at most
    /// [`MAX_LIFETIME_SECS`]) from `now`. `jti` must be unguessable (from a
    /// CSPRNG).
    #[allow(clippy::too_many_arguments)]
    pub fn issue_room(
        &self,
        now: u64,
        lifetime: u64,
        jti: String,
        lesson: LessonId,
        user: UserRef,
        name: String,
        account: AccountClaims,
    ) -> Result<String, TokenError> {
        if lifetime > MAX_LIFETIME_SECS {
            return Err(TokenError::LifetimeTooLong);
        }
        let claims = RoomClaims {
            iss: self.issuer.clone(),
            aud: self.room_audience.clone(),
            sub: user.to_string(),
            exp: now + lifetime,
            nbf: now,
            iat: now,
            jti,
            typ: ROOM_TOKEN_TYPE.to_owned(),
            lesson,
            user,
            name,
            account,
        };
        self.keys.sign(ROOM_TOKEN_TYPE, &claims)
    }

    /// A service token for the recorder feed of `lesson`.
    pub fn issue_service(
        &self,
        now: u64,
        lifetime: u64,
        jti: String,
        lesson: LessonId,
    ) -> Result<String, TokenError> {
        if lifetime > MAX_LIFETIME_SECS {
            return Err(TokenError::LifetimeTooLong);
        }
        let claims = ServiceClaims {
            iss: self.issuer.clone(),
            aud: self.service_audience.clone(),
            sub: "gateway".to_owned(),
            exp: now + lifetime,
            nbf: now,
            iat: now,
            jti,
            typ: SERVICE_TOKEN_TYPE.to_owned(),
            lesson,
        };
        self.keys.sign(SERVICE_TOKEN_TYPE, &claims)
    }

    /// A review token (see [`ReviewClaims`]); `claims`' registered fields
    /// are filled in here: issuer, audience `audience`, `now`, `lifetime`
    /// (at most [`MAX_LIFETIME_SECS`]) and `jti` (from a CSPRNG).
    #[allow(clippy::too_many_arguments)]
    pub fn issue_review(
        &self,
        now: u64,
        lifetime: u64,
        jti: String,
        audience: &str,
        viewer: UserRef,
        name: String,
        role: &str,
        scope: ReviewScope,
        lesson: Option<LessonId>,
        lessons: Vec<LessonId>,
        reason: Option<String>,
    ) -> Result<String, TokenError> {
        if lifetime > MAX_LIFETIME_SECS {
            return Err(TokenError::LifetimeTooLong);
        }
        if lessons.len() > MAX_REVIEW_LESSONS
            || reason
                .as_ref()
                .is_some_and(|r| r.chars().count() > MAX_REVIEW_REASON_CHARS)
        {
            return Err(TokenError::Malformed);
        }
        let claims = ReviewClaims {
            iss: self.issuer.clone(),
            aud: audience.to_owned(),
            sub: viewer.to_string(),
            exp: now + lifetime,
            nbf: now,
            iat: now,
            jti,
            typ: REVIEW_TOKEN_TYPE.to_owned(),
            viewer,
            name,
            role: role.to_owned(),
            scope,
            lesson,
            lessons,
            reason,
        };
        self.keys.sign(REVIEW_TOKEN_TYPE, &claims)
    }

    /// Verifies a room token at `now` (Unix seconds). The caller must still
    /// consume its `jti` once for a join.
    pub fn verify_room(&self, now: u64, token: &str) -> Result<RoomClaims, TokenError> {
        self.keys.verifier.verify(
            token,
            ROOM_TOKEN_TYPE,
            &self.issuer,
            &self.room_audience,
            now,
        )
    }

    /// Verifies a service token at `now` (Unix seconds).
    pub fn verify_service(&self, now: u64, token: &str) -> Result<ServiceClaims, TokenError> {
        self.keys.verifier.verify(
            token,
            SERVICE_TOKEN_TYPE,
            &self.issuer,
            &self.service_audience,
            now,
        )
    }
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

#[cfg(test)]
mod review_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn issuer() -> TokenIssuer {
        TokenIssuer {
            issuer: "https://gw".into(),
            room_audience: "https://gw".into(),
            service_audience: "chaperone-recorder".into(),
            keys: KeySet::from_seed("k", [3; 32]).unwrap(),
        }
    }

    fn viewer() -> UserRef {
        UserRef::new("https://idp", "slt").unwrap()
    }

    #[allow(clippy::too_many_arguments)]
    fn issue(
        t: &TokenIssuer,
        role: &str,
        scope: ReviewScope,
        lesson: Option<LessonId>,
        lessons: Vec<LessonId>,
        reason: Option<&str>,
    ) -> String {
        t.issue_review(
            1000,
            120,
            "j".into(),
            DEFAULT_REVIEW_AUDIENCE,
            viewer(),
            "Mr O".into(),
            role,
            scope,
            lesson,
            lessons,
            reason.map(str::to_owned),
        )
        .unwrap()
    }

    #[test]
    fn review_tokens_round_trip_and_refuse_inconsistent_scopes() {
        let t = issuer();
        let v = t.keys.verifier();
        let l = LessonId::from_bytes([1; 16]);
        let ok = issue(
            &t,
            "slt",
            ReviewScope::Safeguarding,
            Some(l),
            vec![],
            Some("why"),
        );
        let c = v
            .verify_review(1010, &ok, "https://gw", DEFAULT_REVIEW_AUDIENCE)
            .unwrap();
        assert_eq!(
            (c.scope, c.lesson, c.reason.as_deref()),
            (ReviewScope::Safeguarding, Some(l), Some("why"))
        );
        assert_eq!(
            v.verify_review(1010, &ok, "https://gw", "other"),
            Err(TokenError::WrongAudience)
        );
        assert_eq!(
            v.verify_review(1010 + 200, &ok, "https://gw", DEFAULT_REVIEW_AUDIENCE),
            Err(TokenError::Expired)
        );
        // A room token is not a review token.
        let room = t
            .issue_room(
                1000,
                60,
                "r".into(),
                l,
                viewer(),
                "x".into(),
                AccountClaims::default(),
            )
            .unwrap();
        assert_eq!(
            v.verify_review(1010, &room, "https://gw", DEFAULT_REVIEW_AUDIENCE),
            Err(TokenError::WrongType)
        );
        for bad in [
            issue(&t, "slt", ReviewScope::Safeguarding, Some(l), vec![], None),
            issue(
                &t,
                "pupil",
                ReviewScope::Safeguarding,
                Some(l),
                vec![],
                Some("x"),
            ),
            issue(
                &t,
                "slt",
                ReviewScope::DslRestricted,
                Some(l),
                vec![],
                Some("x"),
            ),
            issue(&t, "slt", ReviewScope::PupilCopy, Some(l), vec![], None),
            issue(&t, "pupil", ReviewScope::PupilCopy, None, vec![], None),
        ] {
            assert_eq!(
                v.verify_review(1010, &bad, "https://gw", DEFAULT_REVIEW_AUDIENCE),
                Err(TokenError::Malformed)
            );
        }
        let list = issue(&t, "pupil", ReviewScope::PupilCopy, None, vec![l], None);
        assert!(
            v.verify_review(1010, &list, "https://gw", DEFAULT_REVIEW_AUDIENCE)
                .is_ok()
        );
    }
}
