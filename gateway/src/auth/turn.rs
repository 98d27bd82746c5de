//! Time-limited TURN credentials in the TURN REST scheme that coturn checks
//! with `use-auth-secret`: the username is `<expiry unix seconds>:<user>`
//! and the password is base64(HMAC-SHA1(shared secret, username)). The
//! browser gets them with its room token; they expire by themselves.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha1::Sha1;

/// One ICE server entry, as `RTCPeerConnection` takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IceServer {
    /// TURN URLs.
    pub urls: Vec<String>,
    /// `<expiry>:<user>`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub credential: String,
}

/// Credentials for `user` (an opaque, non-identifying label) valid until
/// `now + ttl` (Unix seconds).
pub fn credentials(urls: &[String], secret: &str, user: &str, now: u64, ttl: u64) -> IceServer {
    let username = format!("{}:{user}", now.saturating_add(ttl));
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length, so this never fails");
    mac.update(username.as_bytes());
    IceServer {
        urls: urls.to_vec(),
        credential: STANDARD.encode(mac.finalize().into_bytes()),
        username,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_turn_rest_scheme() {
        // Known answer: HMAC-SHA1("secret", "1700003600:user") computed
        // independently (`printf %s 1700003600:user | openssl dgst -sha1 -hmac secret -binary | base64`).
        let c = credentials(
            &["turn:t.example:3478".into()],
            "secret",
            "user",
            1_700_000_000,
            3600,
        );
        assert_eq!(c.username, "1700003600:user");
        assert_eq!(c.credential, EXPECTED);
    }

    const EXPECTED: &str = "+H9F73rZRi2gwSWIwTpuw+t6m9Q=";
}
