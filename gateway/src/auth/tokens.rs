//! Room and service tokens: the [`chaperone_tokens`] crate (shared with the
//! recorder, which verifies service tokens), plus the one check that needs
//! the state store: a join token's `jti` is consumed once.

pub use chaperone_tokens::*;

use crate::store::{StateStore, UnixMillis};

/// The join-time check of a room token.
pub trait JoinTokens {
    /// Verifies a room token for a join and consumes its `jti`: the same
    /// token never joins twice, on any node sharing `store`. A store that
    /// cannot record the use refuses the join (fail closed).
    fn verify_room_for_join<S: StateStore>(
        &self,
        now: u64,
        token: &str,
        store: &S,
    ) -> impl std::future::Future<Output = Result<RoomClaims, TokenError>> + Send;
}

impl JoinTokens for TokenIssuer {
    async fn verify_room_for_join<S: StateStore>(
        &self,
        now: u64,
        token: &str,
        store: &S,
    ) -> Result<RoomClaims, TokenError> {
        let claims = self.verify_room(now, token)?;
        let now_ms = UnixMillis(now.saturating_mul(1000));
        // Remember the jti until the token could no longer be presented.
        let until = UnixMillis((claims.exp + LEEWAY_SECS + 1).saturating_mul(1000));
        match store
            .claim_once("room-jti", &claims.jti, now_ms, until)
            .await
        {
            Ok(true) => Ok(claims),
            Ok(false) => Err(TokenError::Replayed),
            Err(e) => Err(TokenError::Unavailable(e.to_string())),
        }
    }
}
