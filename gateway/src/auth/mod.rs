//! Authentication: the gateway's signing keys and the short-lived tokens it
//! issues (room tokens for joining a lesson, service tokens for the recorder
//! feed). OIDC login, sessions and the development identity provider join
//! this module with the identity issue.

pub mod tokens;

pub use tokens::{
    KeySet, MAX_LIFETIME_SECS, ROOM_TOKEN_TYPE, RoomClaims, SERVICE_TOKEN_TYPE, ServiceClaims,
    TokenError, TokenIssuer, Verifier,
};
