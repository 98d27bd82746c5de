//! The review service in-process (`gateway --dev`): mounted under
//! [`REVIEW_BASE`] on the gateway's own origin, with the development review
//! identity the embedded recorder's recipients were made from, and a
//! retention sweep every hour. Outside development mode the review service
//! is `recorder review`, a separate process holding the identity, and
//! nothing is mounted here.

use std::sync::Arc;

use axum::Router;
use tokio::task::JoinHandle;

use crate::auth::tokens::TokenIssuer;
use crate::clock::unix_millis;
use crate::config::Config;
use crate::web::review::REVIEW_BASE;

/// Mounts the review service on `router` in development mode with the
/// embedded recorder. Returns the router and the tasks to stop with the node.
pub(crate) fn mount_embedded(
    router: Router,
    config: &Config,
    tokens: &TokenIssuer,
) -> (Router, Vec<JoinHandle<()>>) {
    if !config.dev || !config.recorder.urls.is_empty() {
        // Not development, or recordings go to a remote recorder whose
        // review service holds the identity.
        return (router, Vec::new());
    }
    match embedded_service(config, tokens) {
        Ok(svc) => {
            let sweeper = {
                let svc = svc.clone();
                tokio::spawn(async move {
                    loop {
                        if let Err(e) = svc.sweep().await {
                            tracing::error!(error = %e, "retention sweep failed");
                        }
                        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                    }
                })
            };
            (router.nest(REVIEW_BASE, svc.router()), vec![sweeper])
        }
        Err(e) => {
            tracing::warn!(error = %e, "review service not started: replay is unavailable");
            (router, Vec::new())
        }
    }
}

fn embedded_service(
    config: &Config,
    tokens: &TokenIssuer,
) -> Result<Arc<chaperone_review::http::ReviewService>, String> {
    use chaperone_archive::keys::RecorderSigningKey;
    let r = &config.recorder;
    let dir = if r.dir.is_empty() {
        std::path::PathBuf::from(".chaperone-dev").join("recordings")
    } else {
        r.dir.clone().into()
    };
    let parent = dir
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    if !r.recipients.is_empty() {
        return Err(
            "recorder.recipients is configured: run `recorder review` with its identity".into(),
        );
    }
    let identity_path = parent.join("review-identity.txt");
    let text = std::fs::read_to_string(&identity_path)
        .map_err(|e| format!("{}: {e}", identity_path.display()))?;
    let identity = chaperone_review::open::identity_of(&text)
        .ok_or_else(|| format!("{} holds no age identity", identity_path.display()))?;
    let key_path = if r.signing_key_file.is_empty() {
        parent.join("recorder-signing-key.pem")
    } else {
        r.signing_key_file.clone().into()
    };
    let key = RecorderSigningKey::load_or_generate(&key_path)
        .map_err(|e| e.to_string())?
        .public();
    let store = chaperone_archive::writer::local_store(&dir).map_err(|e| e.to_string())?;
    let settings = chaperone_review::http::ReviewSettings {
        issuer: tokens.issuer.clone(),
        cookie_path: REVIEW_BASE.to_owned(),
        secure_cookies: tokens.issuer.starts_with("https://"),
        ..Default::default()
    };
    Ok(chaperone_review::http::ReviewService::new(
        store,
        identity,
        key,
        tokens.keys.verifier(),
        settings,
        Arc::new(|| unix_millis() * 1000),
    ))
}
