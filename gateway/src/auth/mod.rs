//! Authentication and access: the OIDC relying party, how claims become
//! school roles, login sessions, the gateway's signing keys and the
//! short-lived tokens it issues (room tokens for joining a lesson, service
//! tokens for the recorder feed). The development identity provider is
//! [`crate::dev::idp`].

pub mod identity;
pub mod join;
pub mod oidc;
pub mod session;
pub mod tokens;
pub mod turn;

pub use identity::{ClaimMapping, Identity, IdentityRefusal, SchoolRole};
pub use oidc::{OidcError, RelyingParty, RpConfig};
pub(crate) use tokens::LEEWAY_SECS;
pub use tokens::{
    AccountClaims, JoinTokens, KeySet, MAX_LIFETIME_SECS, ROOM_TOKEN_TYPE, RoomClaims,
    SERVICE_TOKEN_TYPE, ServiceClaims, TokenError, TokenIssuer, Verifier,
};

/// Temporary-value namespace: a room token's `jti` → the login session it
/// was issued to (checked, once, at the join).
pub(crate) const ROOM_TOKEN_SESSION: &str = "room-session";
