//! The node's identity parts: its token signing keys and issuer, and the
//! relying party's configuration (the school's identity provider, or in
//! development mode the built-in one).

use std::sync::Arc;
use std::time::Duration;

use super::StartError;
use crate::auth::oidc::RpConfig;
use crate::auth::tokens::{KeySet, TokenIssuer};
use crate::config::Config;
use crate::web::CALLBACK_PATH;

/// The signing keys: a fresh development key when none is configured, else
/// the configured one and any previous keys still accepted in a rollover.
fn keys(config: &Config) -> Result<KeySet, StartError> {
    let t = &config.tokens;
    if t.signing_key_file.is_empty() {
        // Development: a fresh key every start.
        let kid = format!("dev-{:016x}", rand::random::<u64>());
        return Ok(KeySet::from_seed(&kid, rand::random::<[u8; 32]>())?);
    }
    let read = |path: &str| {
        std::fs::read_to_string(path).map_err(|source| StartError::KeyFile {
            path: path.to_owned(),
            source,
        })
    };
    let mut keys = KeySet::from_pkcs8_pem(&t.signing_key_id, &read(&t.signing_key_file)?)?;
    // A rollover: the previous keys still verify (and are published in the
    // JWKS) until every node signs with the new one.
    for entry in &t.previous_keys {
        let (kid, path) = entry.split_once('=').unwrap_or((entry, ""));
        keys.accept_also(kid, &read(path)?)?;
    }
    Ok(keys)
}

/// The node's token issuer, for `public_url`.
pub(super) fn token_issuer(
    config: &Config,
    public_url: &str,
) -> Result<Arc<TokenIssuer>, StartError> {
    Ok(Arc::new(TokenIssuer {
        issuer: public_url.to_owned(),
        room_audience: public_url.to_owned(),
        service_audience: config.tokens.service_audience.clone(),
        keys: keys(config)?,
    }))
}

#[cfg(feature = "dev")]
pub(super) type DevIdpHandle = crate::dev::idp::DevIdp;
#[cfg(not(feature = "dev"))]
pub(super) type DevIdpHandle = std::convert::Infallible;

/// The relying party's configuration: the configured identity provider, or
/// in development mode with none configured, the built-in one at
/// `/dev-idp` (returned too, to be mounted).
pub(super) fn relying_party_config(
    config: &Config,
    public_url: &str,
) -> Result<(RpConfig, Option<DevIdpHandle>), StartError> {
    let redirect_url = format!("{public_url}{CALLBACK_PATH}");
    let rp = |issuer: String, client_id: String, client_secret: String| RpConfig {
        issuer,
        client_id,
        client_secret,
        redirect_url: redirect_url.clone(),
        scopes: config.oidc.scopes.clone(),
        max_iat_skew_secs: config.oidc.max_iat_skew_secs,
        http_timeout: Duration::from_millis(config.oidc.http_timeout_ms),
    };
    if !config.oidc.issuer.is_empty() {
        let o = &config.oidc;
        return Ok((
            rp(
                o.issuer.clone(),
                o.client_id.clone(),
                o.client_secret.clone(),
            ),
            None,
        ));
    }
    #[cfg(feature = "dev")]
    {
        use crate::dev::idp::{DevIdp, MOUNT};
        let issuer = format!("{public_url}{MOUNT}");
        let client_id = "chaperone-dev".to_owned();
        let client_secret = crate::auth::session::new_secret();
        let idp = DevIdp::new(
            config.dev,
            issuer.clone(),
            client_id.clone(),
            client_secret.clone(),
            redirect_url.clone(),
            super::unix_secs,
        )?;
        Ok((rp(issuer, client_id, client_secret), Some(idp)))
    }
    #[cfg(not(feature = "dev"))]
    {
        Err(StartError::NoIdentityProvider)
    }
}
