//! The recorder inside the gateway (`gateway --dev` and single-node
//! deployments): the same `recorder serve` service, started in-process on a
//! loopback port, so that the gateway's feed talks to it exactly as to a
//! remote recorder (service token, `Hello`, acknowledged frames). It is
//! given the gateway's public keys directly instead of fetching the JWKS.
//!
//! In development mode missing keys are made (and kept) under
//! `.chaperone-dev/`: the review identity beside the recordings (by
//! [`crate::dev`]), so they stay openable across restarts (`age -d -i
//! review-identity.txt`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chaperone_archive::keys::RecorderSigningKey;
use chaperone_archive::segment::RecipientSet;
use chaperone_recorder::service::auth::ServiceAuth;
use chaperone_recorder::service::metrics::IngestMetrics;
use chaperone_recorder::service::{Archive, Service};
use chaperone_tokens::Verifier;
use tokio::task::JoinHandle;

use crate::config::Config;

/// A running in-process recorder.
#[derive(Debug)]
pub struct Embedded {
    /// Its feed base URL (`ws://127.0.0.1:<port>`).
    pub url: String,
    /// The service (for shutdown and metrics).
    pub service: Service,
    task: JoinHandle<()>,
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The directory recordings go to.
pub(crate) fn recordings_dir(config: &Config) -> PathBuf {
    if config.recorder.dir.is_empty() {
        PathBuf::from(".chaperone-dev").join("recordings")
    } else {
        PathBuf::from(&config.recorder.dir)
    }
}

fn parent_of(dir: &Path) -> PathBuf {
    dir.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The recipients: the configured ones, or in development mode the
/// development review identity's (made on first use).
fn recipients(config: &Config, dir: &Path) -> Result<RecipientSet, String> {
    let r = &config.recorder;
    let list = if r.recipients.is_empty() {
        dev_recipient(config, &parent_of(dir))?
    } else {
        r.recipients.clone()
    };
    RecipientSet::parse(&list.join("\n")).map_err(|e| e.to_string())
}

#[cfg(feature = "dev")]
fn dev_recipient(config: &Config, dir: &Path) -> Result<Vec<String>, String> {
    if !config.dev {
        return Err("recorder.recipients is required outside --dev".into());
    }
    crate::dev::review_recipient(dir).map(|r| vec![r])
}

#[cfg(not(feature = "dev"))]
fn dev_recipient(_config: &Config, _dir: &Path) -> Result<Vec<String>, String> {
    Err("recorder.recipients is required (this gateway is built without development mode)".into())
}

/// Starts the in-process recorder, trusting service tokens signed by
/// `keys` for `issuer`.
pub(crate) async fn start(
    config: &Config,
    issuer: String,
    keys: Verifier,
    registry: &prometheus::Registry,
) -> Result<Embedded, String> {
    let r = &config.recorder;
    let dir = recordings_dir(config);
    let recipients = recipients(config, &dir)?;
    let key_path = if r.signing_key_file.is_empty() {
        parent_of(&dir).join("recorder-signing-key.pem")
    } else {
        PathBuf::from(&r.signing_key_file)
    };
    if let Some(p) = key_path.parent() {
        std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    let signer = RecorderSigningKey::load_or_generate(&key_path).map_err(|e| e.to_string())?;
    // The same store layer as `recorder serve` (writes fsync'd, probed now).
    let store = chaperone_archive::store::open(&chaperone_archive::store::StoreConfig {
        dir: dir.display().to_string(),
        ..chaperone_archive::store::StoreConfig::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let metrics = IngestMetrics::register(registry).map_err(|e| e.to_string())?;
    tracing::info!(dir = %dir.display(), recipients = ?recipients.to_strings(), "recorder: embedded, writing sealed segments");
    let service = Service::new(
        Archive {
            store,
            recipients,
            signer,
            segment: Duration::from_secs(r.segment_secs),
            idle_close: Duration::from_secs(120),
            metrics,
        },
        ServiceAuth::with_keys(issuer, config.tokens.service_audience.clone(), keys),
        registry.clone(),
    );
    service
        .ready()
        .await
        .map_err(|e| format!("object store: {e}"))?;
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| format!("embedded recorder listener: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let router = service.router();
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "embedded recorder stopped");
        }
    });
    Ok(Embedded {
        url: format!("ws://{addr}"),
        service,
        task,
    })
}
