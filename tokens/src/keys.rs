//! [`KeySet`]: the gateway's signing keys (one active, older ones still
//! accepted during a rollover) and their JWKS.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::verify::PublicKey;
use crate::*;

/// The gateway's signing keys: one active key and any number of older keys
/// still accepted during a rollover.
#[derive(Clone)]
pub struct KeySet {
    active_kid: String,
    active: SigningKey,
    encoding: EncodingKey,
    pub(crate) verifier: Verifier,
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

    pub(crate) fn sign<C: Serialize>(&self, typ: &str, claims: &C) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(typ.to_owned());
        header.kid = Some(self.active_kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| TokenError::Key(e.to_string()))
    }
}
