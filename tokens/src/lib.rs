//! Room and service tokens: short-lived JWTs the gateway signs with Ed25519
//! (EdDSA) and verifies with its own key set (docs/security.md §10–11).
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
#![warn(unreachable_pub)]

mod claims;
#[cfg(feature = "fetch")]
pub mod fetch;
mod issuer;
mod keys;
mod verify;

pub use claims::{AccountClaims, NodeClaims, ReviewClaims, ReviewScope, RoomClaims, ServiceClaims};
pub use issuer::TokenIssuer;
pub use keys::KeySet;
pub use verify::Verifier;

/// JOSE `typ` (and our `typ` claim) of a room token.
pub const ROOM_TOKEN_TYPE: &str = "chaperone-room+jwt";
/// JOSE `typ` (and our `typ` claim) of a gateway→recorder service token.
pub const SERVICE_TOKEN_TYPE: &str = "chaperone-service+jwt";
/// JOSE `typ` (and our `typ` claim) of a review token (gateway → browser →
/// review service).
pub const REVIEW_TOKEN_TYPE: &str = "chaperone-review+jwt";
/// JOSE `typ` (and our `typ` claim) of a node token: one gateway node
/// relaying a join it has checked to the lesson's owner.
pub const NODE_TOKEN_TYPE: &str = "chaperone-node+jwt";
/// Audience of node tokens (the gateway nodes of one deployment).
pub const NODE_AUDIENCE: &str = "chaperone-cluster";
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
