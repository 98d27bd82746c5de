//! Login sessions (docs/security.md §5, §8): server-side, in the state store so
//! any node can read them, with idle and absolute timeouts. The browser
//! holds only an opaque 256-bit secret in one cookie; the store knows the
//! session by the secret's SHA-256, so a copy of the store holds no usable
//! cookie. A new secret is made at every login (no fixation).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::identity::Identity;
use crate::store::{SessionRecord, StateStore, StoreError, UnixMillis};

/// Session timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// A session unused this long ends.
    pub idle: Duration,
    /// A session ends this long after login, however busy.
    pub absolute: Duration,
}

/// A live session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// Who, as of login.
    pub identity: Identity,
    /// Login time, Unix milliseconds.
    pub created_ms: u64,
    /// When it ends at the latest, Unix milliseconds.
    pub absolute_ms: u64,
}

/// A fresh unguessable secret: 32 bytes from the thread's CSPRNG, base64url.
pub fn new_secret() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// SHA-256 of a secret, hex: how the store names what the secret opens.
pub fn secret_hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `s` has the shape of a secret from [`new_secret`] (checked
/// before any store lookup, so junk cookies cost nothing).
pub fn is_secret_shaped(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Starts a session for `identity` at `now`; returns the cookie secret.
pub async fn create<S: StateStore>(
    store: &S,
    config: SessionConfig,
    identity: Identity,
    now: UnixMillis,
) -> Result<String, StoreError> {
    let secret = new_secret();
    let session = Session {
        identity,
        created_ms: now.0,
        absolute_ms: now.0.saturating_add(millis(config.absolute)),
    };
    let record = SessionRecord {
        user: session.identity.user.clone(),
        payload: serde_json::to_string(&session).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    };
    let expires = now
        .0
        .saturating_add(millis(config.idle))
        .min(session.absolute_ms);
    store
        .put_session(&secret_hash(&secret), record, now, UnixMillis(expires))
        .await?;
    Ok(secret)
}

/// The live session a cookie secret opens, its idle timer restarted; `None`
/// if there is none, it idled out, or it reached its absolute end.
pub async fn load<S: StateStore>(
    store: &S,
    config: SessionConfig,
    secret: &str,
    now: UnixMillis,
) -> Result<Option<Session>, StoreError> {
    if !is_secret_shaped(secret) {
        return Ok(None);
    }
    let id = secret_hash(secret);
    let Some(record) = store.get_session(&id, now).await? else {
        return Ok(None);
    };
    let session: Session =
        serde_json::from_str(&record.payload).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    if now.0 >= session.absolute_ms || record.user != session.identity.user {
        store.delete_session(&id).await?;
        return Ok(None);
    }
    let expires = now
        .0
        .saturating_add(millis(config.idle))
        .min(session.absolute_ms);
    if !store.touch_session(&id, now, UnixMillis(expires)).await? {
        return Ok(None);
    }
    Ok(Some(session))
}

/// Ends the session a cookie secret opens (logout).
pub async fn end<S: StateStore>(store: &S, secret: &str) -> Result<(), StoreError> {
    if is_secret_shaped(secret) {
        store.delete_session(&secret_hash(secret)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeSet;

    use chaperone_protocol::UserRef;

    use super::*;
    use crate::auth::identity::SchoolRole;
    use crate::store::LocalStore;

    fn identity() -> Identity {
        Identity {
            user: UserRef::new("https://idp", "p1").unwrap(),
            name: "Pat".to_owned(),
            roles: BTreeSet::from([SchoolRole::Pupil]),
            classes: BTreeSet::from(["7A".to_owned()]),
            mfa: false,
            auth_time: 0,
        }
    }

    const CONFIG: SessionConfig = SessionConfig {
        idle: Duration::from_secs(60),
        absolute: Duration::from_secs(300),
    };

    #[tokio::test]
    async fn sessions_idle_out_and_end_absolutely() {
        let store = LocalStore::new();
        let t0 = 1_000_000;
        let secret = create(&store, CONFIG, identity(), UnixMillis(t0))
            .await
            .unwrap();
        assert!(is_secret_shaped(&secret));
        // Used every 50 s it lives on, up to the absolute end.
        let mut t = t0;
        for _ in 0..5 {
            t += 50_000;
            assert!(
                load(&store, CONFIG, &secret, UnixMillis(t))
                    .await
                    .unwrap()
                    .is_some()
            );
        }
        t += 50_000; // 300 s after login
        assert!(
            load(&store, CONFIG, &secret, UnixMillis(t))
                .await
                .unwrap()
                .is_none()
        );

        // Left alone past the idle timeout, it ends.
        let secret = create(&store, CONFIG, identity(), UnixMillis(t0))
            .await
            .unwrap();
        assert!(
            load(&store, CONFIG, &secret, UnixMillis(t0 + 61_000))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn logout_and_junk_cookies() {
        let store = LocalStore::new();
        let secret = create(&store, CONFIG, identity(), UnixMillis(0))
            .await
            .unwrap();
        let other = create(&store, CONFIG, identity(), UnixMillis(0))
            .await
            .unwrap();
        assert_ne!(secret, other);
        end(&store, &secret).await.unwrap();
        assert!(
            load(&store, CONFIG, &secret, UnixMillis(1))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            load(&store, CONFIG, &other, UnixMillis(1))
                .await
                .unwrap()
                .is_some()
        );
        for junk in ["", "x", &"a".repeat(44), &format!("{}!", &secret[..42])] {
            assert!(
                load(&store, CONFIG, junk, UnixMillis(1))
                    .await
                    .unwrap()
                    .is_none()
            );
        }
        // The store never holds the secret itself.
        assert!(
            store
                .get_session(&other, UnixMillis(1))
                .await
                .unwrap()
                .is_none()
        );
    }
}
